"""Shared pytest fixtures, markers and the one Ray instance of each test process.

The suite runs in test processes of pytest-xdist (``-n auto``, see
``pytest_xdist_auto_num_workers``), each taking whole modules. Expensive things are made
once: the synthetic checkpoints (ours and the fixture recipes') once per session, shared
by the test processes; a local Ray once per process, whose workers carry the fault hooks
of ``fault_hooks`` (inert unless a test names a poisoned video or arms a fault). Tests
that need a Ray of their own (several nodes, a separate head) are marked ``own_ray``:
they run first, before any shared instance starts. Every Ray a test starts has its own
temporary folder or ``address="local"``, so the processes' Rays never find each other.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import s3_server

from hflpipe.pipeline.common import input_cache

# Before any Ray starts, so that its workers see the test S3 server's endpoint and keys.
s3_server.export_environment()
# Remote inputs the tests fetch (new buckets, new objects every session) are cached in a
# folder of the session's, removed at its end, not in the machine's shared input cache.
_INPUT_CACHE = Path(tempfile.mkdtemp(prefix="hflpipe-test-inputs-"))
os.environ[input_cache.ROOT_VARIABLE] = str(_INPUT_CACHE)
# The install skips byte-compiling (README); the processes the tests start (Ray workers,
# real `hflpipe` runs) must then be free to cache what they compile, or each new one
# compiles torch and Ray from source again where the environment says not to write it.
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
sys.dont_write_bytecode = False

REPO = Path(__file__).resolve().parents[1]
#: Logical CPUs of the shared Ray: one inference actor and three video tasks at once.
SHARED_RAY_CPUS = 4
#: Its object store: test frames are small (Ray's default would reserve 30 % of memory).
SHARED_RAY_STORE_BYTES = 2 * 1024**3
#: Its idle worker processes stay (Ray would end those above one per CPU after a second
#: idle): each new one imports torch and the pipeline again, seconds on two cores.
KEEP_IDLE_WORKERS = {"num_workers_soft_limit": 12,
                     "idle_worker_killing_time_threshold_ms": 3_600_000}
#: Test processes for ``-n auto``: one per CPU, at most two. Measured on two cores: the
#: suite's real processes (Ray workers, ``hflpipe`` runs, a Ray head) leave a core idle a
#: third of the time in one test process; two keep both busy. Each process holds its own
#: Ray with kept workers, so more are left to an explicit ``-n``.
MAX_TEST_PROCESSES = 2


def _find_fixtures() -> Path | None:
    env = os.environ.get("HFLPIPE_FIXTURES")
    candidates = [Path(env)] if env else []
    candidates += [REPO.parent / "shared" / "fixtures" / "hflnet"]
    for path in candidates:
        if (path / "checkpoint_manifest.json").is_file():
            return path
    return None


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    return max(1, min(len(os.sched_getaffinity(0)), MAX_TEST_PROCESSES))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip ``needs_cuda`` tests without a GPU; run ``own_ray`` modules first, then the
    ``one_cpu_actor`` ones together: a driver keeps one actor pool, and starting one
    (seconds on two cores) for every switch between 1-CPU actors and the default's would
    cost the suite more than their tests.

    Both groups hold the suite's longest modules (a Ray cluster, a Ray head, real driver
    processes): started first, they leave the many short modules to fill both test
    processes at the end, where last they would leave one process running alone."""
    if any(item.get_closest_marker("needs_cuda") for item in items) and not _cuda_available():
        skip = pytest.mark.skip(reason="needs a CUDA GPU")
        for item in items:
            if item.get_closest_marker("needs_cuda"):
                item.add_marker(skip)
    items.sort(key=lambda item: (item.get_closest_marker("own_ray") is None,
                                 item.get_closest_marker("one_cpu_actor") is None))


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    """The HFL-Net parity fixtures (``../shared/fixtures/hflnet``)."""
    path = _find_fixtures()
    if path is None:
        pytest.fail("HFL-Net fixtures not found: set HFLPIPE_FIXTURES or check out ../shared")
    return path


def _session_folder(factory: pytest.TempPathFactory) -> Path:
    """A folder that every test process of this session shares (xdist gives each process
    a folder of its own inside the session's)."""
    base = factory.getbasetemp()
    folder = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "shared"
    folder.mkdir(exist_ok=True)
    return folder


def _made_once(factory: pytest.TempPathFactory, key: str, name: str,
               make: Callable[[Path], object]) -> Path:
    """``key/name`` in the session's shared folder, made by the first test process that
    asks (the others wait for it): each of the big synthetic checkpoints costs seconds of
    CPU to make. Made under its final name (``torch.save`` records the file's name), then
    moved in, so that no process ever sees half a file."""
    from filelock import FileLock

    folder = _session_folder(factory) / key
    folder.mkdir(exist_ok=True)
    path = folder / name
    with FileLock(folder.with_suffix(".lock")):
        if not path.is_file():
            staging = Path(tempfile.mkdtemp(dir=folder))
            make(staging / name)
            (staging / name).rename(path)
            staging.rmdir()
    return path


def pytest_sessionfinish(session: pytest.Session) -> None:
    """The session's first process removes the shared files once every test process is done."""
    factory = getattr(session.config, "_tmp_path_factory", None)
    if factory is not None and not hasattr(session.config, "workerinput"):
        shutil.rmtree(_session_folder(factory), ignore_errors=True)


@pytest.fixture(scope="session")
def synthetic_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The synthetic HFL-Net checkpoint (official layout, 187 MB) as hflpipe writes it."""
    from hflpipe.model.synthetic_checkpoint import write_synthetic_checkpoint

    return _made_once(tmp_path_factory, "ckpt", "synthetic.pth.tar", write_synthetic_checkpoint)


def _recipe(script: Path) -> Callable[[Path], object]:
    """A fixtures folder's ``make_checkpoint.py``, run as its README says."""
    return lambda path: subprocess.run([sys.executable, str(script), str(path)], check=True,
                                       capture_output=True)


@pytest.fixture(scope="session")
def reference_checkpoint(fixtures_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same checkpoint as the fixtures' own recipe script writes it (the parity reference)."""
    return _made_once(tmp_path_factory, "reference", "synthetic.pth.tar",
                      _recipe(fixtures_dir / "make_checkpoint.py"))


@pytest.fixture(scope="session")
def hod100_dir() -> Path:
    """The 100DOH hand-object detector's parity fixtures (``../shared/fixtures/hod100``)."""
    env = os.environ.get("HFLPIPE_FIXTURES")
    root = Path(env).parent if env else REPO.parent / "shared" / "fixtures"
    path = root / "hod100"
    if not (path / "make_checkpoint.py").is_file():
        pytest.fail(f"100DOH fixtures not found in {path}: check out ../shared")
    return path


@pytest.fixture(scope="session")
def hand_object_checkpoint(hod100_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The synthetic 100DOH detector checkpoint (official layout, 190 MB), by the fixtures'
    own recipe."""
    return _made_once(tmp_path_factory, "hod100", "synthetic_handobj.pth",
                      _recipe(hod100_dir / "make_checkpoint.py"))


@pytest.fixture(scope="session")
def fault_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the shared Ray's fault hooks leave their traces and find armed faults."""
    return tmp_path_factory.mktemp("faults")


@pytest.fixture(autouse=True, scope="session")
def _session_input_cache() -> Iterator[None]:
    yield
    shutil.rmtree(_INPUT_CACHE, ignore_errors=True)


@pytest.fixture(scope="session")
def s3() -> Iterator[s3_server.S3Server]:
    """This test worker's S3 server (moto, loopback, signatures checked), started on first use."""
    server = s3_server.S3Server()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def local_ray(fault_dir: Path) -> Iterator[Path]:
    """The session's local Ray (started once, on first use); yields the fault folder.

    A Ray that an earlier test started without this fixture (a run that called
    ``ray.init`` itself) lacks the fault hooks and the CPU count: it is replaced.
    """
    import fault_hooks
    import ray

    ray.shutdown()
    # address="local": a fresh instance, never a cluster started elsewhere on the machine.
    ray.init(address="local", num_cpus=SHARED_RAY_CPUS, include_dashboard=False,
             object_store_memory=SHARED_RAY_STORE_BYTES, _system_config=KEEP_IDLE_WORKERS,
             log_to_driver=False, configure_logging=False,
             runtime_env=fault_hooks.fault_runtime_env(fault_dir))
    yield fault_dir
    ray.shutdown()


@pytest.fixture(autouse=True, scope="module")
def _own_ray_modules_start_without_one(request: pytest.FixtureRequest) -> None:
    """An ``own_ray`` module starts its own Ray: the shared one must be gone first."""
    if request.node.get_closest_marker("own_ray") is not None:
        import ray

        ray.shutdown()


@dataclass
class CliResult:
    """What ``hflpipe ARGS`` printed and the status it exited with."""

    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def hflpipe_cli(monkeypatch: pytest.MonkeyPatch) -> Callable[..., CliResult]:
    """Run ``hflpipe ARGS`` through its entry point in this process (on the session's Ray).

    The entry point is the console script's: the same one-line errors and exit statuses as
    a real ``hflpipe`` process, without starting Python, torch and Ray again. Tests about
    the process itself (a kill, native output) run the real command instead.
    """
    from hflpipe.pipeline.cli.main import main

    def run(*args: str) -> CliResult:
        monkeypatch.setattr(sys, "argv", ["hflpipe", *map(str, args)])
        stdout, stderr = io.StringIO(), io.StringIO()
        code = 0
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            try:
                main()
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
        return CliResult(code, stdout.getvalue(), stderr.getvalue())

    return run
