"""The boxes file detector: the three formats, per-video selection, and bad files."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest

from hflpipe.pipeline.common.errors import ConfigError, InputError
from hflpipe.pipeline.detect.base import Detector, make_detector
from hflpipe.pipeline.detect.boxes import BoxesFile

ROWS = [
    {"frame_index": 3, "kind": "hand", "x0": 10, "y0": 20, "x1": 50, "y1": 80,
     "score": 0.9, "handedness": "left", "track_id": 7, "video": "clip_a.mp4"},
    {"frame_index": 0, "kind": "object", "x0": 1.5, "y0": 2.5, "x1": 3.5, "y1": 4.5,
     "object_name": "mug", "video": "clip_a"},
    {"frame_index": 3, "kind": "object", "x0": 30, "y0": 30, "x1": 90, "y1": 70,
     "video": "clip_a.mp4"},
    {"frame_index": 3, "kind": "hand", "x0": 0, "y0": 0, "x1": 5, "y1": 5,
     "handedness": "right", "video": "clip_b.mp4"},
]


def _write(path: Path, rows: list[dict]) -> Path:
    if path.suffix == ".json":
        path.write_text(json.dumps(rows))
    elif path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    elif path.suffix == ".csv":
        columns = list(dict.fromkeys(key for row in rows for key in row))
        lines = [",".join(columns)]
        lines += [",".join(str(row.get(c, "")) for c in columns) for row in rows]
        path.write_text("\n".join(lines) + "\n")
    else:
        columns = dict.fromkeys(key for row in rows for key in row)
        pq.write_table(pa.table({c: [row.get(c) for row in rows] for c in columns}), path)
    return path


@pytest.mark.parametrize("suffix", [".json", ".jsonl", ".csv", ".parquet"])
def test_formats_give_the_same_detections(tmp_path: Path, suffix: str) -> None:
    boxes = BoxesFile.load(_write(tmp_path / f"boxes{suffix}", ROWS))
    detector = boxes.for_video(Path("/data/videos/clip_a.mp4"))
    assert detector.needs_frames is False

    frames = detector.detect(np.array([0, 1, 3]), np.zeros(3), None)

    assert [len(f) for f in frames] == [1, 0, 2]
    mug = frames[0][0]
    assert (mug.kind, mug.object_name, mug.score, mug.track_id) == ("object", "mug", 1.0, None)
    np.testing.assert_array_equal(mug.box, np.array([1.5, 2.5, 3.5, 4.5], np.float32))
    assert mug.box.dtype == np.float32
    hand, obj = frames[2]
    assert (hand.kind, hand.handedness, hand.track_id) == ("hand", "left", 7)
    assert hand.score == pytest.approx(0.9)
    assert (obj.kind, obj.handedness) == ("object", None)


def test_other_video_and_file_without_video_column(tmp_path: Path) -> None:
    boxes = BoxesFile.load(_write(tmp_path / "b.json", ROWS))
    only_b = boxes.for_video("clip_b.mp4").detect(np.array([3]), np.zeros(1), None)
    assert [d.handedness for d in only_b[0]] == ["right"]
    assert boxes.for_video("clip_c.mp4").detect(np.array([3]), np.zeros(1), None) == [[]]

    single = [{k: v for k, v in row.items() if k != "video"} for row in ROWS]
    everything = BoxesFile.load(_write(tmp_path / "single.json", single)).for_video(None)
    assert len(everything.detect(np.array([3]), np.zeros(1), None)[0]) == 3


def test_a_video_column_needs_a_video_name(tmp_path: Path) -> None:
    boxes = BoxesFile.load(_write(tmp_path / "b.json", ROWS))
    with pytest.raises(InputError, match="video must be named"):
        boxes.for_video(None)


def test_numeric_video_names_stay_strings_in_csv(tmp_path: Path) -> None:
    rows = [{"frame_index": 0, "kind": "hand", "x0": 0, "y0": 0, "x1": 1, "y1": 1,
             "video": "007"}]
    boxes = BoxesFile.load(_write(tmp_path / "b.csv", rows))
    assert len(boxes.for_video("007.mp4").detect(np.array([0]), np.zeros(1), None)[0]) == 1


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"kind": "face"}, r"row 2: unknown kind 'face'"),
        ({"x1": 0.5}, r"row 2: x1 \(0.5\) must be greater than x0 \(1.5\)"),
        ({"y1": 2.5}, r"row 2: y1 \(2.5\) must be greater than y0"),
        ({"x0": "abc"}, r"row 2: x0 'abc' is not a number"),
        ({"frame_index": -1}, r"row 2: frame_index -1 is not a non-negative integer"),
        ({"frame_index": 1.5}, r"row 2: frame_index 1.5 is not a non-negative integer"),
        ({"frame_index": None}, r"row 2: frame_index is missing"),
        ({"score": 3}, r"row 2: score 3 is outside \[0, 1\]"),
        ({"handedness": "up"}, r"row 2: handedness 'up' is not 'left' or 'right'"),
        ({"handedness": "left"}, r"row 2: handedness given on an object row"),
        ({"track_id": 7, "kind": "hand", "object_name": None, "video": "clip_a.mp4",
          "frame_index": 3}, r"row 2: track_id 7 already used on frame 3 \(row 1\)"),
    ],
)
def test_bad_rows_name_the_file_row_and_problem(
    tmp_path: Path, change: dict, message: str
) -> None:
    rows = [dict(row) for row in ROWS]
    rows[1].update(change)
    path = _write(tmp_path / "bad.json", rows)
    with pytest.raises(InputError, match=rf"^boxes file {re.escape(str(path))}: {message}"):
        BoxesFile.load(path)


def test_missing_column_unknown_format_and_missing_file(tmp_path: Path) -> None:
    rows = [{k: v for k, v in row.items() if k != "y1"} for row in ROWS]
    with pytest.raises(InputError, match=r"missing column\(s\) y1"):
        BoxesFile.load(_write(tmp_path / "b.csv", rows))
    with pytest.raises(InputError, match=r"unknown format '\.txt'"):
        BoxesFile.load(tmp_path / "b.txt")
    with pytest.raises(InputError, match="not found"):
        BoxesFile.load(tmp_path / "absent.json")
    (tmp_path / "broken.json").write_text("[{")
    with pytest.raises(InputError, match="not valid JSON"):
        BoxesFile.load(tmp_path / "broken.json")
    (tmp_path / "broken.parquet").write_bytes(b"not parquet")
    with pytest.raises(InputError, match="cannot be read"):
        BoxesFile.load(tmp_path / "broken.parquet")


def test_hundred_thousand_rows_load_fast(tmp_path: Path) -> None:
    n = 100_000
    rng = np.random.default_rng(0)
    x0 = rng.uniform(0, 500, n)
    table = pa.table({
        "frame_index": rng.integers(0, 5000, n),
        "kind": np.where(rng.random(n) < 0.5, "hand", "object"),
        "x0": x0, "y0": x0, "x1": x0 + 10, "y1": x0 + 20,
        "score": rng.random(n),
        "video": np.where(rng.random(n) < 0.5, "a", "b"),
    })
    path = tmp_path / "big.csv"
    pa_csv.write_csv(table, path)
    start = time.perf_counter()
    boxes = BoxesFile.load(path)
    seconds = time.perf_counter() - start
    assert seconds < 2.0
    per_frame = boxes.for_video("a.mp4").detect(np.arange(5000), np.zeros(5000), None)
    expected = (table.column("video").to_numpy(zero_copy_only=False) == "a").sum()
    assert sum(len(f) for f in per_frame) == expected


def test_make_detector_builds_a_boxes_detector(tmp_path: Path) -> None:
    path = _write(tmp_path / "b.json", ROWS)
    detector = make_detector("boxes", {"path": path}, video="clip_b.mp4")
    assert isinstance(detector, Detector) and detector.name == "boxes"
    shared = make_detector("boxes", {"file": BoxesFile.load(path)}, video="/v/clip_b.mp4")
    for d in (detector, shared):
        assert [x.handedness for x in d.detect(np.array([3]), np.zeros(1), None)[0]] == ["right"]
    with pytest.raises(ConfigError, match="exactly one of 'path' or 'file'"):
        make_detector("boxes", {"path": path, "score": 1}, video="clip_b")
    with pytest.raises(ConfigError, match="unknown detector 'yolo'"):
        make_detector("yolo")


def test_a_repeated_column_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "boxes.csv"
    path.write_text("frame_index,kind,x0,y0,x1,y1,x0\n0,hand,1,1,5,5,2\n")
    with pytest.raises(InputError, match="column 'x0' appears twice"):
        BoxesFile.load(path)


@pytest.mark.parametrize("suffix", [".csv", ".json"])
def test_a_frame_index_too_large_for_int64_is_refused(tmp_path: Path, suffix: str) -> None:
    rows = [ROWS[0] | {"frame_index": 99999999999999999999}]
    with pytest.raises(InputError, match="row 1: frame_index 1e\\+20 is too large"):
        BoxesFile.load(_write(tmp_path / f"boxes{suffix}", rows))


def test_exact_duplicate_rows_are_one_box(tmp_path: Path, caplog) -> None:
    rows = [ROWS[2], ROWS[0], ROWS[2], ROWS[2] | {"score": 0.8}]
    boxes = BoxesFile.load(_write(tmp_path / "boxes.csv", rows))
    assert len(boxes.frame_index) == 3
    assert "1 rows repeat an earlier row exactly" in caplog.text


def test_scores_below_a_threshold_are_left_out(tmp_path: Path) -> None:
    rows = [ROWS[0], ROWS[2] | {"score": 0.3}]
    boxes = BoxesFile.load(_write(tmp_path / "boxes.csv", rows))
    assert boxes.scored_at_least(0.5).score.tolist() == [pytest.approx(0.9)]
    assert boxes.scored_at_least(0.3) is boxes
