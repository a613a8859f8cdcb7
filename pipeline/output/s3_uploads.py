"""Uploads that a killed writer left unfinished on S3.

pyarrow writes an S3 object as a multipart upload, which becomes the object only when it
completes. A process killed in between (a driver or worker mid-write) leaves the upload
pending: invisible to every reader, but its parts stay stored, and billed, until it is
aborted. A run aborts those under its output when it starts, holding the output's lock
and before any of its own writers runs (an upload in flight looks exactly the same).
"""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

from hflpipe.pipeline.common.errors import redact

log = logging.getLogger(__name__)


def abort_unfinished_uploads(url: str) -> list[str]:
    """Abort the pending multipart uploads under ``url`` (``s3://bucket/prefix``).

    Returns the URLs of the objects they would have written. A store that refuses to list
    or abort them costs a warning, not the run: they hold no data a reader could see.
    """
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    split = urlsplit(url)
    bucket, prefix = split.netloc, split.path.strip("/") + "/"
    client = boto3.client("s3")
    aborted: list[str] = []
    try:
        pages = client.get_paginator("list_multipart_uploads").paginate(Bucket=bucket,
                                                                        Prefix=prefix)
        for upload in (upload for page in pages for upload in page.get("Uploads", [])):
            client.abort_multipart_upload(Bucket=bucket, Key=upload["Key"],
                                          UploadId=upload["UploadId"])
            aborted.append(f"s3://{bucket}/{upload['Key']}")
    except (BotoCoreError, ClientError) as exc:
        log.warning("out %s: cannot abort the unfinished uploads of an interrupted run (%s); "
                    "an AbortIncompleteMultipartUpload lifecycle rule on the bucket removes "
                    "them", redact(url), redact(" ".join(str(exc).split())))
    return aborted
