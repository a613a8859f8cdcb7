"""The machine's cache of small remote inputs, kept under a size cap.

Each cached file lives in a folder of its own (``<root>/<key>/<name>``); the folder's
modification time is its last use, set whenever a process takes the file from the
cache. After a new file is fetched, the least recently used folders go until the cache
holds at most ``HFLPIPE_INPUT_CACHE_GB`` (default :data:`DEFAULT_CAP_GB`). Several
processes on a node share the cache, so eviction never pulls a file from under a reader:

- a folder used in the last :data:`IN_USE_S` seconds, or handed out by this process, is
  kept (a loader opens its file right after taking it; an opened file survives removal);
- a folder is renamed out of the cache before it is removed, so another process sees
  the whole entry or none, never half a folder, and fetches again in the second case.

``HFLPIPE_INPUT_CACHE`` names the cache folder (default ``<tmp>/hflpipe-inputs-<uid>``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import uuid
from pathlib import Path

from hflpipe.pipeline.common.errors import ConfigError

log = logging.getLogger(__name__)

ROOT_VARIABLE = "HFLPIPE_INPUT_CACHE"
CAP_VARIABLE = "HFLPIPE_INPUT_CACHE_GB"
DEFAULT_CAP_GB = 20.0
#: Seconds after its last use during which no process evicts an entry.
IN_USE_S = 3600.0
#: Marks a folder renamed out of the cache on its way to removal.
_EVICTED = ".evicted-"

#: Entry folders this process has handed out; it never evicts them itself.
_handed_out: set[Path] = set()


def cache_root() -> Path:
    """The cache folder: ``$HFLPIPE_INPUT_CACHE``, else one per user in the temp folder."""
    configured = os.environ.get(ROOT_VARIABLE)
    if configured:
        return Path(configured).expanduser()
    return Path(tempfile.gettempdir()) / f"hflpipe-inputs-{os.getuid()}"


def cap_bytes() -> int:
    """The size cap in bytes, from ``$HFLPIPE_INPUT_CACHE_GB``."""
    text = os.environ.get(CAP_VARIABLE, "")
    try:
        cap_gb = float(text) if text else DEFAULT_CAP_GB
    except ValueError:
        cap_gb = -1.0
    if not cap_gb >= 0:
        raise ConfigError(f"{CAP_VARIABLE}={text!r}: expected a size in GB, 0 or more")
    return int(cap_gb * 1e9)


def mark_used(entry: Path) -> None:
    """Record that this process uses ``entry`` (a folder of the cache) now."""
    _handed_out.add(entry)
    with contextlib.suppress(FileNotFoundError):
        os.utime(entry)


def evict(now: float) -> list[Path]:
    """Remove least recently used entries until the cache fits its cap; returns them.

    ``now``: the current time (seconds since the epoch), against which :data:`IN_USE_S`
    is measured.
    """
    root = cache_root()
    entries = []
    for child in _children(root):
        if _EVICTED in child.name:
            # Left by a process that died between renaming and removing it.
            shutil.rmtree(child, ignore_errors=True)
            continue
        with contextlib.suppress(FileNotFoundError):
            entries.append((child.stat().st_mtime, _size(child), child))
    total = sum(size for _, size, _ in entries)
    removed = []
    for used_at, size, entry in sorted(entries, key=lambda item: item[0]):
        if total <= cap_bytes():
            break
        if now - used_at < IN_USE_S or entry in _handed_out:
            continue
        if _remove(entry):
            removed.append(entry)
            total -= size
    if removed:
        log.info("%s: evicted %d least recently used inputs to stay under %s GB", root,
                 len(removed), cap_bytes() / 1e9)
    return removed


def _children(root: Path) -> list[Path]:
    try:
        return [Path(item.path) for item in os.scandir(root) if item.is_dir()]
    except FileNotFoundError:
        return []


def _size(entry: Path) -> int:
    total = 0
    with contextlib.suppress(FileNotFoundError):
        for item in os.scandir(entry):
            with contextlib.suppress(FileNotFoundError):
                total += item.stat().st_size
    return total


def _remove(entry: Path) -> bool:
    """Rename ``entry`` out of the cache, then delete it; False if another process was first."""
    doomed = entry.with_name(f"{entry.name}{_EVICTED}{uuid.uuid4().hex[:8]}")
    try:
        entry.rename(doomed)
    except FileNotFoundError:
        return False
    shutil.rmtree(doomed, ignore_errors=True)
    return True
