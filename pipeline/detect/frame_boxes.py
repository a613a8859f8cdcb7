"""Boxes against the frame they are on: clipped to it, dropped when nothing usable is left.

Boxes come from files and detectors that know nothing of the frame size (a boxes file
written for another resolution, a detection at the image edge, a tiny frame); the crop
needs a box with some area inside the frame.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from hflpipe.pipeline.detect.base import Detection

#: A box narrower or shorter than this, in pixels, after clipping to the frame has no
#: target left in it to crop.
MIN_BOX_SIDE_PX = 2.0


def usable_boxes(boxes: np.ndarray) -> np.ndarray:
    """``(N, 4)`` xyxy -> ``(N,)`` bool: finite, and at least ``MIN_BOX_SIDE_PX`` wide and high."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    sides = boxes[:, 2:] - boxes[:, :2]
    return np.isfinite(boxes).all(axis=1) & (sides >= MIN_BOX_SIDE_PX).all(axis=1)


def clip_to_frame(
    detections: list[list[Detection]], width: int, height: int
) -> tuple[list[list[Detection]], int]:
    """Clip every box to the ``width`` x ``height`` frame and drop those left unusable.

    Args:
        detections: per frame, that frame's detections (boxes xyxy frame pixels).

    Returns:
        The detections with clipped boxes, in the same frame order, and how many boxes
        were dropped (outside the frame, or under ``MIN_BOX_SIDE_PX`` once clipped).
    """
    limit = np.array([width, height, width, height], dtype=np.float64)
    kept_frames, dropped = [], 0
    for frame in detections:
        kept = []
        for detection in frame:
            box = np.clip(np.asarray(detection.box, dtype=np.float64), 0.0, limit)
            if usable_boxes(box)[0]:
                kept.append(dataclasses.replace(detection, box=box.astype(np.float32)))
            else:
                dropped += 1
        kept_frames.append(kept)
    return kept_frames, dropped
