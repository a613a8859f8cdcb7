"""How a video reaches the model: ``submit`` a batch of crops, later take its ``result``.

Keeping a few batches in flight lets a video decode and crop the next ones while the
model runs. :class:`LocalInference` runs the predictor in this process (tests,
benchmarks); the Ray actor pool (:mod:`hflpipe.pipeline.infer.actor_pool`) is the
other implementation. Batches are numpy dicts (see :class:`HflnetPredictor`).
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from hflpipe.pipeline.infer.predictor import HflnetPredictor


class InferenceClient(Protocol):
    """Asynchronous access to the model."""

    def submit(self, batch: dict[str, np.ndarray]) -> Any:
        """Start inference on a batch; returns a handle for :meth:`result`."""
        ...

    def result(self, handle: Any) -> dict[str, np.ndarray]:
        """Wait for and return a batch's outputs."""
        ...


class LocalInference:
    """Runs the predictor in this process (tests, single-process runs)."""

    def __init__(self, predictor: HflnetPredictor) -> None:
        self.predictor = predictor

    def submit(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.predictor(batch)

    def result(self, handle: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return handle
