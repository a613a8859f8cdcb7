"""A detector that cannot start stops the run before any video; exit status 2 while failed
videos remain in the output, also on a re-run that skips them.

Each case fails without its guard: without ``check_detector`` a missing or wrong weights
file would surface in every video as a failed row (exit 2, an output folder written).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import test_faults_common as common

from hflpipe.model import mediapipe_files

pytestmark = pytest.mark.slow


def _mediapipe_missing(tmp_path: Path, monkeypatch) -> tuple[list[str], str]:
    monkeypatch.setattr(mediapipe_files, "PALM_DETECTION_FILE", tmp_path / "gone.tflite")
    return ["--hand-detector", "mediapipe"], "gone.tflite: palm detection model file not found"


def _mediapipe_wrong(tmp_path: Path, monkeypatch) -> tuple[list[str], str]:
    monkeypatch.setattr(mediapipe_files, "HAND_LANDMARK_FILE",
                        mediapipe_files.PALM_DETECTION_FILE)
    return ["--hand-detector", "mediapipe"], "not a hand landmark model"


def _torchvision_wrong(tmp_path: Path, monkeypatch) -> tuple[list[str], str]:
    weights = tmp_path / "weights.pth"
    weights.write_bytes(b"not a state dict" * 10)
    return (["--hand-detector", "torchvision", "--torchvision-model", "fasterrcnn_resnet50_fpn",
             "--torchvision-weights", str(weights)], "weights.pth")


def _boxes_unparsable(tmp_path: Path, monkeypatch) -> tuple[list[str], str]:
    boxes = tmp_path / "boxes.csv"
    boxes.write_text("frame_index,kind,x0,y0,x1,y1\nzero,hand,1,2,3,4\n")
    return ["--boxes", str(boxes)], "boxes.csv"


@pytest.mark.parametrize(
    "case", [_mediapipe_missing, _mediapipe_wrong, _torchvision_wrong, _boxes_unparsable]
)
def test_a_detector_that_cannot_start_stops_the_run(tmp_path, monkeypatch, synthetic_checkpoint,
                                                    hflpipe_cli, case) -> None:
    options, cause = case(tmp_path, monkeypatch)
    clip = common.write_clip(tmp_path / "clip.mp4", 2)
    out = tmp_path / "out"
    result = hflpipe_cli("run", "--videos", clip, "--out", out,
                         "--checkpoint", synthetic_checkpoint,
                         "--mano", common.synthetic_mano_path(), "--device", "cpu", "-q",
                         *options)
    assert result.returncode == 1, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and cause in lines[0], result.stderr[-2000:]
    assert not out.exists()


def test_a_rerun_that_skips_failed_videos_still_exits_2(tmp_path, synthetic_checkpoint,
                                                        local_ray, hflpipe_cli) -> None:
    broken = tmp_path / "broken.mp4"
    broken.write_text("this is not a video")
    boxes = common.write_boxes(tmp_path / "boxes.csv", 2)
    args = ["run", "--videos", broken, "--out", tmp_path / "out", "--checkpoint",
            synthetic_checkpoint, "--mano", common.synthetic_mano_path(), "--boxes", boxes,
            "--device", "cpu", "-q", "--format", "json"]
    first = hflpipe_cli(*args)
    assert first.returncode == 2, first.stderr[-2000:]
    again = hflpipe_cli(*args)
    assert again.returncode == 2, again.stderr[-2000:]
    summary = json.loads(again.stdout)
    assert summary["already_done"] == 1 and summary["failed"] == 0
    assert [f["video"].split("-")[0] for f in summary["earlier_failures"]] == ["broken"]
