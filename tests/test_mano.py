"""The MANO layer against the reference outputs and against MANO's own definitions."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from hflpipe.model.mano import OUTPUT_JOINT_ORDER, TIP_VERTICES, ManoLayer
from hflpipe.model.mano_file import ManoModel, load_mano_model

CHECKPOINT_PREFIX = "honet.module.mano_branch.mano_layer."


@pytest.fixture(scope="module")
def mano_model(fixtures_dir: Path) -> ManoModel:
    return load_mano_model(fixtures_dir / "mano_synthetic_right.pkl")


@pytest.fixture(scope="module")
def layer(mano_model: ManoModel) -> ManoLayer:
    return ManoLayer(mano_model).eval()


@pytest.fixture(scope="module")
def expected(fixtures_dir: Path) -> dict[str, np.ndarray]:
    with np.load(fixtures_dir / "expected_a.npz") as archive:
        return {key: archive[key] for key in ("mano_pose_aa", "mano_shape", "joints3d", "verts3d")}


def _random_pose(batch: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    pose = torch.randn(batch, 48, generator=generator) * 0.6
    shape = torch.randn(batch, 10, generator=generator)
    return pose, shape


@pytest.mark.parametrize("filename", ["mano_synthetic_right.pkl", "mano_synthetic_right.npz"])
def test_matches_reference_outputs(
    fixtures_dir: Path, expected: dict[str, np.ndarray], filename: str
) -> None:
    layer = ManoLayer(load_mano_model(fixtures_dir / filename))
    with torch.no_grad():
        verts, joints = layer(
            torch.from_numpy(expected["mano_pose_aa"]), torch.from_numpy(expected["mano_shape"])
        )
    np.testing.assert_allclose(joints.numpy(), expected["joints3d"], rtol=0, atol=1e-5)
    np.testing.assert_allclose(verts.numpy(), expected["verts3d"], rtol=0, atol=1e-5)
    assert torch.all(joints[:, 0] == 0)


def test_batch_results_do_not_depend_on_the_other_samples(layer: ManoLayer) -> None:
    pose, shape = _random_pose(5, seed=0)
    with torch.no_grad():
        verts, joints = layer(pose, shape)
        for i in range(len(pose)):
            one_verts, one_joints = layer(pose[i : i + 1], shape[i : i + 1])
            torch.testing.assert_close(one_verts[0], verts[i], rtol=0, atol=1e-6)
            torch.testing.assert_close(one_joints[0], joints[i], rtol=0, atol=1e-6)


def test_zero_pose_gives_the_template(layer: ManoLayer, mano_model: ManoModel) -> None:
    with torch.no_grad():
        verts, joints = layer(torch.zeros(2, 48), torch.zeros(2, 10), center_idx=None)
    template_joints = mano_model.J_regressor @ mano_model.v_template
    skeleton = [OUTPUT_JOINT_ORDER.index(joint) for joint in range(16)]
    for sample in range(2):
        np.testing.assert_allclose(
            joints[sample, skeleton].numpy(), template_joints, rtol=0, atol=1e-6
        )
        np.testing.assert_allclose(verts[sample].numpy(), mano_model.v_template, rtol=0, atol=1e-6)


def test_fingertips_are_the_tip_vertices(layer: ManoLayer) -> None:
    pose, shape = _random_pose(3, seed=1)
    with torch.no_grad():
        verts, joints = layer(pose, shape)
    tips = [OUTPUT_JOINT_ORDER.index(16 + finger) for finger in range(5)]
    assert tips == [4, 8, 12, 16, 20]
    torch.testing.assert_close(joints[:, tips], verts[:, list(TIP_VERTICES)], rtol=0, atol=0)


def test_global_rotation_turns_the_whole_hand_about_the_wrist(layer: ManoLayer) -> None:
    pose, shape = _random_pose(2, seed=2)
    pose[:, :3] = 0
    turned = pose.clone()
    rotvec = np.array([[0.3, -1.2, 0.7], [2.5, 0.1, -0.4]])
    turned[:, :3] = torch.from_numpy(rotvec).float()
    with torch.no_grad():
        verts, joints = layer(pose, shape)
        turned_verts, turned_joints = layer(turned, shape)
    matrices = torch.from_numpy(Rotation.from_rotvec(rotvec).as_matrix()).float()
    torch.testing.assert_close(turned_joints, joints @ matrices.transpose(1, 2), atol=1e-6, rtol=0)
    torch.testing.assert_close(turned_verts, verts @ matrices.transpose(1, 2), atol=1e-6, rtol=0)


def test_centring_subtracts_the_chosen_joint(layer: ManoLayer) -> None:
    pose, shape = _random_pose(2, seed=3)
    with torch.no_grad():
        raw_verts, raw_joints = layer(pose, shape, center_idx=None)
        verts, joints = layer(pose, shape, center_idx=9)
    offset = raw_joints[:, 9:10]
    torch.testing.assert_close(joints, raw_joints - offset, rtol=0, atol=0)
    torch.testing.assert_close(verts, raw_verts - offset, rtol=0, atol=0)


def test_no_shape_means_the_mean_shape(layer: ManoLayer) -> None:
    pose, _ = _random_pose(2, seed=4)
    with torch.no_grad():
        default = layer(pose)
        zeros = layer(pose, torch.zeros(2, 10))
    torch.testing.assert_close(default, zeros, rtol=0, atol=0)


def test_buffers_follow_the_checkpoint_manifest(fixtures_dir: Path, layer: ManoLayer) -> None:
    manifest = json.loads((fixtures_dir / "checkpoint_manifest.json").read_text())
    entries = [e for e in manifest["keys"] if e["name"].startswith(CHECKPOINT_PREFIX)]
    state = layer.state_dict()
    assert list(state) == [e["name"].removeprefix(CHECKPOINT_PREFIX) for e in entries]
    with np.load(fixtures_dir / "mano_synthetic_right.npz") as npz:
        for entry in entries:
            tensor = state[entry["name"].removeprefix(CHECKPOINT_PREFIX)]
            assert list(tensor.shape) == entry["shape"], entry["name"]
            assert str(tensor.dtype).removeprefix("torch.") == entry["dtype"], entry["name"]
            if entry["npz_key"] == "-":
                expected = np.zeros(entry["shape"])
            elif entry["npz_key"] == "hands_components":
                expected = npz["hands_components"][: entry["shape"][0]]
            else:
                expected = npz[entry["npz_key"]].reshape(entry["shape"])
            # Bit-equal: the official checkpoint's buffers are float32 roundings of the file.
            assert np.array_equal(tensor.numpy(), expected.astype(tensor.numpy().dtype))


def test_empty_layer_takes_its_buffers_from_a_state_dict(layer: ManoLayer) -> None:
    empty = ManoLayer()
    assert all(torch.count_nonzero(buffer) == 0 for buffer in empty.buffers())
    empty.load_state_dict(layer.state_dict(), strict=True)
    pose, shape = _random_pose(2, seed=5)
    with torch.no_grad():
        torch.testing.assert_close(empty(pose, shape), layer(pose, shape), rtol=0, atol=0)


@pytest.mark.parametrize(
    ("pose_shape", "shape_shape", "center_idx"),
    [((2, 45), (2, 10), 0), ((2, 48), (3, 10), 0), ((2, 48), (2, 16), 0), ((2, 48), (2, 10), 21)],
)
def test_bad_arguments_are_refused(
    layer: ManoLayer,
    pose_shape: tuple[int, int],
    shape_shape: tuple[int, int],
    center_idx: int,
) -> None:
    with pytest.raises(ValueError, match=r"pose_aa|shape|center_idx"):
        layer(torch.zeros(pose_shape), torch.zeros(shape_shape), center_idx=center_idx)


def test_autocast_does_not_lower_the_precision(layer: ManoLayer) -> None:
    pose, shape = _random_pose(2, seed=6)
    pose, shape = pose.bfloat16(), shape.bfloat16()
    with torch.no_grad():
        reference = layer(pose.float(), shape.float())
        with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
            autocast = layer(pose, shape)
    assert all(t.dtype == torch.float32 for t in autocast)
    torch.testing.assert_close(autocast, reference, rtol=0, atol=1e-6)


def test_float64_layer_agrees_with_float32(layer: ManoLayer, mano_model: ManoModel) -> None:
    pose, shape = _random_pose(2, seed=7)
    double = ManoLayer(mano_model).double()
    with torch.no_grad():
        verts64, joints64 = double(pose, shape)
        verts32, joints32 = layer(pose, shape)
    assert verts64.dtype == joints64.dtype == torch.float64
    torch.testing.assert_close(verts32.double(), verts64, rtol=0, atol=1e-6)
    torch.testing.assert_close(joints32.double(), joints64, rtol=0, atol=1e-6)


@pytest.mark.needs_cuda
def test_cuda_matches_cpu(layer: ManoLayer, mano_model: ManoModel) -> None:
    pose, shape = _random_pose(4, seed=8)
    gpu_layer = ManoLayer(mano_model).cuda()
    tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        with torch.no_grad():
            gpu = gpu_layer(pose.cuda(), shape.cuda())
            cpu = layer(pose, shape)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.testing.assert_close([t.cpu() for t in gpu], list(cpu), rtol=0, atol=1e-5)
