"""Tracking and pairing on synthetic scenes with known motion."""

from __future__ import annotations

import numpy as np
import pytest

from hflpipe.pipeline.detect.base import Detection
from hflpipe.pipeline.track.tracker import (
    TrackingConfig,
    box_iou,
    pair_hands_with_objects,
    track,
)


def _hand(x: float, y: float, size: float = 50, side: str | None = None, score: float = 0.9,
          track_id: int | None = None) -> Detection:
    box = np.array([x, y, x + size, y + size], np.float32)
    return Detection("hand", box, score, handedness=side, track_id=track_id)


def _object(x: float, y: float, size: float = 50) -> Detection:
    return Detection("object", np.array([x, y, x + size, y + size], np.float32), 0.9)


def _ids(frames: list[list[Detection]]) -> list[list[int]]:
    return [[d.track_id for d in frame] for frame in frames]


def test_crossing_hands_keep_their_ids() -> None:
    # A moves right, B moves left on the same line; they pass between frames 8 and 9,
    # where each box lies nearer the other's last box than its own: only the motion
    # tells them apart. Detections are listed in x order, so the order swaps too.
    frames = []
    for t in range(18):
        a, b = _hand(20 + 10 * t, 100), _hand(183 - 10 * t, 100)
        frames.append([a, b] if t <= 8 else [b, a])
    out = track(range(18), frames)
    a_ids = [frame[0 if t <= 8 else 1].track_id for t, frame in enumerate(out)]
    b_ids = [frame[1 if t <= 8 else 0].track_id for t, frame in enumerate(out)]
    assert len(set(a_ids)) == 1 and len(set(b_ids)) == 1
    assert a_ids[0] != b_ids[0]


def test_gap_within_max_gap_keeps_the_id_and_a_longer_one_starts_a_new_track() -> None:
    indices = [0, 1, 2, 3, 7, 8]  # frames 4, 5 and 6 missing: a gap of 3
    frames = [[_hand(100 + i, 100)] for i in indices]
    assert _ids(track(indices, frames, TrackingConfig(max_gap=3))) == [[0]] * 6
    assert _ids(track(indices, frames, TrackingConfig(max_gap=2))) == [[0]] * 4 + [[1]] * 2


def test_small_fast_box_matches_by_centre_distance() -> None:
    frames = [[_hand(9 * t, 0, size=10)] for t in range(5)]  # IoU 0.05 between frames
    assert _ids(track(range(5), frames)) == [[0]] * 5
    strict = TrackingConfig(max_centre_distance=0.5)
    assert _ids(track(range(5), frames, strict))[:2] == [[0], [1]]


def test_unconfident_handedness_flips_follow_the_track_majority() -> None:
    frames = []
    for t in range(20):
        flipped = t in (4, 9, 15)
        frames.append([_hand(100 + 2 * t, 100, side="left" if flipped else "right",
                             score=0.6 if flipped else 0.95)])
    out = track(range(20), frames)
    assert {d.track_id for f in out for d in f} == {0}
    assert {d.handedness for f in out for d in f} == {"right"}


def test_confident_opposite_hand_never_joins_a_confident_track() -> None:
    frames = [[_hand(100, 100, side="right", score=0.95)] for _ in range(5)]
    frames.append([_hand(102, 100, side="left", score=0.95)])
    out = track(range(6), frames)
    assert _ids(out) == [[0]] * 5 + [[1]]
    assert [f[0].handedness for f in out] == ["right"] * 5 + ["left"]


def test_two_hands_side_by_side_keep_ids_and_sides() -> None:
    frames = [
        [_hand(200 - 3 * t, 100, side="left"), _hand(260 + 3 * t, 105, side="right")]
        for t in range(10)
    ]
    out = track(range(10), frames)
    assert _ids(out) == [[0, 1]] * 10
    assert [(f[0].handedness, f[1].handedness) for f in out] == [("left", "right")] * 10


def test_given_track_ids_are_kept_and_tracker_ids_avoid_them() -> None:
    frames = [
        [_hand(0, 0, track_id=0), _hand(300, 0), _object(0, 0)],
        [_hand(200, 200, track_id=0), _hand(302, 0), _object(2, 0)],
    ]
    out = track([0, 1], frames)
    # Hand ids: 0 from the file, the free hand gets 1; objects count separately from 0.
    assert _ids(out) == [[0, 1, 0], [0, 1, 0]]


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="strictly increasing"):
        track([1, 1], [[], []])
    with pytest.raises(ValueError, match="2 frame indices but 1"):
        track([0, 1], [[]])
    with pytest.raises(ValueError, match="max_gap"):
        TrackingConfig(max_gap=-1)


def test_box_iou() -> None:
    a = np.array([[0, 0, 10, 10]])
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]])
    np.testing.assert_allclose(box_iou(a, b), [[1.0, 50 / 150, 0.0]])


def test_pairing_prefers_overlap_then_nearby_centre() -> None:
    detections = [
        _hand(0, 0, size=40),        # overlaps object 3 more than object 4
        _hand(200, 0, size=40),      # no overlap; object 5 is 55 px away (< 1.5 * 40)
        _hand(600, 600, size=40),    # nothing within reach
        _object(10, 10, size=40),
        _object(35, 35, size=40),
        _object(255, 0, size=40),
    ]
    assert pair_hands_with_objects(detections) == [(0, 3), (1, 5), (2, None)]
    assert pair_hands_with_objects(detections, max_distance=1.0)[1] == (1, None)
    assert pair_hands_with_objects([_hand(0, 0)]) == [(0, None)]
