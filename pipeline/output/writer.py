"""Per-video atomic Parquet output (the layout and the readers: :mod:`.reader`).

Commit protocol, so that a crash at any point loses nothing and duplicates nothing:

1. the video's old ``videos`` file (its commit marker) is removed first, so a re-run that
   dies half-way never leaves an old marker vouching for new, partial data;
2. ``hands`` then ``objects`` are written, each to a hidden temporary file in the target
   folder (dataset readers skip names starting with ``.``), fsynced, then renamed over the
   old file (``hflpipe.atomic``);
3. the ``videos`` row is written last, the same way: a video is finished exactly when its
   ``videos`` file exists and reads.

On an object store each file is one upload of finished bytes instead of a rename
(:mod:`.store`). In a run, a video's task does steps 1 and 2 where it ran
(:func:`write_video_data`) and the driver step 3 (:func:`commit_video`), so no rows pass
through the driver. Writers for different videos touch disjoint files, so Ray workers may
write concurrently.
``remove_stale_temp_files`` and ``remove_uncommitted_outputs`` must run only while no
writer is running (at job start), since an in-flight write looks exactly like a stale one.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from hflpipe.atomic import is_temporary
from hflpipe.pipeline.common.errors import OutputError
from hflpipe.pipeline.common.storage import Location
from hflpipe.pipeline.output.reader import (
    PLACEHOLDER,
    SUFFIX,
    check_video_id,
    output_path,
    scan_output,
    visible_names,
)
from hflpipe.pipeline.output.s3_uploads import abort_unfinished_uploads
from hflpipe.pipeline.output.schema import (
    TABLES,
    OutputMetadata,
    hands_schema,
    objects_schema,
    table_schema,
    videos_table,
)
from hflpipe.pipeline.output.store import OutputStore

logger = logging.getLogger(__name__)

# Uncompressed bytes per row group: big enough for efficient scans, small enough that
# readers can parallelise over row groups within one long video's file.
ROW_GROUP_BYTES = 64 * 1024 * 1024
MIN_ROW_GROUP_ROWS = 1024
def write_video_output(
    out_dir: Location,
    video_id: str,
    hands: pa.Table,
    objects: pa.Table,
    video_row: Mapping[str, object],
    metadata: OutputMetadata,
) -> list[Location]:
    """Write one processed video: hands, objects, then its ``videos`` row (the commit marker).

    ``hands``/``objects`` come from ``schema.hands_table``/``objects_table`` (or the
    ``empty_*`` helpers) and hold only this video's rows. Returns the three final paths.
    Raises OutputError (one line) if the disk refuses; files already replaced stay valid and
    the video stays unfinished.
    """
    paths = write_video_data(out_dir, video_id, hands, objects, metadata)
    return [*paths, commit_video(out_dir, video_id, video_row, metadata)]


def write_video_data(
    out_dir: Location, video_id: str, hands: pa.Table, objects: pa.Table,
    metadata: OutputMetadata,
) -> list[Location]:
    """Steps 1 and 2 of the protocol: the old marker removed, hands and objects written.

    What a video's task does where it ran, so the rows never pass through the driver;
    the video stays uncommitted until :func:`commit_video`. Returns the two data files.
    """
    name = _file_name(video_id)
    _check_table(hands, "hands", video_id)
    _check_table(objects, "objects", video_id)
    store = OutputStore(out_dir)
    store.make_folders(*TABLES)
    store.remove("videos", name)
    for table, table_name in ((hands, "hands"), (objects, "objects")):
        store.write_parquet(table.replace_schema_metadata(metadata.key_values(table_name)),
                            table_name, name, row_group_size=_row_group_size(table))
    return [output_path(out_dir, table_name, video_id) for table_name in ("hands", "objects")]


def commit_video(
    out_dir: Location, video_id: str, video_row: Mapping[str, object], metadata: OutputMetadata
) -> Location:
    """Step 3: the ``videos`` row, written last; from then on the video is finished.

    When the store refuses the row (full, read-only), the video's data files are removed
    before the OutputError goes on, so that a stopped run leaves no rows without a commit.
    """
    name = _file_name(video_id)
    videos = _video_table(video_id, video_row, metadata)
    store = OutputStore(out_dir)
    store.make_folders("videos")
    try:
        store.write_parquet(videos.replace_schema_metadata(metadata.key_values("videos")),
                            "videos", name, row_group_size=MIN_ROW_GROUP_ROWS)
    except OutputError:
        for table_name in ("hands", "objects"):
            with contextlib.suppress(OutputError):
                store.remove(table_name, name)
        raise
    # Its hands and objects files are in place (written before the commit): every table
    # now holds a video's file, so no placeholder is needed.
    for table_name in TABLES:
        if store.is_file(table_name, PLACEHOLDER):
            store.remove(table_name, PLACEHOLDER)
    return output_path(out_dir, "videos", video_id)


def write_video_status(
    out_dir: Location,
    video_id: str,
    video_row: Mapping[str, object],
    metadata: OutputMetadata,
) -> Location:
    """Record a failed or skipped video: only a ``videos`` row, replacing any earlier output.

    Earlier hands/objects files of the video are removed first, so the tables never hold
    rows that its status row does not vouch for.
    """
    name = _file_name(video_id)
    videos = _video_table(video_id, video_row, metadata)
    store = OutputStore(out_dir)
    store.make_folders(*TABLES)
    store.remove("videos", name)
    for table_name in ("hands", "objects"):
        store.remove(table_name, name)
    store.write_parquet(videos, "videos", name, row_group_size=MIN_ROW_GROUP_ROWS)
    keep_tables_readable(out_dir)
    return output_path(out_dir, "videos", video_id)


def keep_tables_readable(out_dir: Location) -> None:
    """Give every table folder its :data:`PLACEHOLDER` while it holds no video's file, and
    remove it once it does (its schema lacks ``vertices``, which real files may have).

    Called by the driver after a write that may leave a table without files; on an object
    store a table with no file would not exist at all.
    """
    store = OutputStore(out_dir)
    store.make_folders(*TABLES)
    for name in TABLES:
        placeholder = store.is_file(name, PLACEHOLDER)
        if visible_names(store, name):
            if placeholder:
                store.remove(name, PLACEHOLDER)
        elif not placeholder:
            store.write_parquet(table_schema(name).empty_table(), name, PLACEHOLDER,
                                row_group_size=MIN_ROW_GROUP_ROWS)


def remove_stale_temp_files(out_dir: Location) -> list[Location]:
    """Delete hidden temporary files left by interrupted writes; returns what was removed.

    On S3 the same leftovers are unfinished multipart uploads: they are aborted.
    Call only while no writer runs on ``out_dir``.
    """
    store = OutputStore(out_dir)
    removed: list[Location] = []
    if store.remote and str(store.root).lower().startswith("s3://"):
        removed.extend(abort_unfinished_uploads(str(store.root)))
    for table_name in TABLES:
        for name in store.file_names(table_name):
            if is_temporary(Path(name)):
                store.remove(table_name, name)
                removed.append(store.location(table_name, name))
    return removed


def remove_uncommitted_outputs(out_dir: Location) -> list[Location]:
    """Delete hands/objects files that no readable ``ok`` videos row vouches for.

    These are what a crash between the data files and the commit marker leaves; raw
    dataset readers (DuckDB globs) would otherwise see them. Call only while no writer runs.
    """
    scan = scan_output(out_dir)
    ok = {v for v, row in scan.finished.items() if row["status"] == "ok"}
    store = OutputStore(out_dir)
    removed = []
    for table_name in ("hands", "objects"):
        for name in visible_names(store, table_name):
            if name[: -len(SUFFIX)] not in ok:
                store.remove(table_name, name)
                removed.append(store.location(table_name, name))
    if removed:
        keep_tables_readable(out_dir)
    return removed


def _file_name(video_id: str) -> str:
    return f"{check_video_id(video_id)}{SUFFIX}"


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


def _row_group_size(table: pa.Table) -> int:
    if table.num_rows == 0:
        return MIN_ROW_GROUP_ROWS
    bytes_per_row = max(1, table.nbytes // table.num_rows)
    return max(MIN_ROW_GROUP_ROWS, ROW_GROUP_BYTES // bytes_per_row)


