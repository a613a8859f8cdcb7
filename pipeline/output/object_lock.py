"""The output lock on S3: a lease object created with a conditional write.

``OUT/_hflpipe.lock`` is created with ``If-None-Match: *``, so of two runs only one
succeeds. It holds a lease (owner, host, pid, expiry) that the holder renews with
``If-Match`` on its own version; a killed run stops renewing, and once the lease has
run out (or at once, when its owner was a process on this host that no longer exists)
the next run takes it over with ``If-Match`` on the stale version, so two runs taking
over at once still end with one holder.

A holder whose renewal finds the object changed has lost the lock (its lease ran out
while it was cut off from the store, and another run took over); one whose lease runs
out unrenewed may lose it at any moment. Either way it must stop writing: the check the
lease yields raises OutputError from then on, and the run calls it before every commit.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

from hflpipe.pipeline.common.errors import OutputError, redact

#: A lease outlives a few missed renewals; a killed run blocks the next for at most this.
LEASE_S = 120.0
RENEW_S = 30.0
#: The store's answers to a conditional write on an object that is no longer ours.
_TAKEN = ("PreconditionFailed", "ConditionalRequestConflict", "NoSuchKey")

#: Raises OutputError once the lock can no longer be trusted to be this run's.
LockCheck = Callable[[], None]


class _Holding:
    """What the holder knows of its lease: its version, until when it is surely valid,
    and why it was lost (None while held)."""

    def __init__(self, url: str, etag: str, valid_until: float) -> None:
        self.url, self.etag, self.valid_until = url, etag, valid_until
        self.lost: str | None = None

    def check(self) -> None:
        if self.lost is not None:
            raise OutputError(self.lost)
        if time.time() > self.valid_until:
            raise OutputError(
                f"out {redact(self.url)}: the lock's lease could not be renewed for "
                f"{LEASE_S:g} s, so another run may have taken it over; stopped writing "
                "(committed videos are kept)")


@contextmanager
def s3_lease(url: str) -> Iterator[LockCheck]:
    """Hold the lock object at ``url`` (``s3://bucket/key``) for the block.

    Yields the check to call before each write that must be this run's alone.
    """
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    split = urlsplit(url)
    bucket, key = split.netloc, split.path.lstrip("/")
    client = boto3.client("s3")
    owner = uuid.uuid4().hex

    def body() -> bytes:
        return json.dumps({"owner": owner, "host": socket.gethostname(), "pid": os.getpid(),
                           "expires_at": time.time() + LEASE_S}).encode()

    sent = time.time()
    try:
        etag = _acquire(client, bucket, key, body, url, ClientError)
    except (BotoCoreError, ClientError) as exc:
        raise OutputError(f"out {redact(url)}: cannot take the lock: {_cause(exc)}") from None
    holding = _Holding(url, etag, sent + LEASE_S)
    stop = threading.Event()

    def renew() -> None:
        while not stop.wait(RENEW_S):
            sent = time.time()
            try:
                etag = client.put_object(Bucket=bucket, Key=key, Body=body(),
                                         IfMatch=holding.etag)["ETag"]
            except (BotoCoreError, ClientError) as exc:
                if _code(exc) in _TAKEN:
                    lease: dict = {}
                    with contextlib.suppress(BotoCoreError, ClientError):
                        lease = _read_lease(client, bucket, key)[0]
                    holding.lost = _taken_over(url, lease)
                    return
                # Unreachable or refusing for now: the lease's expiry decides when to stop.
                continue
            holding.etag, holding.valid_until = etag, sent + LEASE_S

    keeper = threading.Thread(target=renew, name="hflpipe-lock-lease", daemon=True)
    keeper.start()
    try:
        yield holding.check
    finally:
        stop.set()
        keeper.join()
        if holding.lost is None:
            # Taken over after our lease ran out, or the store refuses conditional
            # deletes: the lease then expires on its own.
            with contextlib.suppress(BotoCoreError, ClientError):
                client.delete_object(Bucket=bucket, Key=key, IfMatch=holding.etag)


def _taken_over(url: str, lease: dict) -> str:
    """The one line a holder stops with once another run has its lock (``lease``: the
    new holder's, empty when it could not be read)."""
    if not lease:
        return (f"out {redact(url)}: the lock is no longer this run's (removed or replaced); "
                "stopped writing (committed videos are kept)")
    return (f"out {redact(url)}: another hflpipe run (host {lease.get('host')}, pid "
            f"{lease.get('pid')}) took over the lock after this run's lease ran out; "
            "stopped writing (committed videos are kept)")


def _read_lease(client, bucket: str, key: str) -> tuple[dict, str]:
    held = client.get_object(Bucket=bucket, Key=key)
    try:
        return json.loads(held["Body"].read()), held["ETag"]
    except ValueError:
        return {}, held["ETag"]


def _acquire(client, bucket: str, key: str, body, url: str, client_error) -> str:
    try:
        return client.put_object(Bucket=bucket, Key=key, Body=body(), IfNoneMatch="*")["ETag"]
    except client_error as exc:
        if _code(exc) not in ("PreconditionFailed", "ConditionalRequestConflict"):
            raise
    lease, etag = _read_lease(client, bucket, key)
    if not _stale(lease):
        raise OutputError(
            f"out {redact(url)}: another hflpipe run is writing to it (host "
            f"{lease.get('host')}, pid {lease.get('pid')}); wait for it to finish, or for "
            f"its lease to run out ({LEASE_S:.0f} s after it was killed)"
        )
    try:
        return client.put_object(Bucket=bucket, Key=key, Body=body(), IfMatch=etag)["ETag"]
    except client_error as exc:
        if _code(exc) in ("PreconditionFailed", "ConditionalRequestConflict"):
            raise OutputError(f"out {redact(url)}: another hflpipe run took it over just now; "
                              "wait for it to finish") from None
        raise


def _stale(lease: dict) -> bool:
    if float(lease.get("expires_at", 0)) < time.time():
        return True
    if lease.get("host") != socket.gethostname():
        return False
    try:
        os.kill(int(lease.get("pid", 0)), 0)
    except ProcessLookupError:
        return True
    except (OSError, ValueError):
        return False
    return False


def _code(exc: Exception) -> str:
    return str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))


def _cause(exc: Exception) -> str:
    return redact(" ".join(str(exc).split()))
