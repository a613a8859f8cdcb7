"""The Caffe-style ResNet-101 of the 100DOH detector, cut at C4.

"Caffe-style" means two departures from torchvision's ResNet: a stage's stride sits on
the first 1x1 convolution of its first block (not on the 3x3), and the stem's max-pool
has no padding and rounds its output size up. The stem and stages 1-3 give the stride-16
feature map shared by the RPN and the RoI heads; stage 4 runs on each 7x7 RoI.

Submodule indices follow the official checkpoint (``RCNN_base.4.0.conv1`` is
``backbone[4][0].conv1`` here).
"""

from __future__ import annotations

import torch
from torch import nn

_EXPANSION = 4
#: Blocks per stage of ResNet-101.
_STAGE_BLOCKS = (3, 4, 23, 3)


class CaffeBottleneck(nn.Module):
    """Bottleneck with the stride on ``conv1``; ``(B, inplanes, H, W)`` to
    ``(B, 4*planes, ceil(H/stride), ceil(W/stride))``."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        out = planes * _EXPANSION
        self.conv1 = nn.Conv2d(inplanes, planes, 1, stride=stride, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1 or inplanes != out:
            self.downsample = nn.Sequential(
                nn.Conv2d(inplanes, out, 1, stride=stride, bias=False), nn.BatchNorm2d(out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(y + shortcut)


def _stage(inplanes: int, planes: int, blocks: int, stride: int) -> nn.Sequential:
    layers = [CaffeBottleneck(inplanes, planes, stride)]
    layers += [CaffeBottleneck(planes * _EXPANSION, planes) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


def resnet101_c4() -> tuple[nn.Sequential, nn.Sequential]:
    """The trunk and the RoI stage of a Caffe-style ResNet-101.

    Returns:
        ``(trunk, roi_stage)``: ``trunk`` maps BGR images ``(B, 3, H, W)`` to the stride-16
        map ``(B, 1024, Hf, Wf)``; ``roi_stage`` maps RoI features ``(R, 1024, 7, 7)`` to
        ``(R, 2048, 4, 4)``.
    """
    trunk = nn.Sequential(
        nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False),
        nn.BatchNorm2d(64),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(3, stride=2, padding=0, ceil_mode=True),
        _stage(64, 64, _STAGE_BLOCKS[0], 1),
        _stage(256, 128, _STAGE_BLOCKS[1], 2),
        _stage(512, 256, _STAGE_BLOCKS[2], 2),
    )
    roi_stage = _stage(1024, 512, _STAGE_BLOCKS[3], 2)
    return trunk, roi_stage
