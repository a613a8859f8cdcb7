"""What a video task keeps between the videos it runs: detectors and the hand layer.

Ray runs many video tasks in one worker process; building a torchvision detector
(weights read from disk) or starting the MediaPipe process for every video cost
more than a short video's work. Each is built once per worker process and
options, and kept while it works: a detector that raised is closed and dropped,
so the next video starts a fresh one.
"""

from __future__ import annotations

import atexit
import functools
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hflpipe.model.checkpoint import load_hand_layer
from hflpipe.model.mano import ManoLayer
from hflpipe.pipeline.common.storage import Location, cached_copy
from hflpipe.pipeline.config.run_config import RunConfig
from hflpipe.pipeline.detect.base import Detector, make_detector
from hflpipe.pipeline.detect.hand_object import HandObjectFrameDetector
from hflpipe.pipeline.infer.client import InferenceClient
from hflpipe.pipeline.run.context import RunContext

log = logging.getLogger(__name__)

_DETECTORS: dict[str, Detector] = {}


def detector_options(config: RunConfig) -> dict[str, Any]:
    """The keyword options of the run's pixel detector (torchvision or MediaPipe)."""
    if config.detector == "torchvision":
        return {
            "model_name": config.torchvision_model,
            "weights_path": config.torchvision_weights,
            "class_map": config.torchvision_classes or {1: "hand"},
            "score_threshold": config.score_threshold,
        }
    return {"min_confidence": config.score_threshold}


def check_detector(config: RunConfig) -> None:
    """Build the run's pixel detector once and close it: weights that are missing or of
    the wrong kind raise here, before any video, instead of failing every video. (The
    hand-object detector's weights are checked with the checkpoint, in prepare_context.)"""
    if config.detector not in ("boxes", "hand-object"):
        make_detector(config.detector, detector_options(config)).close()


@contextmanager
def video_detector(config: RunConfig, context: RunContext, video: Path,
                   inference: InferenceClient | None = None) -> Iterator[Detector]:
    """The detector for one video: the boxes file's rows, the hand-object detector on the
    inference actors (through ``inference``), this worker's pixel detector, or for
    MediaPipe a fresh tracker (its state is per video; its networks are this process's,
    or the inference actors' when the run puts them there)."""
    if config.detector == "hand-object":
        if inference is None:
            raise ValueError("the hand-object detector runs on the inference actors")
        yield HandObjectFrameDetector(functools.partial(
            inference.detect_hands_objects, hand_threshold=config.score_threshold,
            object_threshold=config.score_threshold))
        return
    if config.detector in ("boxes", "mediapipe"):
        if config.detector == "boxes":
            boxes = context.boxes.scored_at_least(config.score_threshold)
            below = len(context.boxes.frame_index) - len(boxes.frame_index)
            if below:
                log.warning("boxes file %s: %d rows for this video score below "
                            "--score-threshold %g and are ignored", boxes.path, below,
                            config.score_threshold)
            detector = make_detector("boxes", {"file": boxes}, video=video)
        else:
            options = detector_options(config)
            if context.predictor_settings.mediapipe_hands:
                if inference is None:
                    raise ValueError("this run's hand networks are on the inference actors")
                options["networks"] = inference.hand_networks()
            detector = make_detector("mediapipe", options)
        try:
            yield detector
        finally:
            detector.close()
        return
    options = detector_options(config)
    key = json.dumps([config.detector, options], sort_keys=True, default=str)
    detector = _DETECTORS.get(key)
    if detector is None:
        detector = _DETECTORS[key] = make_detector(config.detector, options)
    try:
        yield detector
    except BaseException:
        # A detector that failed mid-video (a crashed worker process) may be unusable.
        _DETECTORS.pop(key, None)
        detector.close()
        raise


@functools.lru_cache(maxsize=4)
def hand_layer(checkpoint: Location) -> ManoLayer:
    """The checkpoint's MANO layer in float64, read once per worker process.

    It re-poses the smoothed hands; float64 makes the rows the same whichever process
    computes them (see :func:`hflpipe.pipeline.smooth.tables.hand_mesh`).
    """
    return load_hand_layer(cached_copy(checkpoint)).double()


@atexit.register
def close_detectors() -> None:
    """Close every kept detector (a worker process exiting, or a test cleaning up)."""
    while _DETECTORS:
        _, detector = _DETECTORS.popitem()
        detector.close()
