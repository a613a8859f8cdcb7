"""Run an iterator on a thread of its own, a bounded number of items ahead of its consumer."""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Generator, Iterator
from typing import TypeVar, cast

Item = TypeVar("Item")

_END = object()


def iterate_ahead(items: Iterator[Item], limit: int, name: str = "hflpipe-ahead"
                  ) -> Generator[Item, None, None]:
    """Yield ``items`` in order while a daemon thread advances them, at most ``limit`` ahead.

    Worth it when advancing ``items`` releases the GIL (FFmpeg decoding does), so
    the consumer's own work overlaps it. The thread holds at most ``limit`` items
    queued plus one waiting for room. An exception raised by ``items`` is raised
    here after the items before it. Closing the returned generator stops the
    thread and waits for it, so whatever ``items`` reads from may be closed
    afterwards; ``items`` is not advanced again.
    """
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    return _ahead(items, limit, name)


def _ahead(items: Iterator[Item], limit: int, name: str) -> Generator[Item, None, None]:
    handoff: queue.Queue[tuple[object, BaseException | None]] = queue.Queue(maxsize=limit)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                handoff.put((item, None))
                if stop.is_set():
                    return
            handoff.put((_END, None))
        except BaseException as exc:  # whatever ends the thread, the consumer must hear of it
            handoff.put((_END, exc))

    worker = threading.Thread(target=produce, name=name, daemon=True)
    worker.start()
    try:
        while True:
            item, error = handoff.get()
            if item is _END:
                if error is not None:
                    raise error
                return
            yield cast(Item, item)
    finally:
        stop.set()
        # A generator dropped in a reference cycle may be finalised on any thread,
        # this one included; it cannot wait for itself.
        if threading.current_thread() is not worker:
            # A producer blocked on a full queue needs room to see the stop.
            while worker.is_alive():
                with contextlib.suppress(queue.Empty):
                    handoff.get_nowait()
                worker.join(0.01)
