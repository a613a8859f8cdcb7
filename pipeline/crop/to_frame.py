"""Mapping per-crop results back to frame pixels."""

from __future__ import annotations

import numpy as np

from hflpipe.model.crop import crop_to_frame
from hflpipe.model.geometry import mirror_points2d


def crops_to_frame(
    points: np.ndarray, affine: np.ndarray, mirrored: np.ndarray, frame_width: np.ndarray
) -> np.ndarray:
    """(N, P, 2) crop pixels -> frame pixels, undoing each crop's affine, then its mirroring."""
    out = np.empty(points.shape, dtype=np.float64)
    for i in range(len(points)):
        frame_points = crop_to_frame(points[i].astype(np.float64), affine[i])
        out[i] = mirror_points2d(frame_points, int(frame_width[i])) if mirrored[i] else frame_points
    return out
