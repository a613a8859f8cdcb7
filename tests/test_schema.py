"""The output schema: builders validate, files read back unchanged in pandas, polars, DuckDB."""

from __future__ import annotations

import datetime as dt

import duckdb
import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hflpipe.pipeline.output.schema import (
    ROTATION_FORMAT,
    SCHEMA_VERSION,
    OutputMetadata,
    empty_hands,
    empty_objects,
    hands_schema,
    hands_table,
    objects_table,
    read_file_metadata,
    videos_table,
)

META = OutputMetadata(checkpoint_sha256="a" * 64, mano_sha256="b" * 64, config_hash="c0ffee")


def sample_hand_columns(
    video_id: str = "clip", n: int = 6, *, seed: int = 0, with_vertices: bool = False
) -> dict[str, np.ndarray]:
    """Plausible hands columns: one right-hand track, every third frame interpolated."""
    rng = np.random.default_rng(seed)
    f32 = np.float32
    interpolated = np.arange(n) % 3 == 2
    cols = {
        "video_id": np.array([video_id] * n, dtype=object),
        "frame_index": np.arange(n, dtype=np.int64),
        "timestamp_s": np.arange(n) / 30.0,
        "track_id": np.zeros(n, dtype=np.int32),
        "handedness": np.array(["right"] * n, dtype=object),
        "interpolated": interpolated,
        "box": rng.uniform(0, 640, (n, 4)).astype(f32),
        "detector_score": rng.uniform(0, 1, n).astype(f32),
        "confidence": rng.uniform(0, 1, n).astype(f32),
        "joints2d": rng.uniform(0, 640, (n, 21, 2)).astype(f32),
        "joints3d": rng.normal(0, 0.1, (n, 21, 3)).astype(f32),
        "mano_pose": rng.normal(0, 0.3, (n, 48)).astype(f32),
        "mano_shape": rng.normal(0, 1, (n, 10)).astype(f32),
        "translation": rng.normal(0, 0.1, (n, 3)).astype(f32),
    }
    for name in ("joints2d", "joints3d", "mano_pose", "translation"):
        raw = cols[name] + f32(0.01)
        raw[interpolated] = np.nan  # the builder must null these rows, whatever they hold
        cols[f"{name}_raw"] = raw
    if with_vertices:
        cols["vertices"] = rng.normal(0, 0.1, (n, 778, 3)).astype(f32)
    return cols


def sample_object_columns(video_id: str = "clip", n: int = 6, *, seed: int = 1) -> dict:
    """Objects columns: frame 1 interpolated, no pose from frame 4 on, PnP not run on frame 5."""
    rng = np.random.default_rng(seed)
    f32 = np.float32
    quat = rng.normal(size=(n, 4))
    quat /= np.linalg.norm(quat, axis=1, keepdims=True)
    interpolated = np.arange(n) == 1
    pose_valid = np.arange(n) < 4
    inliers = np.ma.masked_array(np.full(n, 17, dtype=np.int64), mask=np.arange(n) == 5)
    return {
        "video_id": np.array([video_id] * n, dtype=object),
        "frame_index": np.arange(n, dtype=np.int64),
        "timestamp_s": np.arange(n) / 30.0,
        "track_id": np.full(n, 3, dtype=np.int32),
        "object_name": np.array(["003_cracker_box"] * (n - 1) + [None], dtype=object),
        "interpolated": interpolated,
        "box": rng.uniform(0, 640, (n, 4)).astype(f32),
        "detector_score": rng.uniform(0, 1, n).astype(f32),
        "keypoints2d": rng.uniform(0, 640, (n, 21, 2)).astype(f32),
        "keypoint_confidence": rng.uniform(0, 1, (n, 21)).astype(f32),
        "rotation": quat.astype(f32),
        "translation": rng.normal(0, 0.5, (n, 3)).astype(f32),
        "rotation_raw": quat.astype(f32),
        "translation_raw": rng.normal(0, 0.5, (n, 3)).astype(f32),
        "pnp_inliers": inliers,
        "reprojection_error_px": np.ma.masked_array(
            rng.uniform(0, 3, n).astype(f32), mask=np.arange(n) == 5
        ),
        "pose_valid": pose_valid,
    }


def sample_video_row(video_id: str = "clip", status: str = "ok") -> dict:
    """A ``videos`` row; failed/skipped rows carry an error and no decode facts."""
    start = dt.datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=dt.UTC)
    row = {
        "video_id": video_id,
        "path": f"/data/{video_id}.mp4",
        "status": status,
        "config_hash": "c0ffee",
        "started_at": start,
        "finished_at": start + dt.timedelta(seconds=12.5),
    }
    if status == "ok":
        row |= {
            "content_sha256": "d" * 64, "size_bytes": 123456, "num_frames": 6,
            "frames_processed": 6, "fps": 30.0, "width": 640, "height": 480,
            "duration_s": 0.2, "hand_tracks": 1, "object_tracks": 1,
            "intrinsics": [[500.0, 0, 320], [0, 500.0, 240], [0, 0, 1]],
            "intrinsics_source": "given", "decoder": "decord-0.6.0",
        }
    else:
        row["error"] = "could not decode\n  frame 3: corrupt packet"
    return row


def test_hands_builder_applies_contract_nulls_and_metadata() -> None:
    cols = sample_hand_columns()
    table = hands_table(cols, META)
    assert table.schema.equals(hands_schema(), check_metadata=False)
    interpolated = cols["interpolated"]
    for name in ("detector_score", "joints2d_raw", "joints3d_raw", "mano_pose_raw"):
        assert np.array_equal(table.column(name).is_null().to_numpy(), interpolated)
    joints = np.array(table.column("joints3d").to_pylist(), dtype=np.float32)
    np.testing.assert_array_equal(joints, cols["joints3d"])
    meta = table.schema.metadata
    assert meta[b"hflpipe.rotation_format"] == ROTATION_FORMAT.encode()
    assert meta[b"hflpipe.table"] == b"hands"


def test_hands_builder_with_vertices_selects_schema() -> None:
    table = hands_table(sample_hand_columns(n=2, with_vertices=True), META)
    assert table.schema.equals(hands_schema(with_vertices=True), check_metadata=False)
    assert "vertices" not in hands_schema().names


def test_objects_builder_nulls_by_flags_and_masks() -> None:
    table = objects_table(sample_object_columns(), META)
    null = {name: table.column(name).is_null().to_pylist() for name in table.column_names}
    assert null["rotation"] == [False, False, False, False, True, True]
    assert null["rotation_raw"] == [False, True, False, False, True, True]
    assert null["pnp_inliers"] == [False, True, False, False, False, True]
    assert null["detector_score"] == [False, True, False, False, False, False]
    assert null["object_name"] == [False] * 5 + [True]
    assert table.column("pnp_inliers").type == pa.int32()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda c: c.pop("box"), "missing columns"),
        (lambda c: c.update(extra=np.zeros(6)), "unknown columns"),
        (lambda c: c.update(joints2d=np.zeros((6, 21, 3), np.float32)), "expected shape"),
        (lambda c: c.update(track_id=np.zeros(6, np.float32)), "expected integers"),
        (lambda c: c.update(track_id=np.full(6, 2**40)), "out of range"),
        (lambda c: c.update(handedness=np.array(["up"] * 6, dtype=object)), "invalid value"),
        (lambda c: c.update(video_id=np.array([1] * 6, dtype=object)), "expected strings"),
        (lambda c: c["joints3d"].__setitem__((0, 0, 0), np.nan), "non-finite"),
        (
            lambda c: c.update(box=np.ma.masked_array(c["box"], mask=np.ones((6, 4), bool))),
            "not nullable",
        ),
    ],
)
def test_hands_builder_rejects_bad_columns(change, message: str) -> None:
    cols = sample_hand_columns()
    change(cols)
    with pytest.raises((ValueError, TypeError), match=message):
        hands_table(cols, META)


def test_videos_builder_folds_errors_and_validates() -> None:
    table = videos_table([sample_video_row("a"), sample_video_row("b", "failed")], META)
    rows = table.to_pylist()
    assert rows[0]["intrinsics"] == [500.0, 0, 320, 0, 500.0, 240, 0, 0, 1]
    assert rows[1]["error"] == "could not decode frame 3: corrupt packet"
    assert rows[1]["fps"] is None
    assert rows[0]["started_at"] == sample_video_row()["started_at"]

    bad_cases = [
        ({"status": "done"}, "invalid value"),
        ({"status": "failed", "error": None}, "needs an 'error'"),
        ({"intrinsics": [1.0, 2.0]}, "9 finite numbers"),
        ({"started_at": dt.datetime(2026, 1, 1)}, "timezone-aware"),
        ({"frames": 3}, "unknown columns"),
        ({"path": None}, "'path' is required"),
        ({"width": "wide"}, "do not fit the schema"),
    ]
    for change, message in bad_cases:
        with pytest.raises(ValueError, match=message):
            videos_table([sample_video_row() | change], META)


def test_empty_tables_have_the_schema() -> None:
    hands = empty_hands(META, with_vertices=True)
    assert hands.num_rows == 0 and "vertices" in hands.column_names
    assert empty_objects(META).schema.metadata[b"hflpipe.table"] == b"objects"


def _rows_from_arrow(table: pa.Table) -> list[dict]:
    return table.to_pylist()


def _normalise(value):
    """Nested lists/arrays of numbers -> float64 ndarray; others unchanged (None stays None)."""
    if isinstance(value, (list, tuple, np.ndarray, pl.Series)):
        items = value.to_list() if isinstance(value, pl.Series) else list(value)
        return np.array([_normalise(x) for x in items], dtype=np.float64)
    if isinstance(value, (pd.Timestamp, dt.datetime)):
        return pd.Timestamp(value).tz_convert("UTC").to_pydatetime()
    if isinstance(value, float) and np.isnan(value):
        return None
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        return value.item()
    return value


def _assert_same_rows(expected: list[dict], got: list[dict], reader: str) -> None:
    assert len(expected) == len(got), reader
    for want_row, got_row in zip(expected, got, strict=True):
        assert set(want_row) == set(got_row), reader
        for name, want in want_row.items():
            w, g = _normalise(want), _normalise(got_row[name])
            if isinstance(w, np.ndarray):
                assert isinstance(g, np.ndarray), f"{reader}: {name}"
                np.testing.assert_array_equal(g, w, err_msg=f"{reader}: {name}")
            else:
                assert g == w, f"{reader}: {name}: {g!r} != {want!r}"


@pytest.mark.parametrize("table_name", ["hands", "objects", "videos"])
def test_pandas_polars_duckdb_read_values_unchanged(tmp_path, table_name: str) -> None:
    table = {
        "hands": lambda: hands_table(sample_hand_columns(with_vertices=True), META),
        "objects": lambda: objects_table(sample_object_columns(), META),
        "videos": lambda: videos_table(
            [sample_video_row("a"), sample_video_row("b", "skipped")], META
        ),
    }[table_name]()
    path = tmp_path / f"{table_name}.parquet"
    pq.write_table(table, path)
    expected = _rows_from_arrow(table)

    _assert_same_rows(expected, _rows_from_arrow(pq.read_table(path)), "pyarrow")
    frame = pd.read_parquet(path)
    _assert_same_rows(expected, frame.to_dict("records"), "pandas")
    _assert_same_rows(expected, pl.read_parquet(path).to_dicts(), "polars")
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    result = con.execute(f"SELECT * FROM read_parquet('{path}')")
    names = [d[0] for d in result.description]
    _assert_same_rows(expected, [dict(zip(names, r, strict=True)) for r in result.fetchall()],
                      "duckdb")


def test_file_metadata_reads_back(tmp_path) -> None:
    path = tmp_path / "h.parquet"
    pq.write_table(hands_table(sample_hand_columns(), META), path)
    meta = read_file_metadata(path)
    assert meta["schema_version"] == SCHEMA_VERSION
    assert meta["checkpoint_sha256"] == "a" * 64
    assert meta["mano_sha256"] == "b" * 64
    assert meta["config_hash"] == "c0ffee"
    assert meta["rotation_format"] == "quaternion_wxyz"
    assert meta["table"] == "hands"
    assert "OpenCV" in meta["coordinates"]
    assert meta["version"]
