"""The driver killed mid-write, the disk filling up, an output path that cannot be a folder.

Each video's task writes its hands and objects files; the driver commits it by writing its
``videos`` row (temporary name, fsync, rename). These tests stop the driver at its worst
moments and check that what is on disk stays
readable, that nothing uncommitted is reported, and that a re-run ends exactly where an
uninterrupted run does.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import types
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import ray
import test_faults_common as common

from hflpipe.atomic import is_temporary
from hflpipe.pipeline.common.errors import HflpipeError, OutputError
from hflpipe.pipeline.output import store
from hflpipe.pipeline.output.reader import read_table, visible_files
from hflpipe.pipeline.run.runner import run

pytestmark = [pytest.mark.slow, pytest.mark.one_cpu_actor, pytest.mark.timeout(480)]
FRAMES = 2
VIDEOS = 2
# The driver's Parquet writes: one videos row (the commit marker) per video.
SECOND_COMMIT = 2
#: The killed driver and the uninterrupted run share the session's Ray at once: an actor of
#: one CPU each leaves two CPUs for their videos. Every run compared with the uninterrupted
#: one computes with as many threads (the last bits of CPU results depend on them).
ONE_CPU_ACTOR = 1


@dataclass(frozen=True)
class Shared:
    clips: list[Path]
    boxes: Path
    reference: Path
    #: A driver killed at its second commit (its own process), and its output folder.
    killed: subprocess.Popen
    killed_out: Path


@pytest.fixture(scope="module")
def shared(tmp_path_factory, synthetic_checkpoint, local_ray):
    """Clips, boxes, an uninterrupted run to compare with, on the session's Ray, and a
    driver process that kills itself mid-write (started first, so that its start-up
    overlaps the uninterrupted run)."""
    root = tmp_path_factory.mktemp("driver")
    clips = [common.write_clip(root / f"clip{i}.mp4", FRAMES) for i in range(VIDEOS)]
    boxes = common.write_boxes(root / "boxes.csv", FRAMES)
    killed_out = root / "killed"
    address = ray.get_runtime_context().gcs_address
    with open(root / "killed.log", "w") as log:
        killed = subprocess.Popen(
            [sys.executable, "-c", _KILLED_DRIVER, str(common.TESTS), str(SECOND_COMMIT),
             str(killed_out), str(synthetic_checkpoint), str(boxes), address, str(ONE_CPU_ACTOR),
             *map(str, clips)],
            stdout=log, stderr=subprocess.STDOUT,
        )
    try:
        reference = root / "reference"
        summary = run(common.run_config(clips, reference, synthetic_checkpoint, boxes,
                                        cpus_per_actor=ONE_CPU_ACTOR), progress=False)
        assert summary.statuses == {"ok": VIDEOS}
        killed.wait(timeout=300)
    finally:
        killed.kill()
    return Shared(clips, boxes, reference, killed, killed_out)


_KILLED_DRIVER = """
import os, signal, sys
import pyarrow.parquet as pq
sys.path.insert(0, sys.argv[1])
import test_faults_common as common
from pathlib import Path
from hflpipe.pipeline.run.runner import run

real_write = pq.write_table
calls = 0

def write_then_die(table, sink, **kwargs):
    global calls
    calls += 1
    if calls == int(sys.argv[2]):
        sink.write(b"PAR1 half a file")
        sink.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    return real_write(table, sink, **kwargs)

pq.write_table = write_then_die
out, checkpoint, boxes, address, actor_cpus, *clips = sys.argv[3:]
run(common.run_config(clips, Path(out), Path(checkpoint), Path(boxes), address=address,
                      cpus_per_actor=float(actor_cpus)), progress=False)
"""


def test_a_driver_killed_mid_write_leaves_valid_files_and_a_rerun_completes(
    synthetic_checkpoint, shared
):
    out = shared.killed_out
    log = (out.parent / "killed.log").read_text()
    assert shared.killed.returncode == -signal.SIGKILL, log[-2000:]

    # On disk: one committed video, the second's hands and objects in place without its
    # marker, the marker half-written under a hidden temporary name.
    assert [p for p in (out / "videos").iterdir() if is_temporary(p)], "no interrupted write"
    assert len(visible_files(out / "hands")) == 2
    for path in common.visible_parquet(out):
        pq.read_metadata(path)
    assert len(read_table(out, "videos")) == 1
    assert len(read_table(out, "hands")) == FRAMES

    summary = run(common.run_config(shared.clips, out, synthetic_checkpoint, shared.boxes,
                                    cpus_per_actor=ONE_CPU_ACTOR),
                  progress=False)
    assert summary.already_done == 1 and summary.statuses == {"ok": VIDEOS - 1}
    common.check_output_is_clean(out)
    common.assert_same_results(out, shared.reference)


def test_a_full_disk_stops_the_job_with_one_line_and_keeps_what_was_written(
    tmp_path, synthetic_checkpoint, shared, monkeypatch
):
    clips, boxes, reference = shared.clips, shared.boxes, shared.reference
    out = tmp_path / "out"
    calls = 0

    def write_until_full(table, sink, **kwargs):
        nonlocal calls
        calls += 1
        if calls == SECOND_COMMIT:
            sink.write(b"PAR1 no room for the rest")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return pq.write_table(table, sink, **kwargs)

    full_disk = types.SimpleNamespace(
        write_table=write_until_full, read_metadata=pq.read_metadata,
        read_table=pq.read_table, read_schema=pq.read_schema,
    )
    monkeypatch.setattr(store, "pq", full_disk)
    config = common.run_config(clips, out, synthetic_checkpoint, boxes,
                               cpus_per_actor=ONE_CPU_ACTOR)
    with pytest.raises(OutputError) as stopped:
        run(config, progress=False)
    message = str(stopped.value)
    assert "\n" not in message and "No space left on device" in message
    assert str(out / "videos") in message

    committed = read_table(out, "videos")
    assert committed.num_rows == 1 and committed["status"].to_pylist() == ["ok"]
    common.check_output_is_clean(out)

    monkeypatch.undo()
    summary = run(config, progress=False)
    assert summary.already_done == 1 and summary.statuses == {"ok": VIDEOS - 1}
    common.assert_same_results(out, reference)


def test_an_output_path_that_is_a_file_stops_the_job_before_any_video(
    tmp_path, synthetic_checkpoint, shared
):
    clips, boxes = shared.clips, shared.boxes
    out = tmp_path / "taken"
    out.write_text("a file, not a folder")
    with pytest.raises(HflpipeError) as stopped:
        run(common.run_config(clips, out, synthetic_checkpoint, boxes), progress=False)
    message = str(stopped.value)
    assert "\n" not in message and str(out) in message
    assert out.read_text() == "a file, not a folder"
