"""Warnings raised while a video is processed reach the user once, with the video's
name, and land in its ``videos`` row; Ray's notices about its own cluster do not."""

from __future__ import annotations

import csv
import logging

import pytest

from hflpipe.model.synthetic_checkpoint import synthetic_mano_path
from hflpipe.pipeline.config.run_config import RunConfig
from hflpipe.pipeline.demo.scene import make_demo_scene
from hflpipe.pipeline.output.reader import read_table
from hflpipe.pipeline.run.runner import LOCAL_RAY_NOTICES, _quiet_local_ray_notices, run


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    return make_demo_scene(tmp_path_factory.mktemp("scene"), num_frames=2, size=(320, 240))


def test_a_video_without_boxes_rows_is_said_once_and_noted(scene, tmp_path, caplog,
                                                           synthetic_checkpoint, local_ray):
    boxes = tmp_path / "boxes.csv"
    with open(scene.boxes_path, newline="") as source, open(boxes, "w", newline="") as target:
        rows = list(csv.DictReader(source))
        writer = csv.DictWriter(target, [*rows[0], "video"])
        writer.writeheader()
        writer.writerows(row | {"video": "another_clip"} for row in rows)
    config = RunConfig(videos=[str(scene.video_path)], out=tmp_path / "out", detector="boxes",
                       boxes=boxes, checkpoint=synthetic_checkpoint,
                       mano=synthetic_mano_path(), batch_size=4)
    with caplog.at_level(logging.WARNING, logger="hflpipe"):
        summary = run(config, progress=False)
    assert summary.statuses["ok"] == 1
    (row,) = read_table(config.out, "videos").to_pylist()
    assert row["notes"] == [f"boxes file {boxes}: no rows for video {scene.video_path.name}"]
    said = [r.getMessage() for r in caplog.records]
    assert said.count(f"{scene.video_path}: {row['notes'][0]}") == 1
    assert any("names 1 videos that are not inputs of this run" in text and "another_clip"
               in text for text in said)


def test_ray_token_notice_is_hidden_for_the_local_ray_only(caplog, monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    notices = logging.getLogger(LOCAL_RAY_NOTICES[0])
    with caplog.at_level(logging.WARNING):
        with _quiet_local_ray_notices(RunConfig(videos=["v.mp4"], out="o")):
            notices.warning("Token authentication is enabled for this Ray cluster.")
        assert not caplog.records
        with _quiet_local_ray_notices(RunConfig(videos=["v.mp4"], out="o", address="auto")):
            notices.warning("Token authentication is disabled for this Ray cluster.")
        assert len(caplog.records) == 1
