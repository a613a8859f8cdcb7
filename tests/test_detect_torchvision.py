"""The torchvision detector with a small randomly initialised model and saved weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

from hflpipe.pipeline.common.errors import ConfigError, InputError
from hflpipe.pipeline.detect.base import Detector, make_detector
from hflpipe.pipeline.detect.torchvision_model import TorchvisionDetector

MODEL = "fasterrcnn_mobilenet_v3_large_320_fpn"
NUM_CLASSES = 4


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Random weights whose classifier always prefers label 2 (so labels are known)."""
    torch.manual_seed(0)
    torch.set_num_threads(1)
    model = torchvision.models.get_model(
        MODEL, weights=None, weights_backbone=None, num_classes=NUM_CLASSES
    )
    with torch.no_grad():
        predictor = model.roi_heads.box_predictor
        predictor.cls_score.weight.zero_()
        predictor.cls_score.bias.copy_(torch.tensor([0.0, 0.0, 6.0, 0.0]))
    path = tmp_path_factory.mktemp("tv") / "detector.pt"
    torch.save(model.state_dict(), path)
    return path


def _frames() -> np.ndarray:
    # Wider than tall, so boxes in the wrong axis order would leave the frame.
    return np.random.default_rng(0).integers(0, 255, (2, 96, 160, 3), dtype=np.uint8)


def test_boxes_in_frame_pixels_with_class_map_applied(weights: Path) -> None:
    detector = TorchvisionDetector(
        MODEL, weights, {1: "cup", "2": "hand_left", 3: "hand"}, score_threshold=0.5
    )
    frames = _frames()
    out = detector.detect(np.arange(2), np.zeros(2), frames)

    assert len(out) == 2 and all(out)
    for frame in out:
        for d in frame:
            assert (d.kind, d.handedness, d.object_name) == ("hand", "left", None)
            assert d.box.dtype == np.float32 and d.box.shape == (4,)
            assert 0 <= d.box[0] < d.box[2] <= 160 and 0 <= d.box[1] < d.box[3] <= 96
            assert d.score >= 0.5

    # The same boxes as the torchvision model itself gives for the frame.
    model = torchvision.models.get_model(MODEL, weights=None, weights_backbone=None,
                                         num_classes=NUM_CLASSES)
    model.load_state_dict(torch.load(weights, weights_only=True))
    with torch.inference_mode():
        reference = model.eval()([torch.from_numpy(frames[0]).permute(2, 0, 1) / 255.0])[0]
    keep = reference["scores"] >= 0.5
    np.testing.assert_allclose(
        np.stack([d.box for d in out[0]]), reference["boxes"][keep].numpy(), atol=1e-3
    )


def test_labels_outside_the_map_and_low_scores_are_dropped(weights: Path) -> None:
    unmapped = TorchvisionDetector(MODEL, weights, {1: "cup", 3: "hand"})
    assert unmapped.detect(np.arange(2), np.zeros(2), _frames()) == [[], []]
    strict = TorchvisionDetector(MODEL, weights, {2: "object"}, score_threshold=1.0,
                                 num_classes=NUM_CLASSES)
    assert strict.detect(np.arange(2), np.zeros(2), _frames()) == [[], []]
    named = TorchvisionDetector(MODEL, weights, {2: "object"}, num_classes=NUM_CLASSES)
    first = named.detect(np.arange(1), np.zeros(1), _frames()[:1])[0][0]
    assert (first.kind, first.object_name, first.handedness) == ("object", None, None)


def test_bad_weights_and_settings(weights: Path, tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"do not fit .* with 6 classes: size mismatch for"):
        TorchvisionDetector(MODEL, weights, {5: "hand"})
    with pytest.raises(InputError, match="not found"):
        TorchvisionDetector(MODEL, tmp_path / "absent.pt", {2: "hand"})
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match=rf"detector weights {junk}: not a loadable state_dict"):
        TorchvisionDetector(MODEL, junk, {2: "hand"})
    pickled = tmp_path / "pickled.pt"
    torch.save({"optimizer": object}, pickled)
    with pytest.raises(InputError, match="not a loadable state_dict"):
        TorchvisionDetector(MODEL, pickled, {2: "hand"})
    with pytest.raises(ConfigError, match="unknown model 'resnet50'"):
        TorchvisionDetector("resnet50", weights, {2: "hand"})
    with pytest.raises(ConfigError, match="class_map is empty"):
        TorchvisionDetector(MODEL, weights, {})


def test_make_detector_checks_options(weights: Path) -> None:
    detector = make_detector(
        "torchvision",
        {"model_name": MODEL, "weights_path": weights, "class_map": {2: "hand"}, "num_classes": 4},
    )
    assert isinstance(detector, Detector) and detector.needs_frames
    with pytest.raises(ConfigError, match=r"missing option\(s\) class_map"):
        make_detector("torchvision", {"model_name": MODEL, "weights_path": weights})
    with pytest.raises(ConfigError, match=r"unknown option\(s\) score"):
        make_detector("torchvision", {"model_name": MODEL, "weights_path": weights,
                                      "class_map": {2: "hand"}, "score": 0.3})
