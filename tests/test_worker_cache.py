"""What a worker keeps between videos: one pixel detector per options, one hand layer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from hflpipe.pipeline.config.run_config import make_config
from hflpipe.pipeline.run import worker_cache
from hflpipe.pipeline.run.worker_cache import close_detectors, hand_layer, video_detector


class CountingDetector:
    name = "counting"
    needs_frames = True
    built = 0

    def __init__(self, **options: object) -> None:
        CountingDetector.built += 1
        self.options = options
        self.closed = False

    def detect(self, indices, timestamps_s, frames):
        return [[] for _ in indices]

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def counting(monkeypatch):
    CountingDetector.built = 0
    monkeypatch.setattr(worker_cache, "make_detector",
                        lambda kind, options: CountingDetector(kind=kind, **options))
    yield CountingDetector
    close_detectors()


def _config(tmp_path: Path, **options: object):
    return make_config(videos=["a.mp4"], out=tmp_path, detector="torchvision",
                       torchvision_model="fasterrcnn_resnet50_fpn",
                       torchvision_weights=tmp_path / "w.pth", **options)


def test_a_detector_is_built_once_per_worker_and_options(tmp_path, counting) -> None:
    config = _config(tmp_path)
    with video_detector(config, None, Path("a.mp4")) as first:
        pass
    with video_detector(config, None, Path("b.mp4")) as second:
        pass
    assert second is first and counting.built == 1 and not first.closed
    with video_detector(_config(tmp_path, score_threshold=0.2), None, Path("c.mp4")) as other:
        assert other is not first
    assert counting.built == 2


def test_a_detector_that_failed_is_closed_and_replaced(tmp_path, counting) -> None:
    config = _config(tmp_path)
    with pytest.raises(RuntimeError), video_detector(config, None, Path("a.mp4")) as broken:
        raise RuntimeError("the detector's process died")
    assert broken.closed
    with video_detector(config, None, Path("b.mp4")) as fresh:
        assert fresh is not broken and not fresh.closed
    assert counting.built == 2


def test_the_hand_layer_is_read_once_and_matches_the_checkpoints(synthetic_checkpoint) -> None:
    hand_layer.cache_clear()
    layer = hand_layer(synthetic_checkpoint)
    assert hand_layer(synthetic_checkpoint) is layer
    assert hand_layer.cache_info().misses == 1
    # Non-zero buffers: a layer read from the file, not an empty one.
    assert float(layer.th_v_template.abs().max()) > 0
    assert layer.th_v_template.dtype == torch.float64
    assert np.isfinite(layer.th_posedirs.numpy()).all()
