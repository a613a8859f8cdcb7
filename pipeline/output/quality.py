"""Quality flags: how far to trust each output row, and the thresholds that mark it ``suspect``.

Per-frame signals (stored as columns of the ``hands`` and ``objects`` tables):

- ``jitter_mps2``: acceleration magnitude of the *raw* (unsmoothed) per-frame estimate, in
  m/s², from the previous and next observed frames of the same track span (second
  derivative for uneven time steps). Hands: mean over the 21 raw 3D joints; objects: the
  raw PnP translation. Null where the frame is interpolated, has no observed neighbour on
  either side in its span, or (objects) has no raw pose on it or a neighbour.
- ``handedness_flip`` (hands): the hand detector's own handedness on this frame disagrees
  with the track's (its majority vote). Null where the detector gave no handedness.
- ``hand_object_distance_m`` (hands): distance from the hand's nearest 3D joint to the 3D
  bounding box of the nearest object with a pose on the same frame (0 inside the box).
  Null where no object on the frame has a pose.
- ``pnp_inliers``, ``reprojection_error_px``, ``detector_score``, ``confidence``,
  ``interpolated``: already columns of the tables.

A row is ``suspect`` when any rule below fires; ``suspect_reasons`` lists the rule names,
comma-separated (null when not suspect). Interpolated rows are not suspect by themselves:
``interpolated`` already says so.

==========================  ====================================================
rule                        fires when
==========================  ====================================================
``low_confidence``          hands, observed: ``confidence`` < 0.3
``low_detector_score``      observed: ``detector_score`` < 0.5
``jitter``                  ``jitter_mps2`` > 50 m/s² (a fast hand movement stays
                            below ~20 m/s²; 5 mm of frame-to-frame noise at
                            30 fps already gives ~11 m/s²)
``handedness_flip``         hands: ``handedness_flip`` is true
``far_from_object``         hands: ``hand_object_distance_m`` > 0.20 m (a hand
                            paired with an object in 2D but far from it in 3D
                            usually has a wrong depth)
``reprojection_error``      objects: ``reprojection_error_px`` > 5 px
``few_inliers``             objects, PnP run: ``pnp_inliers`` < 8 of 21 points
``no_pose``                 objects, observed, PnP run: no valid 6D pose
==========================  ====================================================
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from hflpipe.model.geometry import quaternion_to_matrix
from hflpipe.pipeline.output.schema import column_numpy

#: Thresholds of the ``suspect`` rules (see the module docstring).
MIN_HAND_CONFIDENCE = 0.3
MIN_DETECTOR_SCORE = 0.5
MAX_JITTER_MPS2 = 50.0
MAX_HAND_OBJECT_DISTANCE_M = 0.20
MAX_REPROJECTION_ERROR_PX = 5.0
MIN_PNP_INLIERS = 8

HAND_RULES = ("low_confidence", "low_detector_score", "jitter", "handedness_flip",
              "far_from_object")
OBJECT_RULES = ("low_detector_score", "jitter", "reprojection_error", "few_inliers", "no_pose")


def acceleration_magnitude(
    timestamps_s: np.ndarray, values: np.ndarray, usable: np.ndarray
) -> np.ndarray:
    """Per-row acceleration magnitude of one track span's points.

    Args:
        timestamps_s: (m,) increasing times, seconds.
        values: (m, 3) or (m, p, 3) positions in metres (p points per row).
        usable: (m,) bool, rows holding a measurement; the others are skipped as neighbours.

    Returns:
        (m,) float64 m/s²: for a usable row with a usable row before and after it, the norm
        of the second derivative through the three (mean over the p points); NaN elsewhere.
    """
    t = np.asarray(timestamps_s, dtype=np.float64)
    x = np.asarray(values, dtype=np.float64)
    if x.ndim == 2:
        x = x[:, None, :]
    out = np.full(len(t), np.nan)
    rows = np.flatnonzero(np.asarray(usable, dtype=bool))
    if len(rows) < 3:
        return out
    prev, mid, nxt = rows[:-2], rows[1:-1], rows[2:]
    t0, t1, t2 = t[prev], t[mid], t[nxt]
    # Second derivative of the parabola through three unevenly spaced samples.
    slope_after = (x[nxt] - x[mid]) / (t2 - t1)[:, None, None]
    slope_before = (x[mid] - x[prev]) / (t1 - t0)[:, None, None]
    accel = 2.0 * (slope_after - slope_before) / (t2 - t0)[:, None, None]
    out[mid] = np.linalg.norm(accel, axis=-1).mean(axis=1)
    return out


def _reasons(checks: Mapping[str, np.ndarray], n: int) -> tuple[np.ndarray, np.ndarray]:
    """(suspect (n,) bool, reasons (n,) object: comma-joined rule names or None)."""
    fired = np.zeros(n, dtype=bool)
    reasons = np.full(n, None, dtype=object)
    for i in range(n):
        names = [name for name, hit in checks.items() if hit[i]]
        if names:
            fired[i] = True
            reasons[i] = ",".join(names)
    return fired, reasons


def _above(values: np.ndarray, limit: float) -> np.ndarray:
    """values > limit, False where NaN (a missing signal raises no flag)."""
    v = np.asarray(values, dtype=np.float64)
    return np.nan_to_num(v, nan=-np.inf) > limit


def _below(values: np.ndarray, limit: float) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64)
    return np.nan_to_num(v, nan=np.inf) < limit


def hand_suspect(columns: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """``suspect`` and ``suspect_reasons`` of hands rows.

    ``columns``: (n,) arrays ``interpolated`` (bool), ``confidence``, ``detector_score``,
    ``jitter_mps2``, ``hand_object_distance_m`` (NaN = unknown) and ``handedness_flip``
    (float: 1 flip, 0 none, NaN unknown).
    """
    observed = ~np.asarray(columns["interpolated"], dtype=bool)
    checks = {
        "low_confidence": observed & _below(columns["confidence"], MIN_HAND_CONFIDENCE),
        "low_detector_score": observed & _below(columns["detector_score"], MIN_DETECTOR_SCORE),
        "jitter": _above(columns["jitter_mps2"], MAX_JITTER_MPS2),
        "handedness_flip": _above(columns["handedness_flip"], 0.5),
        "far_from_object": _above(columns["hand_object_distance_m"],
                                  MAX_HAND_OBJECT_DISTANCE_M),
    }
    return _reasons(checks, len(observed))


def object_suspect(columns: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """``suspect`` and ``suspect_reasons`` of objects rows.

    ``columns``: (n,) arrays ``interpolated``, ``pose_valid`` (bool), ``detector_score``,
    ``jitter_mps2``, ``reprojection_error_px`` (NaN where PnP was not run), ``pnp_inliers``.
    """
    observed = ~np.asarray(columns["interpolated"], dtype=bool)
    error = np.asarray(columns["reprojection_error_px"], dtype=np.float64)
    pnp_run = observed & np.isfinite(error)
    checks = {
        "low_detector_score": observed & _below(columns["detector_score"], MIN_DETECTOR_SCORE),
        "jitter": _above(columns["jitter_mps2"], MAX_JITTER_MPS2),
        "reprojection_error": pnp_run & _above(error, MAX_REPROJECTION_ERROR_PX),
        "few_inliers": pnp_run & _below(columns["pnp_inliers"], MIN_PNP_INLIERS),
        "no_pose": pnp_run & ~np.asarray(columns["pose_valid"], dtype=bool),
    }
    return _reasons(checks, len(observed))


def distance_to_box(
    points: np.ndarray, rotation: np.ndarray, translation: np.ndarray, control_points: np.ndarray
) -> np.ndarray:
    """Distance from the nearest of each row's points to an object's posed 3D bounding box.

    Args:
        points: (n, p, 3) camera-frame points, metres (a hand's joints).
        rotation: (n, 4) object-to-camera quaternions wxyz. translation: (n, 3) metres.
        control_points: (21, 3) object-frame control points (their corners span the box).

    Returns:
        (n,) metres; 0 where a point lies inside the box.
    """
    R = quaternion_to_matrix(rotation)
    local = np.einsum("nji,npj->npi", R, np.asarray(points) - np.asarray(translation)[:, None])
    lo, hi = control_points.min(axis=0), control_points.max(axis=0)
    outside = np.maximum(np.maximum(lo - local, local - hi), 0.0)
    return np.linalg.norm(outside, axis=-1).min(axis=1)


def link_hands_to_objects(
    hands: pa.Table, objects: pa.Table, control_points: np.ndarray | None
) -> pa.Table:
    """``hands`` of one video with ``hand_object_distance_m`` and ``suspect`` filled in.

    Each hand row is measured against every object row with a pose on the same frame and
    keeps the nearest. Without control points, or with no posed object, the distance stays
    null. Other columns are unchanged.
    """
    n = hands.num_rows
    distance = np.full(n, np.nan)
    if control_points is not None and n and objects.num_rows:
        posed = objects.filter(pc.field("pose_valid"))
        frames = posed.column("frame_index").to_numpy()
        rotation = column_numpy(posed.column("rotation"))
        translation = column_numpy(posed.column("translation"))
        hand_frames = hands.column("frame_index").to_numpy()
        joints = column_numpy(hands.column("joints3d"))
        for k in range(len(frames)):
            rows = np.flatnonzero(hand_frames == frames[k])
            if len(rows) == 0:
                continue
            d = distance_to_box(joints[rows], np.repeat(rotation[k][None], len(rows), 0),
                                np.repeat(translation[k][None], len(rows), 0), control_points)
            distance[rows] = np.fmin(distance[rows], d)
    signals = {
        name: column_numpy(hands.column(name))
        for name in ("confidence", "detector_score", "jitter_mps2")
    }
    signals["interpolated"] = hands.column("interpolated").to_numpy(zero_copy_only=False)
    signals["handedness_flip"] = column_numpy(hands.column("handedness_flip"))
    signals["hand_object_distance_m"] = distance
    suspect, reasons = hand_suspect(signals)
    updates = {
        "hand_object_distance_m": pa.array(distance, pa.float32(), mask=np.isnan(distance)),
        "suspect": pa.array(suspect),
        "suspect_reasons": pa.array(list(reasons), pa.string()),
    }
    for name, values in updates.items():
        index = hands.schema.get_field_index(name)
        hands = hands.set_column(index, hands.schema.field(index), values)
    return hands


@dataclass(frozen=True)
class TrackQuality:
    """Quality of one track over its rows.

    ``kind`` is ``"hand"`` or ``"object"``; ``label`` the handedness or object name.
    Jitter figures are m/s² over the rows that have one (NaN if none);
    ``median_reprojection_error_px`` and ``pose_frames`` are for objects (NaN / 0 for hands),
    ``handedness_flips`` and ``median_hand_object_distance_m`` for hands.
    """

    video_id: str
    kind: str
    track_id: int
    label: str
    frames: int
    interpolated: int
    suspect: int
    reasons: dict[str, int]
    median_jitter_mps2: float
    p95_jitter_mps2: float
    handedness_flips: int = 0
    median_hand_object_distance_m: float = float("nan")
    pose_frames: int = 0
    median_reprojection_error_px: float = float("nan")

    @property
    def suspect_fraction(self) -> float:
        """Suspect rows over all rows of the track."""
        return self.suspect / self.frames if self.frames else 0.0


def _nan_stat(values: np.ndarray, q: float) -> float:
    finite = values[np.isfinite(values)]
    return float(np.percentile(finite, q)) if finite.size else float("nan")


def _codes(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(codes, sorted unique values): integer codes that sort like the values."""
    names, codes = np.unique(values.astype(str), return_inverse=True)
    return codes, names


def track_quality(hands: pa.Table, objects: pa.Table) -> list[TrackQuality]:
    """One :class:`TrackQuality` per (video, track) of the ``hands`` and ``objects`` tables,
    sorted by video, kind, track. Tables may span many videos (``writer.read_table``)."""
    out = []
    for kind, table in (("hand", hands), ("object", objects)):
        if table.num_rows == 0:
            continue
        video = np.asarray(table.column("video_id").to_pylist(), dtype=object)
        track = table.column("track_id").to_numpy()
        label_name = "handedness" if kind == "hand" else "object_name"
        labels = table.column(label_name).to_pylist()
        interpolated = table.column("interpolated").to_numpy(zero_copy_only=False)
        suspect = column_numpy(table.column("suspect")) == 1.0
        reasons = table.column("suspect_reasons").to_pylist()
        jitter = column_numpy(table.column("jitter_mps2"))
        if kind == "hand":
            flips = column_numpy(table.column("handedness_flip")) == 1.0
            distance = column_numpy(table.column("hand_object_distance_m"))
        else:
            pose = table.column("pose_valid").to_numpy(zero_copy_only=False)
            error = column_numpy(table.column("reprojection_error_px"))
        # One sort, then contiguous groups: linear in rows however many tracks there are.
        video_codes, video_names = _codes(video)
        order = np.lexsort((track, video_codes))
        starts = np.flatnonzero(np.r_[True, (np.diff(video_codes[order]) != 0)
                                      | (np.diff(track[order]) != 0)])
        for rows in np.split(order, starts[1:]):
            video_id, track_id = str(video_names[video_codes[rows[0]]]), int(track[rows[0]])
            counts: dict[str, int] = {}
            for i in rows:
                for name in (reasons[i] or "").split(","):
                    if name:
                        counts[name] = counts.get(name, 0) + 1
            extra = (
                {"handedness_flips": int(flips[rows].sum()),
                 "median_hand_object_distance_m": _nan_stat(distance[rows], 50)}
                if kind == "hand" else
                {"pose_frames": int(pose[rows].sum()),
                 "median_reprojection_error_px": _nan_stat(error[rows], 50)}
            )
            out.append(TrackQuality(
                video_id=video_id, kind=kind, track_id=track_id,
                label=str(labels[rows[0]] or kind), frames=len(rows),
                interpolated=int(interpolated[rows].sum()), suspect=int(suspect[rows].sum()),
                reasons=counts, median_jitter_mps2=_nan_stat(jitter[rows], 50),
                p95_jitter_mps2=_nan_stat(jitter[rows], 95), **extra,
            ))
    return out
