"""Jobs on a Ray cluster through Ray's job submission API: submit, status, logs.

A submitted job is ``python -m hflpipe run SPEC --address auto`` run by the cluster's
job supervisor on the head node, with the spec's folder (or ``working_dir``) uploaded
as the job's working directory. hflpipe itself must be installed on the cluster (the
``cluster.yaml`` setup commands do it). A submitted spec's ``out`` must be a store URL
(``s3://...``) or an absolute path on the cluster (a shared mount).

Nothing of the submitter's environment goes with the job: a store's credentials would
otherwise be kept in the job's record on the cluster. The nodes reach the store with
their own (an instance role, or ``AWS_*`` in the nodes' environment).

Clusters with Ray's token authentication need the client side to send the token:
``RAY_AUTH_MODE=token`` and the token in ``RAY_AUTH_TOKEN`` or ``~/.ray/auth_token``
(Ray's own settings; hflpipe passes nothing of its own).
"""

from __future__ import annotations

import asyncio
import shlex
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ray.exceptions import RayError

from hflpipe import __version__
from hflpipe.pipeline.common.errors import ConfigError, HflpipeError, one_line
from hflpipe.pipeline.config.jobspec import build_config, load_spec

TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")


class ClusterError(HflpipeError):
    """The cluster's job server cannot be reached, or refuses a request."""


@dataclass(frozen=True)
class JobReport:
    """What the job server knows about one submission. Times are Unix milliseconds."""

    submission_id: str
    status: str
    message: str | None
    entrypoint: str
    start_time_ms: int | None
    end_time_ms: int | None
    metadata: dict[str, str]

    def as_dict(self) -> dict[str, object]:
        return {
            "submission_id": self.submission_id, "status": self.status,
            "message": self.message, "entrypoint": self.entrypoint,
            "start_time_ms": self.start_time_ms, "end_time_ms": self.end_time_ms,
            "metadata": self.metadata,
        }


def submit(
    spec_path: str | Path,
    address: str | None,
    *,
    working_dir: str | Path | None = None,
    run_args: Sequence[str] = (),
    submission_id: str | None = None,
) -> str:
    """Validate a spec here, submit it to the cluster at ``address``; returns the submission id.

    ``run_args`` are extra ``hflpipe run`` flags (overrides) passed through unchanged.
    Files named by the spec are checked on the cluster when the job starts, not here,
    since they live there.
    """
    spec = load_spec(spec_path)
    config = build_config(spec, check_files=False)
    if "out" in spec.relative:
        raise ConfigError(
            f"{spec.describe('out')}: a submitted job needs an absolute path on the cluster "
            "(relative paths would land in the job's temporary working directory)"
        )
    folder = Path(working_dir or spec.path.parent).resolve()
    try:
        spec_in_folder = spec.path.resolve().relative_to(folder)
    except ValueError:
        raise ConfigError(f"job spec {spec.path}: not inside the working directory {folder}"
                          ) from None
    entrypoint = shlex.join([
        "python", "-m", "hflpipe", "run", spec_in_folder.as_posix(),
        "--address", "auto", "--quiet", "--format", "json", *run_args,
    ])
    client = _client(address)
    return _call(address, lambda: client.submit_job(
        entrypoint=entrypoint,
        submission_id=submission_id,
        runtime_env={"working_dir": str(folder)},
        metadata={"hflpipe_version": __version__, "spec": spec_in_folder.as_posix(),
                  "out": str(config.out)},
    ))


def status(address: str | None, submission_id: str) -> JobReport:
    """The job's current status and details."""
    client = _client(address)
    info = _call(address, lambda: client.get_job_info(submission_id))
    return JobReport(
        submission_id=info.submission_id or submission_id,
        status=str(info.status),
        message=info.message,
        entrypoint=info.entrypoint,
        start_time_ms=info.start_time,
        end_time_ms=info.end_time,
        metadata=dict(info.metadata or {}),
    )


def logs(address: str | None, submission_id: str) -> str:
    """Everything the job has printed so far."""
    client = _client(address)
    return _call(address, lambda: client.get_job_logs(submission_id))


def follow(address: str | None, submission_id: str, write: Callable[[str], None]) -> JobReport:
    """Stream the job's output to ``write`` until it ends; returns its final report."""
    client = _client(address)

    async def tail() -> None:
        async for lines in client.tail_job_logs(submission_id):
            write(lines)

    _call(address, lambda: asyncio.run(tail()))
    return status(address, submission_id)


def wait(address: str | None, submission_id: str, timeout_s: float, poll_s: float = 1.0
         ) -> JobReport:
    """Poll until the job ends or ``timeout_s`` passes (then ClusterError)."""
    deadline = time.monotonic() + timeout_s
    while True:
        report = status(address, submission_id)
        if report.status in TERMINAL:
            return report
        if time.monotonic() > deadline:
            raise ClusterError(f"job {submission_id}: still {report.status} after "
                               f"{timeout_s:.0f} s")
        time.sleep(poll_s)


def _client(address: str | None):
    from ray.job_submission import JobSubmissionClient

    return _call(address, lambda: JobSubmissionClient(address))


def _call(address: str | None, request: Callable):
    """Run a job-server request; connection and HTTP failures become one-line ClusterErrors."""
    try:
        return request()
    except HflpipeError:
        raise
    except (ConnectionError, RuntimeError, ValueError, OSError, RayError) as exc:
        where = address or "the cluster (RAY_API_SERVER_ADDRESS / RAY_ADDRESS / local)"
        raise ClusterError(f"ray job server {where}: {one_line(exc)}") from None
