"""``hflpipe eval``: HO3D / DexYCB metrics of our output against ground truth.

Ground truth: one ``.npz`` per video (``docs/results.md`` has a writer snippet):

==========================  ===================  ==========================================
key                         shape                meaning
==========================  ===================  ==========================================
``video_id``                ()  str              the video's id in our output
``frame_index``             (n,) int             frames with ground truth
``hand_joints3d``           (n, 21, 3) float     m, camera frame, our joint order (wrist,
                                                 thumb, index, middle, ring, little, base
                                                 to tip); NaN rows: no hand on that frame
``hand_vertices``           (n, 778, 3) float    optional, m, camera frame (MANO vertices)
``object_rotation``         (n, 3, 3) float      optional, object to camera
``object_translation``      (n, 3) float         optional, m, camera frame; NaN: no object
``object_points``           (m, 3) float         object model points, object frame, m
                                                 (needed with an object pose)
``object_symmetric``        () bool              optional: score with ADD-S instead of ADD
``object_diameter``         () float             optional, m; default: the largest distance
                                                 between two ``object_points``
==========================  ===================  ==========================================

Metrics (millimetres; means over the frames that have both a prediction and ground truth):

- ``mpjpe_mm``: mean 3D joint error in the camera frame (translation included);
  ``rr_mpjpe_mm``: after moving both wrists to the origin (root-relative, DexYCB's);
  ``pa_mpjpe_mm``: after Procrustes alignment (scale, rotation, translation), HO3D's.
- ``pa_mpvpe_mm``: mesh vertex error after Procrustes alignment; ``f5``/``f15``: F-scores
  of the aligned mesh at 5 / 15 mm (HO3D's). Need predicted vertices (the ``vertices``
  column, written by ``--vertices``) and ``hand_vertices``.
- ``add_mm`` / ``adds_mm``: mean ADD (ADD-S for symmetric objects) of the object pose;
  ``add_01d``: fraction of frames whose ADD (ADD-S) is below 10 % of the diameter.

A frame's prediction is the hand row nearest the ground truth (mean joint distance) among
the rows on that frame, and likewise the object row with a pose: with one hand and one
object per frame, as in HO3D and DexYCB, that is simply the row there is.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
from scipy.spatial import ConvexHull, QhullError, cKDTree

from hflpipe.model.geometry import quaternion_to_matrix, to_camera
from hflpipe.pipeline.common.errors import InputError
from hflpipe.pipeline.output.reader import read_table
from hflpipe.pipeline.output.schema import column_numpy

F_THRESHOLDS_MM = (5.0, 15.0)
ADD_FRACTION = 0.1


@dataclass(frozen=True)
class GroundTruth:
    """One video's ground truth (see the module docstring for keys and shapes)."""

    video_id: str
    frame_index: np.ndarray
    hand_joints3d: np.ndarray | None = None
    hand_vertices: np.ndarray | None = None
    object_rotation: np.ndarray | None = None
    object_translation: np.ndarray | None = None
    object_points: np.ndarray | None = None
    object_symmetric: bool = False
    object_diameter: float | None = None


@dataclass
class EvalResult:
    """Per-frame errors (mm, NaN where not scored) and their summary."""

    video_id: str
    frame_index: np.ndarray
    per_frame: dict[str, np.ndarray] = field(default_factory=dict)
    summary: dict[str, float | int | None] = field(default_factory=dict)


def load_groundtruth(path: str | Path) -> GroundTruth:
    """Read a ground-truth ``.npz``; InputError names the file and the bad key."""
    path = Path(path)
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise InputError(f"ground truth {path}: cannot read it as .npz ({exc})") from None
    with data:
        if "video_id" not in data or "frame_index" not in data:
            raise InputError(f"ground truth {path}: needs 'video_id' and 'frame_index'")
        frames = np.asarray(data["frame_index"]).astype(np.int64).reshape(-1)
        n = len(frames)
        arrays = {}
        shapes = {"hand_joints3d": (n, 21, 3), "hand_vertices": (n, 778, 3),
                  "object_rotation": (n, 3, 3), "object_translation": (n, 3)}
        for key, shape in shapes.items():
            if key in data:
                value = np.asarray(data[key], dtype=np.float64)
                if value.shape != shape:
                    raise InputError(f"ground truth {path}: {key!r} has shape {value.shape}, "
                                     f"expected {shape}")
                arrays[key] = value
        if ("object_rotation" in arrays) != ("object_translation" in arrays):
            raise InputError(f"ground truth {path}: give both 'object_rotation' and "
                             "'object_translation', or neither")
        points = None
        if "object_rotation" in arrays:
            if "object_points" not in data:
                raise InputError(f"ground truth {path}: an object pose needs 'object_points'")
            points = np.asarray(data["object_points"], dtype=np.float64)
            if points.ndim != 2 or points.shape[1] != 3 or len(points) < 2:
                raise InputError(f"ground truth {path}: 'object_points' must be (m, 3), m >= 2")
        return GroundTruth(
            video_id=str(data["video_id"]), frame_index=frames,
            object_points=points,
            object_symmetric=bool(data["object_symmetric"]) if "object_symmetric" in data
            else False,
            object_diameter=float(data["object_diameter"]) if "object_diameter" in data
            else None,
            **arrays,
        )


def procrustes_align(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """``pred`` (p, 3) moved by the similarity transform that best fits it onto ``gt``.

    Least squares over scale, rotation (no reflection) and translation (Umeyama).
    """
    mu_p, mu_g = pred.mean(axis=0), gt.mean(axis=0)
    p, g = pred - mu_p, gt - mu_g
    u, s, vt = np.linalg.svd(p.T @ g)
    sign = np.sign(np.linalg.det(u @ vt)) or 1.0
    d = np.array([1.0, 1.0, sign])
    rotation = (u * d) @ vt
    variance = (p**2).sum()
    scale = (s * d).sum() / variance if variance > 0 else 1.0
    return scale * p @ rotation + mu_g


def f_score(pred: np.ndarray, gt: np.ndarray, threshold: float) -> float:
    """F-score of two point sets at ``threshold`` (same units): harmonic mean of the
    fraction of ``pred`` within it of ``gt`` and the fraction of ``gt`` within it of
    ``pred``."""
    precision = (cKDTree(gt).query(pred)[0] < threshold).mean()
    recall = (cKDTree(pred).query(gt)[0] < threshold).mean()
    return float(2 * precision * recall / (precision + recall)) if precision + recall else 0.0


def object_diameter(points: np.ndarray) -> float:
    """Largest distance between two of the points (over their convex hull's vertices)."""
    try:
        points = points[ConvexHull(points).vertices]
    except QhullError:  # flat or tiny sets have no hull: use every point
        points = np.asarray(points)
    diff = points[:, None, :] - points[None, :, :]
    return float(np.sqrt((diff**2).sum(-1)).max())


def add_error(points: np.ndarray, R_pred: np.ndarray, t_pred: np.ndarray, R_gt: np.ndarray,
              t_gt: np.ndarray, symmetric: bool) -> float:
    """ADD (mean distance of corresponding model points) or, ``symmetric``, ADD-S (mean
    distance of each true point to the nearest predicted one), in the points' units."""
    pred = to_camera(points, R_pred, t_pred)
    true = to_camera(points, R_gt, t_gt)
    if symmetric:
        return float(cKDTree(pred).query(true)[0].mean())
    return float(np.linalg.norm(pred - true, axis=1).mean())


def evaluate_video(out_dir: str | Path, gt: GroundTruth) -> EvalResult:
    """Score the observed rows of ``gt.video_id`` in ``out_dir`` against ``gt`` (rows that
    fill gaps by interpolation are not predictions and are left out)."""
    hands = _rows_of(read_table(out_dir, "hands"), gt.video_id)
    objects = _rows_of(read_table(out_dir, "objects"), gt.video_id)
    if hands.num_rows == 0 and objects.num_rows == 0:
        raise InputError(f"{out_dir}: no rows for video {gt.video_id!r} (is it finished, "
                         "and is the id the one in the videos table?)")
    n = len(gt.frame_index)
    names = ("mpjpe_mm", "rr_mpjpe_mm", "pa_mpjpe_mm", "pa_mpvpe_mm",
             *(f"f{int(t)}" for t in F_THRESHOLDS_MM), "add_mm")
    per_frame = {name: np.full(n, np.nan) for name in names}
    result = EvalResult(gt.video_id, gt.frame_index, per_frame)
    if gt.hand_joints3d is not None and hands.num_rows:
        _score_hands(hands, gt, per_frame)
    diameter = None
    if gt.object_rotation is not None and objects.num_rows:
        diameter = gt.object_diameter or object_diameter(gt.object_points)
        _score_objects(objects, gt, per_frame)
    summary: dict[str, float | int | None] = {"frames": n}
    for name, values in per_frame.items():
        scored = values[np.isfinite(values)]
        summary[name] = float(scored.mean()) if scored.size else None
    summary["hand_frames"] = int(np.isfinite(per_frame["mpjpe_mm"]).sum())
    adds = per_frame["add_mm"]
    scored = np.isfinite(adds)
    summary["object_frames"] = int(scored.sum())
    if diameter is not None and gt.object_translation is not None:
        with_gt = np.isfinite(gt.object_translation).all(axis=1)
        hits = scored & (adds < ADD_FRACTION * diameter * 1000.0)
        # Frames with a true pose but no predicted one count as misses.
        summary["add_01d"] = float(hits.sum() / with_gt.sum()) if with_gt.any() else None
        summary["object_diameter_mm"] = diameter * 1000.0
    summary["object_metric"] = "ADD-S" if gt.object_symmetric else "ADD"
    result.summary = summary
    return result


def _rows_of(table: pa.Table, video_id: str) -> pa.Table:
    """The video's observed rows: interpolated ones fill gaps, the model predicted nothing."""
    ids = np.asarray(table.column("video_id").to_pylist(), dtype=object)
    observed = ~column_numpy(table.column("interpolated")).astype(bool)
    return table.take(np.flatnonzero((ids == video_id) & observed))


def _score_hands(hands: pa.Table, gt: GroundTruth, per_frame: dict[str, np.ndarray]) -> None:
    frames = hands.column("frame_index").to_numpy()
    joints = column_numpy(hands.column("joints3d"))
    verts = (column_numpy(hands.column("vertices")) if "vertices" in hands.column_names
             else None)
    for i, frame in enumerate(gt.frame_index):
        true = gt.hand_joints3d[i]
        rows = np.flatnonzero(frames == frame)
        if len(rows) == 0 or not np.isfinite(true).all():
            continue
        errors = np.linalg.norm(joints[rows] - true, axis=-1).mean(axis=1)
        row = rows[np.argmin(errors)]
        pred = joints[row]
        per_frame["mpjpe_mm"][i] = 1000.0 * errors.min()
        per_frame["rr_mpjpe_mm"][i] = 1000.0 * np.linalg.norm(
            (pred - pred[0]) - (true - true[0]), axis=-1).mean()
        per_frame["pa_mpjpe_mm"][i] = 1000.0 * np.linalg.norm(
            procrustes_align(pred, true) - true, axis=-1).mean()
        if verts is not None and gt.hand_vertices is not None and np.isfinite(verts[row]).all():
            true_v = gt.hand_vertices[i]
            aligned = procrustes_align(verts[row], true_v)
            per_frame["pa_mpvpe_mm"][i] = 1000.0 * np.linalg.norm(aligned - true_v,
                                                                  axis=-1).mean()
            for t in F_THRESHOLDS_MM:
                per_frame[f"f{int(t)}"][i] = f_score(aligned, true_v, t / 1000.0)


def _score_objects(objects: pa.Table, gt: GroundTruth, per_frame: dict[str, np.ndarray]) -> None:
    posed = objects.filter(objects.column("pose_valid"))
    frames = posed.column("frame_index").to_numpy()
    rotation = quaternion_to_matrix(column_numpy(posed.column("rotation"))) if len(
        frames) else np.zeros((0, 3, 3))
    translation = column_numpy(posed.column("translation"))
    for i, frame in enumerate(gt.frame_index):
        t_gt = gt.object_translation[i]
        rows = np.flatnonzero(frames == frame)
        if len(rows) == 0 or not np.isfinite(t_gt).all():
            continue
        errors = [add_error(gt.object_points, rotation[r], translation[r],
                            gt.object_rotation[i], t_gt, gt.object_symmetric) for r in rows]
        per_frame["add_mm"][i] = 1000.0 * min(errors)
