"""Camera geometry in numpy, one function for each job: projection, mirroring, rotations.

Conventions shared by the model, the pipeline and the tools:

- pixels: x right, y down, the centre of the top-left pixel at (0, 0), so mirroring a
  frame ``width`` pixels wide maps column x to ``width - 1 - x`` (the reference HFL-Net
  loaders' convention);
- camera frame: OpenCV (x right, y down, z forward), metres; mirroring the image mirrors
  the scene about the camera's y-z plane (x to -x), which is exact when the principal
  point sits at the image centre and what the reference does for left hands;
- rotations: quaternions (w, x, y, z); MANO poses axis-angle, 3 values per joint.

Torch versions of the rotation conversions, for use inside the network, are in
:mod:`hflpipe.model.rotations`.
"""

from __future__ import annotations

import numpy as np

#: Depth below which a point counts as on the camera plane (avoids dividing by zero).
MIN_DEPTH_M = 1e-9


def project(points: np.ndarray, K: np.ndarray, clamp_depth: bool = True) -> np.ndarray:
    """Pinhole projection of (..., 3) camera-frame points to (..., 2) float64 pixels.

    ``K`` is one (3, 3) intrinsics matrix (no skew). With ``clamp_depth``, points at or
    behind the camera are projected as if at depth :data:`MIN_DEPTH_M` (drawing, fitting);
    without, they are divided by their own depth, as a reprojection error measures them.
    """
    P = np.asarray(points, dtype=np.float64)
    K = np.asarray(K, dtype=np.float64)
    z = np.maximum(P[..., 2], MIN_DEPTH_M) if clamp_depth else P[..., 2]
    return np.stack([K[0, 0] * P[..., 0] / z + K[0, 2], K[1, 1] * P[..., 1] / z + K[1, 2]], -1)


def to_camera(points: np.ndarray, R: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Object-frame points under one pose or a sequence of poses, in the camera frame.

    Args:
        points: (m, 3) object-frame points.
        R: (3, 3) or (n, 3, 3) object-to-camera rotations. t: (3,) or (n, 3) translations.

    Returns:
        (m, 3) or (n, m, 3) float64 camera-frame points, ``R @ p + t`` for each point.
    """
    P = np.asarray(points, dtype=np.float64)
    return np.einsum("...ij,mj->...mi", R, P) + np.asarray(t, dtype=np.float64)[..., None, :]


def mirror_points2d(points: np.ndarray, width: int) -> np.ndarray:
    """(..., 2) pixel points mirrored left-right in a frame ``width`` wide: x -> width - 1 - x.

    The same map takes results on the mirrored frame back to the original frame. The result
    is at least float32, and float32 points are mirrored in float32 arithmetic, as the
    reference does: the crop's nearest-neighbour sampling depends on the last bit.
    """
    pts = np.array(points, dtype=_at_least_float32(points))
    if pts.shape[-1] != 2:
        raise ValueError(f"points must have shape (..., 2), got {pts.shape}")
    pts[..., 0] = np.float32(width) - pts[..., 0] - 1
    return pts


def mirror_boxes(boxes: np.ndarray, width: int) -> np.ndarray:
    """(..., 4) xyxy boxes mirrored left-right in a frame ``width`` wide (still xyxy).

    Each box's right edge becomes the left one; number types as :func:`mirror_points2d`.
    """
    src = np.asarray(boxes, dtype=_at_least_float32(boxes))
    if src.shape[-1] != 4:
        raise ValueError(f"boxes must have shape (..., 4), got {src.shape}")
    out = src.copy()
    out[..., 0] = np.float32(width) - src[..., 2] - 1
    out[..., 2] = np.float32(width) - src[..., 0] - 1
    return out


def mirror_points3d(points: np.ndarray) -> np.ndarray:
    """(..., 3) camera-frame points (or root-relative offsets) mirrored: x -> -x, float64."""
    out = np.array(points, dtype=np.float64, copy=True)
    out[..., 0] *= -1.0
    return out


def mirror_mano_pose(pose_aa: np.ndarray) -> np.ndarray:
    """Axis-angle MANO pose (..., 3k) of the mirrored hand: negate y and z of every axis.

    Mirroring about the y-z plane maps a rotation matrix R to M R M with
    M = diag(-1, 1, 1), which for axis-angle (x, y, z) gives (x, -y, -z). This turns
    right-hand-model parameters estimated on a mirrored image into the parameters of the
    (left) hand in the original image, in the convention the MANO left-hand model uses.
    """
    out = np.array(pose_aa, dtype=np.float64, copy=True)
    out[..., 1::3] *= -1.0
    out[..., 2::3] *= -1.0
    return out


def quaternion_to_matrix(quat: np.ndarray) -> np.ndarray:
    """(..., 4) quaternions (w, x, y, z), any norm, to (..., 3, 3) float64 rotation matrices."""
    q = np.asarray(quat, dtype=np.float64)
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    w, x, y, z = np.moveaxis(q, -1, 0)
    return np.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ], axis=-1).reshape(*q.shape[:-1], 3, 3)


def _at_least_float32(values: np.ndarray) -> np.dtype:
    return np.result_type(np.asarray(values).dtype, np.float32)
