"""Track ids for detections across the frames of one video, and hand-object pairing.

Tracking is offline over a video's detections (a few boxes per frame, so all
of them fit in memory) because a track's handedness is a vote over the whole
track. Boxes are associated frame to frame with the Hungarian algorithm on
IoU with a constant-velocity prediction of each track's box; where boxes do
not overlap (small or fast boxes) the centre distance relative to box size
is the fallback. Hands and objects are tracked separately and their ids are
separate sequences.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment

from hflpipe.pipeline.detect.base import Detection, Handedness, Kind

# A cost no real pair reaches: IoU costs are in [0, 1), distance costs in [1, 2].
_FORBIDDEN = 1e6


@dataclass(frozen=True)
class TrackingConfig:
    """Association settings.

    Attributes:
        max_gap: a track absent for more than this many consecutive frame indices
            ends; a box seen later starts a new track. With a detector run every
            N frames, use at least N - 1.
        min_iou: IoU between a track's predicted box and a detection below which
            the centre-distance rule decides instead.
        max_centre_distance: largest centre distance for a match when boxes do not
            overlap enough, in units of the boxes' mean size (sqrt of area).
        confident_score: a hand detection with at least this score has a
            confident handedness.
        handedness_margin: a track is confident about its handedness once its
            confident votes for one side outnumber the other side by this many; a
            confident detection of the other side is then never added to it.
    """

    max_gap: int = 10
    min_iou: float = 0.1
    max_centre_distance: float = 1.0
    confident_score: float = 0.8
    handedness_margin: int = 2

    def __post_init__(self) -> None:
        if self.max_gap < 0:
            raise ValueError(f"max_gap must be >= 0, got {self.max_gap}")
        if not 0.0 < self.min_iou <= 1.0:
            raise ValueError(f"min_iou must be in (0, 1], got {self.min_iou}")
        if self.max_centre_distance < 0:
            raise ValueError(f"max_centre_distance must be >= 0, got {self.max_centre_distance}")
        if self.handedness_margin < 1:
            raise ValueError(f"handedness_margin must be >= 1, got {self.handedness_margin}")


@dataclass
class _Track:
    track_id: int
    frames: list[int] = field(default_factory=list)
    boxes: list[np.ndarray] = field(default_factory=list)
    confident_votes: dict[str, int] = field(default_factory=lambda: {"left": 0, "right": 0})
    weighted_votes: dict[str, float] = field(default_factory=lambda: {"left": 0.0, "right": 0.0})

    def add(self, frame_index: int, detection: Detection, confident_score: float) -> None:
        self.frames.append(frame_index)
        self.boxes.append(np.asarray(detection.box, dtype=np.float64))
        if detection.handedness is not None:
            self.weighted_votes[detection.handedness] += detection.score
            if detection.score >= confident_score:
                self.confident_votes[detection.handedness] += 1

    def predict(self, frame_index: int) -> np.ndarray:
        """The box expected at ``frame_index``, moving at the last observed velocity."""
        if len(self.frames) < 2:
            return self.boxes[-1]
        velocity = (self.boxes[-1] - self.boxes[-2]) / (self.frames[-1] - self.frames[-2])
        return self.boxes[-1] + velocity * (frame_index - self.frames[-1])

    def confident_side(self, margin: int) -> str | None:
        left, right = self.confident_votes["left"], self.confident_votes["right"]
        if left - right >= margin:
            return "left"
        if right - left >= margin:
            return "right"
        return None

    def majority(self) -> Handedness | None:
        left, right = self.weighted_votes["left"], self.weighted_votes["right"]
        if left == right:
            return None
        return "left" if left > right else "right"


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in ``a`` (A, 4) with every box in ``b`` (B, 4), xyxy -> (A, B)."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    top_left = np.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(bottom_right - top_left, 0, None).prod(axis=2)
    area_a = (a[:, 2:] - a[:, :2]).clip(0).prod(axis=1)
    area_b = (b[:, 2:] - b[:, :2]).clip(0).prod(axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def _centre_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Centre distance of (A, 4) x (B, 4) boxes over their mean size sqrt(w * h) -> (A, B)."""
    centre_a = (a[:, :2] + a[:, 2:]) / 2
    centre_b = (b[:, :2] + b[:, 2:]) / 2
    size_a = np.sqrt((a[:, 2:] - a[:, :2]).clip(1e-6).prod(axis=1))
    size_b = np.sqrt((b[:, 2:] - b[:, :2]).clip(1e-6).prod(axis=1))
    distance = np.linalg.norm(centre_a[:, None] - centre_b[None], axis=2)
    return distance / ((size_a[:, None] + size_b[None, :]) / 2)


class _KindTracker:
    """Tracks of one kind (hands or objects) of one video."""

    def __init__(self, config: TrackingConfig, given_ids: set[int]) -> None:
        self._config = config
        self._given = given_ids
        # Tracker ids start above every id the source gave, so the two never collide.
        self._next_id = max(given_ids, default=-1) + 1
        self._active: list[_Track] = []
        self.tracks: dict[int, _Track] = {}

    def update(self, frame_index: int, detections: list[Detection]) -> list[int]:
        """Track ids for ``detections`` (all of this tracker's kind) on one frame."""
        config = self._config
        self._active = [
            t for t in self._active if frame_index - t.frames[-1] - 1 <= config.max_gap
        ]
        ids = [-1] * len(detections)
        free = []
        for i, detection in enumerate(detections):
            if detection.track_id is None:
                free.append(i)
                continue
            track = self.tracks.setdefault(detection.track_id, _Track(detection.track_id))
            track.add(frame_index, detection, config.confident_score)
            ids[i] = detection.track_id

        candidates = self._active
        if free and candidates:
            cost = self._cost(frame_index, candidates, [detections[i] for i in free])
            rows, cols = linear_sum_assignment(cost)
            for row, col in zip(rows, cols, strict=True):
                if cost[row, col] < _FORBIDDEN:
                    track = candidates[row]
                    track.add(frame_index, detections[free[col]], config.confident_score)
                    ids[free[col]] = track.track_id

        for i in free:
            if ids[i] < 0:
                track = _Track(self._next_id)
                self._next_id += 1
                self.tracks[track.track_id] = track
                self._active.append(track)
                track.add(frame_index, detections[i], config.confident_score)
                ids[i] = track.track_id
        return ids

    def _cost(
        self, frame_index: int, tracks: list[_Track], detections: list[Detection]
    ) -> np.ndarray:
        """(T, D) association cost; ``_FORBIDDEN`` where a pair may not match."""
        config = self._config
        predicted = np.stack([t.predict(frame_index) for t in tracks])
        boxes = np.stack([np.asarray(d.box, dtype=np.float64) for d in detections])
        iou = box_iou(predicted, boxes)
        distance = _centre_distance(predicted, boxes)
        cost = np.where(
            iou >= config.min_iou,
            1.0 - iou,
            np.where(distance <= config.max_centre_distance, 1.0 + distance, _FORBIDDEN),
        )
        for col, detection in enumerate(detections):
            if detection.handedness is None or detection.score < config.confident_score:
                continue
            for row, track in enumerate(tracks):
                side = track.confident_side(config.handedness_margin)
                if side is not None and side != detection.handedness:
                    cost[row, col] = _FORBIDDEN
        return cost


def track(
    frame_indices: Sequence[int] | np.ndarray,
    detections: Sequence[Sequence[Detection]],
    config: TrackingConfig | None = None,
) -> list[list[Detection]]:
    """Give every detection of one video a track id and its track's handedness.

    Args:
        frame_indices: (F,) strictly increasing frame indices that were detected on.
        detections: F lists, the detections of each frame.
        config: association settings; defaults to ``TrackingConfig()``.

    Returns:
        F lists aligned with ``detections``: the same detections with ``track_id``
        set (ids given by the source are kept) and, for hands, ``handedness``
        replaced by the track's score-weighted majority (None when the track has
        no votes or a tie).
    """
    config = config or TrackingConfig()
    frame_indices = np.asarray(frame_indices, dtype=np.int64)
    if len(frame_indices) != len(detections):
        raise ValueError(
            f"{len(frame_indices)} frame indices but {len(detections)} detection lists"
        )
    if np.any(np.diff(frame_indices) <= 0):
        raise ValueError("frame_indices must be strictly increasing")

    trackers: dict[Kind, _KindTracker] = {}
    for kind in ("hand", "object"):
        given = {d.track_id for frame in detections for d in frame if d.kind == kind}
        given.discard(None)
        trackers[kind] = _KindTracker(config, given)

    ids_per_frame: list[list[int]] = []
    for frame_index, frame in zip(frame_indices.tolist(), detections, strict=True):
        ids = [0] * len(frame)
        for kind, tracker in trackers.items():
            positions = [i for i, d in enumerate(frame) if d.kind == kind]
            assigned = tracker.update(frame_index, [frame[i] for i in positions])
            for position, track_id in zip(positions, assigned, strict=True):
                ids[position] = track_id
        ids_per_frame.append(ids)

    hand_side = {tid: t.majority() for tid, t in trackers["hand"].tracks.items()}
    return [
        [
            dataclasses.replace(
                d,
                track_id=track_id,
                handedness=hand_side[track_id] if d.kind == "hand" else d.handedness,
            )
            for d, track_id in zip(frame, ids, strict=True)
        ]
        for frame, ids in zip(detections, ids_per_frame, strict=True)
    ]


def pair_hands_with_objects(
    detections: Sequence[Detection], max_distance: float = 1.5,
    contact_states: Collection[str] = ("portable",),
) -> list[tuple[int, int | None]]:
    """For each hand on one frame, the object it most likely holds.

    A hand that carries the hand-object detector's contact state gets the object the
    detector links it to, if its state is one of ``contact_states``, else none (the
    hand-only path). Otherwise the object overlapping the hand most (highest IoU) wins;
    when none overlaps, the one with the nearest centre, if that centre lies within
    ``max_distance`` times the hand's size (the longer side of its box). Several hands
    may share one object.

    Returns:
        ``(hand_index, object_index | None)`` per hand, indices into ``detections``,
        in detection order.
    """
    if any(d.kind == "hand" and d.contact_state is not None for d in detections):
        return [
            (i, d.linked_object if d.contact_state in contact_states else None)
            for i, d in enumerate(detections) if d.kind == "hand"
        ]
    hands = [i for i, d in enumerate(detections) if d.kind == "hand"]
    objects = [i for i, d in enumerate(detections) if d.kind == "object"]
    if not objects or not hands:
        return [(h, None) for h in hands]
    hand_boxes = np.stack([np.asarray(detections[i].box, dtype=np.float64) for i in hands])
    object_boxes = np.stack([np.asarray(detections[i].box, dtype=np.float64) for i in objects])
    iou = box_iou(hand_boxes, object_boxes)
    hand_centres = (hand_boxes[:, :2] + hand_boxes[:, 2:]) / 2
    object_centres = (object_boxes[:, :2] + object_boxes[:, 2:]) / 2
    distance = np.linalg.norm(hand_centres[:, None] - object_centres[None], axis=2)
    hand_size = (hand_boxes[:, 2:] - hand_boxes[:, :2]).max(axis=1)

    pairs: list[tuple[int, int | None]] = []
    for row, hand in enumerate(hands):
        if iou[row].max() > 0:
            pairs.append((hand, objects[int(iou[row].argmax())]))
        elif distance[row].min() <= max_distance * hand_size[row]:
            pairs.append((hand, objects[int(distance[row].argmin())]))
        else:
            pairs.append((hand, None))
    return pairs
