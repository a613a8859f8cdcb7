"""Rotation conversions used by HFL-Net's MANO regressor (torch, batched, differentiable).

The chain is 6D -> rotation matrix -> quaternion -> axis-angle. The matrix-to-quaternion
step picks its branch with the same comparisons as the reference implementation, so that
results agree with it to float rounding even for rotations near the branch boundaries.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def rot6d_to_matrix(x: torch.Tensor) -> torch.Tensor:
    """Rotation matrices from the 6D representation (Zhou et al., CVPR 2019).

    Args:
        x: ``(..., 6)``: two 3-vectors ``(a1, a2)``.

    Returns:
        ``(..., 3, 3)``: columns ``b1 = a1/|a1|``, ``b2`` = ``a2`` made orthogonal to ``b1``
        and normalised (Gram-Schmidt), ``b3 = b1 x b2``.
    """
    if x.shape[-1] != 6:
        raise ValueError(f"6D rotations need a last dimension of 6, got shape {tuple(x.shape)}")
    a1, a2 = x[..., :3], x[..., 3:]
    b1 = F.normalize(a1, dim=-1)
    b2 = F.normalize(a2 - (b1 * a2).sum(dim=-1, keepdim=True) * b1, dim=-1)
    b3 = torch.linalg.cross(b1, b2, dim=-1)
    return torch.stack((b1, b2, b3), dim=-1)


def matrix_to_quaternion(rotmat: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Unit quaternions ``(w, x, y, z)`` from rotation matrices.

    Args:
        rotmat: ``(..., 3, 3)`` rotation matrices.
        eps: threshold on ``R[2, 2]`` that selects between the x/y-dominant and the
            z/w-dominant formulas.

    Returns:
        ``(..., 4)``; the sign convention is the branch's (not forced to ``w >= 0``).
    """
    if rotmat.shape[-2:] != (3, 3):
        raise ValueError(f"rotation matrices need shape (..., 3, 3), got {tuple(rotmat.shape)}")
    r = rotmat
    r00, r01, r02 = r[..., 0, 0], r[..., 0, 1], r[..., 0, 2]
    r10, r11, r12 = r[..., 1, 0], r[..., 1, 1], r[..., 1, 2]
    r20, r21, r22 = r[..., 2, 0], r[..., 2, 1], r[..., 2, 2]

    # Each branch divides by the square root of its largest-magnitude term, which keeps
    # the division well conditioned; the branch is chosen from the diagonal.
    t_x = 1 + r00 - r11 - r22
    t_y = 1 - r00 + r11 - r22
    t_z = 1 - r00 - r11 + r22
    t_w = 1 + r00 + r11 + r22
    q_x = torch.stack((r21 - r12, t_x, r10 + r01, r02 + r20), dim=-1)
    q_y = torch.stack((r02 - r20, r10 + r01, t_y, r21 + r12), dim=-1)
    q_z = torch.stack((r10 - r01, r02 + r20, r21 + r12, t_z), dim=-1)
    q_w = torch.stack((t_w, r21 - r12, r02 - r20, r10 - r01), dim=-1)

    z_small = r22 < eps
    use_x = z_small & (r00 > r11)
    use_y = z_small & ~(r00 > r11)
    use_z = ~z_small & (r00 < -r11)
    q = torch.where(use_x[..., None], q_x, torch.where(use_y[..., None], q_y,
                    torch.where(use_z[..., None], q_z, q_w)))
    t = torch.where(use_x, t_x, torch.where(use_y, t_y, torch.where(use_z, t_z, t_w)))
    return q / torch.sqrt(t)[..., None] * 0.5


def quaternion_to_axis_angle(quat: torch.Tensor) -> torch.Tensor:
    """Axis-angle vectors from quaternions ``(w, x, y, z)``.

    Args:
        quat: ``(..., 4)`` unit quaternions.

    Returns:
        ``(..., 3)``: axis times angle in radians, angle in ``[0, pi]``; the identity gives 0.
    """
    if quat.shape[-1] != 4:
        raise ValueError(f"quaternions need a last dimension of 4, got shape {tuple(quat.shape)}")
    xyz = quat[..., 1:]
    cos_half = quat[..., 0]
    sin_sq = (xyz * xyz).sum(dim=-1)
    sin_half = torch.sqrt(sin_sq)
    # q and -q are the same rotation: flip to w >= 0 so the angle stays within [0, pi].
    angle = 2.0 * torch.where(
        cos_half < 0.0,
        torch.atan2(-sin_half, -cos_half),
        torch.atan2(sin_half, cos_half),
    )
    # Near the identity angle/sin(angle/2) -> 2; the guard avoids 0/0.
    scale = torch.where(sin_sq > 0.0, angle / sin_half, torch.full_like(sin_half, 2.0))
    return xyz * scale[..., None]


def matrix_to_axis_angle(rotmat: torch.Tensor) -> torch.Tensor:
    """Axis-angle vectors from rotation matrices.

    Args:
        rotmat: ``(..., 3, 3)`` rotation matrices.

    Returns:
        ``(..., 3)`` axis-angle, radians. Entries that come out undefined (a degenerate
        matrix) are set to 0, as the reference does.
    """
    aa = quaternion_to_axis_angle(matrix_to_quaternion(rotmat))
    return torch.where(torch.isnan(aa), torch.zeros_like(aa), aa)
