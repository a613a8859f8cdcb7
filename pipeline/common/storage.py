"""Where a path goes, a URL may go: local paths and object stores behind one set of calls.

A *location* is a local path or a URL (``s3://bucket/key``, ``gs://...``, or any
scheme fsspec knows). URLs resolve through ``pyarrow.fs`` (S3, GCS, HDFS), else
through fsspec; credentials and endpoints come from the store's own environment and
configuration (for S3: ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
``AWS_ENDPOINT_URL``, profiles, instance roles), never from hflpipe's options. Every
message that names a location goes through :func:`~.errors.redact`.

Small inputs (boxes, intrinsics, object files, checkpoints, MANO) are copied once per
machine into a local cache under a size cap (:func:`cached_copy`), so the loaders keep
reading files; videos the decoder cannot stream are copied into scratch space for one
task and removed after it (:func:`scratch_copy`).
"""

from __future__ import annotations

import functools
import hashlib
import posixpath
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, TypeVar
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.fs as pafs

from hflpipe.atomic import atomic_write
from hflpipe.hashing import sha256_file
from hflpipe.pipeline.common import input_cache
from hflpipe.pipeline.common.errors import InputError, one_line, redact

Location = str | Path
T = TypeVar("T")

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_MAGIC = re.compile(r"[*?[]")
#: Schemes pyarrow's own filesystems serve; others go to fsspec.
_PYARROW_SCHEMES = ("s3", "gs", "gcs", "hdfs", "viewfs", "file")
#: Bytes copied per read when a remote file is copied to local disk.
COPY_BLOCK = 8 * 1024 * 1024


def is_url(location: Location) -> bool:
    """True for ``scheme://...`` (``file://`` included), False for plain local paths."""
    return isinstance(location, str) and _URL.match(location) is not None


def as_location(value: Location) -> Location:
    """A URL kept as text (``Path`` would fold its ``//``), anything else as a ``Path``."""
    return value if is_url(value) else Path(value)


def describe(location: Location) -> str:
    """The location as messages show it: credentials masked."""
    return redact(str(location))


def join(location: Location, *parts: str) -> Location:
    """``location/part/...``, for URLs and paths alike."""
    if is_url(location):
        return "/".join([str(location).rstrip("/"), *parts])
    return Path(location).joinpath(*parts)


def beside(anchor: Location, name: str) -> Location:
    """``name`` relative to the folder of ``anchor`` (a list file, a manifest).

    Absolute names and URLs are kept; ``~`` is expanded for local names.
    """
    if is_url(name):
        return name
    if is_url(anchor):
        if name.startswith("/"):
            split = urlsplit(str(anchor))
            return f"{split.scheme}://{split.netloc}{name}"
        return str(anchor).rsplit("/", 1)[0] + "/" + name
    expanded = Path(name).expanduser()
    return expanded if expanded.is_absolute() else Path(anchor).parent / expanded


def identity(location: Location) -> str:
    """One string per file however it is named: the URL, or the absolute local path."""
    return str(location) if is_url(location) else str(Path(location).absolute())


def name_of(location: Location) -> str:
    """The file name: the last component of the path or URL."""
    return posixpath.basename(str(location).rstrip("/")) if is_url(location) else Path(
        location).name


def resolve(location: Location) -> tuple[pafs.FileSystem, str]:
    """``(filesystem, path inside it)`` for a location; raises InputError for unknown schemes."""
    if not is_url(location):
        return pafs.LocalFileSystem(), str(Path(location).expanduser().absolute())
    split = urlsplit(str(location))
    filesystem = _filesystem(split.scheme.lower(), split.netloc)
    if split.scheme.lower() == "file":
        return filesystem, split.path
    return filesystem, f"{split.netloc}{split.path}".rstrip("/")


@functools.lru_cache(maxsize=32)
def _filesystem(scheme: str, netloc: str) -> pafs.FileSystem:
    # One filesystem per bucket and process: S3's region lookup and connection pool are
    # not redone for every file.
    url = f"{scheme}://{netloc}"
    try:
        if scheme in _PYARROW_SCHEMES:
            return pafs.FileSystem.from_uri(url)[0]
        import fsspec

        return pafs.PyFileSystem(pafs.FSSpecHandler(fsspec.filesystem(scheme)))
    except (ImportError, ValueError, OSError, pa.ArrowException) as exc:
        raise InputError(f"{describe(url)}: cannot open this store: {cause_of(exc)}") from None


def url_of(filesystem: pafs.FileSystem, path: str, like: Location) -> Location:
    """The location of ``path`` in ``filesystem``, in the same form as ``like``."""
    if not is_url(like):
        return Path(path)
    scheme = urlsplit(str(like)).scheme
    return f"{scheme}://{path}" if scheme != "file" else f"file://{path}"


def cause_of(exc: BaseException) -> str:
    """A store error's cause in one line, credentials masked (AWS errors carry long prefixes)."""
    text = getattr(exc, "strerror", None) or str(exc)
    return redact(one_line(text) or type(exc).__name__)


def file_info(location: Location) -> pafs.FileInfo:
    """What the store says about one location; raises InputError when it cannot be asked."""
    filesystem, path = resolve(location)
    try:
        return filesystem.get_file_info(path)
    except (OSError, pa.ArrowException) as exc:
        raise InputError(f"{describe(location)}: {cause_of(exc)}") from None


def is_file(location: Location) -> bool:
    """True when ``location`` is a file (one metadata request for a URL)."""
    if not is_url(location):
        return Path(location).is_file()
    return file_info(location).type == pafs.FileType.File


def read_bytes(location: Location) -> bytes:
    """A whole (small) file; raises InputError naming it when it cannot be read."""
    if not is_url(location):
        try:
            return Path(location).read_bytes()
        except OSError as exc:
            raise InputError(f"{describe(location)}: cannot be read: {cause_of(exc)}") from None
    filesystem, path = resolve(location)
    try:
        with filesystem.open_input_stream(path) as stream:
            return stream.read()
    except FileNotFoundError:
        raise InputError(f"{describe(location)}: no such file") from None
    except (OSError, pa.ArrowException) as exc:
        raise InputError(f"{describe(location)}: cannot be read: {cause_of(exc)}") from None


def read_text(location: Location) -> str:
    """A whole (small) text file as UTF-8."""
    try:
        return read_bytes(location).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"{describe(location)}: not UTF-8 text ({exc.reason})") from None


def sha256(location: Location) -> str:
    """Hex SHA-256 of a file's bytes (a URL's streamed, never held whole); raises
    InputError naming a URL that cannot be read, OSError for a local file."""
    if not is_url(location):
        return sha256_file(location)
    filesystem, path = resolve(location)
    digest = hashlib.sha256()
    try:
        with filesystem.open_input_stream(path) as stream:
            while block := stream.read(COPY_BLOCK):
                digest.update(block)
    except FileNotFoundError:
        raise InputError(f"{describe(location)}: no such file") from None
    except (OSError, pa.ArrowException) as exc:
        raise InputError(f"{describe(location)}: cannot be read: {cause_of(exc)}") from None
    return digest.hexdigest()


def glob(pattern: str) -> list[str]:
    """The files under a URL that match ``pattern``, sorted.

    ``*``, ``?`` and ``[...]`` match within one path component, ``**`` across any
    number of them. The part before the first wildcard is listed once (paginated by the
    store, recursive only when the pattern spans folders), not folder by folder.
    """
    filesystem, path = resolve(pattern)
    parts = path.split("/")
    first = next(i for i, part in enumerate(parts) if _MAGIC.search(part))
    prefix = "/".join(parts[:first])
    rest = parts[first:]
    selector = pafs.FileSelector(prefix, recursive=len(rest) > 1 or "**" in rest[0],
                                 allow_not_found=True)
    try:
        infos = filesystem.get_file_info(selector)
    except (OSError, pa.ArrowException) as exc:
        raise InputError(f"{describe(pattern)}: cannot be listed: {cause_of(exc)}") from None
    matcher = _pattern_regex("/".join(rest))
    start = len(prefix) + 1 if prefix else 0
    found = sorted(info.path for info in infos if info.type == pafs.FileType.File
                   and matcher.fullmatch(info.path[start:]))
    return [str(url_of(filesystem, match, pattern)) for match in found]


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """A glob over ``/``-separated names as a regular expression (``**`` spans folders)."""
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[" and "]" in pattern[i + 2:]:
            end = pattern.index("]", i + 2)
            body = pattern[i + 1:end]
            out.append("[" + ("^" + body[1:] if body.startswith("!") else body) + "]")
            i = end + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out))


def _copy_to(location: Location, write: BinaryIO, limit_bytes: int | None) -> None:
    filesystem, path = resolve(location)
    info = file_info(location)
    if info.type == pafs.FileType.NotFound:
        raise InputError(f"{describe(location)}: no such file")
    if info.type != pafs.FileType.File:
        raise InputError(f"{describe(location)}: not a file")
    if limit_bytes is not None and info.size is not None and info.size > limit_bytes:
        raise InputError(f"{describe(location)}: {info.size} bytes, over the scratch space "
                         f"limit of {limit_bytes} bytes")
    try:
        with filesystem.open_input_stream(path) as stream:
            while block := stream.read(COPY_BLOCK):
                write.write(block)
    except (OSError, pa.ArrowException) as exc:
        raise InputError(f"{describe(location)}: cannot be read: {cause_of(exc)}") from None


def cached_copy(location: Location) -> Path:
    """A local file with ``location``'s bytes: the path itself, or a copy kept per machine.

    The copy is named by the URL, size and modification time, so a changed object is
    fetched again; it is written atomically, so concurrent workers never see half of one.
    The cache is kept under a size cap (see :mod:`~.input_cache`).
    """
    if not is_url(location):
        return Path(location)
    info = file_info(location)
    key = f"{location}|{info.size}|{info.mtime_ns}"
    entry = input_cache.cache_root() / hashlib.sha256(key.encode()).hexdigest()[:24]
    target = entry / name_of(location)
    # Marked before it is looked at: no other process evicts an entry in use.
    input_cache.mark_used(entry)
    if not target.is_file():
        entry.mkdir(parents=True, exist_ok=True)
        atomic_write(target, lambda sink: _copy_to(location, sink, None))
        input_cache.mark_used(entry)
        input_cache.evict(time.time())
    return target


@contextmanager
def scratch_copy(location: Location, limit_bytes: int) -> Iterator[Path]:
    """A local path for the duration of the block: the path itself, or a scratch copy.

    A remote file over ``limit_bytes`` is refused (InputError) before any byte is copied;
    the copy is removed when the block ends, whatever happens in it.
    """
    if not is_url(location):
        yield Path(location)
        return
    folder = Path(tempfile.mkdtemp(prefix="hflpipe-scratch-"))
    try:
        target = folder / name_of(location)
        try:
            with open(target, "xb") as sink:
                _copy_to(location, sink, limit_bytes)
        except OSError as exc:
            raise InputError(f"{describe(location)}: cannot be copied to scratch space "
                             f"{folder}: {cause_of(exc)}") from None
        yield target
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def load_named(location: Location, loader: Callable[[Path], T]) -> T:
    """``loader(local copy, *args)``, with errors that name ``location`` rather than the copy."""
    local = cached_copy(location)
    try:
        return loader(local)
    except InputError as exc:
        if local == location:
            raise
        raise type(exc)(str(exc).replace(str(local), describe(location))) from None
