"""Object-pose decoding (vote selection + EPnP RANSAC) against the reference."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from hflpipe.model.control_points import load_control_points
from hflpipe.model.crop import crop_hand_object, frame_to_crop
from hflpipe.model.geometry import mirror_points2d
from hflpipe.model.object_pose import (
    decode_object_pose,
    gather_cells,
    reprojection_error,
    select_vote_candidates,
    solve_object_pose,
)


@pytest.fixture(scope="module")
def pnp_cases(fixtures_dir):
    return dict(np.load(fixtures_dir / "pnp_cases_a.npz"))


def _decode_case(cases, i, **overrides):
    kwargs = {
        "affine": cases["affinetrans"][i] if cases["use_affinetrans"][i] else None,
        "mirror_width": int(cases["image_size_wh"][0]) if cases["hand_is_left"][i] else None,
    }
    kwargs.update(overrides)
    return decode_object_pose(cases["conf"][i], cases["pred_x"][i], cases["pred_y"][i],
                              cases["bbox_obj"][i], cases["K"][i], cases["bbox3d"][i], **kwargs)


def test_decoding_matches_reference(pnp_cases):
    offsets = pnp_cases["cand_offsets"]
    for i in range(len(pnp_cases["conf"])):
        conf_before = pnp_cases["conf"][i].copy()
        pose = _decode_case(pnp_cases, i)
        rows = slice(offsets[i], offsets[i + 1])
        assert pose.num_points == pnp_cases["num_points"][i]
        assert pose.fallback == pnp_cases["fallback"][i]
        np.testing.assert_allclose(pose.points2d, pnp_cases["p2d_ref"][rows], atol=1e-3)
        np.testing.assert_allclose(pose.R, pnp_cases["rt_ref"][i][:, :3], atol=1e-4)
        np.testing.assert_allclose(pose.t, pnp_cases["rt_ref"][i][:, 3], atol=1e-4)
        np.testing.assert_array_equal(pose.keypoint_index, pnp_cases["cand_keypoint"][rows])
        np.testing.assert_array_equal(pose.points3d,
                                      pnp_cases["bbox3d"][i][pnp_cases["cand_keypoint"][rows]])
        assert pose.num_inliers == pnp_cases["ransac_inliers"][i]
        np.testing.assert_array_equal(pnp_cases["conf"][i], conf_before)
        if pose.fallback:
            assert np.isnan(pose.reprojection_error)
        else:
            assert 0 < pose.reprojection_error < 1.0


def test_control_points_of_fixture_objects_match_catalogue(pnp_cases):
    for name, points in zip(pnp_cases["obj_name"], pnp_cases["bbox3d"], strict=True):
        np.testing.assert_array_equal(load_control_points(str(name)), points)


def _reference_selection(conf, rounds=10, threshold=0.5):
    """Per-sample loop of the reference decoder: (H, W, K) grid -> (rounds, K) cells, valid."""
    scores = conf.reshape(-1, conf.shape[-1]).copy()
    cells, valid = [], []
    for _ in range(min(rounds, len(scores))):
        best = scores.argmax(axis=0)
        picked = scores[best, np.arange(scores.shape[1])]
        cells.append(best)
        valid.append(picked > threshold)
        scores[best, np.arange(scores.shape[1])] = 0
    return np.stack(cells), np.stack(valid)


def _check_batched_selection(conf, pred_x, pred_y, **kwargs):
    cand = select_vote_candidates(torch.from_numpy(conf), torch.from_numpy(pred_x),
                                  torch.from_numpy(pred_y), **kwargs)
    channels_first = select_vote_candidates(torch.from_numpy(conf).permute(0, 3, 1, 2),
                                            **kwargs)
    for b in range(conf.shape[0]):
        cells, valid = _reference_selection(conf[b], **kwargs)
        valid_cells = np.where(valid, cells, -1)
        np.testing.assert_array_equal(np.where(cand.valid[b], cand.cell[b], -1), valid_cells)
        np.testing.assert_array_equal(cand.valid[b].numpy(), valid)
        np.testing.assert_array_equal(channels_first.cell[b].numpy(), cand.cell[b].numpy())
        rows, cols = np.divmod(cells, conf.shape[2])
        keypoints = np.arange(conf.shape[3])
        np.testing.assert_array_equal(cand.positions[b, ..., 0].numpy(),
                                      pred_x[b][rows, cols, keypoints])
        np.testing.assert_array_equal(cand.positions[b, ..., 1].numpy(),
                                      pred_y[b][rows, cols, keypoints])
    return cand


def test_batched_selection_equals_reference_on_fixture(pnp_cases):
    conf = pnp_cases["conf"]
    cand = _check_batched_selection(conf, pnp_cases["pred_x"], pnp_cases["pred_y"])
    # Candidate order: round by round, control points in order within a round.
    offsets = pnp_cases["cand_offsets"]
    for b in range(len(conf)):
        rounds, keypoints = np.nonzero(cand.valid[b].numpy())
        rows = slice(offsets[b], offsets[b + 1])
        np.testing.assert_array_equal(rounds, pnp_cases["cand_round"][rows])
        np.testing.assert_array_equal(keypoints, pnp_cases["cand_keypoint"][rows])
        np.testing.assert_array_equal(cand.cell[b].numpy()[rounds, keypoints],
                                      pnp_cases["cand_cell"][rows])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_batched_selection_equals_reference_with_ties(seed):
    rng = np.random.default_rng(seed)
    # Few distinct levels (0.5 among them) make ties and threshold hits common.
    conf = (rng.integers(0, 5, size=(6, 32, 32, 21)) / 4).astype(np.float32)
    conf[0] = 0.75  # every cell tied
    conf[1, :, :, 3] = 0.5  # exactly at the threshold: never kept
    pred_x = rng.random((6, 32, 32, 21), dtype=np.float32)
    pred_y = rng.random((6, 32, 32, 21), dtype=np.float32)
    cand = _check_batched_selection(conf, pred_x, pred_y)
    np.testing.assert_array_equal(cand.cell[0, :, 0].numpy(), np.arange(10))
    assert not cand.valid[1, :, 3].any()
    _check_batched_selection(conf, pred_x, pred_y, rounds=3, threshold=0.3)


def test_selection_leaves_input_alone_and_gathers():
    conf = torch.rand(2, 21, 32, 32)
    before = conf.clone()
    cand = select_vote_candidates(conf)
    assert torch.equal(conf, before)
    assert cand.positions is None and cand.cell.shape == (2, 10, 21)
    np.testing.assert_array_equal(gather_cells(conf, cand.cell).numpy(),
                                  cand.confidence.numpy())


@pytest.mark.needs_cuda
def test_selection_on_cuda_equals_cpu():
    rng = np.random.default_rng(5)
    conf = torch.from_numpy((rng.integers(0, 5, size=(64, 32, 32, 21)) / 4).astype(np.float32))
    cpu = select_vote_candidates(conf)
    gpu = select_vote_candidates(conf.cuda())
    assert torch.equal(gpu.cell.cpu(), cpu.cell)
    assert torch.equal(gpu.valid.cpu(), cpu.valid)


def _synthetic_scene(left: bool):
    """Control points at a known pose seen in a 640x480 frame, cropped like the pipeline."""
    control = load_control_points("006_mustard_bottle")
    R = cv2.Rodrigues(np.array([0.3, -0.5, 0.2]))[0]
    t = np.array([0.04, -0.02, 0.6])
    K = np.array([[615.0, 0, 312.0], [0, 612.0, 241.0], [0, 0, 1]])
    uvw = (control @ R.T + t) @ K.T
    image_points = uvw[:, :2] / uvw[:, 2:]
    seen = mirror_points2d(image_points, 640) if left else image_points
    lo, hi = seen.min(0), seen.max(0)
    frame = np.zeros((480, 640, 3), np.uint8)
    box = np.concatenate([lo, hi])
    crop = crop_hand_object(frame, box - [40, 0, 40, 0], box)
    return control, R, t, K, frame_to_crop(seen, crop.affine), crop


@pytest.mark.parametrize("left", [False, True])
def test_solve_recovers_pose_through_crop_and_mirror(left):
    control, R, t, K, crop_points, crop = _synthetic_scene(left)
    candidates = np.stack([crop_points, crop_points + 0.2])  # two rounds
    valid = np.ones((2, 21), dtype=bool)
    pose = solve_object_pose(candidates, valid, K, control, affine=crop.affine,
                             mirror_width=640 if left else None)
    assert not pose.fallback and pose.num_points == 42
    np.testing.assert_allclose(pose.R, R, atol=1e-3)
    np.testing.assert_allclose(pose.t, t, atol=1e-3)
    assert pose.reprojection_error < 0.5


def test_solve_in_crop_pixels_with_crop_intrinsics():
    control, R, t, K, crop_points, crop = _synthetic_scene(False)
    k_crop = crop.affine.astype(np.float64) @ K
    pose = solve_object_pose(crop_points[None], np.ones((1, 21), bool), k_crop, control)
    np.testing.assert_allclose(pose.R, R, atol=1e-6)
    np.testing.assert_allclose(pose.t, t, atol=1e-6)
    assert pose.num_inliers == 21 and pose.reprojection_error < 1e-4


def test_too_few_candidates_give_default_pose():
    control, _, _, K, crop_points, _ = _synthetic_scene(False)
    valid = np.zeros((1, 21), dtype=bool)
    valid[0, :5] = True
    pose = solve_object_pose(crop_points[None], valid, K, control)
    assert pose.fallback and pose.num_points == 5 and pose.num_inliers == 0
    np.testing.assert_array_equal(pose.R, np.eye(3))
    np.testing.assert_array_equal(pose.t, [0, 0, 1])


def test_bad_arguments_raise(pnp_cases):
    with pytest.raises(TypeError, match="conf"):
        select_vote_candidates(np.zeros((1, 32, 32, 21)))
    with pytest.raises(ValueError, match="conf"):
        select_vote_candidates(torch.zeros(1, 32, 32, 20))
    with pytest.raises(ValueError, match="rounds"):
        select_vote_candidates(torch.zeros(1, 32, 32, 21), rounds=0)
    with pytest.raises(ValueError, match="pred_x"):
        select_vote_candidates(torch.zeros(1, 32, 32, 21), torch.zeros(1, 32, 32, 21))
    with pytest.raises(ValueError, match="pred_y"):
        decode_object_pose(
            pnp_cases["conf"][0], pnp_cases["pred_x"][0], pnp_cases["pred_y"][0][:5],
            pnp_cases["bbox_obj"][0], pnp_cases["K"][0], pnp_cases["bbox3d"][0])
    with pytest.raises(ValueError, match="control_points"):
        decode_object_pose(
            pnp_cases["conf"][0], pnp_cases["pred_x"][0], pnp_cases["pred_y"][0],
            pnp_cases["bbox_obj"][0], pnp_cases["K"][0], pnp_cases["bbox3d"][0][:8])
    with pytest.raises(ValueError, match="K"):
        decode_object_pose(
            pnp_cases["conf"][0], pnp_cases["pred_x"][0], pnp_cases["pred_y"][0],
            pnp_cases["bbox_obj"][0], np.eye(4), pnp_cases["bbox3d"][0])
    with pytest.raises(ValueError, match="mirror_width"):
        _decode_case(pnp_cases, 2, mirror_width=-640)


def test_reprojection_error_divides_by_the_points_own_depth_even_behind_the_camera():
    K = np.array([[500.0, 0.0, 320.0], [0.0, 500.0, 240.0], [0.0, 0.0, 1.0]])
    points = np.array([[0.1, 0.0, 0.0], [0.0, 0.1, 0.0]])
    t = np.array([0.0, 0.0, -0.5])  # the pose puts both points half a metre behind
    seen = np.array([[320.0, 240.0], [320.0, 240.0]])
    # (0.1 / -0.5) * 500 = -100 px from the centre: the error a plain pinhole gives.
    assert reprojection_error(points, seen, np.eye(3), t, K) == pytest.approx(100.0)
