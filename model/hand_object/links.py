"""Which object each hand holds: the 100DOH detector's hand-to-object link rule."""

from __future__ import annotations

import numpy as np

#: The offset head's magnitude is in units of 1000 px along its 0.1-long unit vector.
_OFFSET_SCALE = 10000.0


def _centers(rows: np.ndarray) -> np.ndarray:
    return np.stack([(rows[:, 0] + rows[:, 2]) / 2.0, (rows[:, 1] + rows[:, 3]) / 2.0], axis=1)


def link_hands_to_objects(hands: np.ndarray, objects: np.ndarray) -> np.ndarray:
    """The object each hand in contact points at, by the original's rule.

    A hand whose contact state (column 5) is above 0 points from its box centre along its
    offset (columns 6-8: magnitude, dx, dy) by ``magnitude * 10000 * (dx, dy)``; the object
    whose box centre is nearest to that point is its object (the first one on ties). Scores,
    sides and thresholds play no part.

    Args:
        hands: (M, 10) detection rows ``x1, y1, x2, y2, score, contact_state, magnitude, dx,
            dy, side``; only the box, contact state and offset are read.
        objects: (K, >=4) rows whose first four columns are boxes.

    Returns:
        (M,) int64 index into ``objects`` per hand; -1 for a hand not in contact, and for
        every hand when there are no objects.

    Raises:
        ValueError: rows of the wrong shape.
    """
    hands = np.asarray(hands, dtype=np.float64)
    objects = np.asarray(objects, dtype=np.float64)
    if hands.size == 0:
        return np.zeros(0, dtype=np.int64)
    if hands.ndim != 2 or hands.shape[1] < 9:
        raise ValueError(f"hands: expected (M, 10) detection rows, got shape {hands.shape}")
    links = np.full(len(hands), -1, dtype=np.int64)
    if objects.size == 0:
        return links
    if objects.ndim != 2 or objects.shape[1] < 4:
        raise ValueError(f"objects: expected (K, 4+) box rows, got shape {objects.shape}")
    in_contact = hands[:, 5] > 0
    if not in_contact.any():
        return links
    reach = hands[in_contact, 6:7] * _OFFSET_SCALE
    points = _centers(hands[in_contact]) + reach * hands[in_contact, 7:9]
    squared = ((points[:, None, :] - _centers(objects)[None, :, :]) ** 2).sum(axis=2)
    links[in_contact] = squared.argmin(axis=1)
    return links
