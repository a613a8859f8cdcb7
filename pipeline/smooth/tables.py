"""Per-frame observations -> per-track smoothed rows -> the ``hands`` and ``objects`` tables.

Each track is cut into spans (gaps up to ``max_gap`` frames are filled and
flagged ``interpolated``), smoothed offline, and written with its raw values
beside. Hand 3D joints (and vertices) are recomputed from the smoothed MANO
parameters with the model's own hand layer and placed at the smoothed wrist
translation, so joints and mesh always agree. Quality columns (jitter, handedness
flips, ``suspect``) are computed here too, see :mod:`hflpipe.pipeline.output.quality`;
the hand-object distance needs both tables, so :func:`video_tables` adds it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import torch

from hflpipe.model.geometry import mirror_mano_pose, mirror_points3d
from hflpipe.model.mano import ManoLayer
from hflpipe.pipeline.output.quality import (
    acceleration_magnitude,
    hand_suspect,
    link_hands_to_objects,
    object_suspect,
)
from hflpipe.pipeline.output.schema import (
    OutputMetadata,
    empty_hands,
    empty_objects,
    hands_table,
    objects_table,
)
from hflpipe.pipeline.smooth.filters import (
    SmoothingConfig,
    TrackSpan,
    plan_track,
    smooth_axis_angle,
    smooth_rotations,
    smooth_vectors,
)


@dataclass(frozen=True)
class TableSettings:
    """The run options that shape the tables: gap filling, smoothing, vertices."""

    max_gap: int = 5
    smoothing_cutoff_hz: float = 4.0
    with_vertices: bool = False


def _spans(
    obs: dict[str, np.ndarray], max_gap: int
) -> Iterator[tuple[int, TrackSpan, np.ndarray, np.ndarray, np.ndarray]]:
    """(track id, span, rows of ``obs`` in it, their positions, the span's timestamps).

    Spans count in positions among the video's selected frames (``obs["position"]``), so
    that with ``--stride`` a gap is a run of missed *selected* frames, and the frames the
    stride skips never become rows. Timestamps of decoded rows are as given; gap rows'
    are interpolated.
    """
    for track_id in np.unique(obs["track_id"]):
        rows = np.flatnonzero(obs["track_id"] == track_id)
        rows = rows[np.argsort(obs["position"][rows])]
        for span in plan_track(obs["position"][rows], max_gap=max_gap):
            inside = rows[np.isin(obs["position"][rows], span.frame_indices)]
            positions = obs["position"][inside]
            times = np.interp(span.frame_indices, positions, obs["timestamp_s"][inside])
            yield int(track_id), span, inside, positions, times


def video_tables(
    video_id: str, selected: np.ndarray, hand_obs: dict[str, np.ndarray],
    object_obs: dict[str, np.ndarray], settings: TableSettings, metadata: OutputMetadata,
    hand_layer: ManoLayer, control_points: np.ndarray | None,
) -> tuple[pa.Table, pa.Table]:
    """The ``hands`` and ``objects`` tables of one video, hand-object distances filled in.

    ``selected``: (F,) the video's selected frame indices; observations carry their
    ``position`` in it. ``control_points``: (21, 3) object-frame metres of the run's
    object, or None. ``hand_layer``: the model's MANO layer (see
    :func:`hflpipe.model.checkpoint.load_hand_layer`), which re-poses the smoothed hands.
    """
    hands = hand_table(video_id, selected, hand_obs, settings, metadata, hand_layer)
    objects = object_table(video_id, selected, object_obs, settings, metadata)
    return link_hands_to_objects(hands, objects, control_points), objects


def _handedness_disagreement(obs: dict[str, np.ndarray], rows: np.ndarray) -> np.ndarray:
    """(k,) per observation: 1.0 where the detector's own handedness differs from the
    track's, 0.0 where it agrees, NaN where the detector gave none (or no key was given).

    ``obs["detected_handedness"]`` (optional) holds the detector's per-frame value before
    the tracker's vote replaced it with the track's majority.
    """
    detected = obs.get("detected_handedness")
    if detected is None:
        return np.full(len(rows), np.nan)
    track_side = obs["handedness"][rows]
    return np.array([np.nan if d is None else float(d != side)
                     for d, side in zip(detected[rows], track_side, strict=True)])


def _observed_labels(span: TrackSpan, frames: np.ndarray, labels: np.ndarray | None,
                     rows: np.ndarray) -> np.ndarray:
    """Per-observation strings (or None) on the span's frames, None on the others."""
    out = np.full(len(span.frame_indices), None, dtype=object)
    if labels is None:
        return out
    positions = np.asarray(frames, dtype=np.int64) - span.frame_indices[0]
    inside = (positions >= 0) & (positions < len(out))
    out[positions[inside]] = labels[rows][inside]
    return out


def hand_table(
    video_id: str, selected: np.ndarray, obs: dict[str, np.ndarray], settings: TableSettings,
    metadata: OutputMetadata, hand_layer: ManoLayer,
) -> pa.Table:
    """The ``hands`` table of one video from per-crop observations (see ``video_job``).

    ``hand_object_distance_m`` is left null (see :func:`video_tables`).
    """
    if len(obs["track_id"]) == 0:
        return empty_hands(metadata, with_vertices=settings.with_vertices)
    smoothing = SmoothingConfig(cutoff_hz=settings.smoothing_cutoff_hz)
    parts: list[dict[str, np.ndarray]] = []
    for track_id, span, rows, frames, t in _spans(obs, settings.max_gap):
        observed = span.observed

        def raw(name: str, rows: np.ndarray = rows, frames: np.ndarray = frames,
                span: TrackSpan = span) -> np.ndarray:
            return span.scatter(frames, obs[name][rows])

        translation_raw = raw("translation")
        joints3d_raw = raw("joints_rel") + translation_raw[:, None, :]
        left = obs["handedness"][rows[0]] == "left"
        parts.append({
            "frame_index": selected[span.frame_indices],
            "timestamp_s": t,
            "track_id": np.full(len(t), track_id, np.int32),
            "handedness": np.full(len(t), obs["handedness"][rows[0]], dtype=object),
            "interpolated": ~observed,
            "box": smooth_vectors(t, raw("box"), observed, smoothing),
            "detector_score": np.nan_to_num(raw("detector_score")),
            "confidence": np.nan_to_num(raw("confidence")),
            "joints2d": smooth_vectors(t, raw("joints2d"), observed, smoothing),
            "mano_pose": smooth_axis_angle(t, raw("mano_pose"), observed, smoothing),
            "mano_shape": smooth_vectors(t, raw("mano_shape"), observed, smoothing),
            "translation": smooth_vectors(t, translation_raw, observed, smoothing),
            "joints2d_raw": np.nan_to_num(raw("joints2d")),
            "joints3d_raw": np.nan_to_num(joints3d_raw),
            "mano_pose_raw": np.nan_to_num(raw("mano_pose")),
            "translation_raw": np.nan_to_num(translation_raw),
            "jitter_mps2": acceleration_magnitude(t, joints3d_raw, observed),
            "handedness_flip": span.scatter(frames, _handedness_disagreement(obs, rows)),
            "detector_side": _observed_labels(span, frames, obs.get("detected_handedness"), rows),
            "contact_state": _observed_labels(span, frames, obs.get("contact_state"), rows),
            "left": np.full(len(t), left),
        })
    columns = {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}
    left = columns.pop("left")
    # The hand layer is a right hand: left hands go through it mirrored, and come back.
    model_pose = np.where(left[:, None], mirror_mano_pose(columns["mano_pose"]),
                          columns["mano_pose"])
    mesh = hand_mesh(hand_layer, model_pose, columns["mano_shape"], settings.with_vertices)
    joints = np.where(left[:, None, None], mirror_points3d(mesh["joints"]), mesh["joints"])
    columns["joints3d"] = joints + columns["translation"][:, None, :]
    if settings.with_vertices:
        verts = np.where(left[:, None, None], mirror_points3d(mesh["vertices"]),
                         mesh["vertices"])
        columns["vertices"] = verts + columns["translation"][:, None, :]
    columns["video_id"] = np.full(len(left), video_id, dtype=object)
    columns["hand_object_distance_m"] = np.full(len(left), np.nan)
    columns["suspect"], columns["suspect_reasons"] = hand_suspect(columns)
    flips = columns["handedness_flip"]
    columns["handedness_flip"] = np.ma.masked_array(flips == 1.0, mask=np.isnan(flips))
    for name in ("jitter_mps2", "hand_object_distance_m"):
        columns[name] = np.ma.masked_invalid(columns[name])
    return hands_table(columns, metadata)


@torch.inference_mode()
def hand_mesh(
    layer: ManoLayer, pose: np.ndarray, shape: np.ndarray, with_vertices: bool
) -> dict[str, np.ndarray]:
    """MANO ``joints`` (N,21,3) and optionally ``vertices`` (N,778,3), metres from the wrist.

    Computed in the layer's dtype on the CPU, whatever the inference precision. The
    pipeline's layer is float64 (:func:`hflpipe.pipeline.run.worker_cache.hand_layer`):
    float32 matrix products may round differently from one process to another (memory
    alignment picks the kernel), and a re-run must write the same rows.
    """
    dtype = layer.th_v_template.dtype
    verts, joints = layer(torch.as_tensor(pose, dtype=dtype), torch.as_tensor(shape, dtype=dtype),
                          center_idx=0)
    result = {"joints": joints.numpy()}
    if with_vertices:
        result["vertices"] = verts.numpy()
    return result


def object_table(
    video_id: str, selected: np.ndarray, obs: dict[str, np.ndarray], settings: TableSettings,
    metadata: OutputMetadata,
) -> pa.Table:
    """The ``objects`` table of one video from per-frame object observations."""
    if len(obs["track_id"]) == 0:
        return empty_objects(metadata)
    smoothing = SmoothingConfig(cutoff_hz=settings.smoothing_cutoff_hz)
    parts: list[dict[str, np.ndarray]] = []
    for track_id, span, rows, frames, t in _spans(obs, settings.max_gap):
        observed = span.observed
        valid = span.scatter(frames, obs["pose_valid"][rows].astype(float)) == 1.0
        pose_valid, rotation, translation = _object_pose_rows(
            t, valid, span.scatter(frames, obs["rotation"][rows]),
            span.scatter(frames, obs["translation"][rows]), observed, smoothing,
        )
        name = obs["object_name"][rows[0]]
        parts.append({
            "frame_index": selected[span.frame_indices],
            "timestamp_s": t,
            "track_id": np.full(len(t), track_id, np.int32),
            "object_name": np.full(len(t), name, dtype=object),
            "interpolated": ~observed,
            "box": smooth_vectors(t, span.scatter(frames, obs["box"][rows]), observed, smoothing),
            "detector_score": np.nan_to_num(span.scatter(frames, obs["detector_score"][rows])),
            "keypoints2d": smooth_vectors(
                t, span.scatter(frames, obs["keypoints2d"][rows]), observed, smoothing
            ),
            "keypoint_confidence": np.nan_to_num(
                span.scatter(frames, obs["keypoint_confidence"][rows])
            ),
            "rotation": rotation,
            "translation": translation,
            "rotation_raw": np.nan_to_num(span.scatter(frames, obs["rotation"][rows])),
            "translation_raw": np.nan_to_num(span.scatter(frames, obs["translation"][rows])),
            "pnp_inliers": span.scatter(frames, obs["pnp_inliers"][rows]),
            "reprojection_error_px": span.scatter(frames, obs["reprojection_error_px"][rows]),
            "pose_valid": pose_valid,
            "jitter_mps2": acceleration_magnitude(
                t, span.scatter(frames, obs["translation"][rows]), valid
            ),
        })
    columns = {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}
    columns["video_id"] = np.full(len(columns["frame_index"]), video_id, dtype=object)
    # The quality rules read NaN as "not measured"; the table wants those rows null.
    columns["suspect"], columns["suspect_reasons"] = object_suspect(columns)
    columns["jitter_mps2"] = np.ma.masked_invalid(columns["jitter_mps2"])
    # NaN where PnP was not run (no control points) or the frame was not observed.
    columns["reprojection_error_px"] = np.ma.masked_invalid(columns["reprojection_error_px"])
    inliers = columns["pnp_inliers"]
    columns["pnp_inliers"] = np.ma.masked_array(np.nan_to_num(inliers).astype(np.int32),
                                                mask=np.isnan(inliers))
    return objects_table(columns, metadata)


def _object_pose_rows(
    t: np.ndarray, valid: np.ndarray, rotation: np.ndarray, translation: np.ndarray,
    observed: np.ndarray, smoothing: SmoothingConfig,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Smoothed poses where PnP succeeded, filled on gap frames between successes.

    An observed frame whose PnP failed keeps ``pose_valid`` False: the pose there
    was not measured and not a short gap either.
    """
    rows = np.flatnonzero(valid)
    pose_valid = np.zeros(len(t), bool)
    quat = np.zeros((len(t), 4))
    quat[:, 0] = 1.0
    trans = np.zeros((len(t), 3))
    if len(rows) == 0:
        return pose_valid, quat, trans
    between = (np.arange(len(t)) >= rows[0]) & (np.arange(len(t)) <= rows[-1])
    pose_valid = valid | (between & ~observed)
    quat = smooth_rotations(t, rotation, valid, smoothing)
    trans = smooth_vectors(t, translation, valid, smoothing)
    quat[~pose_valid] = (1.0, 0.0, 0.0, 0.0)
    trans[~pose_valid] = 0.0
    return pose_valid, quat, trans



