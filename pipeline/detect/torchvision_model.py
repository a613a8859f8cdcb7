"""Any torchvision detection model, with the user's weights, as a hand/object detector.

The model is built by its torchvision builder name with no pretrained weights
(nothing is downloaded), then the user's state_dict is loaded strictly. A
class map turns the model's label ids into hands (optionally with their side)
and named objects; labels missing from the map are dropped.
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchvision
from torch import nn

from hflpipe.model.checkpoint import load_weights_only
from hflpipe.pipeline.common.errors import ConfigError, InputError
from hflpipe.pipeline.detect.base import Detection

logger = logging.getLogger(__name__)

_HAND_LABELS: dict[str, str | None] = {"hand": None, "hand_left": "left", "hand_right": "right"}


def detection_model_names() -> list[str]:
    """The builder names torchvision offers for detection models."""
    return sorted(torchvision.models.list_models(module=torchvision.models.detection))


def _load_state_dict(path: Path) -> Mapping[str, torch.Tensor]:
    try:
        loaded = load_weights_only(path)
    except FileNotFoundError:
        raise InputError(f"detector weights {path}: not found") from None
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as err:
        first_line = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise InputError(
            f"detector weights {path}: not a loadable state_dict: {first_line}"
        ) from err
    # torchvision's reference training scripts save {"model": state_dict, ...}.
    if isinstance(loaded, Mapping) and isinstance(loaded.get("model"), Mapping):
        loaded = loaded["model"]
    if not isinstance(loaded, Mapping) or not all(
        isinstance(v, torch.Tensor) for v in loaded.values()
    ):
        raise InputError(f"detector weights {path}: expected a state_dict of tensors")
    return loaded


def _parse_class_map(class_map: Mapping[int, str]) -> dict[int, tuple[str, str | None, str | None]]:
    """label id -> (kind, handedness, object_name)."""
    if not class_map:
        raise ConfigError("torchvision detector: class_map is empty")
    parsed = {}
    for label, name in class_map.items():
        if not isinstance(name, str) or not name:
            raise ConfigError(f"torchvision detector: class_map[{label}] must be a non-empty name")
        try:
            label_id = int(label)
        except (TypeError, ValueError):
            raise ConfigError(
                f"torchvision detector: class_map key {label!r} is not an integer"
            ) from None
        if name in _HAND_LABELS:
            parsed[label_id] = ("hand", _HAND_LABELS[name], None)
        else:
            parsed[label_id] = ("object", None, None if name == "object" else name)
    return parsed


class TorchvisionDetector:
    """A torchvision detection model run on RGB frames.

    Args:
        model_name: torchvision builder name, e.g. ``"fasterrcnn_resnet50_fpn"``.
        weights_path: a ``torch.save``'d state_dict for that model (or a dict with
            the state_dict under ``"model"``); loaded with ``weights_only=True``.
        class_map: label id -> ``"hand"``, ``"hand_left"``, ``"hand_right"``,
            ``"object"`` or an object name. Keys may be ints or integer strings.
        score_threshold: detections scoring lower are dropped.
        num_classes: the model's class count including background; defaults to
            the largest label in ``class_map`` plus one.
        device: torch device to run on.
        batch_size: frames per forward pass.
        model_kwargs: extra builder arguments (e.g. ``min_size``), as used in training.
    """

    name = "torchvision"
    needs_frames = True

    def __init__(
        self,
        model_name: str,
        weights_path: str | Path,
        class_map: Mapping[int, str],
        *,
        score_threshold: float = 0.5,
        num_classes: int | None = None,
        device: str | torch.device = "cpu",
        batch_size: int = 8,
        model_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        if model_name not in detection_model_names():
            raise ConfigError(
                f"torchvision detector: unknown model {model_name!r} "
                f"(one of: {', '.join(detection_model_names())})"
            )
        if not 0.0 <= score_threshold <= 1.0:
            raise ConfigError(
                f"torchvision detector: score_threshold {score_threshold} not in [0, 1]"
            )
        if batch_size < 1:
            raise ConfigError(f"torchvision detector: batch_size must be >= 1, got {batch_size}")
        self._classes = _parse_class_map(class_map)
        self._score_threshold = score_threshold
        self._batch_size = batch_size
        self._device = torch.device(device)
        weights_path = Path(weights_path)
        state_dict = _load_state_dict(weights_path)
        classes = num_classes if num_classes is not None else max(self._classes) + 1
        self._model = self._build(model_name, classes, dict(model_kwargs or {}))
        try:
            self._model.load_state_dict(state_dict, strict=True)
        except RuntimeError as err:
            # torch lists every disagreeing key on its own line; the first one is enough.
            lines = [line.strip() for line in str(err).splitlines() if line.strip()]
            first = lines[1] if len(lines) > 1 else lines[0] if lines else "key mismatch"
            raise InputError(
                f"detector weights {weights_path}: do not fit {model_name} with "
                f"{classes} classes: {first}"
            ) from err
        self._model.eval().to(self._device)

    @staticmethod
    def _build(model_name: str, num_classes: int, model_kwargs: dict[str, Any]) -> nn.Module:
        try:
            return torchvision.models.get_model(
                model_name, weights=None, weights_backbone=None, num_classes=num_classes,
                **model_kwargs,
            )
        except (TypeError, ValueError) as err:
            raise ConfigError(f"torchvision detector: cannot build {model_name}: {err}") from err

    def detect(
        self, indices: np.ndarray, timestamps_s: np.ndarray, frames: np.ndarray | None
    ) -> list[list[Detection]]:
        """Detect on ``frames`` (N, H, W, 3) uint8 RGB; boxes come back in frame pixels."""
        if frames is None:
            raise ValueError("the torchvision detector needs frames")
        results: list[list[Detection]] = []
        for start in range(0, len(frames), self._batch_size):
            batch = torch.from_numpy(np.ascontiguousarray(frames[start : start + self._batch_size]))
            images = batch.to(self._device).permute(0, 3, 1, 2).float().div_(255.0)
            with torch.inference_mode():
                outputs = self._model(list(images))
            results.extend(self._to_detections(output) for output in outputs)
        return results

    def _to_detections(self, output: Mapping[str, torch.Tensor]) -> list[Detection]:
        boxes = output["boxes"].float().cpu().numpy()
        scores = output["scores"].float().cpu().numpy()
        labels = output["labels"].cpu().numpy()
        detections = []
        for box, score, label in zip(boxes, scores, labels, strict=True):
            mapped = self._classes.get(int(label))
            if mapped is None or score < self._score_threshold:
                continue
            kind, handedness, object_name = mapped
            detections.append(
                Detection(kind, box.astype(np.float32), float(score), handedness, object_name)
            )
        return detections

    def close(self) -> None:
        """Drop the model (frees GPU memory once nothing else holds it)."""
        self._model = None
