"""The 100DOH hand-object detector (Shan et al., CVPR 2020) as torch/torchvision code.

Hands with their side and contact state, objects, and the link from each hand in contact
to its object, matching the original implementation's test-time behaviour. Imports only
torch, torchvision, numpy and OpenCV (no compiled extensions of its own).

    from hflpipe.model import load_hand_object_detector, link_hands_to_objects
"""

from hflpipe.model.hand_object.links import link_hands_to_objects
from hflpipe.model.hand_object.loader import load_hand_object_detector
from hflpipe.model.hand_object.network import (
    CONTACT_STATES,
    FrameDetections,
    HandObjectDetector,
)

__all__ = [
    "CONTACT_STATES",
    "FrameDetections",
    "HandObjectDetector",
    "link_hands_to_objects",
    "load_hand_object_detector",
]
