"""``hflpipe submit/status/logs`` against a real Ray head node started on loopback here.

The head node gets its own ports, temporary folder, process group and token, so it
neither collides with nor is joined by the in-process ``ray.init`` of other tests;
teardown kills exactly its process group (and any stray process of its session).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pyarrow as pa
import pytest
import yaml
from free_ports import free_ports

from hflpipe.model.synthetic_checkpoint import synthetic_mano_path
from hflpipe.pipeline.common import storage
from hflpipe.pipeline.common.errors import ConfigError
from hflpipe.pipeline.demo.scene import make_demo_scene
from hflpipe.pipeline.output.reader import read_table
from hflpipe.pipeline.run.submit import ClusterError, submit

pytestmark = pytest.mark.one_cpu_actor
FRAMES = 2
RAY = Path(sys.executable).with_name("ray")
# Row columns that record when something ran, not what it computed.
TIMING_COLUMNS = ("started_at", "finished_at")


def _session_processes(marker: str) -> list[int]:
    """Pids of processes whose command line names this head node's temporary folder."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if marker in cmdline:
                pids.append(int(entry.name))
    return pids


@pytest.fixture(scope="module")
def head():
    """A Ray head node with the job server on 127.0.0.1, starting in the background.

    Yields a function that waits until the job server answers and returns (job server
    URL, GCS, env): a test can do its local work while the head comes up.
    """
    gcs, dashboard, client, agent, agent_grpc, runtime_env, metrics = free_ports(7)
    temp = tempfile.mkdtemp(prefix="hfr", dir="/tmp")  # short: Ray's socket paths are limited
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env |= {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32),
            "PATH": f"{RAY.parent}{os.pathsep}{env.get('PATH', '')}",
            "RAY_USAGE_STATS_ENABLED": "0"}
    command = [
        str(RAY), "start", "--head", "--block", "--node-ip-address=127.0.0.1",
        f"--port={gcs}", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}",
        "--include-dashboard=true", f"--ray-client-server-port={client}",
        f"--dashboard-agent-listen-port={agent}", f"--dashboard-agent-grpc-port={agent_grpc}",
        f"--runtime-env-agent-port={runtime_env}", f"--metrics-export-port={metrics}",
        "--num-cpus=2", f"--temp-dir={temp}", "--disable-usage-stats",
    ]
    log = open(Path(temp) / "head.log", "wb")  # noqa: SIM115 (open for the fixture's life)
    process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True)
    url = f"http://127.0.0.1:{dashboard}"

    @functools.cache
    def ready() -> tuple[str, str, dict]:
        _wait_for_job_server(url, process, env["RAY_AUTH_TOKEN"])
        return url, f"127.0.0.1:{gcs}", env

    try:
        yield ready
    finally:
        _stop(process, temp)
        log.close()
        shutil.rmtree(temp, ignore_errors=True)


def _wait_for_job_server(url: str, process: subprocess.Popen, token: str) -> None:
    deadline = time.monotonic() + 120
    request = urllib.request.Request(f"{url}/api/version",
                                     headers={"Authorization": f"Bearer {token}"})
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"ray start --head exited with {process.returncode}")
        try:
            with urllib.request.urlopen(request, timeout=2):
                return
        except OSError:
            time.sleep(1)
    pytest.fail("the Ray job server did not come up within 120 s")


def _stop(process: subprocess.Popen, temp: str) -> None:
    """SIGTERM the head's process group, SIGKILL what is left, then strays of its session."""
    for sig, grace in ((signal.SIGTERM, 5), (signal.SIGKILL, 5)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            continue
    for pid in _session_processes(temp):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while _session_processes(temp) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not _session_processes(temp), "processes of the test's Ray head survived"


def _hflpipe(*args: str, env: dict, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hflpipe", *args], env=env, text=True,
                          capture_output=True, timeout=timeout)


@pytest.fixture(scope="module")
def job(tmp_path_factory, synthetic_checkpoint, s3):
    """A spec for the demo scene, alone in its folder, with the video in a bucket and the
    output going to it (the cluster's nodes reach the store with their own credentials:
    the head node inherits the tests' ``AWS_*``); and a local out for the same spec."""
    root = tmp_path_factory.mktemp("submit")
    scene = make_demo_scene(root / "scene", num_frames=FRAMES)
    bucket = s3.new_bucket()
    submitted = f"s3://{bucket}/submitted"
    spec_dir = root / "spec"
    spec_dir.mkdir()
    spec = spec_dir / "job.yaml"
    spec.write_text(yaml.safe_dump({
        "inputs": {"videos": [s3.put_file(bucket, "archive/clip.mp4", scene.video_path)]},
        "output": {"out": submitted},
        "model": {"checkpoint": str(synthetic_checkpoint), "mano": str(synthetic_mano_path())},
        "scene": {"intrinsics": str(scene.intrinsics_path), "object": scene.object_name},
        "detection": {"boxes": str(scene.boxes_path)},
        # One thread on both clusters (the head has 2 CPUs, the session's Ray 4): CPU
        # results differ in their last bits between thread counts.
        "resources": {"max_concurrent_videos": 1, "batch_size": 4, "cpus_per_actor": 1},
    }))
    return spec, submitted, root / "local"


@pytest.mark.slow
def test_a_submitted_job_matches_hflpipe_run_and_an_unknown_job_is_one_line(
        head, job, hflpipe_cli, local_ray):
    spec, submitted, local = job
    # The same spec with hflpipe run on this session's Ray, into another folder, while
    # the head node starts.
    ran = hflpipe_cli("run", spec, "--out", local, "-q")
    assert ran.returncode == 0, ran.stderr

    url, _, env = head()
    sent = _hflpipe("submit", str(spec), "--address", url, "--format", "json", env=env)
    assert sent.returncode == 0, sent.stderr
    job_id = json.loads(sent.stdout)["submission_id"]

    # While the job runs: the status of a job the server does not know.
    with ThreadPoolExecutor(1) as background:
        unknown = background.submit(_hflpipe, "status", "raysubmit_nope", "--address", url,
                                    env=env, timeout=60)
        followed = _hflpipe("logs", job_id, "--address", url, "--follow", env=env)
    _check_one_line_error(unknown.result())
    assert followed.returncode == 0, followed.stdout + followed.stderr
    assert f"job {job_id}: SUCCEEDED" in followed.stderr
    summary = json.loads(followed.stdout[followed.stdout.index("{"):])
    assert (summary["ok"], summary["failed"], summary["frames"]) == (1, 0, FRAMES)

    status = _hflpipe("status", job_id, "--address", url, "--format", "json", env=env)
    report = json.loads(status.stdout)
    assert report["status"] == "SUCCEEDED" and report["metadata"]["out"] == str(submitted)

    for table in ("hands", "objects", "videos"):
        a, b = (_rows(read_table(out, table)) for out in (submitted, local))
        assert a.num_rows == (1 if table == "videos" else FRAMES)
        assert a.equals(b), table
    records = [json.loads(storage.read_text(storage.join(out, "_job.json")))
               for out in (submitted, local)]
    assert records[0]["config_hash"] == records[1]["config_hash"]


def _rows(table: pa.Table) -> pa.Table:
    table = table.drop_columns([c for c in TIMING_COLUMNS if c in table.column_names])
    keys = [k for k in ("video_id", "frame_index", "track_id") if k in table.column_names]
    return table.sort_by([(k, "ascending") for k in keys]).replace_schema_metadata(None)


def _check_one_line_error(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 1
    assert result.stderr.startswith("hflpipe: error: ray job server")
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_relative_out_is_refused_before_contacting_the_cluster(tmp_path):
    spec = tmp_path / "job.yaml"
    spec.write_text(yaml.safe_dump({"inputs": {"videos": ["/data/*.mp4"]},
                                    "output": {"out": "results"},
                                    "model": {"checkpoint": "/models/x.pth.tar"}}))
    with pytest.raises(ConfigError, match=r"key 'output\.out': a submitted job needs an absolute"):
        submit(spec, "http://127.0.0.1:9")


def test_an_unreachable_cluster_is_one_line(tmp_path, monkeypatch):
    for name in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS"):
        monkeypatch.delenv(name, raising=False)
    spec = tmp_path / "job.yaml"
    spec.write_text(yaml.safe_dump({"inputs": {"videos": ["/data/*.mp4"]},
                                    "output": {"out": "/data/out"},
                                    "model": {"checkpoint": "/models/x.pth.tar"}}))
    (port,) = free_ports(1)
    with pytest.raises(ClusterError, match=f"ray job server http://127.0.0.1:{port}") as info:
        submit(spec, f"http://127.0.0.1:{port}")
    assert "\n" not in str(info.value)
