"""Requests of concurrent threads share network calls (SharedBatcher)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from hflpipe.pipeline.infer.shared_batches import SharedBatcher


class Gate:
    """A batch function that holds its first call until released, and records every call."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.release = threading.Event()
        self.calls: list[np.ndarray] = []

    def __call__(self, items: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.calls.append(items.copy())
        if len(self.calls) == 1:
            self.started.set()
            assert self.release.wait(10)
        if (items < 0).any():
            raise ValueError("negative item")
        return items * 2, items.sum(axis=1)


def _wait_queued(batcher: SharedBatcher, count: int) -> None:
    for _ in range(1000):
        with batcher._changed:
            if len(batcher._queue) >= count:
                return
        threading.Event().wait(0.005)
    raise AssertionError(f"{count} requests never queued")


def test_a_lone_request_runs_at_once_and_alone() -> None:
    batcher = SharedBatcher(lambda items: (items + 1,), max_items=8)
    (out,) = batcher(np.arange(6).reshape(3, 2))
    np.testing.assert_array_equal(out, np.arange(1, 7).reshape(3, 2))
    assert (batcher.calls, batcher.items) == (1, 3)


def test_requests_arriving_while_the_network_runs_share_the_next_call() -> None:
    gate = Gate()
    batcher = SharedBatcher(gate, max_items=16)
    requests = [np.full((size, 3), value, np.int64) for value, size in enumerate([1, 2, 3, 1])]
    with ThreadPoolExecutor(len(requests)) as pool:
        first = pool.submit(batcher, requests[0])
        assert gate.started.wait(10)
        later = [pool.submit(batcher, items) for items in requests[1:]]
        _wait_queued(batcher, 3)
        gate.release.set()
        results = [first.result(10)] + [f.result(10) for f in later]
    # The first ran alone; the three that queued behind it ran as one call, in order.
    assert [len(c) for c in gate.calls] == [1, 6]
    np.testing.assert_array_equal(gate.calls[1], np.concatenate(requests[1:]))
    for items, (doubled, sums) in zip(requests, results, strict=True):
        np.testing.assert_array_equal(doubled, items * 2)
        np.testing.assert_array_equal(sums, items.sum(axis=1))
    assert (batcher.calls, batcher.items) == (2, 7)


def test_a_call_takes_at_most_max_items_and_the_rest_run_next() -> None:
    gate = Gate()
    batcher = SharedBatcher(gate, max_items=4)
    with ThreadPoolExecutor(4) as pool:
        first = pool.submit(batcher, np.zeros((1, 1), np.int64))
        assert gate.started.wait(10)
        later = [pool.submit(batcher, np.full((3, 1), v, np.int64)) for v in (1, 2, 3)]
        _wait_queued(batcher, 3)
        gate.release.set()
        outputs = [f.result(10)[0] for f in [first, *later]]
    assert [len(c) for c in gate.calls] == [1, 3, 3, 3]
    assert [int(o[0, 0]) for o in outputs] == [0, 2, 4, 6]


def test_a_request_that_fails_a_shared_call_fails_alone() -> None:
    gate = Gate()
    batcher = SharedBatcher(gate, max_items=16)
    with ThreadPoolExecutor(3) as pool:
        first = pool.submit(batcher, np.ones((1, 1), np.int64))
        assert gate.started.wait(10)
        bad = pool.submit(batcher, -np.ones((1, 1), np.int64))
        good = pool.submit(batcher, np.ones((2, 1), np.int64))
        _wait_queued(batcher, 2)
        gate.release.set()
        first.result(10)
        with pytest.raises(ValueError, match="negative item"):
            bad.result(10)
        np.testing.assert_array_equal(good.result(10)[0], 2 * np.ones((2, 1)))
    # The shared call failed, then each request ran alone.
    assert [len(c) for c in gate.calls] == [1, 3, 1, 2]


def test_max_items_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_items"):
        SharedBatcher(lambda items: (items,), max_items=0)
