"""Hand results from crop space to the camera frame.

HFL-Net predicts 2D joints in the crop and 3D joints relative to the wrist
(metres). The wrist's position in the camera frame is not predicted; we fit it
so that the 3D joints project onto the 2D joints through the camera
intrinsics (a linear least-squares solve, refined by Gauss-Newton on the
reprojection error).
"""

from __future__ import annotations

import numpy as np

# Re-exported: run/video.py and smooth/tables.py import them from here.


#: Depth used when the fit is degenerate (all weights zero): an arm's length.
FALLBACK_DEPTH_M = 0.5


def fit_root_translation(
    joints_rel: np.ndarray,
    joints2d: np.ndarray,
    K: np.ndarray,
    weights: np.ndarray | None = None,
    iterations: int = 5,
) -> np.ndarray:
    """Translation ``t`` with ``project(K, joints_rel + t) ~= joints2d``.

    Args:
        joints_rel: (N, J, 3) joints relative to the root, metres, camera axes.
        joints2d: (N, J, 2) observed joints, pixels.
        K: (3, 3) or (N, 3, 3) intrinsics.
        weights: (N, J) non-negative per-joint weights (e.g. heatmap confidence).
        iterations: Gauss-Newton refinements of the reprojection error.

    Returns:
        (N, 3) float64 translations in metres; depth is kept positive.
    """
    X = np.asarray(joints_rel, dtype=np.float64)
    uv = np.asarray(joints2d, dtype=np.float64)
    if X.ndim != 3 or X.shape[-1] != 3 or uv.shape != (*X.shape[:2], 2):
        raise ValueError(f"need joints_rel (N,J,3) and joints2d (N,J,2), got {X.shape}, {uv.shape}")
    n, j = X.shape[:2]
    Ks = np.broadcast_to(np.asarray(K, dtype=np.float64), (n, 3, 3))
    w = np.ones((n, j)) if weights is None else np.clip(np.asarray(weights, np.float64), 0, None)
    fx, fy = Ks[:, 0, 0, None], Ks[:, 1, 1, None]
    cx, cy = Ks[:, 0, 2, None], Ks[:, 1, 2, None]
    # Normalised image coordinates make the linear system well scaled.
    xn = (uv[..., 0] - cx) / fx
    yn = (uv[..., 1] - cy) / fy

    # From x_n (Z + tz) = X + tx: tx - x_n tz = x_n Z - X (and the same for y).
    A = np.zeros((n, 2 * j, 3))
    b = np.zeros((n, 2 * j))
    A[:, 0::2, 0] = 1.0
    A[:, 0::2, 2] = -xn
    b[:, 0::2] = xn * X[..., 2] - X[..., 0]
    A[:, 1::2, 1] = 1.0
    A[:, 1::2, 2] = -yn
    b[:, 1::2] = yn * X[..., 2] - X[..., 1]
    sw = np.sqrt(np.repeat(w, 2, axis=1))
    t = _weighted_lstsq(A, b, sw)
    degenerate = w.sum(axis=1) <= 0
    t[degenerate] = (0.0, 0.0, FALLBACK_DEPTH_M)

    for _ in range(iterations):
        P = X + t[:, None, :]
        z = np.maximum(P[..., 2], 1e-6)
        ru = fx * P[..., 0] / z + cx - uv[..., 0]
        rv = fy * P[..., 1] / z + cy - uv[..., 1]
        J = np.zeros((n, 2 * j, 3))
        J[:, 0::2, 0] = fx / z
        J[:, 0::2, 2] = -fx * P[..., 0] / z**2
        J[:, 1::2, 1] = fy / z
        J[:, 1::2, 2] = -fy * P[..., 1] / z**2
        r = np.empty((n, 2 * j))
        r[:, 0::2], r[:, 1::2] = ru, rv
        step = _weighted_lstsq(J, -r, sw)
        t = np.where(degenerate[:, None], t, t + step)
        # A hand behind the camera is never the right answer; keep the solve in front.
        t[:, 2] = np.maximum(t[:, 2] + X[..., 2].min(axis=1), 1e-3) - X[..., 2].min(axis=1)
    return t


def _weighted_lstsq(A: np.ndarray, b: np.ndarray, sw: np.ndarray) -> np.ndarray:
    """Batched weighted least squares via the normal equations (3 unknowns, well conditioned)."""
    Aw = A * sw[..., None]
    bw = b * sw
    AtA = np.einsum("nki,nkj->nij", Aw, Aw) + 1e-12 * np.eye(3)
    Atb = np.einsum("nki,nk->ni", Aw, bw)
    return np.linalg.solve(AtA, Atb[..., None])[..., 0]
