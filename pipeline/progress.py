"""Progress reporting from video tasks to the driver (progress bars and stall detection)."""

from __future__ import annotations

import time

import ray


@ray.remote(num_cpus=0)
class ProgressBoard:
    """Latest (done, total, wall time) per video: written by tasks, read by the driver."""

    def __init__(self) -> None:
        self._state: dict[str, tuple[int, int, float]] = {}

    def report(self, video_id: str, done: int, total: int) -> None:
        self._state[video_id] = (done, total, time.time())

    def snapshot(self) -> dict[str, tuple[int, int, float]]:
        return dict(self._state)

    def forget(self, video_id: str) -> None:
        self._state.pop(video_id, None)
