"""Per-video atomic writer: commit order, crash leftovers, disk errors, unsafe ids."""

from __future__ import annotations

import builtins
import errno
import os

import duckdb
import numpy as np
import pyarrow.parquet as pq
import pytest
from test_schema import META, sample_hand_columns, sample_object_columns, sample_video_row

from hflpipe.atomic import temporary_name
from hflpipe.pipeline.common.errors import InputError, OutputError
from hflpipe.pipeline.output import store, writer
from hflpipe.pipeline.output.reader import finished_videos, read_table, scan_output
from hflpipe.pipeline.output.schema import (
    empty_hands,
    empty_objects,
    hands_table,
    objects_table,
    read_file_metadata,
    table_schema,
)
from hflpipe.pipeline.output.writer import (
    remove_stale_temp_files,
    remove_uncommitted_outputs,
    write_video_output,
    write_video_status,
)


def _write(out, video_id: str, n: int = 6, *, with_vertices: bool = False, seed: int = 0):
    hands = hands_table(
        sample_hand_columns(video_id, n, seed=seed, with_vertices=with_vertices), META
    )
    objects = objects_table(sample_object_columns(video_id, n), META)
    return write_video_output(out, video_id, hands, objects, sample_video_row(video_id), META)


def _hidden_files(out) -> list:
    return sorted(p for p in out.rglob(".*") if p.is_file())


def test_writes_three_files_readable_as_datasets(tmp_path) -> None:
    paths = _write(tmp_path, "a")
    _write(tmp_path, "b", n=4, seed=1)
    assert [p.relative_to(tmp_path).as_posix() for p in paths] == [
        "hands/a.parquet", "objects/a.parquet", "videos/a.parquet",
    ]
    assert _hidden_files(tmp_path) == []
    for path, table in zip(paths, ("hands", "objects", "videos"), strict=True):
        meta = read_file_metadata(path)
        assert meta["table"] == table and meta["config_hash"] == "c0ffee"

    (tmp_path / "hands" / ".a.parquet.123.tmp").write_bytes(b"half a file")
    assert pq.read_table(tmp_path / "hands").num_rows == 10
    glob = f"{tmp_path}/hands/*.parquet"
    count = duckdb.connect().execute(f"SELECT count(*) FROM read_parquet('{glob}')").fetchone()
    assert count == (10,)

    hands = read_table(tmp_path, "hands")
    expected = hands_table(sample_hand_columns("a"), META)
    got_a = hands.filter(hands.column("video_id").to_numpy(zero_copy_only=False) == "a")
    assert got_a.select(expected.column_names).equals(expected)
    assert read_table(tmp_path, "objects", columns=["track_id"]).num_rows == 10
    assert set(finished_videos(tmp_path)) == {"a", "b"}


def test_rewrite_replaces_rows_and_status_row_removes_data(tmp_path) -> None:
    _write(tmp_path, "a", n=6)
    _write(tmp_path, "a", n=3)
    assert read_table(tmp_path, "hands").num_rows == 3
    assert read_table(tmp_path, "videos").num_rows == 1

    write_video_status(tmp_path, "a", sample_video_row("a", "failed"), META)
    assert not (tmp_path / "hands" / "a.parquet").exists()
    assert finished_videos(tmp_path)["a"]["status"] == "failed"
    assert finished_videos(tmp_path)["a"]["error"] == "could not decode frame 3: corrupt packet"
    assert read_table(tmp_path, "hands").num_rows == 0


def test_video_without_detections_gets_empty_files(tmp_path) -> None:
    write_video_output(
        tmp_path, "empty", empty_hands(META), empty_objects(META), sample_video_row("empty"), META
    )
    assert pq.read_table(tmp_path / "hands" / "empty.parquet").num_rows == 0
    assert "empty" in finished_videos(tmp_path)


def test_mixed_vertices_read_as_nulls(tmp_path) -> None:
    _write(tmp_path, "plain", n=2)
    _write(tmp_path, "full", n=2, with_vertices=True)
    hands = read_table(tmp_path, "hands")
    by_id = dict(zip(hands.column("video_id").to_pylist(),
                     hands.column("vertices").is_null().to_pylist(), strict=False))
    assert by_id == {"full": False, "plain": True}


@pytest.mark.parametrize(
    "video_id", ["", ".hidden", "../escape", "a/b", "a\\b", "a\0b", "..", "tab\tid", " pad",
                 "x" * 201, "empty-table"],
)
def test_unsafe_video_ids_are_refused(tmp_path, video_id: str) -> None:
    with pytest.raises(InputError, match="is not a safe file name"):
        write_video_status(tmp_path, video_id, sample_video_row("ok"), META)
    assert list(tmp_path.rglob("*")) == []


def test_table_of_another_video_is_refused(tmp_path) -> None:
    hands = hands_table(sample_hand_columns("other"), META)
    with pytest.raises(ValueError, match="rows of other videos"):
        write_video_output(tmp_path, "a", hands, empty_objects(META), sample_video_row("a"), META)
    with pytest.raises(ValueError, match="expected 'a'"):
        write_video_status(tmp_path, "a", sample_video_row("b", "failed"), META)


def test_disk_full_mid_video_keeps_written_files_valid(tmp_path, monkeypatch) -> None:
    _write(tmp_path, "a")
    real_write = pq.write_table
    calls = []

    def write_then_fail(table, sink, **kwargs):
        calls.append(table.schema.metadata[b"hflpipe.table"])
        if len(calls) == 2:  # objects: half the bytes land, then the disk is full
            sink.write(b"PAR1 partial")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_write(table, sink, **kwargs)

    monkeypatch.setattr(store.pq, "write_table", write_then_fail)
    with pytest.raises(OutputError) as info:
        _write(tmp_path, "a", n=3)
    message = str(info.value)
    assert "\n" not in message and "objects/a.parquet" in message
    assert "No space left on device" in message
    monkeypatch.undo()

    assert _hidden_files(tmp_path) == []
    assert pq.read_table(tmp_path / "hands" / "a.parquet").num_rows == 3
    assert pq.read_table(tmp_path / "objects" / "a.parquet").num_rows == 6
    # The old marker was withdrawn before writing, so the half-updated video is unfinished.
    assert finished_videos(tmp_path) == {}
    assert remove_uncommitted_outputs(tmp_path) == [
        tmp_path / "hands" / "a.parquet", tmp_path / "objects" / "a.parquet",
    ]


def test_read_only_folder_is_one_line_output_error(tmp_path, monkeypatch) -> None:
    _write(tmp_path, "a")
    real_open = builtins.open

    def read_only(path, mode="r", *args, **kwargs):
        # Root ignores chmod, so the refusal a read-only mount would give is simulated.
        if "r" not in mode and str(path).startswith(str(tmp_path)):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", read_only)
    with pytest.raises(OutputError, match=r"^cannot write .*hands/b\.parquet: Permission denied$"):
        _write(tmp_path, "b")
    monkeypatch.undo()
    assert set(finished_videos(tmp_path)) == {"a"}
    assert _hidden_files(tmp_path) == []


def test_output_folder_that_is_a_file_is_output_error(tmp_path) -> None:
    (tmp_path / "hands").write_text("not a folder")
    with pytest.raises(OutputError, match="cannot create output folder"):
        _write(tmp_path, "a")


def test_corrupt_files_are_reported_not_fatal(tmp_path, caplog) -> None:
    for video_id in ("good", "bad_marker", "bad_hands"):
        _write(tmp_path, video_id)
    marker = tmp_path / "videos" / "bad_marker.parquet"
    marker.write_bytes(marker.read_bytes()[:100])
    hands = tmp_path / "hands" / "bad_hands.parquet"
    hands.write_bytes(b"")

    scan = scan_output(tmp_path)
    assert set(scan.finished) == {"good"}
    assert set(scan.unreadable) == {marker, hands}
    assert all("\n" not in reason for reason in scan.unreadable.values())
    assert "bad_marker.parquet" in caplog.text
    assert read_table(tmp_path, "hands").num_rows == 6


def test_remove_stale_temp_files(tmp_path) -> None:
    _write(tmp_path, "a")
    # Earlier versions' temporary names end in ".tmp", this version's in the file's suffix.
    stale = [tmp_path / "hands" / ".a.parquet.1.tmp", tmp_path / "videos" / ".b.parquet.2.tmp",
             temporary_name(tmp_path / "objects" / "c.parquet")]
    for path in stale:
        path.write_bytes(b"x")
    assert remove_stale_temp_files(tmp_path) == sorted(stale)
    assert _hidden_files(tmp_path) == []
    assert set(finished_videos(tmp_path)) == {"a"}


def test_row_groups_follow_the_byte_target(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(writer, "MIN_ROW_GROUP_ROWS", 1)
    table = hands_table(sample_hand_columns("a", 40), META)
    per_row = table.nbytes // table.num_rows
    monkeypatch.setattr(writer, "ROW_GROUP_BYTES", per_row * 16)
    write_video_output(tmp_path, "a", table, empty_objects(META), sample_video_row("a"), META)
    groups = pq.ParquetFile(tmp_path / "hands" / "a.parquet").metadata.num_row_groups
    assert groups == int(np.ceil(40 / 16))


def test_every_table_opens_in_every_reader_when_every_video_failed(tmp_path) -> None:
    import pandas as pd
    import polars as pl

    row = sample_video_row("a") | {"status": "failed", "error": "a.mp4: not a video"}
    write_video_status(tmp_path, "a", row, META)
    for name in ("hands", "objects"):
        columns = table_schema(name).names
        assert pq.read_schema(tmp_path / name / "empty-table.parquet").names == columns
        assert pd.read_parquet(tmp_path / name).shape == (0, len(columns))
        assert pl.read_parquet(f"{tmp_path}/{name}/*.parquet").columns == columns
        query = f"SELECT * FROM read_parquet('{tmp_path}/{name}/*.parquet')"
        assert duckdb.connect().execute(query).fetchall() == []
    assert read_table(tmp_path, "hands").num_rows == 0
    assert list(finished_videos(tmp_path)) == ["a"]

    _write(tmp_path, "b", with_vertices=True)
    assert not (tmp_path / "hands" / "empty-table.parquet").exists()
    assert pd.read_parquet(tmp_path / "hands").shape[0] == 6
    write_video_status(tmp_path, "b", row | {"video_id": "b"}, META)
    assert (tmp_path / "hands" / "empty-table.parquet").exists()
    assert remove_uncommitted_outputs(tmp_path) == []
