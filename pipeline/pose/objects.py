"""Object results per frame: 2D keypoints in the frame and 6D pose by PnP.

An object can be held by two hands, and then it appears in two crops on the
same frame; its row comes from the crop whose PnP has the most inliers (then
the most confident keypoints).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.spatial.transform import Rotation

from hflpipe.model.control_points import load_control_points
from hflpipe.model.object_pose import solve_object_pose
from hflpipe.pipeline.crop.batch import HandObjectPair
from hflpipe.pipeline.crop.to_frame import crops_to_frame

#: A pose needs at least this many RANSAC inliers to count as valid.
MIN_INLIERS = 6
#: A pose must put the object in front of the camera and closer than this (metres):
#: EPnP on a handful of near-collinear votes can return any depth, even 1e20 m.
MAX_DEPTH_M = 10.0


def solve_object_poses(
    jobs: Sequence[HandObjectPair], crops: dict[str, np.ndarray], K: np.ndarray,
    object_name: str | None, control_points: np.ndarray | None,
) -> dict[str, np.ndarray]:
    """One row per (frame, object track) seen in a crop; columns as the ``objects`` table's.

    ``object_name`` and ``control_points`` ((21, 3) metres): the run's object, used where
    the detector names none.
    """
    rows = [i for i, job in enumerate(jobs) if job.obj is not None]
    if not rows:
        return {"track_id": np.zeros(0, np.int32)}
    idx = np.array(rows)
    mirrored = crops["mirrored"][idx].astype(bool)
    keypoints = crops_to_frame(crops["obj_keypoints"][idx], crops["affine"][idx], mirrored,
                         crops["frame_width"][idx])
    n = len(rows)
    quat = np.full((n, 4), np.nan)
    trans = np.full((n, 3), np.nan)
    inliers = np.full(n, np.nan)  # NaN: PnP not run (no control points for the object)
    error = np.full(n, np.nan, np.float32)
    valid = np.zeros(n, bool)
    names: list[str | None] = []
    for k, i in enumerate(rows):
        name, points = _control_points(jobs[i].obj.object_name, object_name, control_points)
        names.append(name)
        if points is None:
            continue
        pose = solve_object_pose(
            crops["obj_candidates"][i], crops["obj_candidate_valid"][i].astype(bool), K, points,
            affine=crops["affine"][i],
            mirror_width=int(crops["frame_width"][i]) if mirrored[k] else None,
        )
        inliers[k] = pose.num_inliers
        error[k] = pose.reprojection_error
        valid[k] = (not pose.fallback and pose.num_inliers >= MIN_INLIERS
                    and 0.0 < pose.t[2] <= MAX_DEPTH_M)
        if valid[k]:
            quat[k] = Rotation.from_matrix(pose.R).as_quat(scalar_first=True)
            trans[k] = pose.t
    columns = {
        "frame_index": np.array([jobs[i].frame_index for i in rows], np.int64),
        "timestamp_s": crops["timestamp_s"][idx].astype(np.float64),
        "track_id": np.array([jobs[i].obj.track_id for i in rows], np.int32),
        "object_name": np.array(names, dtype=object),
        "box": np.stack([jobs[i].obj.box for i in rows]).astype(np.float32),
        "detector_score": np.array([jobs[i].obj.score for i in rows], np.float32),
        "keypoints2d": keypoints,
        "keypoint_confidence": crops["obj_keypoint_confidence"][idx].astype(np.float32),
        "rotation": quat,
        "translation": trans,
        "pnp_inliers": inliers,
        "reprojection_error_px": error,
        "pose_valid": valid,
    }
    return _best_per_frame_and_track(columns)


def _control_points(
    detected_name: str | None, object_name: str | None, control_points: np.ndarray | None
) -> tuple[str | None, np.ndarray | None]:
    """The object's name and control points: a name the detector gives wins if it is known."""
    if detected_name:
        try:
            return detected_name, load_control_points(detected_name)
        except ValueError:
            return detected_name, None
    return object_name, control_points


def _best_per_frame_and_track(columns: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    score = np.nan_to_num(columns["pnp_inliers"]) + columns["keypoint_confidence"].mean(axis=1)
    order = np.lexsort((-score, columns["track_id"], columns["frame_index"]))
    frame, track = columns["frame_index"][order], columns["track_id"][order]
    first = np.ones(len(order), bool)
    first[1:] = (frame[1:] != frame[:-1]) | (track[1:] != track[:-1])
    keep = order[first]
    return {name: values[keep] for name, values in columns.items()}
