import numpy as np
from scipy.spatial.transform import Rotation

from hflpipe.model.control_points import load_control_points
from hflpipe.model.geometry import project
from hflpipe.pipeline.crop.batch import HandObjectPair
from hflpipe.pipeline.detect.base import Detection
from hflpipe.pipeline.pose.objects import solve_object_poses

K = np.array([[600.0, 0, 320], [0, 600.0, 240], [0, 0, 1]])
POINTS = load_control_points("003_cracker_box")


def _case(translations):
    jobs, cands = [], []
    R = Rotation.from_euler("xyz", [20, -30, 10], degrees=True).as_matrix()
    for frame, t in enumerate(translations):
        uv = project(POINTS @ R.T + t, K)
        cand = np.zeros((10, 21, 2))
        cand[0] = uv
        cands.append(cand)
        hand = Detection("hand", np.array([0, 0, 10, 10], np.float32), 1.0, "right", None, 0)
        obj = Detection("object", np.array([0, 0, 20, 20], np.float32), 0.9, None, None, 3)
        jobs.append(HandObjectPair(frame, hand, obj))
    n = len(jobs)
    valid = np.zeros((n, 10, 21), bool)
    valid[:, 0] = True
    crops = {
        "mirrored": np.zeros(n, bool), "affine": np.repeat(np.eye(3)[None], n, 0),
        "frame_width": np.full(n, 640), "timestamp_s": np.arange(n) / 30.0,
        "obj_keypoints": np.stack([c[0] for c in cands]),
        "obj_keypoint_confidence": np.full((n, 21), 0.9), "obj_candidates": np.stack(cands),
        "obj_candidate_valid": valid,
    }
    return jobs, crops, R


def test_poses_are_recovered_from_vote_candidates():
    jobs, crops, R = _case([np.array([0.05, -0.02, 0.6]), np.array([0.0, 0.03, 0.8])])
    out = solve_object_poses(jobs, crops, K, "003_cracker_box", POINTS)
    assert out["pose_valid"].all() and (out["pnp_inliers"] == 21).all()
    assert np.allclose(out["translation"], [[0.05, -0.02, 0.6], [0.0, 0.03, 0.8]], atol=1e-6)
    q = Rotation.from_matrix(R).as_quat(scalar_first=True)
    assert np.allclose(np.abs(out["rotation"] @ q), 1.0, atol=1e-6)
    assert out["object_name"].tolist() == ["003_cracker_box"] * 2
    assert np.allclose(out["keypoints2d"], crops["obj_keypoints"])


def test_an_implausible_depth_is_not_a_valid_pose():
    jobs, crops, _ = _case([np.array([0.0, 0.0, 50.0])])
    out = solve_object_poses(jobs, crops, K, "003_cracker_box", POINTS)
    assert not out["pose_valid"][0]


def test_without_control_points_pnp_is_not_run():
    jobs, crops, _ = _case([np.array([0.05, -0.02, 0.6])])
    out = solve_object_poses(jobs, crops, K, None, None)
    assert np.isnan(out["pnp_inliers"]).all() and np.isnan(out["reprojection_error_px"]).all()
    assert not out["pose_valid"].any()
