"""Object 6D pose from HFL-Net's vote grid: candidate selection, then EPnP inside RANSAC.

The object head votes, per 32x32 grid cell and per control point (21: the corners, edge
midpoints and centre of the object's 3D box), a confidence and a 2D position (fractions of
the object box). The reference test-time decoding keeps, for up to 10 rounds, each control
point's most confident remaining cell when its confidence is strictly above 0.5, then fits
R, t with OpenCV's ``solvePnPRansac`` (EPnP, default RANSAC settings, no distortion).

The selection runs batched in torch (on the inference device, so that actors ship a few
candidates, not grids); the PnP step runs per sample in numpy/OpenCV.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import NamedTuple

import cv2
import numpy as np
import torch

from hflpipe.model.crop import crop_to_frame
from hflpipe.model.geometry import mirror_points2d, project, to_camera

log = logging.getLogger(__name__)

#: Control points per object (8 corners, 12 edge midpoints, centre).
NUM_CONTROL_POINTS = 21
#: Selection rounds of the reference decoder ("bestCnt").
SELECTION_ROUNDS = 10
#: A candidate is kept when its confidence is strictly above this.
CONFIDENCE_THRESHOLD = 0.5
#: Fewer candidates than this give the default pose (EPnP needs at least 4; the reference 6).
MIN_PNP_POINTS = 6


class VoteCandidates(NamedTuple):
    """The best cells of a batch of vote grids, round by round.

    Attributes:
        cell: ``(B, R, K)`` int64, ``row * W + col`` of each round's best cell per control point.
        confidence: ``(B, R, K)`` its confidence (before the round zeroed it).
        valid: ``(B, R, K)`` bool, confidence strictly above the threshold. Valid entries of a
            control point form a prefix of the rounds.
        positions: ``(B, R, K, 2)`` the cells' votes ``(x, y)`` as fractions of the object
            box, or None when no vote grids were given.
    """

    cell: torch.Tensor
    confidence: torch.Tensor
    valid: torch.Tensor
    positions: torch.Tensor | None


@dataclass(frozen=True, eq=False)
class ObjectPose:
    """One object's pose, camera frame of the intrinsics used (OpenCV axes, metres).

    Attributes:
        R: ``(3, 3)`` float64 rotation, object model -> camera.
        t: ``(3,)`` float64 translation, metres.
        points2d: ``(M, 2)`` the candidates given to PnP, in the pixels PnP ran in (frame
            pixels when an affine was given, else crop pixels). As in the reference, when
            there are fewer than 6 candidates they are left relative to the object box's
            top-left corner.
        points3d: ``(M, 3)`` float64 control points matching ``points2d``.
        keypoint_index: ``(M,)`` int64 control point of each candidate.
        inliers: ``(M,)`` bool, RANSAC inliers (all False on fallback).
        reprojection_error: mean distance in pixels between the inliers and their
            reprojection with R, t (NaN on fallback).
        fallback: True when the default pose ``R = I``, ``t = (0, 0, 1)`` was returned
            (too few candidates or PnP failed).
    """

    R: np.ndarray
    t: np.ndarray
    points2d: np.ndarray
    points3d: np.ndarray
    keypoint_index: np.ndarray
    inliers: np.ndarray
    reprojection_error: float
    fallback: bool

    @property
    def num_points(self) -> int:
        """Number of candidates M."""
        return int(self.points2d.shape[0])

    @property
    def num_inliers(self) -> int:
        """Number of RANSAC inliers."""
        return int(self.inliers.sum())


def _cells_last(grid: torch.Tensor, name: str) -> torch.Tensor:
    """``(B, H, W, K)`` or ``(B, K, H, W)`` -> ``(B, H*W, K)`` (row-major cells)."""
    if grid.ndim != 4:
        raise ValueError(f"{name} must have shape (B, H, W, 21) or (B, 21, H, W), "
                         f"got {tuple(grid.shape)}")
    if grid.shape[3] == NUM_CONTROL_POINTS:
        return grid.flatten(1, 2)
    if grid.shape[1] == NUM_CONTROL_POINTS:
        return grid.flatten(2, 3).transpose(1, 2)
    raise ValueError(f"{name} must have {NUM_CONTROL_POINTS} control points on axis 1 or 3, "
                     f"got {tuple(grid.shape)}")


def select_vote_candidates(
    conf: torch.Tensor,
    pred_x: torch.Tensor | None = None,
    pred_y: torch.Tensor | None = None,
    *,
    rounds: int = SELECTION_ROUNDS,
    threshold: float = CONFIDENCE_THRESHOLD,
) -> VoteCandidates:
    """Pick each control point's best cells, round by round, as the reference decoder does.

    Each round takes, per control point, the cell of highest remaining confidence (the
    first in row-major order on ties), marks it valid when its confidence is strictly
    above ``threshold``, and zeroes it for the next rounds. Batched; runs on the grids'
    device; the inputs are not modified.

    Args:
        conf: ``(B, H, W, 21)`` or ``(B, 21, H, W)`` confidences.
        pred_x, pred_y: vote positions in the same layout as ``conf`` (fractions of the
            object box), or None.
        rounds: number of rounds R (capped at H*W).
        threshold: confidence a candidate must exceed.

    Returns:
        :class:`VoteCandidates` with ``(B, R, 21)`` fields.
    """
    if not isinstance(conf, torch.Tensor):
        raise TypeError(f"conf must be a torch tensor, got {type(conf).__name__}")
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise ValueError(f"rounds must be a positive int, got {rounds!r}")
    if (pred_x is None) != (pred_y is None):
        raise ValueError("pred_x and pred_y must be given together")
    scores = _cells_last(conf, "conf").clone()
    rounds = min(rounds, scores.shape[1])
    cells, values = [], []
    for _ in range(rounds):
        best_value, best_cell = scores.max(dim=1)
        cells.append(best_cell)
        values.append(best_value)
        scores.scatter_(1, best_cell[:, None, :], 0.0)
    cell = torch.stack(cells, dim=1)
    confidence = torch.stack(values, dim=1)
    positions = None
    if pred_x is not None and pred_y is not None:
        positions = torch.stack([gather_cells(pred_x, cell), gather_cells(pred_y, cell)], dim=-1)
    return VoteCandidates(cell, confidence, confidence > threshold, positions)


def gather_cells(grid: torch.Tensor, cell: torch.Tensor) -> torch.Tensor:
    """Values of a ``(B, H, W, 21)`` / ``(B, 21, H, W)`` grid at ``(B, R, 21)`` cells.

    Returns:
        ``(B, R, 21)``.
    """
    flat = _cells_last(grid, "grid")
    if cell.ndim != 3 or cell.shape[0] != flat.shape[0] or cell.shape[2] != flat.shape[2]:
        raise ValueError(f"cell shape {tuple(cell.shape)} does not match grid {tuple(grid.shape)}")
    return flat.gather(1, cell)


def _default_pose(points2d: np.ndarray, points3d: np.ndarray,
                  keypoints: np.ndarray) -> ObjectPose:
    return ObjectPose(
        R=np.eye(3), t=np.array([0.0, 0.0, 1.0]), points2d=points2d, points3d=points3d,
        keypoint_index=keypoints, inliers=np.zeros(len(points2d), dtype=bool),
        reprojection_error=float("nan"), fallback=True,
    )


def _check_matrix(value: np.ndarray, shape: tuple[int, ...], name: str) -> np.ndarray:
    arr = np.asarray(value)
    if arr.shape != shape or not np.issubdtype(arr.dtype, np.number):
        raise ValueError(f"{name} must be a {shape} numeric array, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} has non-finite entries")
    return arr


def solve_object_pose(
    candidates: np.ndarray,
    valid: np.ndarray,
    K: np.ndarray,
    control_points: np.ndarray,
    affine: np.ndarray | None = None,
    mirror_width: int | None = None,
) -> ObjectPose:
    """R, t of one object from its selected vote candidates (crop pixels).

    Args:
        candidates: ``(R, 21, 2)`` candidate positions in crop pixels, round by round.
        valid: ``(R, 21)`` bool, which candidates to use.
        K: ``(3, 3)`` intrinsics: of the frame when ``affine`` is given, else of the crop.
        control_points: ``(21, 3)`` the object's control points, metres.
        affine: ``(3, 3)`` frame -> crop transform; candidates go back to frame pixels with
            its inverse before PnP.
        mirror_width: left hand: after that, ``x -> mirror_width - x - 1``.

    Returns:
        :class:`ObjectPose`; candidates ordered round by round, control points 0..20
        within a round.
    """
    points = np.asarray(candidates)
    mask = np.asarray(valid)
    if points.ndim != 3 or points.shape[1:] != (NUM_CONTROL_POINTS, 2):
        raise ValueError(f"candidates must have shape (R, 21, 2), got {points.shape}")
    if mask.shape != points.shape[:2] or mask.dtype != np.bool_:
        raise ValueError(f"valid must be a bool array of shape {points.shape[:2]}, "
                         f"got {mask.dtype} {mask.shape}")
    K = _check_matrix(K, (3, 3), "K")
    if not np.issubdtype(K.dtype, np.floating):
        K = K.astype(np.float64)
    control = _check_matrix(control_points, (NUM_CONTROL_POINTS, 3), "control_points")
    control = control.astype(np.float64)
    if affine is not None:
        affine = _check_matrix(affine, (3, 3), "affine")
    if mirror_width is not None and (isinstance(mirror_width, bool)
                                     or not isinstance(mirror_width, int | np.integer)
                                     or mirror_width <= 0):
        raise ValueError(f"mirror_width must be a positive int, got {mirror_width!r}")

    rounds_idx, keypoints = np.nonzero(mask)
    points2d = points[rounds_idx, keypoints]
    points3d = control[keypoints]
    keypoints = keypoints.astype(np.int64)
    if len(points2d) < MIN_PNP_POINTS:
        return _default_pose(points2d, points3d, keypoints)
    if affine is not None:
        points2d = crop_to_frame(points2d, affine)
    if mirror_width is not None:
        points2d = mirror_points2d(points2d, int(mirror_width))
    try:
        ok, rvec, tvec, inlier_idx = cv2.solvePnPRansac(
            points3d, points2d, K, None, flags=cv2.SOLVEPNP_EPNP
        )
    except cv2.error as err:
        log.debug("solvePnPRansac failed on %d points: %s", len(points2d), err)
        ok = False
    if not ok:
        return _default_pose(points2d, points3d, keypoints)
    R = cv2.Rodrigues(rvec)[0]
    t = tvec.reshape(3).astype(np.float64)
    inliers = np.zeros(len(points2d), dtype=bool)
    if inlier_idx is not None:
        inliers[inlier_idx.reshape(-1)] = True
    return ObjectPose(
        R=R, t=t, points2d=points2d, points3d=points3d, keypoint_index=keypoints,
        inliers=inliers,
        reprojection_error=reprojection_error(points3d[inliers], points2d[inliers], R, t, K),
        fallback=False,
    )


def reprojection_error(points3d: np.ndarray, points2d: np.ndarray, R: np.ndarray,
                       t: np.ndarray, K: np.ndarray) -> float:
    """Mean pixel distance between ``(N, 2)`` points and ``(N, 3)`` points projected with R, t, K.

    NaN for no points.
    """
    if len(points3d) == 0:
        return float("nan")
    uv = project(to_camera(points3d, np.asarray(R, dtype=np.float64), t), K, clamp_depth=False)
    return float(np.linalg.norm(uv - points2d, axis=1).mean())


def decode_object_pose(
    conf: np.ndarray,
    pred_x: np.ndarray,
    pred_y: np.ndarray,
    object_box: np.ndarray,
    K: np.ndarray,
    control_points: np.ndarray,
    affine: np.ndarray | None = None,
    mirror_width: int | None = None,
) -> ObjectPose:
    """The reference test-time object pose of one sample, from its vote grids.

    Args:
        conf, pred_x, pred_y: ``(32, 32, 21)`` (or ``(21, 32, 32)``) confidences and vote
            positions (fractions of the object box); not modified.
        object_box: ``(4,)`` xyxy crop pixels, the object box given to the network.
        K: ``(3, 3)`` frame intrinsics when ``affine`` is given, crop intrinsics otherwise.
        control_points: ``(21, 3)`` the object's control points, metres.
        affine: ``(3, 3)`` frame -> crop transform, or None to stay in crop pixels.
        mirror_width: left hand: frame width for ``x -> width - x - 1``, or None.

    Returns:
        :class:`ObjectPose`.
    """
    grids = []
    for name, grid in (("conf", conf), ("pred_x", pred_x), ("pred_y", pred_y)):
        arr = np.asarray(grid)
        if arr.ndim != 3 or arr.shape != np.asarray(conf).shape:
            raise ValueError(f"{name} must be one sample's (32, 32, 21) grid shaped like conf, "
                             f"got {arr.shape}")
        grids.append(torch.from_numpy(arr.astype(np.float32))[None])
    box = _check_matrix(object_box, (4,), "object_box").astype(np.float32)
    cand = select_vote_candidates(grids[0])
    fractions = torch.stack([gather_cells(grids[1], cand.cell), gather_cells(grids[2], cand.cell)],
                            dim=-1)[0].numpy()
    # Float32 like the reference: scale by the box size, then shift by its corner.
    relative = fractions * np.array([box[2] - box[0], box[3] - box[1]])
    valid = cand.valid[0].numpy()
    pose = solve_object_pose(relative + box[:2], valid, K, control_points, affine, mirror_width)
    if pose.fallback and pose.num_points < MIN_PNP_POINTS:
        pose = dataclasses.replace(pose, points2d=relative[valid])
    return pose
