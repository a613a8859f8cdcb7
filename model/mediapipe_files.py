"""Loading MediaPipe's palm detector and hand-landmark model from their ``.tflite`` files.

The two files ship with hflpipe (``model/data/mediapipe/``, Apache-2.0, see the
NOTICE there), taken unchanged from the official ``mediapipe`` 0.10.21 wheel. A
user may point at other copies; a file is accepted only when it is a float TFLite
model with the input and output shapes of the network it stands for.
"""

from __future__ import annotations

import os
from pathlib import Path

from hflpipe.model.errors import ModelFileError
from hflpipe.model.tflite_file import TfliteGraph, read_tflite
from hflpipe.model.tflite_net import TfliteNet

MODEL_DIR = Path(__file__).with_name("data") / "mediapipe"
PALM_DETECTION_FILE = MODEL_DIR / "palm_detection_full.tflite"
HAND_LANDMARK_FILE = MODEL_DIR / "hand_landmark_full.tflite"

# (input shape, output shapes) of each network, NHWC as in the file.
_PALM_SIGNATURE = ((1, 192, 192, 3), ((1, 2016, 18), (1, 2016, 1)))
_LANDMARK_SIGNATURE = ((1, 224, 224, 3), ((1, 63), (1, 1), (1, 1), (1, 63)))


def _load(path: str | os.PathLike[str], what: str, signature: tuple) -> TfliteNet:
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: {what} model file not found")
    graph: TfliteGraph = read_tflite(path)
    found = (graph.tensors[graph.inputs[0]].shape if graph.inputs else (),
             tuple(graph.tensors[i].shape for i in graph.outputs))
    if found != signature:
        raise ModelFileError(
            f"{path}: not a {what} model (input and outputs {found}, expected {signature})"
        )
    try:
        return TfliteNet(graph).eval()
    except ValueError as exc:
        raise ModelFileError(f"{path}: {exc}") from None


def load_palm_detector(path: str | os.PathLike[str] | None = None) -> TfliteNet:
    """The palm detector (the shipped file unless ``path`` is given).

    (B, 3, 192, 192) in [0, 1] -> boxes (B, 2016, 18), score logits (B, 2016, 1).

    Raises:
        ModelFileError: missing, unreadable, or not the palm detection network.
    """
    return _load(path or PALM_DETECTION_FILE, "palm detection", _PALM_SIGNATURE)


def load_hand_landmarker(path: str | os.PathLike[str] | None = None) -> TfliteNet:
    """The hand-landmark network (the shipped file unless ``path`` is given).

    (B, 3, 224, 224) in [0, 1] -> landmarks (B, 63) in input pixels, presence (B, 1),
    handedness (B, 1) (probability of MediaPipe's "Left"), world landmarks (B, 63), metres.

    Raises:
        ModelFileError: missing, unreadable, or not the hand-landmark network.
    """
    return _load(path or HAND_LANDMARK_FILE, "hand landmark", _LANDMARK_SIGNATURE)
