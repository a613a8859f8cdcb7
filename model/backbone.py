"""HFL-Net's split-stream ResNet-50 + FPN backbone.

One ResNet-50 (LeakyReLU instead of ReLU) whose stem and stage 1 are shared, whose stages
2 and 3 exist once per stream (hand ``_h``, object ``_o``), and whose stage 4 is the hand
stream's, applied to both streams. Each stream has its own FPN top-down path; both use the
shared stage-1 output as their finest lateral input. Only P2 (stride 4) is produced.

Submodule names follow the official checkpoint (``base_net.layer2_o.0.1.conv2`` ...).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# LeakyReLU's default slope; the backbone was trained with it in place of ReLU.
_SLOPE = 0.01
_EXPANSION = 4


class ResNetBottleneck(nn.Module):
    """Post-activation ResNet bottleneck (stride on the 3x3 conv), LeakyReLU.

    Maps ``(B, inplanes, H, W)`` to ``(B, 4*planes, H/stride, W/stride)``.
    """

    def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        out = planes * _EXPANSION
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.act = nn.LeakyReLU(_SLOPE)
        self.downsample: nn.Module | None = None
        if stride != 1 or inplanes != out:
            self.downsample = nn.Sequential(
                nn.Conv2d(inplanes, out, 1, stride=stride, bias=False), nn.BatchNorm2d(out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self.bn1(self.conv1(x)))
        y = self.act(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.act(y + shortcut)


def _stage(inplanes: int, planes: int, blocks: int, stride: int) -> nn.Sequential:
    """One ResNet stage, wrapped once more so keys read ``layerK.0.<block>...``."""
    layers = [ResNetBottleneck(inplanes, planes, stride)]
    layers += [ResNetBottleneck(planes * _EXPANSION, planes) for _ in range(blocks - 1)]
    return nn.Sequential(nn.Sequential(*layers))


class SplitStreamFPN(nn.Module):
    """Images ``(B, 3, H, W)`` -> hand and object P2 maps, each ``(B, 256, H/4, W/4)``.

    ``H`` and ``W`` must be multiples of 32.
    """

    def __init__(self, fpn_channels: int = 256) -> None:
        super().__init__()
        c = fpn_channels
        self.layer0_h = nn.Sequential(
            nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False),
            nn.BatchNorm2d(64),
            nn.LeakyReLU(_SLOPE),
            nn.MaxPool2d(3, stride=2, padding=1),
        )
        self.layer1_h = _stage(64, 64, 3, 1)
        self.layer2_h = _stage(256, 128, 4, 2)
        self.layer3_h = _stage(512, 256, 6, 2)
        self.layer4_h = _stage(1024, 512, 3, 2)
        self.layer2_o = _stage(256, 128, 4, 2)
        self.layer3_o = _stage(512, 256, 6, 2)
        for stream in ("h", "o"):
            setattr(self, f"toplayer_{stream}", nn.Conv2d(2048, c, 1))
            setattr(self, f"latlayer1_{stream}", nn.Conv2d(1024, c, 1))
            setattr(self, f"latlayer2_{stream}", nn.Conv2d(512, c, 1))
            setattr(self, f"latlayer3_{stream}", nn.Conv2d(256, c, 1))
            setattr(self, f"smooth3_{stream}", nn.Conv2d(c, c, 3, padding=1))

    def _top_down(self, stream: str, c2: torch.Tensor, c3: torch.Tensor, c4: torch.Tensor,
                  c5: torch.Tensor) -> torch.Tensor:
        p = getattr(self, f"toplayer_{stream}")(c5)
        for lateral, c in (("latlayer1", c4), ("latlayer2", c3), ("latlayer3", c2)):
            lat = getattr(self, f"{lateral}_{stream}")(c)
            p = F.interpolate(p, size=lat.shape[-2:], mode="bilinear", align_corners=False) + lat
        return getattr(self, f"smooth3_{stream}")(p)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        c2 = self.layer1_h(self.layer0_h(images))
        c3_h = self.layer2_h(c2)
        c3_o = self.layer2_o(c2)
        c4_h = self.layer3_h(c3_h)
        c4_o = self.layer3_o(c3_o)
        # Stage 4 is shared: one call over both streams keeps the GPU batch large.
        c5_h, c5_o = self.layer4_h(torch.cat((c4_h, c4_o))).chunk(2)
        p2_h = self._top_down("h", c2, c3_h, c4_h, c5_h)
        p2_o = self._top_down("o", c2, c3_o, c4_o, c5_o)
        return p2_h, p2_o
