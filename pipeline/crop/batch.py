"""Crops of hand-object jobs gathered into the batches the predictor takes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from hflpipe.model.crop import crop_hand_object
from hflpipe.pipeline.detect.base import Detection

#: What the network takes; the rest of a batch's fields map its results back.
MODEL_INPUTS = ("images", "hand_boxes", "object_boxes")
CROP_FIELDS = (*MODEL_INPUTS, "affine", "mirrored", "frame_width", "timestamp_s")


@dataclass(frozen=True)
class HandObjectPair:
    """One hand-object pair on one frame: what the network is run on."""

    frame_index: int
    hand: Detection
    obj: Detection | None
    #: The detector's own handedness for this hand, before the track's vote replaced it.
    detected_handedness: str | None = None
    #: The hand-object detector's contact state for this hand on its keyframe.
    contact_state: str | None = None


def empty_fields(*extra: str) -> dict[str, list[Any]]:
    """Per-field lists for a batch being gathered (``extra``: more per-crop fields)."""
    return {key: [] for key in (*CROP_FIELDS, *extra)}


def add_crop(fields: dict[str, list[Any]], frame: np.ndarray, job: HandObjectPair,
             timestamp_s: float) -> None:
    """Crop ``job``'s pair out of ``frame`` (mirrored for a left hand) into ``fields``.

    A hand with no object on its frame uses its own box as the object box, as HFL-Net
    needs one; its object outputs are not used.
    """
    obj_box = job.obj.box if job.obj is not None else job.hand.box
    crop = crop_hand_object(frame, job.hand.box, obj_box, mirror=job.hand.handedness == "left")
    fields["images"].append(crop.image)
    fields["hand_boxes"].append(crop.hand_box)
    fields["object_boxes"].append(crop.object_box)
    fields["affine"].append(crop.affine)
    fields["mirrored"].append(crop.mirrored)
    fields["frame_width"].append(crop.frame_width)
    fields["timestamp_s"].append(float(timestamp_s))


def split_batch(
    fields: dict[str, list[Any]],
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Stack gathered fields into (model inputs, the rest)."""
    stacked = {key: np.stack(values) for key, values in fields.items()}
    return {key: stacked.pop(key) for key in MODEL_INPUTS}, stacked
