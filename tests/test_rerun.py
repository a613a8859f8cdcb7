"""Re-runs compare contents: a video is redone when its file, its boxes rows, its
intrinsics or its object changed since it was committed, and only then."""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pytest

from hflpipe.hashing import file_stamp, sha256_file
from hflpipe.model.synthetic_checkpoint import synthetic_mano_path
from hflpipe.pipeline.config.run_config import RunConfig
from hflpipe.pipeline.demo.scene import make_demo_scene
from hflpipe.pipeline.detect.boxes import BoxesFile
from hflpipe.pipeline.output.reader import read_table
from hflpipe.pipeline.run.freshness import INPUTS_CHANGED, VIDEO_CHANGED, video_changed
from hflpipe.pipeline.run.runner import run

FRAMES = 2
SIZE = (320, 240)


@pytest.fixture(scope="module")
def footage(tmp_path_factory):
    """Two different short scenes: the footage of the job, and other footage."""
    root = tmp_path_factory.mktemp("footage")
    return (make_demo_scene(root / "a", num_frames=FRAMES, size=SIZE),
            make_demo_scene(root / "b", num_frames=FRAMES, size=SIZE, seed=3))


def _write_boxes(path: Path, source: Path, videos: dict[str, float]) -> None:
    """``source``'s rows once per video name, boxes shifted right by that video's pixels."""
    with open(source, newline="") as handle:
        rows = list(csv.DictReader(handle))
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, [*rows[0], "video"])
        writer.writeheader()
        for video, shift in videos.items():
            for row in rows:
                moved = {k: float(row[k]) + shift for k in ("x0", "x1")}
                writer.writerow(row | moved | {"video": video})


def test_a_rerun_redoes_exactly_the_videos_whose_inputs_changed(
    footage, tmp_path, synthetic_checkpoint, local_ray
):
    scene, other = footage
    for name in ("clip0.mp4", "clip1.mp4"):
        shutil.copy(scene.video_path, tmp_path / name)
    boxes, intrinsics = tmp_path / "boxes.csv", tmp_path / "camera.json"
    _write_boxes(boxes, scene.boxes_path, {"clip0": 0.0, "clip1": 0.0})
    shutil.copy(scene.intrinsics_path, intrinsics)
    config = RunConfig(
        videos=[str(tmp_path / "clip*.mp4")], out=tmp_path / "out",
        checkpoint=synthetic_checkpoint, mano=synthetic_mano_path(), detector="boxes",
        boxes=boxes, intrinsics=str(intrinsics), object=scene.object_name,
        max_concurrent_videos=2, batch_size=4,
    )

    def rerun() -> list[tuple[str, str]]:
        summary = run(config, progress=False)
        assert summary.statuses["ok"] + summary.already_done == 2 and not summary.failures
        return sorted((Path(path).name, why) for path, why in summary.redone)

    def hand_boxes(video: str) -> np.ndarray:
        hands = read_table(config.out, "hands")
        mine = hands.filter(pc.starts_with(hands["video_id"], video + "-"))
        assert mine.num_rows == FRAMES  # replaced, never added to
        return np.stack(mine["box"].to_numpy(zero_copy_only=False))

    assert rerun() == []
    before = hand_boxes("clip0")
    # One video's rows of the shared boxes file change, the other video is new footage
    # under the same name: each is redone for its own reason.
    _write_boxes(boxes, scene.boxes_path, {"clip0": 4.0, "clip1": 0.0})
    shutil.copy(other.video_path, tmp_path / "clip1.mp4")
    assert rerun() == [("clip0.mp4", INPUTS_CHANGED), ("clip1.mp4", VIDEO_CHANGED)]
    assert np.allclose(hand_boxes("clip0")[:, 0], before[:, 0] + 4.0, atol=0.5)
    rows = {row["path"]: row for row in read_table(config.out, "videos").to_pylist()}
    assert rows[str(tmp_path / "clip1.mp4")]["content_sha256"] == sha256_file(other.video_path)

    camera = json.loads(intrinsics.read_text())
    intrinsics.write_text(json.dumps(camera | {"fx": camera["fx"] * 1.1}))
    assert rerun() == [("clip0.mp4", INPUTS_CHANGED), ("clip1.mp4", INPUTS_CHANGED)]


def test_a_file_of_the_same_size_and_time_is_still_compared_by_its_bytes(tmp_path):
    path = tmp_path / "clip.mp4"
    path.write_bytes(b"a" * 300_000)
    stamp = file_stamp(path)
    row = {"size_bytes": stamp.size_bytes, "mtime_ns": stamp.mtime_ns,
           "sample_sha256": stamp.sample_sha256, "content_sha256": sha256_file(path)}
    assert not video_changed(path, row)
    # The same bytes with a new modification time (a copy, a touch) are not a change.
    os.utime(path, ns=(1, 1))
    assert not video_changed(path, row)
    path.write_bytes(b"a" * 299_999 + b"b")
    os.utime(path, ns=(stamp.mtime_ns, stamp.mtime_ns))
    assert video_changed(path, row)


def test_each_video_gets_only_its_rows_of_a_boxes_file(footage, tmp_path):
    scene, _ = footage
    path = tmp_path / "boxes.csv"
    _write_boxes(path, scene.boxes_path, {"clip0": 0.0, "clip1": 1.0, "elsewhere": 2.0})
    boxes = BoxesFile.load(path)
    mine = boxes.rows_for(Path("/data/clip1.mp4"))
    assert len(mine.frame_index) == 2 * FRAMES and set(mine.video) == {"clip1"}
    assert mine.digest() != boxes.rows_for(Path("clip0.mp4")).digest()
    assert boxes.unmatched_names([Path("clip0.mp4"), Path("x/clip1.mp4")]) == ["elsewhere"]
