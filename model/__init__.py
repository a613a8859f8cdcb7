"""HFL-Net (Lin et al., CVPR 2023): the network, its MANO layer and its geometry; the
100DOH hand-object detector.

The public entry points::

    from hflpipe.model import load_hflnet, crop_hand_object, decode_object_pose
    from hflpipe.model import load_hand_object_detector, link_hands_to_objects
"""

from hflpipe.model.checkpoint import load_hflnet
from hflpipe.model.crop import crop_hand_object
from hflpipe.model.hand_object import link_hands_to_objects, load_hand_object_detector
from hflpipe.model.object_pose import decode_object_pose

__all__ = [
    "crop_hand_object",
    "decode_object_pose",
    "link_hands_to_objects",
    "load_hand_object_detector",
    "load_hflnet",
]
