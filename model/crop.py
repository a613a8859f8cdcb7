"""Crop geometry: from a full frame and a hand box and an object box to the network input.

The reference test-time loaders (DexYCB and HO3D) build one square crop per hand-object
pair:

1. each box is re-centred on its centre truncated to integer pixels and scaled about it
   (x1.5 for the crop region; x1.1 for the hand box and x1.0 for the object box given to
   the network);
2. the union of the two x1.5 boxes is clamped to the frame, its centre truncated to
   integers, and a square of side ``max(width, height)`` around that centre is mapped to
   ``size x size`` (the centre to ``(size/2, size/2)``);
3. the image is resampled with Pillow's affine transform (nearest neighbour, black
   outside the frame).

Pixel convention: ``x`` right, ``y`` down, in the frame's pixel grid as the reference
uses it (mirroring maps column ``x`` to ``width - x - 1``).

The arithmetic below keeps the reference's number types on purpose (float32 scalars where
it has them, Python ints where clamping yields the frame size): the crop's nearest-
neighbour sampling is sensitive to the last bit of the transform.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from hflpipe.model.geometry import mirror_boxes

#: Side of the network input in pixels.
CROP_SIZE = 256
#: Box enlargement for the crop region (hand and object).
REGION_FACTOR = 1.5
#: Box enlargement for the boxes given to the network.
HAND_BOX_FACTOR = 1.1
OBJECT_BOX_FACTOR = 1.0


@dataclass(frozen=True, eq=False)
class HandObjectCrop:
    """One hand-object pair cut out of a frame.

    Attributes:
        image: ``(size, size, 3)`` uint8 RGB network input.
        hand_box: ``(4,)`` float32 xyxy crop pixels, the hand box given to the network.
        object_box: ``(4,)`` float32 xyxy crop pixels, the object box given to the network.
        affine: ``(3, 3)`` float32, frame pixels -> crop pixels (of the mirrored frame when
            ``mirrored``).
        center: ``(2,)`` int64, centre of the square region in frame pixels.
        side: side of the square region in frame pixels.
        region: ``(4,)`` float32 xyxy frame pixels of the square region mapped to the crop.
        mirrored: whether the frame was mirrored (left hand) before cropping.
        frame_width: width of the frame in pixels (the mirror axis for mapping results back).
    """

    image: np.ndarray
    hand_box: np.ndarray
    object_box: np.ndarray
    affine: np.ndarray
    center: np.ndarray
    side: float
    region: np.ndarray
    mirrored: bool
    frame_width: int


def _check_box(box: np.ndarray | list[float], name: str) -> np.ndarray:
    arr = np.asarray(box)
    if arr.shape != (4,) or not np.issubdtype(arr.dtype, np.number):
        raise ValueError(f"{name} must be 4 numbers x0, y0, x1, y1, got shape {arr.shape}")
    arr = arr.astype(np.float32)
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} has non-finite coordinates: {arr.tolist()}")
    if arr[2] < arr[0] or arr[3] < arr[1]:
        raise ValueError(f"{name} is not xyxy with x0 <= x1 and y0 <= y1: {arr.tolist()}")
    return arr


def _check_frame(frame: np.ndarray) -> np.ndarray:
    if not isinstance(frame, np.ndarray):
        raise TypeError(f"frame must be a numpy array, got {type(frame).__name__}")
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"frame must be (H, W, 3) uint8 RGB, got {frame.shape} {frame.dtype}")
    if frame.shape[0] == 0 or frame.shape[1] == 0:
        raise ValueError(f"frame is empty: {frame.shape}")
    return frame


def scale_box(box: np.ndarray, factor: float) -> np.ndarray:
    """Re-centre a box on its integer-truncated centre and scale it about that centre.

    Args:
        box: ``(4,)`` xyxy pixels.
        factor: scale of width and height.

    Returns:
        ``(4,)`` float32 xyxy pixels.
    """
    x0, y0, x1, y1 = _check_box(box, "box")
    center = np.asarray([int((x1 + x0) / 2), int((y1 + y0) / 2)])
    half = np.asarray([(x1 - x0) * factor / 2, (y1 - y0) * factor / 2])
    return np.array([*(center - half), *(center + half)], dtype=np.float32)


def fused_square(
    hand_region: np.ndarray, object_region: np.ndarray, frame_size: tuple[int, int]
) -> tuple[np.ndarray, float]:
    """The square around two boxes that the crop covers.

    Args:
        hand_region, object_region: ``(4,)`` float32 xyxy frame pixels (already enlarged).
        frame_size: ``(width, height)`` of the frame in pixels.

    Returns:
        ``center`` ``(2,)`` int64 frame pixels and ``side`` in frame pixels.
    """
    width, height = int(frame_size[0]), int(frame_size[1])
    corners = np.concatenate([hand_region.reshape(2, 2), object_region.reshape(2, 2)])
    lo, hi = corners.min(0), corners.max(0)
    # Built-in max/min keep the reference's types: an int where the frame edge wins.
    x0, y0 = max(0, lo[0]), max(0, lo[1])
    x1, y1 = min(hi[0], width), min(hi[1], height)
    side = max(x1 - x0, y1 - y0)
    if not side > 0:
        raise ValueError(
            f"hand and object boxes do not overlap the {width}x{height} frame: "
            f"{hand_region.tolist()}, {object_region.tolist()}"
        )
    center = np.asarray([int((x1 + x0) / 2), int((y1 + y0) / 2)])
    return center, side


def square_affine(center: np.ndarray, side: float, size: int = CROP_SIZE) -> np.ndarray:
    """Frame -> crop transform mapping a square of ``side`` around ``center`` to ``size``.

    Returns:
        ``(3, 3)`` float32; the centre goes to ``(size/2, size/2)``, scale ``size/side``.
    """
    scale = float(size) / side
    tx = size * (-float(center[0]) / side + 0.5)
    ty = size * (-float(center[1]) / side + 0.5)
    return np.array([[scale, 0.0, tx], [0.0, scale, ty], [0.0, 0.0, 1.0]], dtype=np.float32)


def transform_points(points: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Apply a ``(3, 3)`` affine transform to ``(N, 2)`` points; returns ``(N, 2)`` float64."""
    pts = np.asarray(points)
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise ValueError(f"points must have shape (N, 2), got {pts.shape}")
    hom = np.concatenate([pts, np.ones((pts.shape[0], 1))], axis=1)
    return (np.asarray(affine) @ hom.T).T[:, :2]


def frame_to_crop(points: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """``(N, 2)`` frame pixels -> ``(N, 2)`` float64 crop pixels."""
    return transform_points(points, _check_affine(affine))


def crop_to_frame(points: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """``(N, 2)`` crop pixels -> ``(N, 2)`` float64 frame pixels.

    Uses the inverse of the float32 transform in float32, as the reference does before PnP.
    """
    return transform_points(points, np.linalg.inv(_check_affine(affine)))


def _check_affine(affine: np.ndarray) -> np.ndarray:
    arr = np.asarray(affine)
    if arr.shape != (3, 3):
        raise ValueError(f"affine must be a (3, 3) matrix, got shape {arr.shape}")
    if arr.dtype != np.float64:
        arr = arr.astype(np.float32)
    return arr


def _source_indices(coeffs: tuple[float, ...], length: int, size: int, axis: int) -> np.ndarray:
    """Frame index that Pillow's nearest sampler reads for each output pixel along one axis.

    With no rotation the sampler is separable, so a one-pixel-thin probe image holding
    ``index + 1`` (0 is the black fill) gives the exact indices that a whole-frame transform
    would read, at the cost of ``length`` pixels instead of the frame.

    Args:
        coeffs: Pillow affine data ``(a, b, c, d, e, f)``, output -> input.
        length: frame size along the axis (width for ``axis=1``, height for ``axis=0``).
        size: output size along the axis.
        axis: 1 for columns (x), 0 for rows (y).

    Returns:
        ``(size,)`` int64 indices, -1 where the sample falls outside the frame.
    """
    a, _, c, _, e, f = coeffs
    index = np.arange(1, length + 1, dtype=np.int32)
    if axis == 1:
        probe, out_size, data = index[None, :], (size, 1), (a, 0.0, c, 0.0, 0.0, 0.5)
    else:
        probe, out_size, data = index[:, None], (1, size), (0.0, 0.0, 0.5, 0.0, e, f)
    sampled = Image.fromarray(probe).transform(
        out_size, Image.Transform.AFFINE, data, resample=Image.Resampling.NEAREST
    )
    return np.asarray(sampled).reshape(size).astype(np.int64) - 1


def resample_crop(frame: np.ndarray, affine: np.ndarray, size: int = CROP_SIZE,
                  mirror: bool = False) -> np.ndarray:
    """Nearest-neighbour crop of ``frame`` through a frame -> crop ``affine`` (no rotation).

    Picks exactly the pixels that Pillow's affine transform with the inverse matrix picks
    (the reference's sampler; OpenCV's ``warpAffine`` puts pixel centres elsewhere), but
    gathers them directly, so the cost does not grow with the frame or the crop region.

    Args:
        frame: ``(H, W, 3)`` uint8 RGB.
        affine: ``(3, 3)`` float32 frame -> crop (of the mirrored frame when ``mirror``).
        size: output side in pixels.
        mirror: sample the left-right mirrored frame.

    Returns:
        ``(size, size, 3)`` uint8, black where the crop leaves the frame.
    """
    height, width = frame.shape[:2]
    inverse = np.linalg.inv(np.asarray(affine, dtype=np.float32))
    coeffs = tuple(float(v) for v in inverse[:2].reshape(6))
    if coeffs[1] != 0.0 or coeffs[3] != 0.0:
        raise ValueError("affine must be an axis-aligned scale and shift (no rotation)")
    cols = _source_indices(coeffs, width, size, axis=1)
    rows = _source_indices(coeffs, height, size, axis=0)
    outside_rows, outside_cols = rows < 0, cols < 0
    if mirror:
        cols = width - 1 - cols
    # Two 1-D takes are several times faster than one 2-D fancy index.
    image = frame.take(np.clip(rows, 0, height - 1), axis=0)
    image = image.take(np.clip(cols, 0, width - 1), axis=1)
    image[outside_rows] = 0
    image[:, outside_cols] = 0
    return image


def crop_hand_object(
    frame: np.ndarray,
    hand_box: np.ndarray,
    object_box: np.ndarray,
    size: int = CROP_SIZE,
    *,
    mirror: bool = False,
) -> HandObjectCrop:
    """Cut the network input for one hand-object pair out of a frame, as the reference does.

    Args:
        frame: ``(H, W, 3)`` uint8 RGB.
        hand_box, object_box: ``(4,)`` xyxy frame pixels (may reach past the frame).
        size: crop side in pixels (the network takes 256).
        mirror: left hand: mirror the frame and the boxes first, so that the right-hand
            model can run; map results back with :func:`crop_to_frame` then
            :func:`hflpipe.model.geometry.mirror_points2d` (``width = frame_width``).

    Returns:
        A :class:`HandObjectCrop`.
    """
    frame = _check_frame(frame)
    if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
        raise ValueError(f"size must be a positive int, got {size!r}")
    height, width = frame.shape[:2]
    hand = _check_box(hand_box, "hand_box")
    obj = _check_box(object_box, "object_box")
    if mirror:
        hand, obj = mirror_boxes(hand, width), mirror_boxes(obj, width)
    center, side = fused_square(
        scale_box(hand, REGION_FACTOR), scale_box(obj, REGION_FACTOR), (width, height)
    )
    affine = square_affine(center, side, size)
    hand_net = frame_to_crop(scale_box(hand, HAND_BOX_FACTOR).reshape(2, 2), affine)
    obj_net = frame_to_crop(scale_box(obj, OBJECT_BOX_FACTOR).reshape(2, 2), affine)
    half = float(side) / 2
    return HandObjectCrop(
        image=resample_crop(frame, affine, size, mirror=mirror),
        hand_box=hand_net.reshape(4).astype(np.float32),
        object_box=obj_net.reshape(4).astype(np.float32),
        affine=affine,
        center=center.astype(np.int64),
        side=float(side),
        region=np.array([center[0] - half, center[1] - half, center[0] + half,
                         center[1] + half], dtype=np.float32),
        mirrored=mirror,
        frame_width=width,
    )
