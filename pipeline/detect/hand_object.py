"""The 100DOH hand-object detector as a pipeline detector.

Frames are resized to the detector's input on the CPU side, here, and travel in float16
to wherever the network runs (the inference actors' device): a 1080p frame crosses the
object store as 563x1000x3 half floats, 3.4 MB instead of 6.2 MB of full-size pixels, and
the device does no resizing. Hands keep the detector's side and contact state, and the
index of the object the detector links them to.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from hflpipe.model.hand_object import CONTACT_STATES
from hflpipe.model.hand_object.transforms import prepare_image
from hflpipe.pipeline.common.errors import InputError
from hflpipe.pipeline.detect.base import Detection

#: Prepared images (B, H, W, 3) float16 and their scales (B,) -> per image the rows of
#: hands (M, 10), objects (K, 10) and the hands' links (M,) (see
#: :class:`hflpipe.model.hand_object.FrameDetections`).
DeviceDetect = Callable[[np.ndarray, np.ndarray],
                        list[tuple[np.ndarray, np.ndarray, np.ndarray]]]


def frame_detections(hands: np.ndarray, objects: np.ndarray,
                     links: np.ndarray) -> list[Detection]:
    """One frame's detector rows as detections: hands first, then objects."""
    found = [
        Detection(
            "hand", row[:4].astype(np.float32), float(row[4]),
            handedness="right" if row[9] >= 0.5 else "left",
            contact_state=CONTACT_STATES[int(row[5])],
            linked_object=len(hands) + int(link) if link >= 0 else None,
        )
        for row, link in zip(hands, links, strict=True)
    ]
    found += [Detection("object", row[:4].astype(np.float32), float(row[4])) for row in objects]
    return found


class HandObjectFrameDetector:
    """Hands (side, contact state, link) and objects, detected on a device elsewhere.

    Args:
        run_on_device: runs the network on prepared images (an inference actor's
            ``detect_hands_objects`` with the run's thresholds).
        batch_size: frames per call.
    """

    name = "hand-object"
    needs_frames = True

    def __init__(self, run_on_device: DeviceDetect, batch_size: int = 8) -> None:
        self._run = run_on_device
        self._batch_size = batch_size

    def detect(self, indices: np.ndarray, timestamps_s: np.ndarray,
               frames: np.ndarray | None) -> list[list[Detection]]:
        if frames is None:
            raise ValueError("the hand-object detector needs frames")
        try:
            prepared = [prepare_image(frame) for frame in frames]
        except ValueError as exc:
            raise InputError(f"hand-object detector: {exc}") from None
        images = np.stack([image for image, _ in prepared]).astype(np.float16)
        scales = np.array([scale for _, scale in prepared])
        found: list[list[Detection]] = []
        for start in range(0, len(images), self._batch_size):
            end = start + self._batch_size
            found += [frame_detections(*rows)
                      for rows in self._run(images[start:end], scales[start:end])]
        return found

    def close(self) -> None:
        return None
