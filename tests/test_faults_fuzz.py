"""Fuzzing the decoder stage: randomly damaged copies of a valid video (40; 300 nightly).

Each copy is probed and read by the pipeline's default decoder in a pool of worker
processes, one file at a time, under a hard per-file timeout, the way the Ray runner
isolates decoding. Every copy must end as ``ok`` or as a recorded failure: a one-line
:class:`DecodeError` naming the file, or (as the runner records them) a worker that died or
hung. Never a hang of the whole, never a lost copy, never another exception type.
"""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import videogen

pytestmark = [pytest.mark.slow, pytest.mark.timeout(400)]
#: Damaged copies in the default run; the nightly run goes through the whole corpus.
QUICK_COPIES = 40
CORPUS_COPIES = 300
WORKERS = 2
PER_FILE_TIMEOUT_S = 30.0
TOTAL_BUDGET_S = 300.0

_WORKER = """
import json, sys
from hflpipe.pipeline.decode.base import DecodeError, get_decoder
decoder = get_decoder("decord")
for line in sys.stdin:
    path = line.strip()
    try:
        decoder.probe(path)
        frames = sum(len(chunk) for chunk in decoder.read_chunks(path, chunk_size=4))
        result = {"status": "ok", "frames": frames}
    except DecodeError as exc:
        result = {"status": "failed", "error": str(exc)}
    except Exception as exc:
        result = {"status": "unexpected", "error": f"{type(exc).__name__}: {exc}"}
    print(json.dumps(result | {"path": path}), flush=True)
"""


def _mutate(data: bytes, rng: np.random.Generator) -> bytes:
    """One random kind of damage: flipped bytes, a cut, a zeroed or repeated or lost span."""
    buf = bytearray(data)
    size = len(buf)
    kind = rng.integers(6)
    if kind == 0:
        for at in rng.integers(0, size, rng.integers(1, 32)):
            buf[at] ^= int(rng.integers(1, 256))
    elif kind == 1:
        # The container header and index carry the most structure: damage them more often.
        for at in rng.integers(0, min(size, 2048), rng.integers(1, 8)):
            buf[at] = int(rng.integers(256))
    elif kind == 2:
        del buf[int(rng.integers(1, size)):]
    elif kind == 3:
        start = int(rng.integers(0, size))
        buf[start : start + int(rng.integers(1, 4096))] = bytes(min(4096, size - start))
    elif kind == 4:
        start = int(rng.integers(0, size))
        span = buf[start : start + int(rng.integers(1, 2048))]
        buf[start:start] = span
    else:
        start = int(rng.integers(0, size))
        del buf[start : start + int(rng.integers(1, 2048))]
    return bytes(buf)


class _Worker:
    """One decoding process; restarted after it dies or hangs."""

    def __init__(self) -> None:
        self._start()

    def _start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", _WORKER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL, text=True, bufsize=1,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        stdout = self.process.stdout
        threading.Thread(target=self._pump, args=(stdout, self.lines), daemon=True).start()

    @staticmethod
    def _pump(stdout, lines: queue.Queue) -> None:
        for line in stdout:
            lines.put(line)
        lines.put(None)

    def decode(self, path: Path) -> dict:
        try:
            self.process.stdin.write(f"{path}\n")
            self.process.stdin.flush()
            line = self.lines.get(timeout=PER_FILE_TIMEOUT_S)
        except queue.Empty:
            self._restart()
            return {"path": str(path), "status": "failed", "error": "decoder hung"}
        except BrokenPipeError:
            line = None
        if line is None:
            self._restart()
            return {"path": str(path), "status": "failed", "error": "decoder process died"}
        return json.loads(line)

    def _restart(self) -> None:
        self.process.kill()
        self.process.wait()
        self._start()

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=30)


@pytest.mark.parametrize("copies", [
    pytest.param(QUICK_COPIES, id="quick"),
    pytest.param(CORPUS_COPIES, id="corpus", marks=pytest.mark.nightly),
])
def test_damaged_copies_all_end_ok_or_as_a_recorded_failure(tmp_path, copies):
    original = tmp_path / "original.mp4"
    videogen.write_video(original, videogen.moving_square_frames(12), 10.0, "h264")
    data = original.read_bytes()
    rng = np.random.default_rng(20261125)
    paths = []
    for index in range(copies):
        copy = tmp_path / f"copy{index:03d}.mp4"
        copy.write_bytes(_mutate(data, rng))
        paths.append(copy)

    todo: queue.Queue[Path] = queue.Queue()
    for copy in paths:
        todo.put(copy)
    results: list[dict] = []

    def drain() -> None:
        worker = _Worker()
        try:
            while True:
                try:
                    path = todo.get_nowait()
                except queue.Empty:
                    return
                results.append(worker.decode(path))
        finally:
            worker.close()

    started = time.monotonic()
    threads = [threading.Thread(target=drain) for _ in range(WORKERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=TOTAL_BUDGET_S)
    elapsed = time.monotonic() - started

    assert not any(t.is_alive() for t in threads), f"fuzzing did not finish in {elapsed:.0f} s"
    assert sorted(r["path"] for r in results) == sorted(map(str, paths)), "a copy was lost"
    unexpected = [r for r in results if r["status"] not in ("ok", "failed")]
    assert not unexpected, unexpected[:5]
    for result in results:
        if result["status"] == "failed":
            error = result["error"]
            assert "\n" not in error, error
            assert error.startswith(f"{result['path']}: ") or error.startswith("decoder "), error
    statuses = {s: sum(r["status"] == s for r in results) for s in ("ok", "failed")}
    # Both outcomes occur, so the damage is neither all harmless nor all fatal.
    assert statuses["ok"] > 0 and statuses["failed"] > 0, statuses
