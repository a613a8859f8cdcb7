"""Stopping a run on SIGINT or SIGTERM: promptly, with nothing half-written.

While a run is on, both signals are recorded, not acted on in the middle of whatever the
driver is doing: an exception raised inside Ray's calls (``ray.wait`` checks for signals)
comes out of them mangled, and one raised while a video's files are written would leave
them half done. The run loop calls :func:`check_stop` between steps (at least every
``POLL_INTERVAL_S``), which raises :class:`RunInterrupted`; the run then unwinds as from
any error: tasks in flight are cancelled, the output lock is released and the caller
prints one line.

``ray.init`` installs handlers of its own (Python's, which exit at once, and a native one
that prints a crash dump for SIGTERM); :func:`reclaim_signals` puts ours back after it.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

from hflpipe.pipeline.common.errors import HflpipeError

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class RunInterrupted(HflpipeError):
    """A run stopped by a signal; ``exit_code`` is the shell's: 128 + the signal number."""

    def __init__(self, signum: int, message: str | None = None) -> None:
        self.signum = signum
        self.signal_name = signal.Signals(signum).name
        self.exit_code = 128 + signum
        super().__init__(message or f"stopped by {self.signal_name}")


class _StopSignals:
    """The handlers' state: whether a run listens, and the first signal received."""

    def __init__(self) -> None:
        self.active = False
        self.received: int | None = None
        self.previous: dict[int, object] = {}

    def handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received is None:
            self.received = signum

    def install(self) -> None:
        for signum in STOP_SIGNALS:
            previous = signal.signal(signum, self.handle)
            self.previous.setdefault(signum, previous)


_STOPS = _StopSignals()


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """Within the block, SIGINT and SIGTERM make :func:`check_stop` raise.

    A signal that no check saw raises :class:`RunInterrupted` when the block ends. Signal
    handlers belong to the main thread: elsewhere (a notebook's worker thread) the block
    changes nothing. The handlers found are restored afterwards.
    """
    if threading.current_thread() is not threading.main_thread() or _STOPS.active:
        yield
        return
    _STOPS.active, _STOPS.received, _STOPS.previous = True, None, {}
    _STOPS.install()
    try:
        yield
    finally:
        for signum, previous in _STOPS.previous.items():
            signal.signal(signum, previous)
        _STOPS.active = False
    check_stop()


def reclaim_signals() -> None:
    """Put the run's handlers back after a library (``ray.init``) replaced them."""
    if _STOPS.active and threading.current_thread() is threading.main_thread():
        _STOPS.install()


def check_stop() -> None:
    """Raise :class:`RunInterrupted` if a stop signal has arrived (once per signal)."""
    if _STOPS.received is not None:
        signum, _STOPS.received = _STOPS.received, None
        raise RunInterrupted(signum)
