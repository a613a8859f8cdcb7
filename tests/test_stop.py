"""Stopping a run with SIGINT or SIGTERM: one line, lock released, nothing partial, resumable."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.dataset as ds
import pytest
from test_resume import _kill_strays, write_copies_job

from hflpipe.pipeline.output.reader import read_table, visible_files
from hflpipe.pipeline.run.context import LOCK_FILE
from hflpipe.pipeline.run.stop import RunInterrupted, check_stop, stop_on_signals

FRAMES = 4
VIDEOS = 3


def test_a_signal_stops_the_run_at_its_next_check() -> None:
    before = signal.getsignal(signal.SIGTERM)
    with stop_on_signals():
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)  # the signal lands, and nothing is raised in the middle of this
        with pytest.raises(RunInterrupted) as stopped:
            check_stop()
        assert (stopped.value.signal_name, stopped.value.exit_code) == ("SIGINT", 130)
        check_stop()  # once per signal
    with pytest.raises(RunInterrupted) as stopped, stop_on_signals():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)
    # A signal no check saw still stops the run when it ends.
    assert (stopped.value.signal_name, stopped.value.exit_code) == ("SIGTERM", 143)
    assert signal.getsignal(signal.SIGTERM) is before


@pytest.fixture(scope="module")
def job(tmp_path_factory: pytest.TempPathFactory, synthetic_checkpoint: Path) -> Path:
    """Three copies of a short demo video and a spec that does them one at a time."""
    return write_copies_job(tmp_path_factory.mktemp("stop"), synthetic_checkpoint, FRAMES, VIDEOS)


def _committed(out: Path) -> int:
    return len(visible_files(out / "videos"))


@pytest.mark.slow
def test_sigterm_stops_the_run_with_one_line_and_a_rerun_resumes(
    job: Path, local_ray: object, hflpipe_cli
) -> None:
    """What a scheduler does: SIGTERM to the ``hflpipe run`` process (a real one: its
    terminal output and exit status are the point)."""
    out = job.parent / "out"
    temp = tempfile.mkdtemp(prefix="hfs", dir="/tmp")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env["RAY_TMPDIR"] = temp
    command = [sys.executable, "-m", "hflpipe", "run", str(job), "-q", "--format", "json"]
    process = subprocess.Popen(command, env=env, text=True, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 400
        while _committed(out) < 1:
            assert process.poll() is None, process.stderr.read()
            assert time.monotonic() < deadline, "the run made no progress"
            time.sleep(0.1)
        process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        _, stderr = process.communicate(timeout=60)
        took = time.monotonic() - signalled
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        _kill_strays(temp)
        shutil.rmtree(temp, ignore_errors=True)
    committed = _committed(out)
    assert process.returncode == 128 + signal.SIGTERM, stderr[-2000:]
    assert took < 15, f"took {took:.1f} s to stop"
    # Ray may say a word when it starts; after the signal, one line and no crash dump.
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert not [line for line in lines if "SIGTERM received" in line or "PC: @" in line
                or "Traceback" in line], stderr[-2000:]
    assert [line for line in lines if "SIGTERM" in line] == lines[-1:], stderr[-2000:]
    assert lines[-1].startswith("hflpipe: stopped by SIGTERM: ")
    assert f"{committed} videos committed to {out}" in lines[-1]
    assert "run the same command again to resume" in lines[-1]
    assert 1 <= committed < VIDEOS
    # Nothing partial: the files on disk are those of the committed videos.
    assert not list(out.rglob(".*.tmp*"))
    assert ds.dataset(out / "hands", format="parquet").count_rows() == committed * FRAMES
    with (out / LOCK_FILE).open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(lock, fcntl.LOCK_UN)

    resumed = hflpipe_cli("run", job, "-q", "--format", "json")
    assert resumed.returncode == 0, resumed.stderr
    assert read_table(out, "videos").num_rows == VIDEOS
    assert read_table(out, "hands").num_rows == VIDEOS * FRAMES
