"""HFL-Net (Lin et al., CVPR 2023): the network, its MANO layer and its geometry; the
100DOH hand-object detector.

The public entry points::

    from hflpipe.model import load_hflnet, crop_hand_object, decode_object_pose
    from hflpipe.model import load_hand_object_detector, link_hands_to_objects

They are imported on first use, so that what needs only a light submodule (the command
line's errors, a job's status) does not pay for importing torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hflpipe.model.checkpoint import load_hflnet
    from hflpipe.model.crop import crop_hand_object
    from hflpipe.model.hand_object import link_hands_to_objects, load_hand_object_detector
    from hflpipe.model.object_pose import decode_object_pose

_HOMES = {
    "crop_hand_object": "hflpipe.model.crop",
    "decode_object_pose": "hflpipe.model.object_pose",
    "link_hands_to_objects": "hflpipe.model.hand_object",
    "load_hand_object_detector": "hflpipe.model.hand_object",
    "load_hflnet": "hflpipe.model.checkpoint",
}

__all__ = [
    "crop_hand_object",
    "decode_object_pose",
    "link_hands_to_objects",
    "load_hand_object_detector",
    "load_hflnet",
]


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'hflpipe.model' has no attribute {name!r}")
    return getattr(importlib.import_module(_HOMES[name]), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
