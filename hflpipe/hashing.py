"""Content hashes of files, for provenance (checkpoints, MANO files, videos)."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

#: Bytes read at each of the start, middle and end of a file for its :class:`FileStamp`.
SAMPLE_BYTES = 64 * 1024


def sha256_file(path: str | os.PathLike[str], block: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes, streamed; raises ``OSError`` if it cannot be read."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(block):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class FileStamp:
    """What tells cheaply whether a file changed: size, modification time, sampled bytes.

    Equal stamps mean "unchanged" for all practical purposes; different stamps only mean
    "maybe changed" (a copy or ``touch`` changes the time, not the bytes): compare the
    full hash then.
    """

    size_bytes: int
    mtime_ns: int
    sample_sha256: str


def file_stamp(path: str | os.PathLike[str]) -> FileStamp:
    """The :class:`FileStamp` of ``path``; raises ``OSError`` if it cannot be read."""
    with open(path, "rb") as handle:
        status = os.fstat(handle.fileno())
        digest = hashlib.sha256(str(status.st_size).encode())
        for offset in (0, status.st_size // 2, max(0, status.st_size - SAMPLE_BYTES)):
            handle.seek(offset)
            digest.update(handle.read(SAMPLE_BYTES))
    return FileStamp(status.st_size, status.st_mtime_ns, digest.hexdigest())
