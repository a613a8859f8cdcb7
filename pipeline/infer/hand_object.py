"""The 100DOH hand-object detector on the inference device.

Held by each inference actor beside HFL-Net when a run detects with it; takes the
frames :mod:`hflpipe.pipeline.detect.hand_object` prepared on the CPU side.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from hflpipe.model.hand_object import load_hand_object_detector
from hflpipe.pipeline.common.storage import Location, cached_copy


class HandObjectRunner:
    """Prepared images in, detection rows out (numpy), in fp32 on ``device``."""

    def __init__(self, weights: Location, device: torch.device) -> None:
        self.network = load_hand_object_detector(cached_copy(weights), device=device)

    def __call__(self, images: np.ndarray, scales: Sequence[float], hand_threshold: float,
                 object_threshold: float) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        found = self.network.detect_resized(torch.from_numpy(np.ascontiguousarray(images)),
                                            list(scales), hand_threshold, object_threshold)
        return [(f.hands, f.objects, f.links) for f in found]
