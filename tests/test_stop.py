"""Stopping a run with SIGINT or SIGTERM: one line, lock released, nothing partial, and a
re-run resumes to the rows of an uninterrupted run.

One real ``hflpipe run`` process is stopped (its terminal output and exit status are the
point); the tests below assert on what it left. A driver killed without warning
(SIGKILL) is ``test_faults_driver``'s.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds
import pytest
import yaml

from hflpipe.model.synthetic_checkpoint import synthetic_mano_path
from hflpipe.pipeline.config.jobspec import build_config, load_spec
from hflpipe.pipeline.demo.scene import make_demo_scene
from hflpipe.pipeline.output.reader import read_table, visible_files
from hflpipe.pipeline.run.context import LOCK_FILE
from hflpipe.pipeline.run.runner import run
from hflpipe.pipeline.run.stop import RunInterrupted, check_stop, stop_on_signals

pytestmark = pytest.mark.one_cpu_actor

# Enough videos that one is committed and another is not when the signal lands.
FRAMES = 2
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


def write_copies_job(root: Path, checkpoint: Path, frames: int, videos: int) -> Path:
    """``videos`` copies of a demo video of ``frames`` frames in ``root`` (different paths,
    so different videos) and the spec of a job that does them one at a time into
    ``root/out``; returns the spec."""
    scene = make_demo_scene(root / "scene", num_frames=frames, size=(320, 240))
    for index in range(videos):
        shutil.copy(scene.video_path, root / f"clip{index}.mp4")
    spec = root / "job.yaml"
    spec.write_text(yaml.safe_dump({
        "inputs": {"videos": [str(root / "clip*.mp4")]},
        "output": {"out": str(root / "out")},
        "model": {"checkpoint": str(checkpoint), "mano": str(synthetic_mano_path())},
        "scene": {"intrinsics": str(scene.intrinsics_path), "object": scene.object_name},
        "detection": {"boxes": str(scene.boxes_path)},
        # One thread in the real process's own Ray and in the session's: CPU results
        # differ in their last bits between thread counts, and the rows must be equal.
        "resources": {"max_concurrent_videos": 1, "batch_size": 4, "cpus_per_actor": 1},
    }))
    return spec


@dataclass(frozen=True)
class Stopped:
    """What the stopped process printed and left, seen right after it exited, and the
    output of an uninterrupted run of the same job."""

    spec: Path
    out: Path
    reference: Path
    returncode: int
    stderr: str
    took_s: float
    committed: int
    hand_rows: int
    raw_hand_rows: int
    temporaries: list[Path]
    lock_free: bool


def _committed(out: Path) -> int:
    return len(visible_files(out / "videos"))


def _sigterm_after_first_commit(process: subprocess.Popen, out: Path) -> float:
    """What a scheduler does: SIGTERM to the ``hflpipe run`` process once a video is
    committed; returns when it was sent."""
    deadline = time.monotonic() + 400
    while _committed(out) < 1:
        assert process.poll() is None, process.stderr.read()
        assert time.monotonic() < deadline, "the run made no progress"
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    return time.monotonic()


@pytest.fixture(scope="module")
def stopped(tmp_path_factory: pytest.TempPathFactory, synthetic_checkpoint: Path,
            local_ray: object) -> Stopped:
    """A real ``hflpipe run`` (with its own local Ray, in its own process group and Ray
    temp folder) stopped by SIGTERM after its first commit; meanwhile this process runs
    the same job uninterrupted on the session's Ray."""
    spec = write_copies_job(tmp_path_factory.mktemp("stop"), synthetic_checkpoint, FRAMES,
                            VIDEOS)
    out, reference = spec.parent / "out", spec.parent / "reference"
    temp = tempfile.mkdtemp(prefix="hfs", dir="/tmp")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env["RAY_TMPDIR"] = temp
    command = [sys.executable, "-m", "hflpipe", "run", str(spec), "-q", "--format", "json"]
    process = subprocess.Popen(command, env=env, text=True, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, start_new_session=True)
    try:
        with ThreadPoolExecutor(1) as watcher:
            signalled = watcher.submit(_sigterm_after_first_commit, process, out)
            whole = run(build_config(load_spec(spec), {"out": reference}), progress=False)
            assert whole.statuses == {"ok": VIDEOS}
            signalled_at = signalled.result()
        _, stderr = process.communicate(timeout=60)
        took = time.monotonic() - signalled_at
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        _kill_strays(temp)
        shutil.rmtree(temp, ignore_errors=True)
    with (out / LOCK_FILE).open("a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock_free = False
        else:
            fcntl.flock(lock, fcntl.LOCK_UN)
            lock_free = True
    return Stopped(
        spec=spec, out=out, reference=reference, returncode=process.returncode, stderr=stderr,
        took_s=took, committed=_committed(out), hand_rows=read_table(out, "hands").num_rows,
        raw_hand_rows=ds.dataset(out / "hands", format="parquet").count_rows(),
        temporaries=list(out.rglob(".*.tmp*")), lock_free=lock_free,
    )


def _kill_strays(temp: str) -> None:
    """Ray processes of the stopped run that left its process group (found by temp folder)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if temp in cmdline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(entry.name), signal.SIGKILL)


@pytest.mark.slow
def test_sigterm_stops_the_run_with_one_line(stopped: Stopped) -> None:
    stderr = stopped.stderr
    assert stopped.returncode == 128 + signal.SIGTERM, stderr[-2000:]
    assert stopped.took_s < 15, f"took {stopped.took_s:.1f} s to stop"
    # Ray may say a word when it starts; after the signal, one line and no crash dump.
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert not [line for line in lines if "SIGTERM received" in line or "PC: @" in line
                or "Traceback" in line], stderr[-2000:]
    assert [line for line in lines if "SIGTERM" in line] == lines[-1:], stderr[-2000:]
    assert lines[-1].startswith("hflpipe: stopped by SIGTERM: ")
    assert f"{stopped.committed} videos committed to {stopped.out}" in lines[-1]
    assert "run the same command again to resume" in lines[-1]


@pytest.mark.slow
def test_a_stopped_run_leaves_only_whole_videos_and_releases_its_lock(stopped: Stopped) -> None:
    assert 1 <= stopped.committed < VIDEOS
    # Nothing partial, to the reader and to raw Parquet readers alike.
    assert stopped.temporaries == []
    assert stopped.hand_rows == stopped.raw_hand_rows == stopped.committed * FRAMES
    assert stopped.lock_free


def _sorted_rows(out: Path, table: str) -> pa.Table:
    rows = read_table(out, table)
    rows = rows.drop_columns([c for c in ("started_at", "finished_at") if c in rows.column_names])
    keys = [k for k in ("video_id", "frame_index", "track_id") if k in rows.column_names]
    return rows.sort_by([(k, "ascending") for k in keys]).replace_schema_metadata(None)


@pytest.mark.slow
def test_a_stopped_run_resumes_to_the_same_rows_as_an_uninterrupted_one(
    stopped: Stopped, hflpipe_cli
) -> None:
    def _run(*args: str):
        return hflpipe_cli("run", stopped.spec, "-q", "--format", "json", *args)

    out = stopped.out
    resumed = _run()
    assert resumed.returncode == 0, resumed.stderr
    summary = json.loads(resumed.stdout)
    assert summary["already_done"] == stopped.committed
    assert summary["ok"] == VIDEOS - stopped.committed

    for table in ("hands", "objects", "videos"):
        got, expected = _sorted_rows(out, table), _sorted_rows(stopped.reference, table)
        assert got.num_rows == (VIDEOS if table == "videos" else VIDEOS * FRAMES)
        keys = ["video_id", "frame_index", "track_id"] if table != "videos" else ["video_id"]
        assert not got.select(keys).to_pandas().duplicated().any()
        assert got.equals(expected), table
    # Raw readers see exactly the committed rows: nothing partial or duplicated is left.
    assert ds.dataset(out / "hands", format="parquet").count_rows() == VIDEOS * FRAMES

    again = _run()
    assert json.loads(again.stdout)["already_done"] == VIDEOS

    changed = _run("--stride", "2")
    assert changed.returncode == 1
    assert "holds results of another configuration" in changed.stderr
    assert len(changed.stderr.strip().splitlines()) == 1
