"""Box arithmetic of the 100DOH detector, in the legacy py-faster-rcnn conventions.

Boxes are ``x1, y1, x2, y2`` with *inclusive* pixel extents: a box's width is
``x2 - x1 + 1``. The detector was trained with these conventions, so decoding and
suppression follow them exactly; the enlarged RoIs of the contact heads keep the
original's (inconsistent) conventions too.
"""

from __future__ import annotations

import numpy as np
import torch

from hflpipe.model.vision_ops import nms

#: Anchor sizes relative to the 16-px base box, and their aspect ratios (height / width).
ANCHOR_SCALES = (8, 16, 32, 64)
ANCHOR_RATIOS = (0.5, 1.0, 2.0)
#: How far the contact and offset heads' RoIs reach beyond the box, per side.
ENLARGE_RATIO = 0.3


def legacy_anchors(base_size: int = 16) -> torch.Tensor:
    """The 12 reference anchors around the box ``[0, 0, base_size-1, base_size-1]``.

    Returns:
        (12, 4) float32; anchor ``a = 4 * ratio_index + scale_index``.
    """
    center = (base_size - 1) / 2.0
    anchors = []
    for ratio in ANCHOR_RATIOS:
        # Rounded to whole pixels before scaling, as the reference generator does.
        width = np.round(np.sqrt(base_size * base_size / ratio))
        height = np.round(width * ratio)
        for scale in ANCHOR_SCALES:
            half_w, half_h = (width * scale - 1) / 2.0, (height * scale - 1) / 2.0
            anchors.append([center - half_w, center - half_h, center + half_w, center + half_h])
    return torch.tensor(anchors, dtype=torch.float32)


def grid_anchors(height: int, width: int, stride: int, device: torch.device) -> torch.Tensor:
    """Anchors on every cell of a ``height x width`` feature map.

    Returns:
        (height * width * 12, 4) float32, ordered by (y, x, anchor).
    """
    ys = torch.arange(height, device=device, dtype=torch.float32) * stride
    xs = torch.arange(width, device=device, dtype=torch.float32) * stride
    shift_y, shift_x = torch.meshgrid(ys, xs, indexing="ij")
    shifts = torch.stack([shift_x, shift_y, shift_x, shift_y], dim=-1).reshape(-1, 1, 4)
    return (legacy_anchors().to(device).reshape(1, -1, 4) + shifts).reshape(-1, 4)


def decode_boxes(boxes: torch.Tensor, deltas: torch.Tensor) -> torch.Tensor:
    """Apply regression deltas to boxes (+1 widths, no clamp before ``exp``).

    Args:
        boxes: (..., N, 4) reference boxes.
        deltas: (..., N, 4k) ``dx, dy, dw, dh`` per class.

    Returns:
        (..., N, 4k) decoded boxes.
    """
    widths = (boxes[..., 2] - boxes[..., 0] + 1.0).unsqueeze(-1)
    heights = (boxes[..., 3] - boxes[..., 1] + 1.0).unsqueeze(-1)
    center_x = boxes[..., 0].unsqueeze(-1) + 0.5 * widths
    center_y = boxes[..., 1].unsqueeze(-1) + 0.5 * heights
    pred_x = deltas[..., 0::4] * widths + center_x
    pred_y = deltas[..., 1::4] * heights + center_y
    pred_w = torch.exp(deltas[..., 2::4]) * widths
    pred_h = torch.exp(deltas[..., 3::4]) * heights
    decoded = torch.stack(
        [pred_x - 0.5 * pred_w, pred_y - 0.5 * pred_h, pred_x + 0.5 * pred_w,
         pred_y + 0.5 * pred_h], dim=-1)
    return decoded.flatten(-2)


def clip_boxes(boxes: torch.Tensor, height: float, width: float) -> torch.Tensor:
    """Clamp every ``x`` to ``[0, width-1]`` and ``y`` to ``[0, height-1]``; (..., 4k) boxes."""
    out = boxes.clone()
    out[..., 0::2] = out[..., 0::2].clamp(0, width - 1)
    out[..., 1::2] = out[..., 1::2].clamp(0, height - 1)
    return out


def enlarge_rois(rois: torch.Tensor, height: float, width: float) -> torch.Tensor:
    """The contact and offset heads' RoIs: each box grown by 30 % of its size per side.

    Reproduces the original exactly, quirks included: the size has no +1, and the far
    corner is clamped with the image's dimensions swapped (``x2`` by the *height*, ``y2``
    by the *width*), without the -1; a box can come out inverted (RoIAlign then treats it
    as one cell wide). The trained heads saw RoIs made this way.

    Args:
        rois: (R, 4) boxes in network-input pixels.
        height, width: the network input's size.

    Returns:
        (R, 4) enlarged boxes.
    """
    box_w = rois[:, 2] - rois[:, 0]
    box_h = rois[:, 3] - rois[:, 1]
    x1 = (rois[:, 0] - ENLARGE_RATIO * box_w).clamp(min=0)
    y1 = (rois[:, 1] - ENLARGE_RATIO * box_h).clamp(min=0)
    x2 = (rois[:, 2] + ENLARGE_RATIO * box_w).clamp(max=height)
    y2 = (rois[:, 3] + ENLARGE_RATIO * box_h).clamp(max=width)
    return torch.stack([x1, y1, x2, y2], dim=1)


def legacy_nms(boxes: torch.Tensor, scores: torch.Tensor, threshold: float) -> torch.Tensor:
    """Greedy NMS with +1 areas that suppresses at IoU >= ``threshold`` (float32 boxes).

    torchvision's kernel measures ``x2 - x1`` and suppresses at IoU > threshold: adding 1
    to the far corners gives the +1 extents, and the largest float32 below the threshold
    turns ``>`` into ``>=`` for float32 IoUs.

    Returns:
        int64 indices of the kept boxes, by decreasing score.
    """
    shifted = boxes.float().clone()
    shifted[:, 2:] += 1.0
    just_below = float(np.nextafter(np.float32(threshold), np.float32(-np.inf)))
    return nms(shifted, scores.float(), just_below)
