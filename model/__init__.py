"""HFL-Net (Lin et al., CVPR 2023): the network, its MANO layer and its geometry.

The public entry points::

    from hflpipe.model import load_hflnet, crop_hand_object, decode_object_pose
"""

from hflpipe.model.checkpoint import load_hflnet
from hflpipe.model.crop import crop_hand_object
from hflpipe.model.object_pose import decode_object_pose

__all__ = ["crop_hand_object", "decode_object_pose", "load_hflnet"]
