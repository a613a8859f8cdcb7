"""torchvision's RoIAlign and non-maximum suppression, with torchvision imported on first use.

Importing torchvision costs a process about two seconds of CPU, most of it
``torch._dynamo``, which its ``ops`` import. Many processes import the network modules
without running a network: a video task reads the hand layer from a checkpoint, a driver
prepares a run. Only the processes that run HFL-Net or the hand-object detector pay.
"""

from __future__ import annotations

import torch


def roi_align(features: torch.Tensor, rois: torch.Tensor, output_size: tuple[int, int],
              spatial_scale: float, sampling_ratio: int, aligned: bool) -> torch.Tensor:
    """``torchvision.ops.roi_align`` with ``rois`` as a ``(K, 5)`` tensor (batch index, box)."""
    from torchvision.ops import roi_align as torchvision_roi_align

    return torchvision_roi_align(features, rois, output_size, spatial_scale=spatial_scale,
                                 sampling_ratio=sampling_ratio, aligned=aligned)


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """``torchvision.ops.nms``: indices of the kept boxes, highest score first."""
    from torchvision.ops import nms as torchvision_nms

    return torchvision_nms(boxes, scores, iou_threshold)
