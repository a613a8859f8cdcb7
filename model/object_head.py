"""HFL-Net's object decoder: a grid of 2D votes for the object's 21 control points.

The head maps the object RoI feature ``(B, 256, S, S)`` to ``(B, 3K, S, S)``: per cell and
control point ``k`` a confidence logit (channel ``k``) and an x / y offset (channels
``K + k`` / ``2K + k``). :func:`decode_votes` turns that into positions and confidences.
"""

from __future__ import annotations

import torch
from torch import nn

NUM_CONTROL_POINTS = 21
# Offsets are regressed in units of a tenth of the box size.
OFFSET_SCALE = 10.0
_SLOPE = 0.1


class ObjectVoteHead(nn.Module):
    """Object RoI feature ``(B, C, S, S)`` -> raw vote grid ``(B, 3K, S, S)``.

    Three (1x1 conv -> BN -> LeakyReLU(0.1) -> 3x3 conv -> BN -> LeakyReLU(0.1)) stages,
    then a 1x1 output conv.
    """

    def __init__(self, channels: int = 256, num_points: int = NUM_CONTROL_POINTS) -> None:
        super().__init__()
        inner = channels // 2
        for stage in (1, 2, 3):
            setattr(self, f"conv{stage}_1", nn.Conv2d(channels, inner, 1))
            setattr(self, f"bn{stage}_1", nn.BatchNorm2d(inner))
            setattr(self, f"conv{stage}_2", nn.Conv2d(inner, channels, 3, padding=1))
            setattr(self, f"bn{stage}_2", nn.BatchNorm2d(channels))
        self.out_conv = nn.Conv2d(channels, 3 * num_points, 1)
        self.act = nn.LeakyReLU(_SLOPE)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for stage in (1, 2, 3):
            for part in (1, 2):
                conv = getattr(self, f"conv{stage}_{part}")
                bn = getattr(self, f"bn{stage}_{part}")
                x = self.act(bn(conv(x)))
        return self.out_conv(x)


def decode_votes(raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Vote positions and confidences from the raw head output.

    Args:
        raw: ``(B, 3K, S, S)``: K confidence logits, then K x offsets, then K y offsets.

    Returns:
        ``pred_x``, ``pred_y``, ``conf``, each ``(B, S, S, K)`` indexed ``[b, row, col, k]``:
        positions as fractions of the object box, ``x = offset/10 + (col + 0.5)/S`` (``y``
        likewise with the row), and the sigmoid of the logits.
    """
    if raw.ndim != 4 or raw.shape[1] % 3:
        raise ValueError(f"vote grid must have shape (B, 3K, S, S), got {tuple(raw.shape)}")
    b, c, h, w = raw.shape
    grid = raw.permute(0, 2, 3, 1).reshape(b, h, w, 3, c // 3)
    logits, off_x, off_y = grid.unbind(dim=3)
    # Cell centres are scaled into offset units first so the rounding matches the reference.
    cols = (torch.arange(w, dtype=raw.dtype, device=raw.device) + 0.5) / w * OFFSET_SCALE
    rows = (torch.arange(h, dtype=raw.dtype, device=raw.device) + 0.5) / h * OFFSET_SCALE
    pred_x = (off_x + cols[None, None, :, None]) / OFFSET_SCALE
    pred_y = (off_y + rows[None, :, None, None]) / OFFSET_SCALE
    return pred_x, pred_y, torch.sigmoid(logits)
