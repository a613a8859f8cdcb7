"""Boxes against their frame: clipped to it, dropped (and counted) when nothing is left."""

from __future__ import annotations

import numpy as np

from hflpipe.pipeline.detect.base import Detection
from hflpipe.pipeline.detect.frame_boxes import clip_to_frame, usable_boxes


def test_usable_boxes() -> None:
    boxes = np.array([[0, 0, 10, 10], [5, 5, 6, 30], [200, 0, 200, 30], [np.nan, 0, 4, 4]])
    assert usable_boxes(boxes).tolist() == [True, False, False, False]


def _hand(*box: float) -> Detection:
    return Detection("hand", np.asarray(box, np.float32), 1.0, handedness="right", track_id=3)


def test_boxes_are_clipped_to_the_frame_and_empty_ones_dropped() -> None:
    frames = [
        [_hand(-10, -5, 30, 20), _hand(50, 10, 90, 70)],  # over the top-left / bottom-right
        [_hand(100, 100, 120, 130)],  # entirely outside
        [_hand(10, 10, 11, 40), _hand(20, 20, 30, 30)],  # 1 px wide
        [],
    ]
    kept, dropped = clip_to_frame(frames, width=64, height=48)
    assert dropped == 2
    assert [len(frame) for frame in kept] == [2, 0, 1, 0]
    np.testing.assert_array_equal(kept[0][0].box, [0, 0, 30, 20])
    np.testing.assert_array_equal(kept[0][1].box, [50, 10, 64, 48])
    np.testing.assert_array_equal(kept[2][0].box, [20, 20, 30, 30])
    assert kept[0][0].box.dtype == np.float32
    assert (kept[0][0].handedness, kept[0][0].track_id) == ("right", 3)


def test_a_tiny_frame_leaves_no_box() -> None:
    kept, dropped = clip_to_frame([[_hand(0, 0, 20, 20)], [_hand(2, 2, 6, 6)]], 1, 1)
    assert kept == [[], []] and dropped == 2
