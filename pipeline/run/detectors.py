"""The detector a run's configuration asks for, for one video."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hflpipe.pipeline.config.run_config import RunConfig
from hflpipe.pipeline.detect.base import Detector, make_detector
from hflpipe.pipeline.run.context import RunContext


def detector_for(config: RunConfig, context: RunContext, video: Path) -> Detector:
    """Map run options onto :func:`make_detector`; the boxes file is the one loaded up front."""
    options: dict[str, Any]
    if config.detector == "boxes":
        options = {"file": context.boxes}
    elif config.detector == "torchvision":
        options = {
            "model_name": config.torchvision_model,
            "weights_path": config.torchvision_weights,
            "class_map": config.torchvision_classes or {1: "hand"},
            "score_threshold": config.score_threshold,
        }
    else:
        options = {"min_confidence": config.score_threshold}
    return make_detector(config.detector, options, video=video)
