"""An archive on S3 end to end: every input by s3:// URL, results written to a bucket by
the workers, read back from the bucket; a re-run does nothing new; store errors are one line.
"""

from __future__ import annotations

import json
import shutil

import pytest
from s3_server import S3Server

from hflpipe.model.synthetic_checkpoint import synthetic_mano_path
from hflpipe.pipeline.common.errors import OutputError
from hflpipe.pipeline.demo.scene import make_demo_scene
from hflpipe.pipeline.output.object_lock import s3_lease
from hflpipe.pipeline.output.reader import read_table

FRAMES = 2
VIDEOS = 2


@pytest.fixture(scope="module")
def s3_archive(s3: S3Server, tmp_path_factory, synthetic_checkpoint) -> dict[str, str]:
    """A bucket holding two short videos in nested folders, their boxes, intrinsics and
    the model files; returns the flags that name them all by URL."""
    root = tmp_path_factory.mktemp("s3archive")
    scene = make_demo_scene(root / "scene", num_frames=FRAMES)
    bucket = s3.new_bucket()
    for index in range(VIDEOS):
        s3.put_file(bucket, f"archive/day{index}/cam/clip{index}.mp4", scene.video_path)
    shutil.copy(scene.boxes_path, root / "boxes.csv")
    return {
        "bucket": bucket,
        "--videos": f"s3://{bucket}/archive/**/*.mp4",
        "--boxes": s3.put_file(bucket, "meta/boxes.csv", scene.boxes_path),
        "--intrinsics": s3.put_file(bucket, "meta/intrinsics.json", scene.intrinsics_path),
        "--checkpoint": s3.put_file(bucket, "model/hflnet.pth.tar", synthetic_checkpoint),
        "--mano": s3.put_file(bucket, "model/mano.npz", synthetic_mano_path()),
        "--object": scene.object_name,
    }


def _flags(archive: dict[str, str], out: str) -> list[str]:
    flags = [item for key, value in archive.items() if key.startswith("--")
             for item in (key, value)]
    return [*flags, "--out", out, "--max-concurrent-videos", "2", "--batch-size", "4",
            "-q", "--format", "json"]


@pytest.mark.slow
def test_an_archive_on_s3_runs_end_to_end_and_a_rerun_adds_nothing(
    s3: S3Server, s3_archive, local_ray, hflpipe_cli
):
    bucket = s3_archive["bucket"]
    out = f"s3://{bucket}/results"
    first = hflpipe_cli("run", *_flags(s3_archive, out))
    assert first.returncode == 0, first.stderr
    summary = json.loads(first.stdout)
    assert (summary["ok"], summary["failed"]) == (VIDEOS, 0), summary
    assert summary["hand_rows"] == VIDEOS * FRAMES, summary
    videos = read_table(out, "videos").to_pylist()
    assert sorted(v["path"] for v in videos) == [
        f"s3://{bucket}/archive/day{i}/cam/clip{i}.mp4" for i in range(VIDEOS)]
    assert read_table(out, "hands").num_rows == VIDEOS * FRAMES
    assert read_table(out, "objects").num_rows == VIDEOS * FRAMES
    keys = s3.keys(bucket, "results/")
    assert "results/_hflpipe.lock" not in keys and "results/_job.json" in keys
    assert sum(k.startswith("results/hands/") for k in keys) == VIDEOS

    again = hflpipe_cli("run", *_flags(s3_archive, out))
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["already_done"] == VIDEOS
    assert s3.keys(bucket, "results/") == keys


def test_a_missing_bucket_is_one_line(s3_archive, hflpipe_cli):
    result = hflpipe_cli("run", *_flags(s3_archive, "s3://no-such-bucket-hflpipe/out"))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "no-such-bucket-hflpipe" in lines[0], result.stderr


def test_wrong_credentials_are_one_line(s3_archive, hflpipe_cli, monkeypatch):
    from hflpipe.pipeline.common import storage

    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret")
    monkeypatch.setattr(storage, "_filesystem", storage._filesystem.__wrapped__)
    result = hflpipe_cli("run", *_flags(s3_archive, f"s3://{s3_archive['bucket']}/o2"))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "wrong-secret" not in lines[0], result.stderr


def test_the_s3_lock_admits_one_run_and_is_released(s3: S3Server, s3_archive):
    url = f"s3://{s3_archive['bucket']}/locked/_hflpipe.lock"
    with s3_lease(url), pytest.raises(OutputError, match="another hflpipe run"), \
            s3_lease(url):
        pass
    with s3_lease(url):  # released when the first holder ends
        pass
    assert "locked/_hflpipe.lock" not in s3.keys(s3_archive["bucket"], "locked/")
