import numpy as np
import pytest

from hflpipe.model.geometry import project
from hflpipe.pipeline.pose.hands import fit_root_translation

K = np.array([[600.0, 0, 320], [0, 610.0, 240], [0, 0, 1]])


def _hands(n, rng):
    joints = rng.normal(0.0, 0.04, (n, 21, 3))
    joints[:, 0] = 0.0
    t = np.c_[rng.uniform(-0.2, 0.2, (n, 2)), rng.uniform(0.3, 1.0, n)]
    return joints, t


def test_exact_projections_give_exact_translation():
    rng = np.random.default_rng(0)
    joints, t = _hands(8, rng)
    uv = project(joints + t[:, None], K)
    np.testing.assert_allclose(fit_root_translation(joints, uv, K), t, atol=1e-9)


def test_noisy_projections_stay_close_and_weights_reject_an_outlier():
    rng = np.random.default_rng(1)
    joints, t = _hands(8, rng)
    uv = project(joints + t[:, None], K) + rng.normal(0, 0.5, (8, 21, 2))
    assert np.abs(fit_root_translation(joints, uv, K) - t).max() < 0.01
    uv[:, 5] += 80.0  # one joint far off
    w = np.ones((8, 21))
    w[:, 5] = 0.0
    assert np.abs(fit_root_translation(joints, uv, K, weights=w) - t).max() < 0.01
    assert np.abs(fit_root_translation(joints, uv, K) - t).max() > 0.01


def test_zero_weights_fall_back_to_default_depth():
    rng = np.random.default_rng(2)
    joints, t = _hands(2, rng)
    uv = project(joints + t[:, None], K)
    out = fit_root_translation(joints, uv, K, weights=np.zeros((2, 21)))
    assert np.all(np.isfinite(out)) and np.all(out[:, 2] > 0)


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="joints_rel"):
        fit_root_translation(np.zeros((2, 21, 2)), np.zeros((2, 21, 2)), K)
