"""The default hand detector: MediaPipe's hand solution, as our own torch code.

The palm detector and hand-landmark network are the official MediaPipe 0.10.21
model files shipped with hflpipe, run by ``hflpipe.model.tflite_net``; the
solution around them (palms -> hand regions -> landmarks, tracking between
frames as MediaPipe's video mode does) is ``hflpipe.model.mediapipe_hands``.
Nothing is installed or downloaded beside hflpipe.

A hand's box is the extent of its 21 landmarks grown by ``box_margin``; its
score is the landmark network's hand presence probability.

Handedness: MediaPipe labels hands as if the image were mirrored (a selfie
camera). For ordinary footage (``mirrored_input=False``, the default) the label
is swapped, MediaPipe's documented remedy, so ``"left"`` is the person's own
left hand; for selfie footage it is kept.

Tracking state belongs to one video: build one detector per video (the
networks are loaded once per process and shared). The networks run in this process,
or wherever ``networks`` says: in a run, on the inference actors, batched with the
other videos' frames (see :mod:`hflpipe.pipeline.infer.hand_networks`).
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from hflpipe.model import mediapipe_files
from hflpipe.model.errors import ModelFileError
from hflpipe.model.mediapipe_files import load_hand_landmarker, load_palm_detector
from hflpipe.model.mediapipe_hands import Hand, HandNetworks, HandTracker, TorchHandNetworks
from hflpipe.pipeline.common.errors import ConfigError
from hflpipe.pipeline.detect.base import Detection


def local_networks(palm_model: Path | None = None, landmark_model: Path | None = None,
                   device: str = "cpu") -> TorchHandNetworks:
    """The two networks loaded in this process, once per files and device.

    The shipped files named by path and left out are the same files: one load serves
    both, however the arguments are spelt.

    Raises:
        ConfigError: a model file that is missing or not the network.
    """
    return _networks_for(Path(palm_model or mediapipe_files.PALM_DETECTION_FILE).resolve(),
                         Path(landmark_model or mediapipe_files.HAND_LANDMARK_FILE).resolve(),
                         device)


@functools.lru_cache(maxsize=4)
def _networks_for(palm_model: Path, landmark_model: Path, device: str) -> TorchHandNetworks:
    try:
        palm = load_palm_detector(palm_model)
        landmarker = load_hand_landmarker(landmark_model)
    except ModelFileError as exc:
        raise ConfigError(f"mediapipe detector: {exc}") from None
    return TorchHandNetworks(palm, landmarker, device)


class MediaPipeHandDetector:
    """Hands (with handedness) from MediaPipe's palm and landmark networks, in torch.

    Args:
        max_hands: most hands tracked per frame.
        min_confidence: palm detection score threshold (MediaPipe's
            ``min_detection_confidence``).
        min_tracking_confidence: hand presence threshold below which a hand is lost.
        mirrored_input: True when frames are already mirrored (selfie footage).
        box_margin: the landmarks' extent grows by this fraction of its size on every
            side (landmarks sit on joints, the hand's skin reaches past them).
        palm_model, landmark_model: other copies of the two ``.tflite`` files
            (default: the ones shipped with hflpipe).
        device: ``cpu`` or ``cuda``.
        networks: the networks running elsewhere (an inference actor's); then the model
            files and device are not used here.

    Raises:
        ConfigError: a bad option, or a model file that is missing or not the network.
    """

    name = "mediapipe"
    needs_frames = True

    def __init__(
        self,
        *,
        max_hands: int = 2,
        min_confidence: float = 0.5,
        min_tracking_confidence: float = 0.5,
        mirrored_input: bool = False,
        box_margin: float = 0.1,
        palm_model: str | Path | None = None,
        landmark_model: str | Path | None = None,
        device: str = "cpu",
        networks: HandNetworks | None = None,
    ) -> None:
        if max_hands < 1:
            raise ConfigError(f"mediapipe detector: max_hands must be >= 1, got {max_hands}")
        if box_margin < 0:
            raise ConfigError(f"mediapipe detector: box_margin must be >= 0, got {box_margin}")
        if device not in ("cpu", "cuda"):
            raise ConfigError(f"mediapipe detector: device must be cpu or cuda, got {device!r}")
        if networks is None:
            networks = local_networks(
                Path(palm_model) if palm_model else None,
                Path(landmark_model) if landmark_model else None,
                device,
            )
        self._tracker = HandTracker(
            networks, max_hands=max_hands, min_detection_confidence=min_confidence,
            min_tracking_confidence=min_tracking_confidence,
        )
        self._mirrored_input = mirrored_input
        self._box_margin = box_margin

    def detect(
        self, indices: np.ndarray, timestamps_s: np.ndarray, frames: np.ndarray | None
    ) -> list[list[Detection]]:
        """Hands on ``frames`` (N, H, W, 3) uint8 RGB, consecutive frames of one video."""
        if frames is None:
            raise ValueError("the mediapipe detector needs frames")
        height, width = frames.shape[1:3]
        found = self._tracker.process(frames)
        return [[self._to_detection(hand, width, height) for hand in hands] for hands in found]

    def _to_detection(self, hand: Hand, width: int, height: int) -> Detection:
        points = hand.landmarks[:, :2] * (width, height)
        low, high = points.min(axis=0), points.max(axis=0)
        grow = (high - low) * self._box_margin
        low = np.maximum(low - grow, 0.0)
        high = np.minimum(high + grow, (width, height))
        # MediaPipe's "Left" is the person's left hand in a mirrored image.
        own_left = (hand.label == "Left") == self._mirrored_input
        return Detection(
            kind="hand",
            box=np.concatenate([low, high]).astype(np.float32),
            score=hand.presence,
            handedness="left" if own_left else "right",
        )

    def close(self) -> None:
        """Forget tracked hands; the shared networks stay loaded for the next video."""
        self._tracker.reset()
