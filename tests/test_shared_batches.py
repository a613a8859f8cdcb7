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


def _behind_a_running_call(batcher: SharedBatcher, gate: Gate,
                           requests: list[np.ndarray]) -> list:
    """Each request's result or error: the first runs alone and holds the network until
    all the others have queued behind it."""
    with ThreadPoolExecutor(len(requests)) as pool:
        futures = [pool.submit(batcher, requests[0])]
        assert gate.started.wait(10)
        futures += [pool.submit(batcher, items) for items in requests[1:]]
        for _ in range(1000):
            with batcher._changed:
                if len(batcher._queue) >= len(requests) - 1:
                    break
            threading.Event().wait(0.005)
        else:
            raise AssertionError("the requests never queued")
        gate.release.set()
    return [f.exception(10) or f.result(10) for f in futures]


def test_a_lone_request_runs_at_once_and_alone() -> None:
    batcher = SharedBatcher(lambda items: (items + 1,), max_items=8)
    (out,) = batcher(np.arange(6).reshape(3, 2))
    np.testing.assert_array_equal(out, np.arange(1, 7).reshape(3, 2))
    assert (batcher.calls, batcher.items) == (1, 3)


def test_requests_arriving_while_the_network_runs_share_the_next_call() -> None:
    gate = Gate()
    batcher = SharedBatcher(gate, max_items=16)
    requests = [np.full((size, 3), value, np.int64) for value, size in enumerate([1, 2, 3, 1])]
    results = _behind_a_running_call(batcher, gate, requests)
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
    requests = [np.zeros((1, 1), np.int64)] + [np.full((3, 1), v, np.int64) for v in (1, 2, 3)]
    outputs = _behind_a_running_call(batcher, gate, requests)
    assert [len(c) for c in gate.calls] == [1, 3, 3, 3]
    assert [int(doubled[0, 0]) for doubled, _ in outputs] == [0, 2, 4, 6]


def test_a_request_that_fails_a_shared_call_fails_alone() -> None:
    gate = Gate()
    batcher = SharedBatcher(gate, max_items=16)
    first, bad, good = _behind_a_running_call(
        batcher, gate, [np.ones((1, 1), np.int64), -np.ones((1, 1), np.int64),
                        np.ones((2, 1), np.int64)])
    assert isinstance(bad, ValueError) and "negative item" in str(bad)
    np.testing.assert_array_equal(good[0], 2 * np.ones((2, 1)))
    np.testing.assert_array_equal(first[0], 2 * np.ones((1, 1)))
    # The shared call failed, then each request ran alone.
    assert [len(c) for c in gate.calls] == [1, 3, 1, 2]


def test_max_items_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_items"):
        SharedBatcher(lambda items: (items,), max_items=0)
