"""What every video of a run shares: model settings, hashes, camera, object, boxes file.

Built once on the driver (so a bad checkpoint, MANO file, boxes file,
intrinsics or object name fails the run before any video starts) and shipped
to the video tasks.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hflpipe.model.checkpoint import file_sha256, load_hflnet
from hflpipe.model.control_points import control_points_from_file, load_control_points
from hflpipe.model.mano_file import load_mano_model
from hflpipe.pipeline.camera import Intrinsics, parse_intrinsics
from hflpipe.pipeline.config import RunConfig
from hflpipe.pipeline.detect_boxes import BoxesFile
from hflpipe.pipeline.errors import ConfigError, InputError
from hflpipe.pipeline.predictor import PredictorSettings
from hflpipe.pipeline.schema import OutputMetadata

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunContext:
    """Shared, validated inputs of one run."""

    config_hash: str
    metadata: OutputMetadata
    predictor_settings: PredictorSettings
    intrinsics: Intrinsics | None
    object_name: str | None
    control_points: np.ndarray | None  # (21, 3) metres, object frame
    boxes: BoxesFile | None


def prepare_context(config: RunConfig) -> RunContext:
    """Validate the run's shared inputs and hash them into the config hash."""
    if config.checkpoint is None:
        raise ConfigError("a checkpoint is required (--checkpoint HFL-Net .pth.tar)")
    # Loading once here turns a wrong or corrupted file into one line before Ray starts.
    load_hflnet(config.checkpoint, mano=config.mano, device="cpu")
    checkpoint_sha = file_sha256(config.checkpoint)
    mano_sha = load_mano_model(config.mano).sha256 if config.mano else "from-checkpoint"
    config_hash = config.result_hash(checkpoint_sha, mano_sha)
    intrinsics = parse_intrinsics(config.intrinsics) if config.intrinsics else None
    object_name, control_points = resolve_object(config.object)
    boxes = BoxesFile.load(config.boxes) if config.detector == "boxes" else None
    return RunContext(
        config_hash=config_hash,
        metadata=OutputMetadata(checkpoint_sha256=checkpoint_sha, mano_sha256=mano_sha,
                                config_hash=config_hash),
        predictor_settings=PredictorSettings(
            checkpoint=Path(config.checkpoint).resolve(),
            mano=Path(config.mano).resolve() if config.mano else None,
            device=config.device, precision=config.precision,
        ),
        intrinsics=intrinsics,
        object_name=object_name,
        control_points=control_points,
        boxes=boxes,
    )


def resolve_object(spec: str | None) -> tuple[str | None, np.ndarray | None]:
    """A YCB catalogue name or a mesh / point file -> (name, (21, 3) control points)."""
    if spec is None:
        return None, None
    path = Path(spec)
    if path.suffix and path.exists():
        return path.stem, control_points_from_file(path)
    try:
        return spec, load_control_points(spec)
    except ValueError as exc:
        raise InputError(f"object '{spec}': {exc}") from None
