"""The fault tests on S3: a killed driver, two runs at once, a killed worker, a full store
and a lost lock, against the session's real S3 server, with results read from the bucket.

On S3 the workers upload each video's hands and objects files and the driver its
``videos`` row (the commit); every object is a multipart upload that becomes visible only
when it completes. The meaningful place for a killed driver is therefore mid-way through
a commit's upload, after the video's data files are in the bucket: a reader must not see
that video, and a re-run must abort the pending upload, remove the data files and end
where an uninterrupted run does.
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import time
import types
from dataclasses import dataclass
from pathlib import Path

import pyarrow.dataset as ds
import pytest
import ray
import s3_server
import test_faults_common as common
from s3_proxy import FillingProxy
from s3_server import S3Server

from hflpipe.model.synthetic_checkpoint import synthetic_mano_path
from hflpipe.pipeline.common import storage
from hflpipe.pipeline.common.errors import OutputError
from hflpipe.pipeline.output import object_lock
from hflpipe.pipeline.output.object_lock import s3_lease
from hflpipe.pipeline.output.reader import SUFFIX, read_table
from hflpipe.pipeline.output.s3_uploads import abort_unfinished_uploads
from hflpipe.pipeline.run import runner
from hflpipe.pipeline.run.runner import run

pytestmark = [pytest.mark.slow, pytest.mark.one_cpu_actor, pytest.mark.timeout(480)]
FRAMES = 2
VIDEOS = 2
#: Two drivers share the session's Ray at once: one CPU per actor leaves room for both,
#: and runs compared with the reference compute with as many threads.
ONE_CPU_ACTOR = 1
LOCK = "_hflpipe.lock"


@dataclass(frozen=True)
class Shared:
    bucket: str
    root: Path
    boxes: Path
    reference: str
    #: A driver that stops at its second commit holding the lock, until ``go`` exists,
    #: then dies mid-upload of that commit.
    killed: subprocess.Popen
    killed_out: str
    holding: Path
    go: Path

    def wait_until_holding(self) -> None:
        """Wait until the driver is held at its second commit (it starts in the background
        while the other tests run)."""
        deadline = time.monotonic() + 300
        while not self.holding.exists():
            assert self.killed.poll() is None, (self.root / "killed.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "the driver never reached its second commit"
            time.sleep(0.2)

    def release_killed_driver(self) -> None:
        self.wait_until_holding()
        self.go.touch()
        self.killed.wait(timeout=120)


@pytest.fixture(scope="module")
def shared(s3: S3Server, tmp_path_factory, synthetic_checkpoint, local_ray):
    """Clips, an uninterrupted run into the bucket, and a driver process that will be held
    at its second commit (started first, so that its start-up overlaps the uninterrupted
    run and the tests that do not need it, which come first in this file)."""
    root = tmp_path_factory.mktemp("s3faults")
    clips = [common.write_clip(root / f"clip{i}.mp4", FRAMES) for i in range(VIDEOS)]
    boxes = common.write_boxes(root / "boxes.csv", FRAMES)
    bucket = s3.new_bucket()
    killed_out = f"s3://{bucket}/killed"
    holding, go = root / "holding", root / "go"
    address = ray.get_runtime_context().gcs_address
    with open(root / "killed.log", "w") as log:
        killed = subprocess.Popen(
            [sys.executable, "-c", _KILLED_DRIVER, str(common.TESTS), str(holding), str(go),
             killed_out, str(synthetic_checkpoint), str(boxes), address, str(ONE_CPU_ACTOR),
             *map(str, clips)],
            stdout=log, stderr=subprocess.STDOUT,
        )
    try:
        reference = f"s3://{bucket}/reference"
        summary = run(common.run_config(clips, reference, synthetic_checkpoint, boxes,
                                        cpus_per_actor=ONE_CPU_ACTOR), progress=False)
        assert summary.statuses == {"ok": VIDEOS}
        yield Shared(bucket, root, boxes, reference, killed, killed_out, holding, go)
    finally:
        killed.kill()


_KILLED_DRIVER = """
import os, signal, sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
import test_faults_common as common
from hflpipe.pipeline.output.store import OutputStore
from hflpipe.pipeline.run.runner import run

holding, go = Path(sys.argv[2]), Path(sys.argv[3])
real_write = OutputStore.write_bytes
commits = 0

def write_then_die(self, data, *parts):
    global commits
    commits += parts[0] == "videos"
    if commits == 2:
        holding.touch()
        while not go.exists():
            time.sleep(0.05)
        sink = self.filesystem.open_output_stream(self.path(*parts))
        sink.write(data[: len(data) // 2])
        os.kill(os.getpid(), signal.SIGKILL)
    return real_write(self, data, *parts)

OutputStore.write_bytes = write_then_die
out, checkpoint, boxes, address, actor_cpus, *clips = sys.argv[4:]
# One video at a time: one worker process to start for this driver's job, not two.
run(common.run_config(clips, out, Path(checkpoint), Path(boxes), address=address,
                      cpus_per_actor=float(actor_cpus), max_concurrent_videos=1),
    progress=False)
"""


def _flags(shared: Shared, checkpoint: Path, out: str, videos: str = "clip*.mp4"
           ) -> list[str]:
    """``hflpipe run`` flags for the options of ``common.run_config`` (the same config)."""
    return ["--videos", str(shared.root / videos), "--out", out,
            "--checkpoint", str(checkpoint), "--mano", str(synthetic_mano_path()),
            "--detector", "boxes", "--boxes", str(shared.boxes), "--object", "003_cracker_box",
            "--device", "cpu", "--batch-size", "4", "--chunk-size", "8",
            "--cpus-per-actor", str(ONE_CPU_ACTOR), "-q"]


def _one_line(result) -> str:
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def _pending_uploads(s3: S3Server, bucket: str, prefix: str) -> list[str]:
    listed = s3.client.list_multipart_uploads(Bucket=bucket, Prefix=prefix)
    return [upload["Key"] for upload in listed.get("Uploads", [])]


def _check_bucket_is_clean(s3: S3Server, bucket: str, prefix: str) -> None:
    """No pending uploads, no data file without an ok ``videos`` row, and a raw dataset
    reader over the bucket (pyarrow.dataset) sees the rows ``read_table`` sees, once."""
    out = f"s3://{bucket}/{prefix}"
    assert _pending_uploads(s3, bucket, f"{prefix}/") == []
    videos = read_table(out, "videos").to_pandas()
    assert videos["video_id"].is_unique
    ok = set(videos.loc[videos["status"] == "ok", "video_id"])
    filesystem, _ = storage.resolve(out)
    for table in ("hands", "objects"):
        keys = s3.keys(bucket, f"{prefix}/{table}/")
        ids = {Path(key).name[: -len(SUFFIX)] for key in keys if key.endswith(SUFFIX)}
        assert ids == ok, f"{table} files without an ok videos row: {ids - ok}"
        rows = read_table(out, table, columns=["video_id", "frame_index", "track_id"])
        assert not rows.to_pandas().duplicated().any(), f"duplicate {table} rows"
        raw = ds.dataset(f"{bucket}/{prefix}/{table}", filesystem=filesystem,
                         format="parquet")
        assert raw.count_rows() == rows.num_rows


def test_a_worker_killed_mid_write_on_s3_costs_a_retry_not_the_video(
    shared, synthetic_checkpoint, s3, local_ray
):
    # The fault hook kills the worker after its hands upload, before its objects upload.
    clip = common.write_clip(shared.root / "die_mid_write.mp4", FRAMES)
    out = f"s3://{shared.bucket}/worker"
    summary = run(common.run_config([clip], out, synthetic_checkpoint, shared.boxes,
                                    max_retries=1, cpus_per_actor=ONE_CPU_ACTOR),
                  progress=False)
    assert list(local_ray.glob("died-mid-write-*")), "the injected worker kill did not happen"
    assert summary.statuses == {"ok": 1}, summary.failures
    _check_bucket_is_clean(s3, shared.bucket, "worker")
    assert common.frame_rows(out) == {(read_table(out, "videos")["video_id"][0].as_py(), f)
                                      for f in range(FRAMES)}


def test_a_full_store_stops_the_job_with_one_line_and_keeps_what_was_committed(
    shared, synthetic_checkpoint, s3, hflpipe_cli, monkeypatch
):
    out = f"s3://{shared.bucket}/full"
    # The driver reaches the store through a proxy that has room for one commit.
    proxy = FillingProxy(s3_server.ENDPOINT)
    try:
        with monkeypatch.context() as through_proxy:
            through_proxy.setenv("AWS_ENDPOINT_URL", proxy.endpoint)
            # The store's clients are made (and kept) per process and bucket: anew here.
            storage._filesystem.cache_clear()
            proxy.fill_after(1, "/full/videos/")
            result = hflpipe_cli("run", *_flags(shared, synthetic_checkpoint, out))
    finally:
        storage._filesystem.cache_clear()
        proxy.stop()
    line = _one_line(result)
    assert "minimum free drive threshold" in line and f"{out}/videos/" in line, line
    committed = read_table(out, "videos")
    assert committed.num_rows == 1 and committed["status"].to_pylist() == ["ok"]
    _check_bucket_is_clean(s3, shared.bucket, "full")
    assert f"full/{LOCK}" not in s3.keys(shared.bucket, "full/")


def test_a_run_whose_lock_is_taken_over_stops_committing_with_one_line(
    shared, synthetic_checkpoint, s3, hflpipe_cli, monkeypatch
):
    monkeypatch.setattr(object_lock, "RENEW_S", 0.05)
    lock_key = f"lost/{LOCK}"
    other = {"owner": "other", "host": "elsewhere", "pid": 4242,
             "expires_at": time.time() + 600}
    record = runner._record

    def take_over_then_record(summary, config, context, outcome, lock):
        # Another run takes the lock (as after this run's lease ran out) when the first
        # video is done, before it is committed; the holder's renewals find it.
        s3.client.put_object(Bucket=shared.bucket, Key=lock_key,
                             Body=json.dumps(other).encode())
        deadline = time.monotonic() + 30
        with contextlib.suppress(OutputError):
            while time.monotonic() < deadline:
                lock()
                time.sleep(object_lock.RENEW_S)
        return record(summary, config, context, outcome, lock)

    monkeypatch.setattr(runner, "_record", take_over_then_record)
    line = _one_line(hflpipe_cli("run", *_flags(shared, synthetic_checkpoint,
                                                f"s3://{shared.bucket}/lost", "clip0.mp4")))
    assert "another hflpipe run (host elsewhere, pid 4242) took over the lock" in line, line
    assert s3.keys(shared.bucket, "lost/videos/") == []
    held = s3.client.get_object(Bucket=shared.bucket, Key=lock_key)["Body"].read()
    assert json.loads(held) == other, "the holder removed the lock it had lost"


def test_a_lease_that_could_not_be_renewed_in_time_stops_writing(s3, monkeypatch):
    # The holder's clock, moved past the lease without a renewal in between (as when the
    # store does not answer for that long).
    now = [time.time()]
    monkeypatch.setattr(object_lock, "time", types.SimpleNamespace(time=lambda: now[0]))
    monkeypatch.setattr(object_lock, "RENEW_S", 3600.0)
    with s3_lease(f"s3://{s3.new_bucket()}/{LOCK}") as check:
        check()
        now[0] += object_lock.LEASE_S + 1
        with pytest.raises(OutputError, match="could not be renewed for 120 s"):
            check()


def test_a_lock_removed_under_its_holder_stops_writing(s3, monkeypatch):
    monkeypatch.setattr(object_lock, "RENEW_S", 0.05)
    bucket = s3.new_bucket()
    with s3_lease(f"s3://{bucket}/{LOCK}") as check:
        check()
        s3.client.delete_object(Bucket=bucket, Key=LOCK)
        deadline = time.monotonic() + 30
        with pytest.raises(OutputError, match="the lock is no longer this run's"):
            while time.monotonic() < deadline:
                check()
                time.sleep(object_lock.RENEW_S)
    assert s3.keys(bucket) == []


def test_unfinished_uploads_that_cannot_be_listed_cost_a_warning(s3, caplog):
    assert abort_unfinished_uploads("s3://no-such-bucket-hflpipe/out") == []
    assert "cannot abort the unfinished uploads" in caplog.text


def test_a_second_run_on_the_same_s3_output_stops_with_one_line(shared, synthetic_checkpoint,
                                                                s3, hflpipe_cli):
    # The held driver has the lock; a second run with the same config must not start.
    shared.wait_until_holding()
    before = s3.keys(shared.bucket, "killed/")
    line = _one_line(hflpipe_cli("run", *_flags(shared, synthetic_checkpoint,
                                                shared.killed_out)))
    assert "another hflpipe run is writing to it" in line and LOCK in line, line
    assert f"pid {shared.killed.pid}" in line
    assert s3.keys(shared.bucket, "killed/") == before


def test_a_driver_killed_mid_commit_on_s3_loses_nothing_and_a_rerun_completes(
    shared, synthetic_checkpoint, s3
):
    shared.release_killed_driver()
    log = (shared.root / "killed.log").read_text()
    assert shared.killed.returncode == -signal.SIGKILL, log[-2000:]
    out = shared.killed_out
    # In the bucket: one committed video, the second's data files without a commit, and
    # the commit's upload pending; a reader sees the committed video alone.
    assert len(_pending_uploads(s3, shared.bucket, "killed/videos/")) == 1
    assert len([k for k in s3.keys(shared.bucket, "killed/hands/") if k.endswith(SUFFIX)]) == 2
    assert read_table(out, "videos").num_rows == 1
    assert read_table(out, "hands").num_rows == FRAMES

    summary = run(common.run_config(sorted(shared.root.glob("clip*.mp4")), out,
                                    synthetic_checkpoint, shared.boxes,
                                    cpus_per_actor=ONE_CPU_ACTOR), progress=False)
    assert summary.already_done == 1 and summary.statuses == {"ok": VIDEOS - 1}
    _check_bucket_is_clean(s3, shared.bucket, "killed")
    common.assert_same_results(out, shared.reference)
    assert f"killed/{LOCK}" not in s3.keys(shared.bucket, "killed/")
