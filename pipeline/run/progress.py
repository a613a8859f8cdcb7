"""Progress reporting from video tasks to the driver (progress bars and stall detection)."""

from __future__ import annotations

import time

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy


# Restarted if its process dies, calls retried: the driver polls it every half second and
# must not crash with it. A restart forgets the heartbeats, which only delays stall detection.
@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)
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


def start_board() -> ray.actor.ActorHandle:
    """A :class:`ProgressBoard` on the driver's node, so that losing a worker node keeps it."""
    here = ray.get_runtime_context().get_node_id()
    strategy = NodeAffinitySchedulingStrategy(node_id=here, soft=True)
    return ProgressBoard.options(scheduling_strategy=strategy).remote()
