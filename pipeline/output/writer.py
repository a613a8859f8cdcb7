"""Per-video atomic Parquet output (the layout and the readers: :mod:`.reader`).

Commit protocol, so that a crash at any point loses nothing and duplicates nothing:

1. the video's old ``videos`` file (its commit marker) is removed first, so a re-run that
   dies half-way never leaves an old marker vouching for new, partial data;
2. ``hands`` then ``objects`` are written, each to a hidden temporary file in the target
   folder (dataset readers skip names starting with ``.``), fsynced, then renamed over the
   old file (``hflpipe.atomic``);
3. the ``videos`` row is written last, the same way: a video is finished exactly when its
   ``videos`` file exists and reads.

Writers for different videos touch disjoint files, so Ray workers may write concurrently.
``remove_stale_temp_files`` and ``remove_uncommitted_outputs`` must run only while no
writer is running (at job start), since an in-flight write looks exactly like a stale one.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import BinaryIO

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from hflpipe.atomic import atomic_write, fsync_folder, is_temporary
from hflpipe.pipeline.common.errors import OutputError, one_line
from hflpipe.pipeline.output.reader import (
    PLACEHOLDER,
    SUFFIX,
    holds_video_files,
    output_path,
    scan_output,
    visible_files,
)
from hflpipe.pipeline.output.schema import (
    TABLES,
    OutputMetadata,
    hands_schema,
    objects_schema,
    table_schema,
    videos_table,
)

logger = logging.getLogger(__name__)

# Uncompressed bytes per row group: big enough for efficient scans, small enough that
# readers can parallelise over row groups within one long video's file.
ROW_GROUP_BYTES = 64 * 1024 * 1024
MIN_ROW_GROUP_ROWS = 1024
def write_video_output(
    out_dir: str | Path,
    video_id: str,
    hands: pa.Table,
    objects: pa.Table,
    video_row: Mapping[str, object],
    metadata: OutputMetadata,
) -> list[Path]:
    """Write one processed video: hands, objects, then its ``videos`` row (the commit marker).

    ``hands``/``objects`` come from ``schema.hands_table``/``objects_table`` (or the
    ``empty_*`` helpers) and hold only this video's rows. Returns the three final paths.
    Raises OutputError (one line) if the disk refuses; files already replaced stay valid and
    the video stays unfinished.
    """
    paths = [output_path(out_dir, t, video_id) for t in TABLES]
    _check_table(hands, "hands", video_id)
    _check_table(objects, "objects", video_id)
    videos = _video_table(video_id, video_row, metadata)
    _make_folders(out_dir)
    _remove(paths[2])
    for table, name, path in zip((hands, objects, videos), TABLES, paths, strict=True):
        _write_atomic(table.replace_schema_metadata(metadata.key_values(name)), path)
    keep_tables_readable(out_dir)
    return paths


def write_video_status(
    out_dir: str | Path,
    video_id: str,
    video_row: Mapping[str, object],
    metadata: OutputMetadata,
) -> Path:
    """Record a failed or skipped video: only a ``videos`` row, replacing any earlier output.

    Earlier hands/objects files of the video are removed first, so the tables never hold
    rows that its status row does not vouch for.
    """
    marker = output_path(out_dir, "videos", video_id)
    videos = _video_table(video_id, video_row, metadata)
    _make_folders(out_dir)
    _remove(marker)
    for name in ("hands", "objects"):
        _remove(output_path(out_dir, name, video_id))
    _write_atomic(videos, marker)
    keep_tables_readable(out_dir)
    return marker


def keep_tables_readable(out_dir: str | Path) -> None:
    """Give every table folder its :data:`PLACEHOLDER` while it holds no video's file, and
    remove it once it does (its schema lacks ``vertices``, which real files may have).

    Only the writing process calls this, so the check and the write do not race.
    """
    _make_folders(out_dir)
    for name in TABLES:
        folder = Path(out_dir) / name
        placeholder = folder / PLACEHOLDER
        if holds_video_files(folder):
            if placeholder.exists():
                _remove(placeholder)
        elif not placeholder.exists():
            _write_atomic(table_schema(name).empty_table(), placeholder)


def remove_stale_temp_files(out_dir: str | Path) -> list[Path]:
    """Delete hidden temporary files left by interrupted writes; returns what was removed.

    Call only while no writer runs on ``out_dir``.
    """
    removed = []
    for name in TABLES:
        folder = Path(out_dir) / name
        if folder.is_dir():
            for path in sorted(p for p in folder.iterdir() if is_temporary(p)):
                _remove(path)
                removed.append(path)
    return removed


def remove_uncommitted_outputs(out_dir: str | Path) -> list[Path]:
    """Delete hands/objects files that no readable ``ok`` videos row vouches for.

    These are what a crash between the data files and the commit marker leaves; raw
    dataset readers (DuckDB globs) would otherwise see them. Call only while no writer runs.
    """
    scan = scan_output(out_dir)
    ok = {v for v, row in scan.finished.items() if row["status"] == "ok"}
    removed = []
    for name in ("hands", "objects"):
        for path in visible_files(Path(out_dir) / name):
            if path.name[: -len(SUFFIX)] not in ok:
                _remove(path)
                removed.append(path)
    if removed:
        keep_tables_readable(out_dir)
    return removed


def _check_table(table: pa.Table, name: str, video_id: str) -> None:
    if name == "hands":
        expected = hands_schema(with_vertices="vertices" in table.column_names)
    else:
        expected = objects_schema()
    if not table.schema.equals(expected, check_metadata=False):
        raise ValueError(f"{name} table for video {video_id!r} does not have the {name} schema")
    ids = table.column("video_id")
    if table.num_rows and not pc.all(pc.equal(ids, video_id)).as_py():
        raise ValueError(f"{name} table for video {video_id!r} holds rows of other videos")


def _video_table(
    video_id: str, video_row: Mapping[str, object], metadata: OutputMetadata
) -> pa.Table:
    row = dict(video_row)
    if row.setdefault("video_id", video_id) != video_id:
        raise ValueError(f"videos row names {row['video_id']!r}, expected {video_id!r}")
    return videos_table([row], metadata)


def _make_folders(out_dir: str | Path) -> None:
    for name in TABLES:
        folder = Path(out_dir) / name
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"cannot create output folder {folder}: {_os_cause(exc)}") from exc


def _row_group_size(table: pa.Table) -> int:
    if table.num_rows == 0:
        return MIN_ROW_GROUP_ROWS
    bytes_per_row = max(1, table.nbytes // table.num_rows)
    return max(MIN_ROW_GROUP_ROWS, ROW_GROUP_BYTES // bytes_per_row)


def _write_atomic(table: pa.Table, path: Path) -> None:
    def write(sink: BinaryIO) -> None:
        pq.write_table(table, sink, row_group_size=_row_group_size(table), compression="zstd")

    atomic_write(path, write, OutputError)


def _remove(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot remove {path}: {_os_cause(exc)}") from exc
    fsync_folder(path.parent)


def _os_cause(exc: OSError) -> str:
    return exc.strerror or one_line(exc)
