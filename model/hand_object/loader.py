"""Loading the 100DOH detector's official checkpoint (``faster_rcnn_1_8_132028.pth``).

The release file is a ``torch.save``d dict ``{"session", "epoch", "model", "optimizer",
"pooling_mode", "class_agnostic"}``; ``model`` is the state dict of the original's
``resnet`` Faster R-CNN. It is read with a weights-only load (a tampered file cannot run
code), every key and shape must match, and the original's module names are mapped to
ours. Errors name keys as the file spells them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import torch

from hflpipe.model.checkpoint import check_state_keys, read_payload
from hflpipe.model.errors import ModelFileError
from hflpipe.model.hand_object.network import HandObjectDetector

#: The original's module prefixes and ours.
_PREFIXES = (
    ("RCNN_base.", "backbone."),
    ("RCNN_top.0.", "roi_stage."),
    ("RCNN_rpn.RPN_Conv.", "rpn.conv."),
    ("RCNN_rpn.RPN_cls_score.", "rpn.objectness."),
    ("RCNN_rpn.RPN_bbox_pred.", "rpn.box_deltas."),
    ("RCNN_cls_score.", "class_logits."),
    ("RCNN_bbox_pred.", "box_deltas."),
    ("extension_layer.hand_contact_state_layer.", "contact_head."),
    ("extension_layer.hand_dydx_layer.", "offset_head."),
    ("extension_layer.hand_lr_layer.", "side_head."),
)
_NETWORK = "a 100DOH hand-object detector"


def _renamed(key: str, pairs: tuple[tuple[str, str], ...]) -> str:
    for old, new in pairs:
        if key.startswith(old):
            return new + key[len(old):]
    return key


def _state_dict(path: Path, payload: object) -> Mapping[str, object]:
    if not isinstance(payload, Mapping):
        raise ModelFileError(f"{path}: holds a {type(payload).__name__}, not {_NETWORK} checkpoint")
    if "model" not in payload:
        if "state_dict" in payload or "network" in payload:
            raise ModelFileError(
                f"{path}: an HFL-Net checkpoint, not the 100DOH hand-object detector's "
                "(faster_rcnn_1_8_132028.pth, a dict with 'model')"
            )
        raise ModelFileError(f"{path}: no 'model' entry, not {_NETWORK} checkpoint")
    pooling = payload.get("pooling_mode", "align")
    if pooling != "align":
        raise ModelFileError(f"{path}: pooling mode {pooling!r}; only 'align' is supported")
    if payload.get("class_agnostic", False):
        raise ModelFileError(f"{path}: class-agnostic box regression is not supported")
    state = payload["model"]
    if not isinstance(state, Mapping) or not state:
        raise ModelFileError(f"{path}: 'model' holds a {type(state).__name__}, not a state dict")
    return state


def official_state_dict(net: HandObjectDetector) -> dict[str, torch.Tensor]:
    """``net``'s weights under the release file's names (for writing files of that layout)."""
    back = tuple((new, old) for old, new in _PREFIXES)
    return {_renamed(k, back): v for k, v in net.state_dict().items()}


def load_hand_object_detector(path: str | os.PathLike[str],
                              device: str | torch.device = "cpu") -> HandObjectDetector:
    """The 100DOH hand-object detector with the weights of a checkpoint, in eval mode.

    Args:
        path: the official ``faster_rcnn_1_8_132028.pth`` (or a file of the same layout).
        device: where the network goes.

    Raises:
        ModelFileError: one line: unreadable, truncated or unsafe file, another model's
            checkpoint, or missing, unexpected, mis-shaped or non-finite weights.
    """
    path = Path(path)
    state = _state_dict(path, read_payload(path))
    not_tensors = [str(k) for k, v in state.items()
                   if not isinstance(k, str) or not torch.is_tensor(v)]
    if not_tensors:
        raise ModelFileError(
            f"{path}: 'model' has {len(not_tensors)} entries that are not named tensors "
            f"({', '.join(not_tensors[:5])})"
        )
    # Built without storage: every tensor is replaced by the file's.
    with torch.device("meta"):
        net = HandObjectDetector()
    ours = net.state_dict()
    check_state_keys(path, state, official_state_dict(net), _NETWORK)
    renamed = {_renamed(k, _PREFIXES): v for k, v in state.items()}
    # assign=True adopts the tensors as they are: give them the network's dtypes first.
    net.load_state_dict({k: v.to(ours[k].dtype) for k, v in renamed.items()}, strict=True,
                        assign=True)
    return net.to(device).eval()
