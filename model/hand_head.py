"""HFL-Net's hand decoder: heatmap head, hand encoder and MANO parameter regressor.

Data flow for a hand RoI feature ``(B, 256, 32, 32)``:
hourglass -> 21 heatmaps (spatial softmax) -> soft-argmax 2D joints; heatmaps + head
features -> encoder -> ``(B, 1024)`` -> MLP -> 16 joint rotations (6D) and 10 shape
coefficients. Submodule names follow the official checkpoint.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hflpipe.model.rotations import matrix_to_axis_angle, rot6d_to_matrix

_SLOPE = 0.01
NUM_MANO_JOINTS = 16
NUM_SHAPE_COEFFS = 10


def spatial_softmax(logits: torch.Tensor, temperature: torch.Tensor) -> torch.Tensor:
    """Heatmaps from per-joint logits.

    Args:
        logits: ``(B, J, H, W)``.
        temperature: ``(J, 1)``, multiplied into the logits of each joint.

    Returns:
        ``(B, J, H, W)``, each map summing to 1.
    """
    b, j, h, w = logits.shape
    return torch.softmax(logits.reshape(b, j, h * w) * temperature, dim=-1).reshape(b, j, h, w)


def soft_argmax(heatmaps: torch.Tensor, grid_u: torch.Tensor, grid_v: torch.Tensor) -> torch.Tensor:
    """Expected position of each heatmap.

    Args:
        heatmaps: ``(B, J, H, W)``, each summing to 1.
        grid_u, grid_v: ``(H, W)`` cell-centre coordinates (column and row).

    Returns:
        ``(B, J, 2)`` as ``(u, v)`` in the grids' units (here fractions of the RoI box).
    """
    u = (heatmaps * grid_u).sum(dim=(-2, -1))
    v = (heatmaps * grid_v).sum(dim=(-2, -1))
    return torch.stack((u, v), dim=-1)


def _preact(
    x: torch.Tensor, bns: tuple[nn.Module, ...], convs: tuple[nn.Module, ...]
) -> torch.Tensor:
    """BN -> LeakyReLU -> conv, repeated for each (bn, conv) pair."""
    for bn, conv in zip(bns, convs, strict=True):
        x = conv(F.leaky_relu(bn(x), _SLOPE))
    return x


class PreActBottleneck(nn.Module):
    """Pre-activation bottleneck of the hourglass: ``(B, C, H, W)`` -> same, C = 2*mid."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        mid = channels // 2
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv1 = nn.Conv2d(channels, mid, 1)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv2 = nn.Conv2d(mid, mid, 3, padding=1)
        self.bn3 = nn.BatchNorm2d(mid)
        self.conv3 = nn.Conv2d(mid, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + _preact(x, (self.bn1, self.bn2, self.bn3), (self.conv1, self.conv2, self.conv3))


class EncoderResidual(nn.Module):
    """The hand encoder's residual unit (same computation, the checkpoint's other naming)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        mid = channels // 2
        self.bn = nn.BatchNorm2d(channels)
        self.conv1 = nn.Conv2d(channels, mid, 1)
        self.bn1 = nn.BatchNorm2d(mid)
        self.conv2 = nn.Conv2d(mid, mid, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3 = nn.Conv2d(mid, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + _preact(x, (self.bn, self.bn1, self.bn2), (self.conv1, self.conv2, self.conv3))


class Hourglass(nn.Module):
    """Recursive hourglass of ``depth`` levels: ``(B, C, H, W)`` -> same shape.

    ``hg[level]`` holds the skip, down and up branches (and, at the innermost level, the
    bottom branch), each a one-block sequence. ``H`` and ``W`` must be divisible by
    ``2**depth``.
    """

    def __init__(self, channels: int, depth: int) -> None:
        super().__init__()
        self.depth = depth
        self.hg = nn.ModuleList(
            nn.ModuleList(
                nn.Sequential(PreActBottleneck(channels)) for _ in range(4 if level == 0 else 3)
            )
            for level in range(depth)
        )

    def _level(self, level: int, x: torch.Tensor) -> torch.Tensor:
        skip, down, up = self.hg[level][0], self.hg[level][1], self.hg[level][2]
        low = down(F.max_pool2d(x, 2, stride=2))
        low = self._level(level - 1, low) if level > 0 else self.hg[0][3](low)
        return skip(x) + F.interpolate(up(low), scale_factor=2, mode="nearest")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._level(self.depth - 1, x)


class ConvBnAct(nn.Module):
    """1x1 conv -> BN -> LeakyReLU, as ``block.0/1/2``."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.block = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 1), nn.BatchNorm2d(out_channels),
            nn.LeakyReLU(_SLOPE),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class HandHeatmapHead(nn.Module):
    """Hand RoI feature ``(B, C, R, R)`` -> heatmaps, features and 2D joints.

    One hourglass stack (the released model's configuration). Outputs:
    heatmaps ``(B, J, R, R)`` (each sums to 1, index ``[b, joint, row, col]``),
    features ``(B, C, R, R)`` for the encoder, joints ``(B, J, 2)`` as ``(u, v)`` fractions
    of the RoI box, cell ``(row i, col j)`` centred at ``((j+0.5)/R, (i+0.5)/R)``.
    """

    def __init__(self, channels: int = 256, num_joints: int = 21, roi_res: int = 32,
                 hourglass_depth: int = 4) -> None:
        super().__init__()
        self.betas = nn.Parameter(torch.ones(num_joints, 1))
        centres = (torch.arange(roi_res, dtype=torch.float32) + 0.5) / roi_res
        grid_v, grid_u = torch.meshgrid(centres, centres, indexing="ij")
        # Stored in the official checkpoint, hence persistent buffers.
        self.register_buffer("uu", grid_u.contiguous())
        self.register_buffer("vv", grid_v.contiguous())
        self.hg = nn.ModuleList([Hourglass(channels, hourglass_depth)])
        self.res = nn.ModuleList([nn.Sequential(PreActBottleneck(channels))])
        self.fc = nn.ModuleList([ConvBnAct(channels, channels)])
        self.score = nn.ModuleList([nn.Conv2d(channels, num_joints, 1)])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        features = self.fc[0](self.res[0](self.hg[0](x)))
        heatmaps = spatial_softmax(self.score[0](features), self.betas)
        return heatmaps, features, soft_argmax(heatmaps, self.uu, self.vv)


class HandEncoder(nn.Module):
    """Heatmaps ``(B, J, R, R)`` + features ``(B, C, R, R)`` -> ``(B, C*(R/16)**2)``.

    Four levels of two residual units, each followed by 2x2 max pooling; the result is
    flattened channel-major (``(B, 1024)`` for C=256, R=32).
    """

    def __init__(self, num_joints: int = 21, channels: int = 256, num_levels: int = 4,
                 units_per_level: int = 2) -> None:
        super().__init__()
        self.units_per_level = units_per_level
        self.heatmap_conv = nn.Conv2d(num_joints, channels, 1)
        self.encoding_conv = nn.Conv2d(channels, channels, 1)
        self.reg = nn.ModuleList(
            EncoderResidual(channels) for _ in range(num_levels * units_per_level)
        )

    def forward(self, heatmaps: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        x = self.heatmap_conv(heatmaps) + self.encoding_conv(features)
        for i, unit in enumerate(self.reg):
            x = unit(x)
            if (i + 1) % self.units_per_level == 0:
                x = F.max_pool2d(x, 2, stride=2)
        return x.flatten(1)


class ManoRegressor(nn.Module):
    """Hand encoding ``(B, F)`` -> MANO pose, shape and the posed hand.

    Returns a dict: ``mano_pose_6d (B, 96)`` (16 x (a1, a2)), ``mano_pose_rotmat
    (B, 16, 3, 3)``, ``mano_pose_aa (B, 48)`` (radians; global rotation then 15 joints,
    the full pose of a flat-hand-mean, non-PCA hand layer), ``mano_shape (B, 10)``, and
    from ``mano_layer`` (:class:`hflpipe.model.mano.ManoLayer`) ``verts3d (B, 778, 3)`` and
    ``joints3d (B, 21, 3)``, metres, relative to the wrist.
    """

    def __init__(self, mano_layer: nn.Module, feature_size: int = 1024,
                 hidden: tuple[int, ...] = (1024, 512)) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for n_in, n_out in zip((feature_size, *hidden[:-1]), hidden, strict=True):
            layers += [nn.Linear(n_in, n_out), nn.LeakyReLU(_SLOPE)]
        self.mano_base_layer = nn.Sequential(*layers)
        self.pose_reg = nn.Linear(hidden[-1], NUM_MANO_JOINTS * 6)
        self.shape_reg = nn.Linear(hidden[-1], NUM_SHAPE_COEFFS)
        self.mano_layer = mano_layer

    def forward(self, encoding: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.mano_base_layer(encoding)
        pose_6d = self.pose_reg(features).float()
        shape = self.shape_reg(features).float()
        # The geometry runs in float32 even under autocast: half-precision rotations and
        # skinning would cost millimetres on the mesh.
        with torch.autocast(pose_6d.device.type, enabled=False):
            rotmat = rot6d_to_matrix(pose_6d.reshape(-1, NUM_MANO_JOINTS, 6))
            pose_aa = matrix_to_axis_angle(rotmat).flatten(1)
            verts, joints = self.mano_layer(pose_aa, shape)
        return {
            "mano_pose_6d": pose_6d,
            "mano_pose_rotmat": rotmat,
            "mano_pose_aa": pose_aa,
            "mano_shape": shape,
            "verts3d": verts,
            "joints3d": joints,
        }
