"""6D -> rotation matrix -> axis-angle conversions of the MANO regressor."""

from __future__ import annotations

import math

import pytest
import torch

from hflpipe.model.mano import axis_angle_to_matrix
from hflpipe.model.rotations import (
    matrix_to_axis_angle,
    matrix_to_quaternion,
    quaternion_to_axis_angle,
    rot6d_to_matrix,
)


def _random_axis_angle(n: int, max_angle: float, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    axis = torch.nn.functional.normalize(torch.randn(n, 3, generator=gen, dtype=torch.float64),
                                         dim=1)
    angle = torch.rand(n, 1, generator=gen, dtype=torch.float64) * max_angle
    return axis * angle


def test_rot6d_gives_proper_rotations_with_gram_schmidt_columns() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 5, 6, generator=gen, dtype=torch.float64)
    r = rot6d_to_matrix(x)
    assert r.shape == (2, 5, 3, 3)
    eye = torch.eye(3, dtype=torch.float64).expand_as(r)
    torch.testing.assert_close(r.transpose(-1, -2) @ r, eye)
    torch.testing.assert_close(torch.linalg.det(r), torch.ones(2, 5, dtype=torch.float64))
    torch.testing.assert_close(r[..., 0], x[..., :3] / x[..., :3].norm(dim=-1, keepdim=True))
    # The second column lies in the plane of a1 and a2.
    normal = torch.linalg.cross(x[..., :3], x[..., 3:], dim=-1)
    assert (r[..., 1] * normal).sum(-1).abs().max() < 1e-12


@pytest.mark.parametrize(("max_angle", "seed"), [(1e-3, 1), (1.0, 2), (math.pi - 0.05, 3)])
def test_matrix_to_axis_angle_inverts_rodrigues(max_angle: float, seed: int) -> None:
    aa = _random_axis_angle(500, max_angle, seed)
    back = matrix_to_axis_angle(axis_angle_to_matrix(aa))
    torch.testing.assert_close(back, aa, atol=1e-7, rtol=0)


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_near_half_turns_take_every_branch(axis: int) -> None:
    # Angles close to pi make R[2,2] small or negative, which selects the x/y/z branches.
    aa = torch.zeros(3, 3, dtype=torch.float64)
    aa[:, axis] = torch.tensor([3.0, 3.1, -3.1], dtype=torch.float64)
    back = matrix_to_axis_angle(axis_angle_to_matrix(aa))
    torch.testing.assert_close(back, aa, atol=1e-6, rtol=0)


def test_identity_and_quaternion_sign() -> None:
    eye = torch.eye(3).expand(4, 3, 3)
    assert torch.equal(matrix_to_axis_angle(eye), torch.zeros(4, 3))
    q = torch.nn.functional.normalize(torch.tensor([[0.3, -0.5, 0.2, 0.7]]), dim=1)
    torch.testing.assert_close(quaternion_to_axis_angle(q), quaternion_to_axis_angle(-q))
    r = axis_angle_to_matrix(quaternion_to_axis_angle(q))
    q_back = matrix_to_quaternion(r)
    torch.testing.assert_close(q_back * q_back[:, :1].sign(), q * q[:, :1].sign())


@pytest.mark.parametrize(
    ("fn", "shape"),
    [(rot6d_to_matrix, (4, 9)), (matrix_to_quaternion, (4, 3, 4)),
     (quaternion_to_axis_angle, (4, 3)), (matrix_to_axis_angle, (4, 9))],
)
def test_wrong_shapes_are_refused(fn: object, shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match=r"shape|dimension"):
        fn(torch.zeros(shape))
