"""What a detector returns and the interface every detector implements.

A detector looks at a batch of frames of one video and returns, per frame, the
hand and object boxes it found. Boxes are ``xyxy`` in full-frame pixels
(x right, y down), float32.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np

from hflpipe.pipeline.common.errors import ConfigError

Kind = Literal["hand", "object"]
Handedness = Literal["left", "right"]


@dataclass(frozen=True)
class Detection:
    """One box on one frame.

    Attributes:
        kind: ``"hand"`` or ``"object"``.
        box: (4,) float32 ``x0, y0, x1, y1`` in frame pixels, ``x1 >= x0``, ``y1 >= y0``.
        score: detector confidence in [0, 1] (1.0 for boxes given in a file).
        handedness: ``"left"``/``"right"`` for hands when known (the person's own
            hand, not the side of the image), ``None`` otherwise and for objects.
        object_name: the object's name when the detector or boxes file gives one.
        track_id: a track id given by the source (boxes file); the tracker keeps it.
        contact_state: for hands from the hand-object detector, its contact state
            (``none``, ``self``, ``other``, ``portable``, ``stationary``).
        linked_object: for those hands, the position in the same frame's detection list of
            the object the detector links the hand to (None: no link).
    """

    kind: Kind
    box: np.ndarray
    score: float
    handedness: Handedness | None = None
    object_name: str | None = None
    track_id: int | None = None
    contact_state: str | None = None
    linked_object: int | None = None


@runtime_checkable
class Detector(Protocol):
    """Finds hands and objects on frames of one video.

    ``needs_frames`` is False for detectors that do not look at pixels (a boxes
    file): the pipeline then calls ``detect`` with ``frames=None`` and skips
    decoding for detection. ``close`` releases held resources (a worker
    process); calling it twice is harmless.
    """

    name: str
    needs_frames: bool

    def detect(
        self, indices: np.ndarray, timestamps_s: np.ndarray, frames: np.ndarray | None
    ) -> list[list[Detection]]:
        """Detect on a batch of frames.

        Args:
            indices: (N,) int64 frame indices in the video.
            timestamps_s: (N,) float64 presentation times in seconds.
            frames: (N, H, W, 3) uint8 RGB, or None when ``needs_frames`` is False.

        Returns:
            N lists, one per frame in input order, each with that frame's detections.
        """
        ...

    def close(self) -> None:
        """Release resources; the detector cannot be used afterwards."""
        ...


DETECTOR_KINDS = ("boxes", "torchvision", "mediapipe")


def make_detector(
    kind: str, options: Mapping[str, Any] | None = None, *, video: str | Path | None = None
) -> Detector:
    """Build a detector by kind.

    Args:
        kind: ``"boxes"``, ``"torchvision"`` or ``"mediapipe"``.
        options: for ``"boxes"``, ``{"path": file}`` or ``{"file": BoxesFile}`` (a file
            loaded once and shared across videos); otherwise the keyword arguments of
            ``TorchvisionDetector`` or ``MediaPipeHandDetector``.
        video: the video the detector is for (selects a boxes file's rows).

    Raises:
        ConfigError: unknown kind or option, or a missing required option.
    """
    options = dict(options or {})
    if kind == "boxes":
        from hflpipe.pipeline.detect.boxes import BoxesFile

        unknown = set(options) - {"path", "file"}
        if unknown or len(options) != 1:
            raise ConfigError(
                f"boxes detector: give exactly one of 'path' or 'file', got {sorted(options)}"
            )
        boxes = options.get("file") or BoxesFile.load(options["path"])
        return boxes.for_video(video)
    if kind == "torchvision":
        from hflpipe.pipeline.detect.torchvision_model import TorchvisionDetector as factory
    elif kind == "mediapipe":
        from hflpipe.pipeline.detect.mediapipe import MediaPipeHandDetector as factory
    else:
        raise ConfigError(f"unknown detector {kind!r} (one of: {', '.join(DETECTOR_KINDS)})")
    parameters = inspect.signature(factory).parameters
    unknown = sorted(set(options) - set(parameters))
    if unknown:
        raise ConfigError(f"{kind} detector: unknown option(s) {', '.join(unknown)}")
    missing = [
        name for name, p in parameters.items()
        if p.default is inspect.Parameter.empty and name not in options
    ]
    if missing:
        raise ConfigError(f"{kind} detector: missing option(s) {', '.join(missing)}")
    return factory(**options)
