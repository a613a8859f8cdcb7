"""Evaluation: known errors in synthetic predictions come back as the metrics say."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation
from test_schema import sample_hand_columns, sample_object_columns, sample_video_row

from hflpipe.model.control_points import load_control_points
from hflpipe.pipeline.common.errors import InputError
from hflpipe.pipeline.output.schema import OutputMetadata, hands_table, objects_table
from hflpipe.pipeline.output.writer import write_video_output
from hflpipe.pipeline.results.evaluate import (
    evaluate_video,
    f_score,
    load_groundtruth,
    object_diameter,
    procrustes_align,
)

META = OutputMetadata(checkpoint_sha256="a" * 64, mano_sha256="b" * 64, config_hash="c0ffee")
N = 6


def write_output(out, video_id: str, hands: dict, objects: dict) -> None:
    """A committed output of one video from builder columns (see test_schema's samples)."""
    row = sample_video_row(video_id)
    row["num_frames"] = row["frames_processed"] = len(hands["frame_index"])
    write_video_output(out, video_id, hands_table(hands, META), objects_table(objects, META),
                       row, META)


def scene(seed: int = 0) -> dict[str, np.ndarray]:
    """True hand joints/vertices and object poses of N frames, camera frame, metres."""
    rng = np.random.default_rng(seed)
    joints = rng.normal(0, 0.04, (N, 21, 3)) + np.array([0.0, 0.0, 0.5])
    verts = rng.normal(0, 0.04, (N, 778, 3)) + np.array([0.0, 0.0, 0.5])
    R = Rotation.random(N, random_state=seed).as_matrix()
    t = rng.normal(0, 0.05, (N, 3)) + np.array([0.05, 0.0, 0.6])
    return {"joints": joints, "verts": verts, "R": R, "t": t}


def prediction_columns(video_id: str, joints, verts, R, t) -> tuple[dict, dict]:
    hands = sample_hand_columns(video_id, N, with_vertices=True)
    hands["interpolated"] = np.zeros(N, bool)  # every row a prediction, so every row scored
    for raw in [name for name in hands if name.endswith("_raw")]:
        hands[raw] = np.nan_to_num(hands[raw])
    hands["joints3d"] = joints.astype(np.float32)
    hands["vertices"] = verts.astype(np.float32)
    objects = sample_object_columns(video_id, N)
    objects["interpolated"] = np.zeros(N, bool)
    objects["pose_valid"] = np.ones(N, bool)
    objects["rotation"] = Rotation.from_matrix(R).as_quat(scalar_first=True).astype(np.float32)
    objects["translation"] = t.astype(np.float32)
    return hands, objects


def groundtruth_file(path, video_id: str, truth: dict, points: np.ndarray, **extra):
    np.savez(path, video_id=np.array(video_id), frame_index=np.arange(N),
             hand_joints3d=truth["joints"], hand_vertices=truth["verts"],
             object_rotation=truth["R"], object_translation=truth["t"],
             object_points=points, **extra)
    return load_groundtruth(path)


def test_procrustes_removes_similarity_and_fscore_counts_points() -> None:
    rng = np.random.default_rng(3)
    true = rng.normal(size=(21, 3))
    R = Rotation.random(random_state=4).as_matrix()
    moved = 1.7 * true @ R.T + [0.3, -2.0, 5.0]
    np.testing.assert_allclose(procrustes_align(moved, true), true, atol=1e-9)
    # A reflection is not a rotation: it must not be aligned away.
    mirrored = true * [-1.0, 1.0, 1.0]
    assert np.abs(procrustes_align(mirrored, true) - true).max() > 0.1
    spaced = np.arange(63, dtype=float).reshape(21, 3)  # points 5 apart
    shifted = spaced + 0.1
    shifted[:7] += [1000.0, 0.0, 0.0]  # a third of the points far off
    assert f_score(shifted, spaced, 0.5) == pytest.approx(2 / 3)
    cube = np.array([[x, y, z] for x in (0, 1) for y in (0, 2) for z in (0, 2)], float)
    assert object_diameter(cube) == pytest.approx(3.0)


def test_constant_offset_gives_its_size_and_rotation_vanishes_after_procrustes(tmp_path) -> None:
    truth = scene()
    points = load_control_points("003_cracker_box")
    offset = np.array([0.005, 0.0, 0.0])  # 5 mm
    spin = Rotation.from_euler("y", 30, degrees=True).as_matrix()
    centre = truth["joints"].mean(axis=1, keepdims=True)
    spun_joints = (truth["joints"] - centre) @ spin.T + centre
    spun_verts = (truth["verts"] - centre) @ spin.T + centre
    write_output(tmp_path / "out", "shift", *prediction_columns(
        "shift", truth["joints"] + offset, truth["verts"] + offset, truth["R"],
        truth["t"] + offset))
    write_output(tmp_path / "out", "spin", *prediction_columns(
        "spin", spun_joints, spun_verts, truth["R"], truth["t"] + [0.3, 0.0, 0.0]))

    shift = evaluate_video(tmp_path / "out", groundtruth_file(
        tmp_path / "shift.npz", "shift", truth, points)).summary
    assert shift["mpjpe_mm"] == pytest.approx(5.0, abs=1e-3)
    assert shift["rr_mpjpe_mm"] == pytest.approx(0.0, abs=1e-3)
    assert shift["pa_mpjpe_mm"] == pytest.approx(0.0, abs=1e-3)
    assert shift["pa_mpvpe_mm"] == pytest.approx(0.0, abs=1e-3)
    assert shift["f5"] == pytest.approx(1.0)
    assert shift["add_mm"] == pytest.approx(5.0, abs=1e-3)
    assert shift["add_01d"] == 1.0  # 5 mm is well under a tenth of a cracker box
    assert shift["hand_frames"] == shift["object_frames"] == N

    spin = evaluate_video(tmp_path / "out", groundtruth_file(
        tmp_path / "spin.npz", "spin", truth, points)).summary
    assert spin["mpjpe_mm"] > 10.0 and spin["rr_mpjpe_mm"] > 10.0
    assert spin["pa_mpjpe_mm"] == pytest.approx(0.0, abs=1e-3)
    assert spin["pa_mpvpe_mm"] == pytest.approx(0.0, abs=1e-3)
    assert spin["add_mm"] == pytest.approx(300.0, abs=1e-2) and spin["add_01d"] == 0.0


def test_symmetric_object_scores_with_adds(tmp_path) -> None:
    truth = scene(1)
    points = load_control_points("003_cracker_box")
    points = points - (points.max(axis=0) + points.min(axis=0)) / 2  # box centred: symmetric
    half_turn = Rotation.from_euler("z", 180, degrees=True).as_matrix()
    turned = truth["R"] @ half_turn
    write_output(tmp_path / "out", "sym", *prediction_columns(
        "sym", truth["joints"], truth["verts"], turned, truth["t"]))
    plain = evaluate_video(tmp_path / "out", groundtruth_file(
        tmp_path / "a.npz", "sym", truth, points)).summary
    symmetric = evaluate_video(tmp_path / "out", groundtruth_file(
        tmp_path / "b.npz", "sym", truth, points, object_symmetric=True)).summary
    assert plain["add_mm"] > 50.0 and plain["object_metric"] == "ADD"
    assert symmetric["add_mm"] == pytest.approx(0.0, abs=1e-3)
    assert symmetric["object_metric"] == "ADD-S" and symmetric["add_01d"] == 1.0


def test_bad_groundtruth_and_unknown_video_are_one_line_errors(tmp_path) -> None:
    truth = scene()
    np.savez(tmp_path / "bad.npz", video_id=np.array("x"), frame_index=np.arange(N),
             hand_joints3d=truth["joints"][:, :20])
    with pytest.raises(InputError, match="'hand_joints3d' has shape"):
        load_groundtruth(tmp_path / "bad.npz")
    np.savez(tmp_path / "nopoints.npz", video_id=np.array("x"), frame_index=np.arange(N),
             object_rotation=truth["R"], object_translation=truth["t"])
    with pytest.raises(InputError, match="needs 'object_points'"):
        load_groundtruth(tmp_path / "nopoints.npz")
    (tmp_path / "junk.npz").write_text("not a zip")
    with pytest.raises(InputError, match="cannot read"):
        load_groundtruth(tmp_path / "junk.npz")
    write_output(tmp_path / "out", "real", *prediction_columns(
        "real", truth["joints"], truth["verts"], truth["R"], truth["t"]))
    gt = groundtruth_file(tmp_path / "other.npz", "other", truth,
                          load_control_points("003_cracker_box"))
    with pytest.raises(InputError, match="no rows for video 'other'"):
        evaluate_video(tmp_path / "out", gt)


def test_interpolated_rows_are_not_scored(tmp_path) -> None:
    truth = scene()
    hands, objects = prediction_columns("gap", truth["joints"], truth["verts"], truth["R"],
                                        truth["t"])
    filled = np.arange(N) == 2
    hands["interpolated"] = objects["interpolated"] = filled
    hands["joints3d"][filled] += 0.5  # a gap filled badly: not the model's prediction
    objects["translation"][filled] += 0.5
    write_output(tmp_path / "out", "gap", hands, objects)
    summary = evaluate_video(tmp_path / "out", groundtruth_file(
        tmp_path / "gap.npz", "gap", truth, load_control_points("003_cracker_box"))).summary
    assert summary["hand_frames"] == summary["object_frames"] == N - 1
    assert summary["mpjpe_mm"] == pytest.approx(0.0, abs=1e-3)
    assert summary["add_mm"] == pytest.approx(0.0, abs=1e-3)
