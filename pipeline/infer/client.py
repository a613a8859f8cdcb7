"""How a video reaches the model: ``submit`` a batch of crops, later take its ``result``.

Keeping a few batches in flight lets a video decode and crop the next ones while the
model runs. :class:`LocalInference` runs the predictor in this process (tests,
benchmarks); the Ray actor pool (:mod:`hflpipe.pipeline.infer.actor_pool`) is the
other implementation. Batches are numpy dicts (see :class:`HflnetPredictor`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

if TYPE_CHECKING:
    from hflpipe.model.mediapipe_hands import HandNetworks
    from hflpipe.pipeline.infer.hand_object import HandObjectRunner
    from hflpipe.pipeline.infer.predictor import HflnetPredictor


class InferenceClient(Protocol):
    """Asynchronous access to the model."""

    def submit(self, batch: dict[str, np.ndarray]) -> Any:
        """Start inference on a batch; returns a handle for :meth:`result`."""
        ...

    def result(self, handle: Any) -> dict[str, np.ndarray]:
        """Wait for and return a batch's outputs."""
        ...

    def detect_hands_objects(self, images: np.ndarray, scales: np.ndarray,
                             hand_threshold: float,
                             object_threshold: float) -> list[tuple[np.ndarray, ...]]:
        """The hand-object detector on prepared images (see ``HandObjectRunner``)."""
        ...

    def hand_networks(self) -> HandNetworks:
        """MediaPipe's hand networks where the model runs."""
        ...


class LocalInference:
    """Runs the predictor in this process (tests, single-process runs)."""

    def __init__(self, predictor: HflnetPredictor,
                 hand_object: HandObjectRunner | None = None,
                 hands: HandNetworks | None = None) -> None:
        self.predictor = predictor
        self.hand_object = hand_object
        self.hands = hands

    def submit(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.predictor(batch)

    def result(self, handle: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return handle

    def detect_hands_objects(self, images: np.ndarray, scales: np.ndarray,
                             hand_threshold: float,
                             object_threshold: float) -> list[tuple[np.ndarray, ...]]:
        if self.hand_object is None:
            raise ValueError("LocalInference was made without a hand-object detector")
        return self.hand_object(images, scales, hand_threshold, object_threshold)

    def hand_networks(self) -> HandNetworks:
        if self.hands is None:
            raise ValueError("LocalInference was made without MediaPipe's hand networks")
        return self.hands
