"""The output folder's files on a local disk or an object store, with the same guarantees.

A reader sees a file whole or not at all on both: locally through ``hflpipe.atomic``
(hidden temporary, fsync, rename); on an object store because one PUT of the finished
bytes is atomic there, so the Parquet file is built in memory first and uploaded in one
request (a failed upload leaves the old object, or none). Every failure of the store
becomes an :class:`OutputError` naming the file and the cause in one line.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from hflpipe.atomic import atomic_write, fsync_folder
from hflpipe.pipeline.common import storage
from hflpipe.pipeline.common.errors import InputError, OutputError
from hflpipe.pipeline.common.storage import Location


class OutputStore:
    """One output folder (``OUT``): names below it are ``/``-separated relative paths."""

    def __init__(self, root: Location) -> None:
        self.root = storage.as_location(root) if isinstance(root, str) else root
        self.remote = storage.is_url(self.root)
        try:
            self.filesystem, self._base = storage.resolve(self.root)
        except InputError as exc:
            raise OutputError(str(exc)) from None

    def location(self, *parts: str) -> Location:
        """``OUT/part/...`` as a path or URL (for messages and for readers)."""
        return storage.join(self.root, *parts)

    def path(self, *parts: str) -> str:
        """``OUT/part/...`` inside :attr:`filesystem`."""
        return "/".join([self._base.rstrip("/"), *parts])

    def write_parquet(self, table: pa.Table, *parts: str, row_group_size: int) -> None:
        """Write ``table`` to ``OUT/parts`` so that readers never see part of it."""
        if not self.remote:
            atomic_write(self.location(*parts), lambda sink: pq.write_table(
                table, sink, row_group_size=row_group_size, compression="zstd"), OutputError)
            return
        buffer = pa.BufferOutputStream()
        pq.write_table(table, buffer, row_group_size=row_group_size, compression="zstd")
        self.write_bytes(buffer.getvalue().to_pybytes(), *parts)

    def write_bytes(self, data: bytes, *parts: str) -> None:
        """Write a small file whole (local: atomically; object store: one PUT)."""
        if not self.remote:
            atomic_write(self.location(*parts), lambda sink: sink.write(data), OutputError)
            return
        try:
            with self.filesystem.open_output_stream(self.path(*parts)) as sink:
                sink.write(data)
        except (OSError, pa.ArrowException) as exc:
            raise OutputError(f"cannot write {storage.describe(self.location(*parts))}: "
                              f"{storage.cause_of(exc)}") from None

    def remove(self, *parts: str) -> None:
        """Delete ``OUT/parts`` if it exists."""
        try:
            if self.remote:
                self.filesystem.delete_file(self.path(*parts))
            else:
                Path(self.path(*parts)).unlink(missing_ok=True)
                fsync_folder(Path(self.path(*parts)).parent)
        except FileNotFoundError:
            return
        except (OSError, pa.ArrowException) as exc:
            raise OutputError(f"cannot remove {storage.describe(self.location(*parts))}: "
                              f"{storage.cause_of(exc)}") from None

    def make_folders(self, *names: str) -> None:
        """Create ``OUT/name`` for each name (object stores have no folders to make)."""
        if self.remote:
            return
        for name in names:
            folder = Path(self.path(name))
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise OutputError(f"cannot create output folder {folder}: "
                                  f"{exc.strerror or exc}") from None

    def file_names(self, folder: str) -> list[str]:
        """Names of the files directly in ``OUT/folder`` (hidden ones too), sorted."""
        selector = pafs.FileSelector(self.path(folder), allow_not_found=True)
        try:
            infos = self.filesystem.get_file_info(selector)
        except (OSError, pa.ArrowException) as exc:
            raise OutputError(f"cannot list {storage.describe(self.location(folder))}: "
                              f"{storage.cause_of(exc)}") from None
        return sorted(info.base_name for info in infos if info.type == pafs.FileType.File)

    def is_file(self, *parts: str) -> bool:
        """True when ``OUT/parts`` is a file."""
        try:
            info = self.filesystem.get_file_info(self.path(*parts))
        except (OSError, pa.ArrowException) as exc:
            raise OutputError(f"{storage.describe(self.location(*parts))}: "
                              f"{storage.cause_of(exc)}") from None
        return info.type == pafs.FileType.File

    def read_bytes(self, *parts: str) -> bytes:
        """A whole small file; raises ``OSError`` (FileNotFoundError when it is missing)."""
        with self.filesystem.open_input_stream(self.path(*parts)) as stream:
            return stream.read()
