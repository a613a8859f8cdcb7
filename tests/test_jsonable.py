"""hflpipe.jsonable.to_jsonable: numpy, paths and missing values to strict JSON."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pytest

from hflpipe.jsonable import to_jsonable


def test_numpy_values_paths_and_dates_become_json_types() -> None:
    stamp = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.UTC)
    value = {
        "count": np.int64(3), "ok": np.bool_(True), "ratio": np.float32(0.5),
        "shape": (2, np.int32(4)), "path": Path("/data/a.mp4"), "at": stamp,
        "vector": np.arange(3, dtype=np.uint8), "name": "x", "none": None, "flag": False,
    }
    out = to_jsonable(value)
    assert out == {
        "count": 3, "ok": True, "ratio": 0.5, "shape": [2, 4], "path": "/data/a.mp4",
        "at": "2024-05-01T12:00:00+00:00", "vector": [0, 1, 2], "name": "x", "none": None,
        "flag": False,
    }
    assert type(out["count"]) is int and type(out["ok"]) is bool
    json.dumps(out, allow_nan=False)


def test_non_finite_numbers_become_null() -> None:
    values = [float("nan"), float("inf"), np.float64(-np.inf), np.array([1.0, np.nan])]
    assert to_jsonable(values) == [None, None, None, [1.0, None]]


def test_an_all_nan_row_of_a_float_array_is_one_null() -> None:
    rows = np.array([[1.0, 2.0], [np.nan, np.nan], [3.0, np.nan]])
    assert to_jsonable(rows) == [[1.0, 2.0], None, [3.0, None]]
    poses = np.full((2, 3, 3), np.nan)
    poses[0] = np.eye(3)
    assert to_jsonable(poses) == [np.eye(3).tolist(), None]
    assert to_jsonable(np.zeros((1, 2), dtype=np.int64)) == [[0, 0]]


def test_unknown_types_are_refused_by_name() -> None:
    with pytest.raises(TypeError, match="cannot write bytes to JSON"):
        to_jsonable({"blob": b"\x00"})
