"""Content hashes of files, for provenance (checkpoints, MANO files, videos)."""

from __future__ import annotations

import hashlib
import os


def sha256_file(path: str | os.PathLike[str], block: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes, streamed; raises ``OSError`` if it cannot be read."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(block):
            digest.update(chunk)
    return digest.hexdigest()
