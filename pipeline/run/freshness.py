"""Whether a video committed by an earlier run still stands, and if not, why.

A ``videos`` row stands when it was made with the same options (config hash), the same
other inputs (``inputs_sha256``: boxes rows, intrinsics, object) and the same video file.
The file is compared cheaply first (size, modification time, sampled bytes) and hashed
in full only when that differs, so a re-run over thousands of untouched videos reads
almost nothing, while footage replaced under the same name is always noticed.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from hflpipe.hashing import file_stamp, sha256_file

#: Why a committed video is done again (the summary prints these).
OPTIONS_CHANGED = "its manifest options changed"
INPUTS_CHANGED = "its boxes, intrinsics or object changed"
VIDEO_CHANGED = "the video file changed"


def redo_reason(
    previous: Mapping[str, object], config_hash: str, inputs_sha256: str | None, path: Path
) -> str | None:
    """None when ``previous`` (the committed row) stands for this run; else why not."""
    if previous.get("config_hash") != config_hash:
        return OPTIONS_CHANGED
    if previous.get("inputs_sha256") != inputs_sha256:
        return INPUTS_CHANGED
    return VIDEO_CHANGED if video_changed(path, previous) else None


def video_changed(path: Path, previous: Mapping[str, object]) -> bool:
    """True when the file at ``path`` is not the one ``previous`` was made from.

    A file that cannot be read now keeps its results: it is reported as a problem of the
    input, not mistaken for new footage.
    """
    try:
        stamp = file_stamp(path)
    except OSError:
        return False
    recorded = (previous.get("size_bytes"), previous.get("mtime_ns"),
                previous.get("sample_sha256"))
    if recorded == (stamp.size_bytes, stamp.mtime_ns, stamp.sample_sha256):
        return False
    content = previous.get("content_sha256")
    if content is None or stamp.size_bytes != previous.get("size_bytes"):
        return True
    try:
        return sha256_file(path) != content
    except OSError:
        return False
