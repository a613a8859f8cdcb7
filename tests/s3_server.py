"""A real S3 server for the tests: moto's standalone server on a loopback port.

The port and the credentials are fixed when conftest imports this module, before the
session's Ray starts, so Ray's workers inherit the same ``AWS_*`` environment as the
test process. The port stays held from then on (the server serves the socket bound at
import): a port only probed and released could be taken by one of the session's many
processes in the minutes before the first S3 test starts the server. The server checks
signatures: only the session's key pair is accepted, so a test can give wrong
credentials and see them refused.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import uuid

ACCESS_KEY = "AKIAHFLPIPETESTKEY01"
SECRET_KEY = "hflpipe-test-secret-" + "x" * 20
REGION = "us-east-1"


def _listening_socket() -> socket.socket:
    """A loopback socket on a port of the kernel's choosing, listening (not inherited by
    the processes the tests start)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    return listener


_LISTENER = _listening_socket()
PORT = _LISTENER.getsockname()[1]
ENDPOINT = f"http://127.0.0.1:{PORT}"


def export_environment() -> None:
    """The standard AWS variables pointing at this worker's server (set before Ray starts)."""
    os.environ.update(AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY,
                      AWS_ENDPOINT_URL=ENDPOINT, AWS_DEFAULT_REGION=REGION,
                      AWS_REGION=REGION, AWS_EC2_METADATA_DISABLED="true")


class S3Server:
    """The running server and a client for arranging buckets and objects."""

    def __init__(self) -> None:
        from moto import settings
        from moto.iam.models import iam_backends
        from moto.moto_server.werkzeug_app import (
            DomainDispatcherApplication,
            MotoRequestHandler,
            create_backend_app,
        )
        from werkzeug.serving import make_server

        # moto's standalone server (what its ThreadedMotoServer runs), on the held socket.
        self._server = make_server("127.0.0.1", PORT, DomainDispatcherApplication(
            create_backend_app), threaded=True, request_handler=MotoRequestHandler,
            fd=_LISTENER.fileno())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        iam = iam_backends["123456789012"]["aws"]
        iam.create_user(REGION, "hflpipe-tests", "/", None)
        iam.put_user_policy("hflpipe-tests", "all", json.dumps({
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}],
        }))
        key = iam.create_access_key("hflpipe-tests")
        key.access_key_id, key.secret_access_key = ACCESS_KEY, SECRET_KEY
        # From now on every request must be signed with the key pair above.
        settings.INITIAL_NO_AUTH_ACTION_COUNT = 0
        import boto3

        self.client = boto3.client("s3", endpoint_url=ENDPOINT, region_name=REGION,
                                   aws_access_key_id=ACCESS_KEY,
                                   aws_secret_access_key=SECRET_KEY)

    def new_bucket(self) -> str:
        """A fresh, empty bucket's name."""
        name = f"hflpipe-{uuid.uuid4().hex[:12]}"
        self.client.create_bucket(Bucket=name)
        return name

    def put_file(self, bucket: str, key: str, path: os.PathLike[str] | str) -> str:
        """Upload a local file; returns its ``s3://`` URL."""
        self.client.upload_file(str(path), bucket, key)
        return f"s3://{bucket}/{key}"

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        """Every key under ``prefix``, sorted."""
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket,
                                                                      Prefix=prefix)
        return sorted(item["Key"] for page in pages for item in page.get("Contents", []))

    def stop(self) -> None:
        self._server.shutdown()
        self._thread.join()
        self._server.server_close()
