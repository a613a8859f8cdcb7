"""The HFL-Net hand-object network (Lin et al., CVPR 2023), architecture only.

Submodule names map one to one onto the official checkpoint's keys (after its
``honet.module.`` prefix); :mod:`hflpipe.model.checkpoint` loads the weights.
"""

from __future__ import annotations

import torch
from torch import nn

from hflpipe.model.backbone import SplitStreamFPN
from hflpipe.model.hand_head import HandEncoder, HandHeatmapHead, ManoRegressor
from hflpipe.model.interaction import CrossAttention
from hflpipe.model.mano import ManoLayer
from hflpipe.model.object_head import ObjectVoteHead, decode_votes
from hflpipe.model.vision_ops import roi_align

INPUT_SIZE = 256
ROI_SIZE = 32
FPN_STRIDE = 4
CHANNELS = 256
NUM_JOINTS = 21


def box_intersection(
    boxes_a: torch.Tensor, boxes_b: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Intersection of paired boxes.

    Args:
        boxes_a, boxes_b: ``(B, 4)`` ``xyxy``.

    Returns:
        ``boxes`` ``(B, 4)`` ``xyxy`` (inverted where the boxes do not overlap) and
        ``overlaps`` ``(B,)`` bool, true where the intersection has positive width and height.
    """
    top_left = torch.maximum(boxes_a[:, :2], boxes_b[:, :2])
    bottom_right = torch.minimum(boxes_a[:, 2:], boxes_b[:, 2:])
    overlaps = (bottom_right > top_left).all(dim=1)
    return torch.cat((top_left, bottom_right), dim=1), overlaps


def _check_inputs(
    images: torch.Tensor, hand_boxes: torch.Tensor, object_boxes: torch.Tensor
) -> None:
    for name, value in (("images", images), ("hand_boxes", hand_boxes),
                        ("object_boxes", object_boxes)):
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
        if not value.is_floating_point():
            raise TypeError(f"{name} must be a floating-point tensor, got {value.dtype}")
    if images.ndim != 4 or images.shape[1:] != (3, INPUT_SIZE, INPUT_SIZE):
        raise ValueError(
            f"images must have shape (B, 3, {INPUT_SIZE}, {INPUT_SIZE}), got {tuple(images.shape)}"
        )
    batch = images.shape[0]
    for name, boxes in (("hand_boxes", hand_boxes), ("object_boxes", object_boxes)):
        if boxes.shape != (batch, 4):
            raise ValueError(f"{name} must have shape ({batch}, 4), got {tuple(boxes.shape)}")


class HFLNet(nn.Module):
    """HFL-Net: a 256x256 crop and a hand and object box -> hand and object predictions.

    Args:
        mano_layer: the hand layer (:class:`hflpipe.model.mano.ManoLayer`); ``None`` builds
            one with zero buffers, to be filled from a checkpoint.
        num_heads: attention heads of the interaction blocks (4 in the released model).
        attention_depth: interaction blocks per direction (1 in the released model).

    ``forward(images, hand_boxes, object_boxes)``:
        images ``(B, 3, 256, 256)`` float RGB in ``[0, 1]`` (no mean/std normalisation);
        boxes ``(B, 4)`` ``xyxy`` in crop pixels (may be fractional or beyond the crop).

    Returns a dict of tensors:
        ``joints2d (B, 21, 2)`` ``(u, v)`` fractions of the hand box (pixel
        ``x0 + u (x1 - x0)``); ``heatmaps (B, 21, 32, 32)``; ``joints3d (B, 21, 3)`` and
        ``verts3d (B, 778, 3)`` in metres relative to the wrist; ``mano_pose_aa (B, 48)``;
        ``mano_pose_rotmat (B, 16, 3, 3)``; ``mano_shape (B, 10)``; ``mano_pose_6d (B, 96)``;
        ``hand_encoding (B, 1024)``; ``obj_head_raw (B, 63, 32, 32)``; ``obj_pred_x``,
        ``obj_pred_y`` (fractions of the object box) and ``obj_conf``, each ``(B, 32, 32, 21)``
        indexed ``[b, row, col, control point]``. With ``return_debug=True`` also ``P2_h``,
        ``P2_o`` ``(B, 256, 64, 64)`` and the interaction outputs ``tr_hand``
        ``(B, 512, 32, 32)`` and ``tr_obj`` ``(B, 256, 32, 32)``.
    """

    def __init__(self, mano_layer: nn.Module | None = None, *, num_heads: int = 4,
                 attention_depth: int = 1) -> None:
        super().__init__()
        self.base_net = SplitStreamFPN(CHANNELS)
        self.hand_head = HandHeatmapHead(CHANNELS, NUM_JOINTS, ROI_SIZE)
        self.hand_encoder = HandEncoder(NUM_JOINTS, CHANNELS)
        feature_size = CHANNELS * (ROI_SIZE // 16) ** 2
        self.mano_branch = ManoRegressor(mano_layer if mano_layer is not None else ManoLayer(),
                                         feature_size)
        self.obj_head = ObjectVoteHead(CHANNELS)
        self.transformer_obj = CrossAttention(CHANNELS, attention_depth, num_heads)
        self.transformer_hand = CrossAttention(2 * CHANNELS, attention_depth, num_heads)

    @property
    def hand_layer(self) -> ManoLayer:
        """The MANO layer the network poses its hands with (right hand, flat mean)."""
        return self.mano_branch.mano_layer

    def _pool(self, feature_map: torch.Tensor, *boxes: torch.Tensor) -> list[torch.Tensor]:
        """Float32 RoI features ``(B, C, 32, 32)`` of each ``(B, 4)`` box set, in one call."""
        batch = feature_map.shape[0]
        index = torch.arange(batch, dtype=torch.float32, device=feature_map.device)
        # Boxes stay float32 even under autocast: bf16 would move a 256 px coordinate by
        # up to a pixel.
        rois = torch.cat([torch.cat((index[:, None], b.float()), dim=1) for b in boxes])
        # aligned=False: the legacy half-pixel convention the model was trained with.
        pooled = roi_align(feature_map.float(), rois, (ROI_SIZE, ROI_SIZE),
                           spatial_scale=1.0 / FPN_STRIDE, sampling_ratio=-1, aligned=False)
        return list(pooled.split(batch))

    def forward(self, images: torch.Tensor, hand_boxes: torch.Tensor, object_boxes: torch.Tensor,
                return_debug: bool = False) -> dict[str, torch.Tensor]:
        _check_inputs(images, hand_boxes, object_boxes)
        p2_h, p2_o = self.base_net(images)
        inter_boxes, overlaps = box_intersection(hand_boxes, object_boxes)
        hand_in_h, inter_in_h = self._pool(p2_h, hand_boxes, inter_boxes)
        hand_in_o, obj_in_o = self._pool(p2_o, hand_boxes, object_boxes)
        inter_in_h = inter_in_h * overlaps[:, None, None, None]

        hand_obj = torch.cat((hand_in_h, hand_in_o), dim=1)
        tr_hand = self.transformer_hand(hand_obj, hand_obj)
        tr_obj = self.transformer_obj(obj_in_o, inter_in_h)

        obj_raw = self.obj_head(tr_obj)
        # Decoded in float32: half-precision offsets would cost ~0.1 px on a 100 px box.
        obj_x, obj_y, obj_conf = decode_votes(obj_raw.float())

        # Only the hand-stream half of the enhanced feature feeds the hand decoder.
        heatmaps, features, joints2d = self.hand_head(tr_hand[:, :CHANNELS])
        encoding = self.hand_encoder(heatmaps, features)
        out = {
            "joints2d": joints2d,
            "heatmaps": heatmaps,
            "hand_encoding": encoding,
            **self.mano_branch(encoding),
            "obj_head_raw": obj_raw,
            "obj_pred_x": obj_x,
            "obj_pred_y": obj_y,
            "obj_conf": obj_conf,
        }
        if return_debug:
            out.update(P2_h=p2_h, P2_o=p2_o, tr_hand=tr_hand, tr_obj=tr_obj)
        return out
