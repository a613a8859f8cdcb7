"""MediaPipe's palm and landmark networks on an inference actor, shared by its videos.

Each video task keeps its own tracking state and sends the actor 8-bit tensors it
sampled on the CPU side (192x192 letterboxed frames, 224x224 hand regions, so a
frame crosses the object store at a few hundred KB whatever its size); the actor runs
the networks on its device, the requests of all its videos batched together
(:class:`~hflpipe.pipeline.infer.shared_batches.SharedBatcher`).
"""

from __future__ import annotations

import numpy as np
import torch

from hflpipe.model.mediapipe_files import load_hand_landmarker, load_palm_detector
from hflpipe.model.mediapipe_hands import TorchHandNetworks
from hflpipe.pipeline.infer.shared_batches import SharedBatcher

#: Most images (palm) or hand regions (landmarks) per network call, per device type. On
#: the CPU the fused graph takes a call's images one by one, so a larger call saves
#: only the per-call work (``python -m bench detector``, networks batched: 1.0-1.2x
#: per image at 8 against 1; no more at 32), while the videos in it wait longer.
MAX_SHARED_BATCH = {"cpu": 8}
MAX_SHARED_BATCH_ELSEWHERE = 64


class SharedHandNetworks(TorchHandNetworks):
    """The shipped networks on ``device``; concurrent calls share network calls."""

    def __init__(self, device: str | torch.device) -> None:
        super().__init__(load_palm_detector(), load_hand_landmarker(), device)
        max_batch = MAX_SHARED_BATCH.get(self.device.type, MAX_SHARED_BATCH_ELSEWHERE)
        self.palm_batches = SharedBatcher(super().palm_outputs, max_batch)
        self.landmark_batches = SharedBatcher(super().landmark_outputs, max_batch)

    def palm_outputs(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        raw_boxes, logits = self.palm_batches(images)
        return raw_boxes, logits

    def landmark_outputs(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        raw, presence, left = self.landmark_batches(crops)
        return raw, presence, left
