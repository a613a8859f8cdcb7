"""Progress reporting from video tasks to the driver (progress bars and stall detection)."""

from __future__ import annotations

import time

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from hflpipe.pipeline.infer.actor_pool import driver_session


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

    def clear(self) -> None:
        self._state.clear()


#: The board of this driver's last run, with the Ray session it was started in.
_kept_board: tuple[tuple[str, str, str], ray.actor.ActorHandle] | None = None


def start_board() -> ray.actor.ActorHandle:
    """An empty :class:`ProgressBoard` on the driver's node, so that losing a worker node
    keeps it.

    A driver that runs several jobs (a notebook, a service, the tests) keeps its board,
    as it keeps its actor pool: a new one would cost a worker process for every run.
    """
    global _kept_board
    session = driver_session()
    if _kept_board is not None and _kept_board[0] == session:
        board = _kept_board[1]
        ray.get(board.clear.remote())
        return board
    here = ray.get_runtime_context().get_node_id()
    strategy = NodeAffinitySchedulingStrategy(node_id=here, soft=True)
    board = ProgressBoard.options(scheduling_strategy=strategy).remote()
    _kept_board = (session, board)
    return board
