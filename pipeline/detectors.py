"""Pick and build the detector a run asks for, for one video."""

from __future__ import annotations

from pathlib import Path

from hflpipe.pipeline.config import RunConfig
from hflpipe.pipeline.detection import Detector
from hflpipe.pipeline.errors import ConfigError
from hflpipe.pipeline.run_context import RunContext


def make_detector(config: RunConfig, context: RunContext, video: Path) -> Detector:
    """The configured detector for ``video`` (the caller closes it)."""
    if config.detector == "boxes":
        if context.boxes is None:
            raise ConfigError("detector 'boxes' needs a boxes file (--boxes)")
        return context.boxes.for_video(video)
    if config.detector == "torchvision":
        from hflpipe.pipeline.detect_torchvision import TorchvisionDetector

        return TorchvisionDetector(
            config.torchvision_model, config.torchvision_weights,
            config.torchvision_classes or {1: "hand"}, score_threshold=config.score_threshold,
        )
    from hflpipe.pipeline.detect_mediapipe import MediaPipeHandDetector

    return MediaPipeHandDetector(min_confidence=config.score_threshold)
