"""The one way hflpipe writes a file: to a hidden temporary beside it, fsync, rename.

A reader sees the old file or the new one, never half of one, and a crash at any
point leaves at most a hidden temporary (``.NAME.<hex>.tmp<suffix>``) that
:func:`is_temporary` recognises, so a later run can remove it.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

log = logging.getLogger(__name__)

TEMP_MARK = ".tmp"


def temporary_name(path: Path) -> Path:
    """A fresh hidden name beside ``path`` that keeps its suffix (OpenCV and numpy need it)."""
    return path.with_name(f".{path.name}.{uuid.uuid4().hex}{TEMP_MARK}{path.suffix}")


def is_temporary(path: Path) -> bool:
    """True for a name :func:`temporary_name` makes (what an interrupted write leaves)."""
    name = path.name
    return name.startswith(".") and TEMP_MARK in name[1:]


@contextmanager
def atomic_path(
    path: str | os.PathLike[str], error: Callable[[str], Exception] | None = None
) -> Iterator[Path]:
    """Yield a temporary path for the caller to write; on success it replaces ``path``.

    After the block the temporary is fsynced, renamed over ``path`` and the folder
    fsynced, so the rename survives a power cut. On any error the temporary is removed;
    an ``OSError`` (or the ``RuntimeError`` torch raises for a full disk) becomes
    ``error("cannot write PATH: cause")`` when ``error`` is given.
    """
    target = Path(path)
    temp = temporary_name(target)
    try:
        yield temp
        if not temp.exists():
            raise FileNotFoundError(f"the writer did not create {temp.name}")
        _fsync_file(temp)
        os.replace(temp, target)
        fsync_folder(target.parent)
    except BaseException as exc:
        _discard(temp)
        if error is not None and isinstance(exc, OSError | RuntimeError):
            cause = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            raise error(f"cannot write {target}: {' '.join(str(cause).split())}") from exc
        raise


def atomic_write(
    path: str | os.PathLike[str], write: Callable[[BinaryIO], object],
    error: Callable[[str], Exception] | None = None,
) -> Path:
    """Write ``path`` through ``write(binary file)`` atomically (see :func:`atomic_path`)."""
    with atomic_path(path, error) as temp, open(temp, "xb") as sink:
        write(sink)
    return Path(path)


def atomic_write_text(
    path: str | os.PathLike[str], text: str, error: Callable[[str], Exception] | None = None
) -> Path:
    """Write ``text`` as UTF-8 to ``path`` atomically."""
    return atomic_write(path, lambda sink: sink.write(text.encode("utf-8")), error)


def fsync_folder(folder: Path) -> None:
    """Make a rename or unlink in ``folder`` durable (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        log.debug("fsync of folder %s not supported", folder)
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _discard(temp: Path) -> None:
    try:
        temp.unlink(missing_ok=True)
    except OSError:
        log.warning("could not remove temporary file %s", temp)
