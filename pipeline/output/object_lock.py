"""The output lock on S3: a lease object created with a conditional write.

``OUT/_hflpipe.lock`` is created with ``If-None-Match: *``, so of two runs only one
succeeds. It holds a lease (owner, host, pid, expiry) that the holder renews with
``If-Match`` on its own version; a killed run stops renewing, and once the lease has
run out (or at once, when its owner was a process on this host that no longer exists)
the next run takes it over with ``If-Match`` on the stale version, so two runs taking
over at once still end with one holder.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

from hflpipe.pipeline.common.errors import OutputError, redact

#: A lease outlives a few missed renewals; a killed run blocks the next for at most this.
LEASE_S = 120.0
RENEW_S = 30.0


@contextmanager
def s3_lease(url: str) -> Iterator[None]:
    """Hold the lock object at ``url`` (``s3://bucket/key``) for the block."""
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    split = urlsplit(url)
    bucket, key = split.netloc, split.path.lstrip("/")
    client = boto3.client("s3")
    owner = uuid.uuid4().hex

    def body() -> bytes:
        return json.dumps({"owner": owner, "host": socket.gethostname(), "pid": os.getpid(),
                           "expires_at": time.time() + LEASE_S}).encode()

    try:
        etag = _acquire(client, bucket, key, body, url, ClientError)
    except (BotoCoreError, ClientError) as exc:
        raise OutputError(f"out {redact(url)}: cannot take the lock: {_cause(exc)}") from None
    stop = threading.Event()
    state = {"etag": etag}

    def renew() -> None:
        while not stop.wait(RENEW_S):
            try:
                state["etag"] = client.put_object(Bucket=bucket, Key=key, Body=body(),
                                                  IfMatch=state["etag"])["ETag"]
            except (BotoCoreError, ClientError):
                continue

    keeper = threading.Thread(target=renew, name="hflpipe-lock-lease", daemon=True)
    keeper.start()
    try:
        yield
    finally:
        stop.set()
        keeper.join()
        # Taken over after our lease ran out, or the store refuses conditional deletes:
        # the lease then expires on its own.
        with contextlib.suppress(BotoCoreError, ClientError):
            client.delete_object(Bucket=bucket, Key=key, IfMatch=state["etag"])


def _acquire(client, bucket: str, key: str, body, url: str, client_error) -> str:
    try:
        return client.put_object(Bucket=bucket, Key=key, Body=body(), IfNoneMatch="*")["ETag"]
    except client_error as exc:
        if _code(exc) not in ("PreconditionFailed", "ConditionalRequestConflict"):
            raise
    held = client.get_object(Bucket=bucket, Key=key)
    try:
        lease = json.loads(held["Body"].read())
    except ValueError:
        lease = {}
    if not _stale(lease):
        raise OutputError(
            f"out {redact(url)}: another hflpipe run is writing to it (host "
            f"{lease.get('host')}, pid {lease.get('pid')}); wait for it to finish, or for "
            f"its lease to run out ({LEASE_S:.0f} s after it was killed)"
        )
    try:
        return client.put_object(Bucket=bucket, Key=key, Body=body(),
                                 IfMatch=held["ETag"])["ETag"]
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
