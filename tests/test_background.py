"""iterate_ahead: order, the bound on how far ahead it runs, errors, and stopping."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from hflpipe.pipeline.decode.read_ahead import iterate_ahead


class Counted:
    """Yields 0..n-1, recording how many it has produced and on which threads."""

    def __init__(self, n: int, fail_at: int | None = None) -> None:
        self.n, self.fail_at = n, fail_at
        self.produced = 0
        self.threads: set[int] = set()

    def __iter__(self) -> Iterator[int]:
        for i in range(self.n):
            if i == self.fail_at:
                raise OSError(f"item {i} is damaged")
            self.threads.add(threading.get_ident())
            self.produced += 1
            yield i


def _ahead_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "test-ahead"]


def test_items_arrive_in_order_from_another_thread() -> None:
    source = Counted(50)
    assert list(iterate_ahead(iter(source), 3, "test-ahead")) == list(range(50))
    assert threading.get_ident() not in source.threads
    assert not _ahead_threads()


def test_it_runs_at_most_limit_items_ahead_of_a_waiting_consumer() -> None:
    source = Counted(100)
    items = iterate_ahead(iter(source), 4, "test-ahead")
    assert next(items) == 0
    time.sleep(0.3)
    # 4 queued, and one more held by the thread waiting for room.
    assert source.produced <= 1 + 4 + 1
    assert list(items) == list(range(1, 100))


def test_an_error_arrives_after_the_items_before_it() -> None:
    got = []
    with pytest.raises(OSError, match="item 7 is damaged"):
        for item in iterate_ahead(iter(Counted(20, fail_at=7)), 2, "test-ahead"):
            got.append(item)
    assert got == list(range(7))
    assert not _ahead_threads()


def test_closing_stops_the_thread_and_the_source() -> None:
    source = Counted(1000)
    items = iterate_ahead(iter(source), 2, "test-ahead")
    assert [next(items) for _ in range(3)] == [0, 1, 2]
    items.close()
    assert not _ahead_threads()
    produced = source.produced
    time.sleep(0.1)
    assert source.produced == produced <= 3 + 2 + 1


def test_a_limit_below_one_is_refused_at_the_call() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        iterate_ahead(iter([1]), 0)
