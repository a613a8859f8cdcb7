"""The MANO hand layer in the configuration HFL-Net uses.

Right hand, full 45-dimensional finger pose (no PCA), flat hand mean: a pose
of zeros is the flat template hand. Outputs match manopth's ``ManoLayer`` built
with ``use_pca=False, flat_hand_mean=True, side="right"``, except that they are
in metres (manopth returns millimetres, which HFL-Net divides by 1000).

Architecture only: the model arrays arrive as a :class:`ManoModel` (see
:mod:`hflpipe.model.mano_file`) or through ``load_state_dict`` from a checkpoint.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor, nn

if TYPE_CHECKING:
    from hflpipe.model.mano_file import ManoModel

NUM_VERTS = 778
NUM_FACES = 1538
NUM_JOINTS = 16
NUM_BETAS = 10
NUM_POSE = 3 * NUM_JOINTS

# Parent of each of the 16 MANO joints (-1: the wrist is the root). MANO's
# order is wrist, index 1-3, middle 4-6, little 7-9, ring 10-12, thumb 13-15.
MANO_PARENTS = (-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 0, 10, 11, 0, 13, 14)

# Mesh vertices used as fingertips (thumb, index, middle, ring, little) of the
# right-hand mesh, as in manopth and HFL-Net.
TIP_VERTICES = (745, 317, 444, 556, 673)

# Output joint order: wrist, then thumb, index, middle, ring, little, four
# points each from base to tip. Indices 0-15 are MANO joints, 16-20 the tips.
OUTPUT_JOINT_ORDER = (0, 13, 14, 15, 16, 1, 2, 3, 17, 4, 5, 6, 18, 10, 11, 12, 19, 7, 8, 9, 20)

# manopth's Rodrigues adds this to every axis-angle component before taking
# the norm, which keeps a zero rotation finite; the same offset keeps small
# rotations numerically identical to the reference.
_AXIS_ANGLE_EPS = 1e-8


def axis_angle_to_matrix(axis_angle: Tensor) -> Tensor:
    """Rotation matrices from axis-angle vectors, the way manopth computes them.

    Args:
        axis_angle: ``(N, 3)`` rotation vectors (axis times angle in radians).

    Returns:
        ``(N, 3, 3)`` rotation matrices.
    """
    angle = torch.linalg.vector_norm(axis_angle + _AXIS_ANGLE_EPS, dim=1, keepdim=True)
    half = 0.5 * angle
    quat = torch.cat([torch.cos(half), torch.sin(half) * (axis_angle / angle)], dim=1)
    # The axis was divided by a slightly perturbed norm, so renormalise.
    quat = quat / torch.linalg.vector_norm(quat, dim=1, keepdim=True)
    w, x, y, z = quat.unbind(dim=1)
    rows = [
        w * w + x * x - y * y - z * z,
        2 * (x * y - w * z),
        2 * (w * y + x * z),
        2 * (w * z + x * y),
        w * w - x * x + y * y - z * z,
        2 * (y * z - w * x),
        2 * (x * z - w * y),
        2 * (w * x + y * z),
        w * w - x * x - y * y + z * z,
    ]
    return torch.stack(rows, dim=1).view(-1, 3, 3)


def _joint_levels(parents: tuple[int, ...]) -> list[list[int]]:
    """Group non-root joints by depth in the tree so each depth is one batched matmul."""
    depth = [0] * len(parents)
    for joint, parent in enumerate(parents):
        if parent >= 0:
            depth[joint] = depth[parent] + 1
    return [
        [joint for joint in range(len(parents)) if depth[joint] == level]
        for level in range(1, max(depth) + 1)
    ]


class ManoLayer(nn.Module):
    """MANO right hand: pose and shape to mesh vertices and 21 joints, in metres.

    The buffers carry the names and float32 values of manopth's layer, so the
    ``...mano_layer.th_*`` entries of an HFL-Net checkpoint load with strict key
    matching.

    Args:
        model: the hand model arrays; ``None`` leaves zero buffers of the
            standard shapes, to be filled by ``load_state_dict``.
    """

    def __init__(self, model: ManoModel | None = None) -> None:
        super().__init__()
        # Registration order follows manopth, which fixes the checkpoint's key order.
        self.register_buffer("th_betas", torch.zeros(1, NUM_BETAS))
        self.register_buffer("th_shapedirs", torch.zeros(NUM_VERTS, 3, NUM_BETAS))
        self.register_buffer("th_posedirs", torch.zeros(NUM_VERTS, 3, 9 * (NUM_JOINTS - 1)))
        self.register_buffer("th_v_template", torch.zeros(1, NUM_VERTS, 3))
        self.register_buffer("th_J_regressor", torch.zeros(NUM_JOINTS, NUM_VERTS))
        self.register_buffer("th_weights", torch.zeros(NUM_VERTS, NUM_JOINTS))
        self.register_buffer("th_faces", torch.zeros(NUM_FACES, 3, dtype=torch.int64))
        # Flat hand mean: the file's mean pose is deliberately not used.
        self.register_buffer("th_hands_mean", torch.zeros(1, NUM_POSE - 3))
        # PCA basis, unused with the full pose but part of the checkpoint.
        self.register_buffer("th_selected_comps", torch.zeros(NUM_POSE - 3, NUM_POSE - 3))
        self._levels = _joint_levels(MANO_PARENTS)
        if model is not None:
            self._fill_from(model)

    def _fill_from(self, model: ManoModel) -> None:
        def f32(array: np.ndarray) -> Tensor:
            # Checkpoint buffers are the float32 rounding of the file's float64
            # arrays; the copy is needed because the model's arrays are read-only.
            return torch.from_numpy(np.array(array, dtype=np.float32))

        with torch.no_grad():
            self.th_shapedirs.copy_(f32(model.shapedirs))
            self.th_posedirs.copy_(f32(model.posedirs))
            self.th_v_template.copy_(f32(model.v_template).unsqueeze(0))
            self.th_J_regressor.copy_(f32(model.J_regressor))
            self.th_weights.copy_(f32(model.weights))
            self.th_faces.copy_(torch.from_numpy(np.array(model.faces, dtype=np.int64)))
            self.th_selected_comps.copy_(f32(model.hands_components[: NUM_POSE - 3]))

    def forward(
        self, pose_aa: Tensor, shape: Tensor | None = None, center_idx: int | None = 0
    ) -> tuple[Tensor, Tensor]:
        """Pose the hand.

        Args:
            pose_aa: ``(B, 48)`` axis-angle pose in radians: global rotation
                (3), then 15 finger joints x 3 in MANO joint order. Zeros give
                the flat hand.
            shape: ``(B, 10)`` shape coefficients; ``None`` uses the mean shape.
            center_idx: index into the 21 output joints whose position is
                subtracted from every output (0: the wrist, HFL-Net's choice);
                ``None`` keeps the model frame, whose origin is the model's own.

        Returns:
            ``verts`` ``(B, 778, 3)`` and ``joints`` ``(B, 21, 3)``, metres.
            Joint order: wrist, then thumb, index, middle, ring, little (base
            to tip); tips are vertices 745, 317, 444, 556, 673. The dtype is
            that of the buffers (float32 unless the layer was converted),
            also under autocast.
        """
        if pose_aa.ndim != 2 or pose_aa.shape[1] != NUM_POSE:
            raise ValueError(f"pose_aa must have shape (B, {NUM_POSE}), got {tuple(pose_aa.shape)}")
        batch = pose_aa.shape[0]
        if shape is None:
            shape = self.th_betas.expand(batch, NUM_BETAS)
        if shape.shape != (batch, NUM_BETAS):
            raise ValueError(
                f"shape must have shape ({batch}, {NUM_BETAS}), got {tuple(shape.shape)}"
            )
        if center_idx is not None and not -len(OUTPUT_JOINT_ORDER) <= center_idx < len(
            OUTPUT_JOINT_ORDER
        ):
            raise ValueError(f"center_idx must index the 21 output joints, got {center_idx}")
        # Half precision would cost ~1e-4 m here for no speed that matters, so the
        # layer always runs in its buffers' precision, even inside autocast.
        dtype = self.th_v_template.dtype
        with torch.autocast(device_type=pose_aa.device.type, enabled=False):
            return self._pose(pose_aa.to(dtype), shape.to(dtype), center_idx)

    def _pose(
        self, pose_aa: Tensor, shape: Tensor, center_idx: int | None
    ) -> tuple[Tensor, Tensor]:
        """:meth:`forward` after argument checks, in one precision."""
        batch = pose_aa.shape[0]
        full_pose = torch.cat([pose_aa[:, :3], pose_aa[:, 3:] + self.th_hands_mean], dim=1)
        rotations = axis_angle_to_matrix(full_pose.reshape(-1, 3)).view(batch, NUM_JOINTS, 3, 3)

        v_shaped = self.th_v_template + torch.einsum("vcs,bs->bvc", self.th_shapedirs, shape)
        rest_joints = torch.einsum("jv,bvc->bjc", self.th_J_regressor, v_shaped)
        identity = torch.eye(3, dtype=rotations.dtype, device=rotations.device)
        pose_feature = (rotations[:, 1:] - identity).reshape(batch, -1)
        v_posed = v_shaped + torch.einsum("vcp,bp->bvc", self.th_posedirs, pose_feature)

        world = self._world_transforms(rotations, rest_joints)
        # Skinning moves rest-pose points, so remove each joint's rest position first.
        moved_rest = torch.einsum("bjrc,bjc->bjr", world[..., :3, :3], rest_joints)
        skin = world.clone()
        skin[..., :3, 3] = world[..., :3, 3] - moved_rest
        blended = torch.einsum("vj,bjrc->bvrc", self.th_weights, skin)
        verts = torch.einsum("bvrc,bvc->bvr", blended[..., :3, :3], v_posed) + blended[..., :3, 3]

        joints = torch.cat([world[..., :3, 3], verts[:, list(TIP_VERTICES)]], dim=1)
        joints = joints[:, list(OUTPUT_JOINT_ORDER)]
        if center_idx is not None:
            center = joints[:, center_idx].unsqueeze(1)
            joints = joints - center
            verts = verts - center
        return verts, joints

    def _world_transforms(self, rotations: Tensor, rest_joints: Tensor) -> Tensor:
        """Chain joint rotations down the hand tree.

        Args:
            rotations: ``(B, 16, 3, 3)`` local joint rotations.
            rest_joints: ``(B, 16, 3)`` joint positions of the shaped rest hand.

        Returns:
            ``(B, 16, 4, 4)`` world transforms; the translation column is each
            joint's posed position.
        """
        batch = rotations.shape[0]
        offsets = rest_joints.clone()
        offsets[:, 1:] = rest_joints[:, 1:] - rest_joints[:, list(MANO_PARENTS[1:])]
        local = rotations.new_zeros(batch, NUM_JOINTS, 4, 4)
        local[..., :3, :3] = rotations
        local[..., :3, 3] = offsets
        local[..., 3, 3] = 1.0
        world = local.clone()
        for level in self._levels:
            level_parents = [MANO_PARENTS[joint] for joint in level]
            world[:, level] = world[:, level_parents] @ local[:, level]
        return world
