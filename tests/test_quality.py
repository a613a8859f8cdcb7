"""Quality flags: jitter, handedness flips, hand-object distance and the ``suspect`` rules."""

from __future__ import annotations

import numpy as np
import pytest

from hflpipe.model.control_points import load_control_points
from hflpipe.model.mano import ManoLayer
from hflpipe.pipeline.output.quality import (
    MAX_JITTER_MPS2,
    acceleration_magnitude,
    distance_to_box,
    hand_suspect,
    object_suspect,
)
from hflpipe.pipeline.output.schema import OutputMetadata, column_numpy, hands_table
from hflpipe.pipeline.smooth.tables import TableSettings, video_tables

META = OutputMetadata(checkpoint_sha256="a" * 64, mano_sha256="b" * 64, config_hash="c0ffee")
CRACKER = load_control_points("003_cracker_box")


#: A hand layer with zero buffers: every hand's joints and vertices sit on its wrist.
FLAT_HANDS = ManoLayer()


def test_acceleration_of_a_parabola_with_uneven_steps_and_gaps() -> None:
    t = np.array([0.0, 0.03, 0.07, 0.10, 0.16, 0.2])
    accel = np.array([1.5, -2.0, 0.5])
    x = 0.5 * accel * t[:, None] ** 2 + np.array([0.1, 0.0, 0.6])
    usable = np.array([True, True, True, False, True, True])
    x[~usable] = np.nan  # a skipped row's value must never be read
    got = acceleration_magnitude(t, x, usable)
    expected = np.linalg.norm(accel)
    np.testing.assert_allclose(got[[1, 2, 4]], expected, rtol=1e-9)
    assert np.isnan(got[[0, 3, 5]]).all()
    # (m, p, 3) points: the mean over points of each point's magnitude.
    pts = np.stack([x, 2 * x], axis=1)
    np.testing.assert_allclose(acceleration_magnitude(t, pts, usable)[1], 1.5 * expected)


def test_hand_rules_fire_on_their_thresholds_only_on_observed_rows() -> None:
    nan = np.nan
    cols = {
        "interpolated": np.array([False, False, False, False, False, True]),
        "confidence": np.array([0.9, 0.2, 0.9, 0.9, 0.9, 0.0]),
        "detector_score": np.array([0.9, 0.9, 0.4, 0.9, 0.9, nan]),
        "jitter_mps2": np.array([nan, 1.0, 1.0, MAX_JITTER_MPS2 + 1, 1.0, nan]),
        "handedness_flip": np.array([0.0, nan, 0.0, 0.0, 1.0, nan]),
        "hand_object_distance_m": np.array([0.05, nan, 0.3, nan, nan, 0.5]),
    }
    suspect, reasons = hand_suspect(cols)
    assert suspect.tolist() == [False, True, True, True, True, True]
    assert reasons.tolist() == [None, "low_confidence", "low_detector_score,far_from_object",
                                "jitter", "handedness_flip", "far_from_object"]


def test_object_rules_need_pnp_to_have_run() -> None:
    nan = np.nan
    cols = {
        "interpolated": np.array([False, False, False, False, True]),
        "pose_valid": np.array([True, True, False, False, True]),
        "detector_score": np.ones(5),
        "jitter_mps2": np.full(5, nan),
        "reprojection_error_px": np.array([1.0, 7.0, 2.0, nan, nan]),
        "pnp_inliers": np.array([15, 12, 4, 0, 0]),
    }
    suspect, reasons = object_suspect(cols)
    assert reasons.tolist() == [None, "reprojection_error", "few_inliers,no_pose", None, None]
    assert suspect.tolist() == [False, True, True, False, False]


def test_distance_to_a_rotated_box() -> None:
    half = (CRACKER.max(axis=0) - CRACKER.min(axis=0)) / 2
    centre = (CRACKER.max(axis=0) + CRACKER.min(axis=0)) / 2
    angle = np.pi / 2  # 90 degrees about camera z: object x becomes camera y
    quat = np.array([[np.cos(angle / 2), 0.0, 0.0, np.sin(angle / 2)]] * 2)
    t = np.array([[0.0, 0.0, 0.6]] * 2)
    inside = t[0] + np.array([-centre[1], centre[0], centre[2]])
    beyond_x = inside + np.array([0.0, half[0] + 0.07, 0.0])
    points = np.stack([
        np.stack([inside, inside + 1.0]),
        np.stack([beyond_x, beyond_x + 0.01]),
    ])
    np.testing.assert_allclose(distance_to_box(points, quat, t, CRACKER), [0.0, 0.07],
                               atol=1e-9)


def _hand_obs(frames: list[int], translation: np.ndarray, detected: list) -> dict:
    n = len(frames)
    return {
        "frame_index": np.array(frames, np.int64),
        "timestamp_s": np.array(frames) / 30.0,
        "track_id": np.zeros(n, np.int32),
        "handedness": np.array(["right"] * n),
        "detected_handedness": np.array(detected, dtype=object),
        "box": np.tile(np.float32([100, 100, 200, 200]), (n, 1)),
        "detector_score": np.full(n, 0.9, np.float32),
        "confidence": np.full(n, 0.8, np.float32),
        "joints2d": np.full((n, 21, 2), 150.0),
        "joints_rel": np.zeros((n, 21, 3)),
        "mano_pose": np.zeros((n, 48)),
        "mano_shape": np.zeros((n, 10)),
        "translation": translation,
        "mirrored": np.zeros(n, bool),
    }


def _object_obs(frames: list[int], translation: np.ndarray) -> dict:
    n = len(frames)
    quat = np.tile([1.0, 0.0, 0.0, 0.0], (n, 1))
    return {
        "frame_index": np.array(frames, np.int64),
        "timestamp_s": np.array(frames) / 30.0,
        "track_id": np.zeros(n, np.int32),
        "object_name": np.array(["003_cracker_box"] * n, dtype=object),
        "box": np.tile(np.float32([150, 100, 300, 300]), (n, 1)),
        "detector_score": np.full(n, 0.9, np.float32),
        "keypoints2d": np.full((n, 21, 2), 200.0),
        "keypoint_confidence": np.full((n, 21), 0.5, np.float32),
        "rotation": quat,
        "translation": translation,
        "pnp_inliers": np.array([18] * (n - 1) + [5], np.int32),
        "reprojection_error_px": np.array([1.0] * (n - 2) + [9.0, 1.0], np.float32),
        "pose_valid": np.ones(n, bool),
    }


def test_video_tables_write_quality_columns(tmp_path) -> None:
    frames = [0, 1, 2, 3, 5, 6, 7, 8]  # frame 4 is a gap the smoother fills
    t = np.array(frames) / 30.0
    translation = np.stack([0.2 * t, 0.5 * t**2, np.full_like(t, 0.5)], axis=1)
    translation[6, 2] += 0.04  # a 4 cm depth spike on frame 7
    detected = ["right", "right", None, "left", "right", "right", "right", "right"]
    obj_t = np.tile(CRACKER.mean(axis=0) * -1 + [0.0, 0.0, 0.5], (len(frames), 1))
    obj_t[-1, 0] += 0.5  # the box moves 50 cm away on the last frame
    settings = TableSettings(max_gap=2)
    position = {"position": np.array(frames)}
    hands, objects = video_tables(
        "clip", np.arange(9), _hand_obs(frames, translation, detected) | position,
        _object_obs(frames, obj_t) | position, settings, META, FLAT_HANDS, CRACKER,
    )
    assert hands.num_rows == objects.num_rows == 9
    rows = hands.to_pylist()
    assert [r["interpolated"] for r in rows] == [f == 4 for f in range(9)]
    jitter = column_numpy(hands.column("jitter_mps2"))
    assert np.isnan(jitter[[0, 4, 8]]).all()
    np.testing.assert_allclose(jitter[[1, 2]], 1.0, rtol=1e-4)
    assert jitter[7] > 2 * 0.04 * 900 * 0.9 and rows[7]["suspect_reasons"] == "jitter"
    assert [r["handedness_flip"] for r in rows] == [
        False, False, None, True, None, False, False, False, False]
    assert rows[3]["suspect_reasons"] == "handedness_flip"
    distance = column_numpy(hands.column("hand_object_distance_m"))
    # The wrist sits in the cracker box (centred at the object's translation + centre).
    assert distance[0] == pytest.approx(0.0, abs=0.03)
    assert distance[8] > 0.3 and "far_from_object" in rows[8]["suspect_reasons"]
    assert not rows[0]["suspect"] and rows[0]["suspect_reasons"] is None
    objs = objects.to_pylist()
    # The 50 cm jump on the last frame also shows as jitter on the frame before it.
    assert objs[7]["suspect_reasons"] == "jitter,reprojection_error"
    assert "few_inliers" in objs[8]["suspect_reasons"]
    assert objs[4]["jitter_mps2"] is None and objs[4]["suspect"] is False


def test_builder_without_quality_columns_leaves_them_unassessed() -> None:
    from test_schema import sample_hand_columns

    table = hands_table(sample_hand_columns(n=3), META)
    for name in ("jitter_mps2", "handedness_flip", "hand_object_distance_m", "suspect",
                 "suspect_reasons"):
        assert table.column(name).null_count == 3, name
    assert hands_table(sample_hand_columns(n=0), META).num_rows == 0


def test_track_quality_groups_interleaved_rows_of_many_videos() -> None:
    from test_schema import sample_object_columns

    from hflpipe.pipeline.output.quality import track_quality
    from hflpipe.pipeline.output.schema import empty_hands, objects_table, rows_by_value

    parts = []
    for video, track, suspect in (("b", 2, [True, False, False]), ("a", 5, [True, True, False]),
                                  ("a", 1, [False, False, False])):
        cols = sample_object_columns(video, 3)
        cols["track_id"] = np.full(3, track, np.int32)
        cols["suspect"] = np.array(suspect)
        cols["suspect_reasons"] = np.array(["jitter" if s else None for s in suspect],
                                           dtype=object)
        parts.append(objects_table(cols, META))
    import pyarrow as pa

    table = pa.concat_tables(parts)
    # Shuffle rows so that no track's rows are contiguous.
    table = table.take(np.array([0, 3, 6, 1, 4, 7, 2, 5, 8]))
    grouped = rows_by_value(table.column("video_id"))
    assert {k: v.tolist() for k, v in grouped.items()} == {"a": [1, 2, 4, 5, 7, 8],
                                                            "b": [0, 3, 6]}
    got = [(t.video_id, t.track_id, t.frames, t.suspect, t.reasons)
           for t in track_quality(empty_hands(META), table)]
    assert got == [("a", 1, 3, 0, {}), ("a", 5, 3, 2, {"jitter": 2}),
                   ("b", 2, 3, 1, {"jitter": 1})]
