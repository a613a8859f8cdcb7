"""Display orientation: turning decoded frames the way the container says players show them.

Phones store frames as the sensor reads them and put a display matrix in the container
(MP4 ``tkhd``, FFmpeg's ``DISPLAYMATRIX`` side data) saying how to turn them. Only the
eight turns that map the pixel grid onto itself are supported: rotations by multiples
of 90 degrees, each optionally mirrored. They are applied to decoded frames as numpy
views (a transpose and flips), so the only cost is the copy a chunk makes anyway.

An orientation is kept as a 2x2 matrix ``m`` of -1/0/1 acting on pixel coordinates
(x right, y down): a stored pixel at ``(x, y)`` is displayed at ``m @ (x, y)``, shifted
back into the frame.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: FFmpeg stores the display matrix as 9 int32 in 16.16 fixed point (the last column 2.30).
_FIXED_ONE = 1 << 16


class UnsupportedOrientation(ValueError):
    """A display matrix that is not a multiple of 90 degrees (optionally mirrored)."""


@dataclass(frozen=True)
class Orientation:
    """How stored frames are turned for display; ``matrix`` is ``((a, b), (c, d))``."""

    matrix: tuple[tuple[int, int], tuple[int, int]] = ((1, 0), (0, 1))

    @classmethod
    def from_display_matrix(cls, values: Sequence[int]) -> Orientation:
        """The orientation of FFmpeg's 9-value display matrix (``AV_PKT_DATA_DISPLAYMATRIX``).

        FFmpeg maps a point by ``x' = a*x + c*y``, ``y' = b*x + d*y`` with the values
        ``a, b, _, c, d, ...``. Raises :class:`UnsupportedOrientation` for any other
        angle than a multiple of 90 degrees and for scaling.
        """
        if len(values) != 9:
            raise UnsupportedOrientation(f"a display matrix has 9 values, got {len(values)}")
        a, b, c, d = (values[i] / _FIXED_ONE for i in (0, 1, 3, 4))
        signs = np.rint([[a, c], [b, d]]).astype(int)
        if not np.allclose([[a, c], [b, d]], signs, atol=1e-3) or abs(
                round(np.linalg.det(signs))) != 1 or np.count_nonzero(signs) != 2:
            angle = math.degrees(math.atan2(b, a))
            raise UnsupportedOrientation(
                f"the display matrix turns frames by {angle:.1f} degrees; only multiples of "
                "90 degrees (optionally mirrored) are supported")
        return cls(_as_tuple(signs))

    @property
    def is_identity(self) -> bool:
        return self.matrix == ((1, 0), (0, 1))

    @property
    def swaps_axes(self) -> bool:
        """Whether width and height trade places (a quarter turn)."""
        return self.matrix[0][0] == 0

    @property
    def mirrored(self) -> bool:
        """Whether the display is a mirror image of the stored frame (after the rotation)."""
        return round(np.linalg.det(np.asarray(self.matrix))) < 0

    @property
    def rotation_deg(self) -> int:
        """Clockwise rotation on screen, 0/90/180/270, applied before the mirror (if any)."""
        rotation = np.asarray(self.matrix)
        if self.mirrored:
            rotation = np.diag([-1, 1]) @ rotation
        return round(math.degrees(math.atan2(rotation[1, 0], rotation[0, 0]))) % 360

    def displayed_size(self, width: int, height: int) -> tuple[int, int]:
        """``(width, height)`` of a displayed frame stored as ``width`` x ``height``."""
        return (height, width) if self.swaps_axes else (width, height)

    def after(self, first: Orientation) -> Orientation:
        """The orientation that applies ``first``, then this one."""
        return Orientation(_as_tuple(np.asarray(self.matrix) @ np.asarray(first.matrix)))

    def inverse(self) -> Orientation:
        # Signed permutation matrices are orthogonal.
        return Orientation(_as_tuple(np.asarray(self.matrix).T))

    def apply(self, frames: np.ndarray) -> np.ndarray:
        """``(..., H, W, C)`` stored frames as a view ``(..., H', W', C)`` turned for display."""
        (a, b), (c, _) = self.matrix
        if self.swaps_axes:
            turned = np.swapaxes(frames, -3, -2)
            if b < 0:
                turned = np.flip(turned, -2)
            if c < 0:
                turned = np.flip(turned, -3)
            return turned
        if a < 0:
            frames = np.flip(frames, -2)
        if self.matrix[1][1] < 0:
            frames = np.flip(frames, -3)
        return frames


def rotation_only(orientation: Orientation) -> Orientation:
    """The rotation FFmpeg 4 (decord's) reads from a display matrix: the angle of its
    first column, with any mirror left out."""
    (a, _), (c, _) = orientation.matrix
    turns = round(math.degrees(math.atan2(c, a)) / 90) % 4
    cos, sin = [(1, 0), (0, 1), (-1, 0), (0, -1)][turns]
    return Orientation(((cos, -sin), (sin, cos)))


def _as_tuple(matrix: np.ndarray) -> tuple[tuple[int, int], tuple[int, int]]:
    return ((int(matrix[0, 0]), int(matrix[0, 1])), (int(matrix[1, 0]), int(matrix[1, 1])))
