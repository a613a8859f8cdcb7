"""The output folder's layout, and reading back what is committed.

Layout: ``OUT/hands/<video_id>.parquet``, ``OUT/objects/<video_id>.parquet`` and
``OUT/videos/<video_id>.parquet``; each folder is a Parquet dataset on its own
(``pq.read_table(OUT / "hands")``, DuckDB ``read_parquet('OUT/hands/*.parquet')``).
A video is committed exactly when its ``videos`` file exists and reads (see
:mod:`hflpipe.pipeline.output.writer` for the commit protocol); readers here see only
committed videos.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from hflpipe.pipeline.common import storage
from hflpipe.pipeline.common.errors import InputError, one_line
from hflpipe.pipeline.common.storage import Location
from hflpipe.pipeline.output.schema import TABLES, hands_schema, table_schema
from hflpipe.pipeline.output.store import OutputStore

logger = logging.getLogger(__name__)

SUFFIX = ".parquet"
#: A zero-row file with the table's full schema, kept in a table folder while it holds no
#: video's file, so that every reader opens every table whatever happened (pandas,
#: polars and DuckDB refuse a folder or glob without files). Not a valid video id.
PLACEHOLDER_ID = "empty-table"
PLACEHOLDER = f"{PLACEHOLDER_ID}{SUFFIX}"
# Leaves room for ".parquet" and the temporary-name decoration under the 255-byte limit.
MAX_VIDEO_ID_BYTES = 200



def check_video_id(video_id: str) -> str:
    """Return ``video_id`` if it is a safe file stem, else raise InputError naming the cause.

    Refused: empty, over 200 bytes, a leading dot (hidden/temporary names), path separators,
    ``..``, NUL or other control characters, surrounding whitespace.
    """
    if not isinstance(video_id, str) or not video_id:
        cause = "it is empty or not a string"
    elif len(video_id.encode("utf-8", "surrogatepass")) > MAX_VIDEO_ID_BYTES:
        cause = f"it is longer than {MAX_VIDEO_ID_BYTES} bytes"
    elif video_id.startswith("."):
        cause = "it starts with a dot"
    elif "/" in video_id or "\\" in video_id:
        cause = "it contains a path separator"
    elif ".." in video_id:
        cause = "it contains '..'"
    elif any(ord(ch) < 32 or ord(ch) == 127 for ch in video_id):
        cause = "it contains a NUL or control character"
    elif video_id != video_id.strip():
        cause = "it has leading or trailing whitespace"
    elif video_id == PLACEHOLDER_ID:
        cause = "the name is reserved for the empty table file"
    else:
        return video_id
    raise InputError(f"video id {video_id!r} is not a safe file name: {cause}")


def output_path(out_dir: Location, table: str, video_id: str) -> Location:
    """``OUT/<table>/<video_id>.parquet``, refusing ids that would escape ``OUT/<table>``."""
    if table not in TABLES:
        raise ValueError(f"unknown table {table!r}: expected one of {', '.join(TABLES)}")
    if storage.is_url(out_dir):
        # check_video_id refuses separators and '..': the key stays under OUT/<table>/.
        return storage.join(out_dir, table, f"{check_video_id(video_id)}{SUFFIX}")
    folder = Path(out_dir) / table
    path = folder / f"{check_video_id(video_id)}{SUFFIX}"
    if path.resolve().parent != folder.resolve():
        raise InputError(f"video id {video_id!r} is not a safe file name: it leaves {folder}")
    return path


@dataclass
class OutputScan:
    """What an output folder holds.

    ``finished``: video id -> its ``videos`` row (any status) for committed videos.
    ``unreadable``: file -> one-line reason, for corrupt or truncated files (their videos
    are not finished and will be redone).
    """

    finished: dict[str, dict] = field(default_factory=dict)
    unreadable: dict[Location, str] = field(default_factory=dict)


def scan_output(out_dir: Location) -> OutputScan:
    """Read the commit markers in ``OUT/videos`` and check the data files they vouch for."""
    scan = OutputScan()
    store = OutputStore(out_dir)
    for name in visible_names(store, "videos"):
        video_id = name[: -len(SUFFIX)]
        try:
            row = _read_marker(store, name, video_id)
        except (OSError, ValueError, pa.ArrowException) as exc:
            scan.unreadable[store.location("videos", name)] = one_line(exc)
            continue
        if row["status"] == "ok":
            problems = {}
            for table in ("hands", "objects"):
                data = f"{check_video_id(video_id)}{SUFFIX}"
                try:
                    pq.read_metadata(store.path(table, data), filesystem=store.filesystem)
                except (OSError, pa.ArrowException) as exc:
                    problems[store.location(table, data)] = one_line(exc)
            if problems:
                scan.unreadable.update(problems)
                continue
        scan.finished[video_id] = row
    for path, reason in scan.unreadable.items():
        logger.warning("unreadable output file %s (its video will be redone): %s", path, reason)
    return scan


def finished_videos(out_dir: Location) -> dict[str, dict]:
    """Video id -> ``videos`` row for every committed video (unreadable files are logged)."""
    return scan_output(out_dir).finished


def read_table(
    out_dir: Location, table: str, *, columns: Sequence[str] | None = None
) -> pa.Table:
    """One output table across all committed videos, as a pyarrow Table.

    Only files vouched for by a readable ``videos`` row with status ``ok`` are read
    (``videos`` itself: every committed row), so a crash's leftovers never show up.
    If only some hands files have ``vertices``, the column is null for the others.
    """
    scan = scan_output(out_dir)
    if table == "videos":
        ids = sorted(scan.finished)
    else:
        ids = sorted(v for v, row in scan.finished.items() if row["status"] == "ok")
    store = OutputStore(out_dir)
    paths = [store.path(table, f"{check_video_id(v)}{SUFFIX}") for v in ids]
    schema = table_schema(table)
    if table == "hands":
        with_vertices = [("vertices" in pq.read_schema(p, filesystem=store.filesystem).names)
                         for p in paths]
        if any(with_vertices):
            schema = hands_schema(with_vertices=True)
            if not all(with_vertices):
                index = schema.get_field_index("vertices")
                schema = schema.set(index, schema.field(index).with_nullable(True))
    if not paths:
        result = schema.empty_table()
        return result.select(list(columns)) if columns is not None else result
    dataset = ds.dataset(paths, schema=schema, format="parquet", filesystem=store.filesystem)
    return dataset.to_table(columns=list(columns) if columns is not None else None)


def _read_marker(store: OutputStore, name: str, video_id: str) -> dict:
    rows = pq.read_table(store.path("videos", name), filesystem=store.filesystem).to_pylist()
    if len(rows) != 1 or rows[0].get("video_id") != video_id or "status" not in rows[0]:
        raise ValueError(f"expected one videos row for {video_id!r}, found {len(rows)}")
    return rows[0]


def visible_names(store: OutputStore, folder: str) -> list[str]:
    """The names of the videos' Parquet files in ``OUT/folder`` (no temporaries, no
    placeholder), sorted."""
    return [name for name in store.file_names(folder)
            if name.endswith(SUFFIX) and _is_video_file(name)]


def visible_files(folder: Path) -> list[Path]:
    """The videos' Parquet files of a local table folder (no temporaries, no placeholder)."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob(f"*{SUFFIX}") if _is_video_file(p.name))


def _is_video_file(name: str) -> bool:
    return not name.startswith(".") and name != PLACEHOLDER


