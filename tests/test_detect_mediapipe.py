"""The default hand detector (MediaPipe's networks in torch) as the pipeline sees it.

Parity of the networks and of the solution with MediaPipe itself is in
test_mediapipe_networks.py and test_mediapipe_parity.py; here: boxes, scores and
the person's own handedness for ordinary and selfie footage, and bad options.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

from hflpipe.model.mediapipe_files import HAND_LANDMARK_FILE, PALM_DETECTION_FILE
from hflpipe.pipeline.common.errors import ConfigError
from hflpipe.pipeline.detect.base import Detector, make_detector
from hflpipe.pipeline.detect.mediapipe import MediaPipeHandDetector, local_networks

sys.path.insert(0, str(Path(__file__).parent / "data" / "mediapipe_reference"))
from make_reference import load_sequence


@pytest.fixture(scope="module")
def frame() -> np.ndarray:
    """One ordinary-camera frame with one hand: (1, 480, 640, 3)."""
    return load_sequence("ordinary")[:1]


def _detect(frames: np.ndarray, **options) -> list:
    detector = MediaPipeHandDetector(**options)
    try:
        return detector.detect(np.arange(len(frames)), np.zeros(len(frames)), frames)
    finally:
        detector.close()


def test_own_handedness_is_the_same_from_an_ordinary_and_a_selfie_camera(frame) -> None:
    (ordinary,) = _detect(frame)[0]
    selfie_frame = np.ascontiguousarray(frame[:, :, ::-1])  # what a selfie camera records
    (selfie,) = _detect(selfie_frame, mirrored_input=True)[0]
    # The same person's hand: same own side, box mirrored.
    assert ordinary.handedness == selfie.handedness
    width = frame.shape[2]
    np.testing.assert_allclose(selfie.box[[2, 0]], width - ordinary.box[[0, 2]], atol=2.0)
    # Read as ordinary footage, the mirrored frame shows the other hand.
    (other,) = _detect(selfie_frame)[0]
    assert other.handedness != ordinary.handedness


def test_boxes_enclose_the_landmarks_with_the_margin(frame) -> None:
    (tight,) = _detect(frame, box_margin=0.0)[0]
    (loose,) = _detect(frame, box_margin=0.1)[0]
    size = tight.box[2:] - tight.box[:2]
    assert tight.kind == "hand" and tight.box.dtype == np.float32
    assert 0.5 < tight.score <= 1.0  # the landmark network's presence probability
    np.testing.assert_allclose(loose.box[:2], np.maximum(tight.box[:2] - 0.1 * size, 0), atol=1e-3)
    assert size.min() > 100 and size.max() < 400  # the drawn hand is ~300 px


def test_no_hands_on_an_empty_frame() -> None:
    empty = np.full((2, 120, 160, 3), 128, np.uint8)
    assert _detect(empty) == [[], []]


def test_bad_options_and_model_files_are_config_errors(tmp_path) -> None:
    with pytest.raises(ConfigError, match="max_hands must be >= 1"):
        MediaPipeHandDetector(max_hands=0)
    with pytest.raises(ConfigError, match="palm detection model file not found"):
        MediaPipeHandDetector(palm_model=tmp_path / "missing.tflite")
    detector = make_detector("mediapipe", {"max_hands": 1})
    assert isinstance(detector, Detector) and detector.name == "mediapipe"
    detector.close()


def test_the_shipped_networks_load_once_however_they_are_named() -> None:
    shipped = local_networks()
    assert local_networks(None, None, "cpu") is shipped
    assert local_networks(device="cpu") is shipped
    assert local_networks(PALM_DETECTION_FILE, HAND_LANDMARK_FILE) is shipped
    assert local_networks(os.path.relpath(PALM_DETECTION_FILE)) is shipped
