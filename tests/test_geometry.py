"""model.geometry: projection, mirroring and quaternions, against independent formulas."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from hflpipe.model.geometry import (
    mirror_boxes,
    mirror_mano_pose,
    mirror_points2d,
    mirror_points3d,
    project,
    quaternion_to_matrix,
    to_camera,
)

WIDTH = 640
# Principal point at the image centre: there mirroring the image mirrors the scene.
K = np.array([[600.0, 0, (WIDTH - 1) / 2], [0, 610.0, 240], [0, 0, 1]])


def test_project_matches_the_camera_matrix_and_keeps_leading_axes() -> None:
    rng = np.random.default_rng(0)
    points = np.c_[rng.uniform(-0.2, 0.2, (4, 5, 2)).reshape(20, 2), rng.uniform(0.3, 1, 20)]
    homogeneous = points @ K.T
    expected = homogeneous[:, :2] / homogeneous[:, 2:]
    np.testing.assert_allclose(project(points, K), expected, rtol=0, atol=1e-9)
    assert project(points.reshape(4, 5, 3), K).shape == (4, 5, 2)
    assert np.isfinite(project([0.1, 0.0, 0.0], K)).all()


def test_to_camera_takes_one_pose_or_a_sequence() -> None:
    rng = np.random.default_rng(1)
    R = Rotation.random(3, random_state=2).as_matrix()
    t = rng.normal(size=(3, 3))
    points = rng.normal(size=(7, 3))
    many = to_camera(points, R, t)
    assert many.shape == (3, 7, 3)
    for i in range(3):
        np.testing.assert_allclose(to_camera(points, R[i], t[i]), points @ R[i].T + t[i])
        np.testing.assert_allclose(many[i], points @ R[i].T + t[i])


def test_pixel_mirroring_uses_the_reference_convention() -> None:
    np.testing.assert_array_equal(mirror_boxes([10, 20, 30, 40], WIDTH), [609, 20, 629, 40])
    np.testing.assert_array_equal(mirror_points2d([[0.0, 5.0]], WIDTH), [[639.0, 5.0]])
    boxes = np.array([[[1.5, 2, 3, 4]], [[100, 5, 200, 6]]])
    np.testing.assert_array_equal(mirror_boxes(mirror_boxes(boxes, WIDTH), WIDTH), boxes)
    with pytest.raises(ValueError, match=r"\(\.\.\., 4\)"):
        mirror_boxes([1, 2, 3], WIDTH)
    with pytest.raises(ValueError, match=r"\(\.\.\., 2\)"):
        mirror_points2d([[1, 2, 3]], WIDTH)


def test_pixel_mirroring_keeps_float32_arithmetic() -> None:
    # The crop's nearest-neighbour sampling depends on the last bit, as in the reference.
    box = np.array([10.3, 20, 30.7, 40], np.float32)
    mirrored = mirror_boxes(box, WIDTH)
    assert mirrored.dtype == np.float32
    assert mirrored[0] == np.float32(WIDTH) - box[2] - np.float32(1)
    assert mirror_points2d(np.zeros((1, 2), np.float32), WIDTH).dtype == np.float32
    assert mirror_points2d([[1, 2]], WIDTH).dtype == np.float64


def test_mirrored_scene_projects_to_the_mirrored_image() -> None:
    points = np.array([[0.05, 0.02, 0.6], [-0.1, 0.04, 0.9]])
    np.testing.assert_allclose(project(mirror_points3d(points), K),
                               mirror_points2d(project(points, K), WIDTH), atol=1e-9)
    np.testing.assert_array_equal(mirror_points3d(mirror_points3d(points)), points)


def test_mano_pose_mirroring_is_rotation_conjugation() -> None:
    rng = np.random.default_rng(3)
    pose = rng.normal(0, 0.5, (4, 48))
    np.testing.assert_allclose(mirror_mano_pose(mirror_mano_pose(pose)), pose)
    M = np.diag([-1.0, 1.0, 1.0])
    for joint in range(16):
        R = Rotation.from_rotvec(pose[:, 3 * joint:3 * joint + 3]).as_matrix()
        expected = Rotation.from_matrix(M @ R @ M).as_rotvec()
        np.testing.assert_allclose(mirror_mano_pose(pose)[:, 3 * joint:3 * joint + 3],
                                   expected, atol=1e-9)


def test_quaternion_to_matrix_matches_scipy_for_any_norm() -> None:
    rotations = Rotation.random(6, random_state=4)
    xyzw = rotations.as_quat()
    wxyz = np.c_[xyzw[:, 3], xyzw[:, :3]] * np.linspace(0.5, 3.0, 6)[:, None]
    np.testing.assert_allclose(quaternion_to_matrix(wxyz), rotations.as_matrix(), atol=1e-12)
    assert quaternion_to_matrix(wxyz.reshape(2, 3, 4)).shape == (2, 3, 3, 3)
    np.testing.assert_allclose(quaternion_to_matrix(wxyz[0]), rotations.as_matrix()[0],
                               atol=1e-12)
