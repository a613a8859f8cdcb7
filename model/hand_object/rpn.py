"""The region proposal network of the 100DOH detector and its test-time proposal rules."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from hflpipe.model.hand_object.boxes import clip_boxes, decode_boxes, grid_anchors, legacy_nms

FEATURE_STRIDE = 16
NUM_ANCHORS = 12
#: Test-time proposal settings of the original (cfg.TEST.RPN_*).
PRE_NMS_TOP_N = 6000
NMS_THRESHOLD = 0.7
POST_NMS_TOP_N = 300


@dataclass(frozen=True)
class Proposals:
    """RPN output for a batch of B images.

    Attributes:
        rois: (B, 300, 4) float32 boxes in network-input pixels, by decreasing
            objectness; rows past ``num_rois`` are zeros (the original runs its heads on
            them too).
        objectness: (B, 300) float32 foreground probability of each row (0 for padding).
        num_rois: (B,) int64 rows that are proposals.
        num_after_nms: (B,) int64 proposals left after the NMS, before the cut to 300.
    """

    rois: torch.Tensor
    objectness: torch.Tensor
    num_rois: torch.Tensor
    num_after_nms: torch.Tensor


class RegionProposalNetwork(nn.Module):
    """3x3 conv + ReLU, then per anchor a background/foreground pair and 4 box deltas.

    Maps the stride-16 map ``(B, 1024, Hf, Wf)`` to foreground probabilities
    ``(B, Hf*Wf*12)`` and deltas ``(B, Hf*Wf*12, 4)``, both ordered by (y, x, anchor).
    """

    def __init__(self, in_channels: int = 1024, channels: int = 512) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, channels, 3, padding=1)
        # Channel c is anchor c's background logit, channel c + 12 its foreground logit.
        self.objectness = nn.Conv2d(channels, 2 * NUM_ANCHORS, 1)
        self.box_deltas = nn.Conv2d(channels, 4 * NUM_ANCHORS, 1)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = F.relu(self.conv(features))
        logits = self.objectness(hidden)
        batch = logits.shape[0]
        pairs = logits.reshape(batch, 2, NUM_ANCHORS, *logits.shape[2:])
        foreground = F.softmax(pairs, dim=1)[:, 1]
        foreground = foreground.permute(0, 2, 3, 1).reshape(batch, -1)
        deltas = self.box_deltas(hidden).permute(0, 2, 3, 1).reshape(batch, -1, 4)
        return foreground, deltas


def propose(foreground: torch.Tensor, deltas: torch.Tensor, feature_size: tuple[int, int],
            image_size: tuple[int, int]) -> Proposals:
    """The original's test-time proposals: decode every anchor, clip, keep the 6000 most
    likely, NMS at 0.7 (+1 areas, IoU >= 0.7 suppresses), keep the first 300, pad with zeros.

    No minimum-size filter (the original's is disabled).

    Args:
        foreground: (B, A) foreground probabilities, A = Hf * Wf * 12.
        deltas: (B, A, 4) box deltas.
        feature_size: ``(Hf, Wf)``.
        image_size: ``(H, W)`` of the network input (the same for the whole batch).
    """
    foreground = foreground.float()
    anchors = grid_anchors(*feature_size, FEATURE_STRIDE, foreground.device)
    boxes = clip_boxes(decode_boxes(anchors, deltas.float()), *image_size)
    batch = foreground.shape[0]
    rois = foreground.new_zeros(batch, POST_NMS_TOP_N, 4)
    objectness = foreground.new_zeros(batch, POST_NMS_TOP_N)
    num_rois = torch.zeros(batch, dtype=torch.int64)
    num_after_nms = torch.zeros(batch, dtype=torch.int64)
    for i in range(batch):
        order = torch.sort(foreground[i], descending=True).indices[:PRE_NMS_TOP_N]
        candidates, scores = boxes[i, order], foreground[i, order]
        keep = legacy_nms(candidates, scores, NMS_THRESHOLD)
        num_after_nms[i] = keep.numel()
        keep = keep[:POST_NMS_TOP_N]
        rois[i, : keep.numel()] = candidates[keep]
        objectness[i, : keep.numel()] = scores[keep]
        num_rois[i] = keep.numel()
    return Proposals(rois, objectness, num_rois, num_after_nms)
