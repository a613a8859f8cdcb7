"""One network call for the requests of many callers: what reaches an actor while its
network is busy runs together next.

An inference actor serves many videos at once. A video tracking hands asks for one
frame's landmarks at a time (the next frame's regions depend on them), so batches
can only form across videos. :class:`SharedBatcher` forms them without waiting on a
timer: a request that finds the network idle runs at once, alone; requests that
arrive while it runs queue up, and the first of them to wake runs the whole queue
(up to ``max_items``) in one call. With one caller it adds no latency; with many,
batches grow until a batch takes as long as the callers need to send the next one.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

#: Items (first axis) -> per-item outputs, each with the items' first axis.
BatchFunction = Callable[[np.ndarray], tuple[np.ndarray, ...]]


@dataclass
class _Request:
    items: np.ndarray
    outputs: tuple[np.ndarray, ...] = ()
    error: BaseException | None = None
    done: bool = False


class SharedBatcher:
    """Runs ``function`` on the requests of concurrent threads, concatenated.

    Args:
        function: the network on a batch of items.
        max_items: most items per call (a single larger request still runs alone).
    """

    def __init__(self, function: BatchFunction, max_items: int) -> None:
        if max_items < 1:
            raise ValueError(f"max_items must be >= 1, got {max_items}")
        self._function = function
        self._max_items = max_items
        self._changed = threading.Condition()
        self._queue: list[_Request] = []
        self._busy = False
        #: Network calls and items so far (items per call: how well requests were shared).
        self.calls = 0
        self.items = 0

    def __call__(self, items: np.ndarray) -> tuple[np.ndarray, ...]:
        """``function(items)``, computed in one call with other threads' items.

        Raises:
            whatever ``function`` raised on this request's items (a shared call that
            fails is retried request by request, so only the culprit's caller sees it).
        """
        request = _Request(items)
        with self._changed:
            self._queue.append(request)
        while True:
            with self._changed:
                while self._busy and not request.done:
                    self._changed.wait()
                if request.done:
                    break
                self._busy = True
                taken = self._take()
            self._run(taken)
        if request.error is not None:
            raise request.error
        return request.outputs

    def _take(self) -> list[_Request]:
        """The oldest requests, up to ``max_items`` items (at least one request)."""
        count, total = 0, 0
        for request in self._queue:
            if count and total + len(request.items) > self._max_items:
                break
            count += 1
            total += len(request.items)
        taken, self._queue = self._queue[:count], self._queue[count:]
        return taken

    def _run(self, taken: list[_Request]) -> None:
        try:
            if len(taken) == 1:
                self._run_alone(taken[0])
            else:
                self._run_together(taken)
        finally:
            with self._changed:
                for request in taken:
                    request.done = True
                self._busy = False
                self._changed.notify_all()

    def _run_together(self, taken: list[_Request]) -> None:
        sizes = [len(r.items) for r in taken]
        try:
            outputs = self._call(np.concatenate([r.items for r in taken]))
        except Exception:
            # One caller's bad items must not fail the others: each runs alone again.
            for request in taken:
                self._run_alone(request)
            return
        ends = np.cumsum(sizes)
        for request, end, size in zip(taken, ends, sizes, strict=True):
            request.outputs = tuple(output[end - size:end] for output in outputs)

    def _run_alone(self, request: _Request) -> None:
        try:
            request.outputs = self._call(request.items)
        except Exception as exc:
            request.error = exc

    def _call(self, items: np.ndarray) -> tuple[np.ndarray, ...]:
        outputs = self._function(items)
        with self._changed:
            self.calls += 1
            self.items += len(items)
        return outputs
