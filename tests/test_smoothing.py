"""Temporal smoothing: less error on noisy tracks, no lag, flagged gap filling, SO(3) edge cases.

Tests over ``METHODS`` also cover the candidates the smoothing benchmark compares with the
pipeline's smoother (:class:`hflpipe.bench.smoothing.Candidate`).
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation, Slerp

from hflpipe.bench.smoothing import METHODS, Candidate
from hflpipe.pipeline.smooth.filters import (
    SmoothingConfig,
    plan_track,
    smooth_axis_angle,
    smooth_rotations,
    smooth_vectors,
)

FPS = 30.0


def _track(n: int = 300, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Timestamps (n,) and a smooth 3D ground-truth path (n, 3) with 0.2-1 Hz motion."""
    t = np.arange(n) / FPS
    rng = np.random.default_rng(seed)
    freqs = rng.uniform(0.2, 1.0, (3, 3))
    phases = rng.uniform(0, 2 * np.pi, (3, 3))
    path = np.sin(2 * np.pi * freqs[None] * t[:, None, None] + phases[None]).sum(axis=2)
    return t, 0.1 * path


def _rms(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(np.mean((a - b) ** 2)))


def _angle_error(q: np.ndarray, truth: Rotation) -> np.ndarray:
    return (Rotation.from_quat(q, scalar_first=True) * truth.inv()).magnitude()


def test_plan_track_splits_long_gaps_and_flags_short_ones() -> None:
    spans = plan_track(np.array([20, 0, 1, 2, 5, 6]), max_gap=2)
    assert [s.frame_indices.tolist() for s in spans] == [[0, 1, 2, 3, 4, 5, 6], [20]]
    assert spans[0].interpolated.tolist() == [False, False, False, True, True, False, False]
    assert len(plan_track(np.array([0, 1, 2, 5, 6]), max_gap=1)) == 2
    assert plan_track(np.array([], dtype=np.int64), max_gap=3) == []
    with pytest.raises(ValueError, match="unique"):
        plan_track(np.array([1, 1]), max_gap=3)

    dense = spans[0].scatter(np.array([0, 2, 6, 20]), np.array([[1.0], [2.0], [3.0], [9.0]]))
    assert np.array_equal(np.isnan(dense[:, 0]), [False, True, False, True, True, True, False])


@pytest.mark.parametrize("method", METHODS)
def test_smoothing_reduces_error_on_noisy_tracks(method: str) -> None:
    t, truth = _track()
    rng = np.random.default_rng(1)
    noisy = truth + rng.normal(0, 0.01, truth.shape)
    smoothed = smooth_vectors(t, noisy, config=Candidate(method=method))
    assert _rms(smoothed, truth) < 0.7 * _rms(noisy, truth)


@pytest.mark.parametrize("method", METHODS)
def test_linear_motion_has_no_lag(method: str) -> None:
    t = np.arange(120) / FPS
    line = np.stack([3.0 * t + 1.0, -0.5 * t], axis=1)
    smoothed = smooth_vectors(t, line, config=Candidate(method=method))
    np.testing.assert_allclose(smoothed, line, atol=1e-6)
    # With noise: the error has no trend in time (a lagging filter would trail by v * lag).
    rng = np.random.default_rng(2)
    noisy_smoothed = smooth_vectors(t, line + rng.normal(0, 0.05, line.shape),
                                    config=Candidate(method=method))
    assert abs(np.mean(noisy_smoothed[:, 0] - line[:, 0])) < 0.02


def test_outliers_are_rejected() -> None:
    t, truth = _track(seed=3)
    noisy = truth + np.random.default_rng(3).normal(0, 0.01, truth.shape)
    noisy[[50, 51, 200]] += 0.5
    kept = smooth_vectors(t, noisy, config=SmoothingConfig(outlier_z=None))
    robust = smooth_vectors(t, noisy)
    assert np.abs(robust[[50, 51, 200]] - truth[[50, 51, 200]]).max() < 0.03
    assert _rms(robust, truth) < 0.5 * _rms(kept, truth)


def _gappy(n: int = 60) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A curved track with frames 20-24 unobserved and one NaN on observed frame 40."""
    t, truth = _track(n)
    values = truth.copy()
    observed = np.ones(n, dtype=bool)
    observed[20:25] = False
    values[20:25] = np.nan
    values[40, 1] = np.nan  # a NaN on an observed row counts as unobserved
    return t, truth, values, observed


@pytest.mark.parametrize("method", ["savgol", "one_euro"])
def test_gaps_and_nans_are_filled_linearly(method: str) -> None:
    t, _, values, observed = _gappy()
    config = Candidate(method=method, outlier_z=None)
    out = smooth_vectors(t, values, observed, config)
    assert np.all(np.isfinite(out))
    for lo, hi, rows in ((19, 25, range(20, 25)), (39, 41, [40])):
        w = (t[list(rows)] - t[lo]) / (t[hi] - t[lo])
        expected = (1 - w)[:, None] * out[lo] + w[:, None] * out[hi]
        np.testing.assert_allclose(out[list(rows)], expected, atol=1e-12)
    # Trailing unobserved rows hold the last smoothed value.
    observed[-3:] = False
    held = smooth_vectors(t, values, observed, config)
    np.testing.assert_array_equal(held[-3:], np.repeat(held[-4:-3], 3, axis=0))


@pytest.mark.parametrize("method", ["rts_cv", "rts_ca"])
def test_rts_fills_gaps_along_the_motion(method: str) -> None:
    t, truth, values, observed = _gappy()
    config = Candidate(method=method, outlier_z=None)
    out = smooth_vectors(t, values, observed, config)
    # The gap follows the curve better than a chord between its ends would.
    w = ((t[20:25] - t[19]) / (t[25] - t[19]))[:, None]
    chord = (1 - w) * truth[19] + w * truth[25]
    assert _rms(out[20:25], truth[20:25]) < 0.5 * _rms(chord, truth[20:25])
    assert np.all(np.isfinite(out))
    line = np.stack([2.0 * t, 1.0 - t], axis=1)
    line_values = np.where(observed[:, None], line, np.nan)
    np.testing.assert_allclose(smooth_vectors(t, line_values, observed, config), line, atol=1e-6)


@pytest.mark.parametrize("method", METHODS)
def test_one_and_two_frames(method: str) -> None:
    config = Candidate(method=method)
    one = np.array([[1.0, 2.0]])
    np.testing.assert_array_equal(smooth_vectors(np.array([0.0]), one, config=config), one)
    two = np.array([[0.0, 0.0], [1.0, 2.0]])
    out = smooth_vectors(np.array([0.0, 1 / FPS]), two, config=config)
    np.testing.assert_allclose(out.mean(axis=0), two.mean(axis=0), atol=1e-6)
    if method != "one_euro":  # a first-order low-pass pulls two samples together
        np.testing.assert_allclose(out, two, atol=1e-6)
    quat = np.array([[-0.6, 0.0, 0.0, 0.8]])
    np.testing.assert_allclose(smooth_rotations(np.array([0.0]), quat, config=config), -quat)


def test_bad_inputs_are_value_errors() -> None:
    with pytest.raises(ValueError, match="no observed"):
        smooth_vectors(np.arange(3.0), np.full((3, 2), np.nan))
    with pytest.raises(ValueError, match="strictly increasing"):
        smooth_vectors(np.array([0.0, 0.0]), np.zeros((2, 2)))
    with pytest.raises(ValueError, match="rows but timestamps"):
        smooth_vectors(np.arange(3.0), np.zeros((2, 2)))
    with pytest.raises(ValueError, match="unknown smoothing method"):
        Candidate(method="kalman")


def _noisy_rotations(
    angles: np.ndarray, seed: int, sigma: float = 0.03
) -> tuple[Rotation, np.ndarray]:
    truth = Rotation.from_rotvec(angles[:, None] * np.array([[0.0, 0.6, 0.8]]))
    rng = np.random.default_rng(seed)
    noisy = Rotation.from_rotvec(rng.normal(0, sigma, (len(angles), 3))) * truth
    return truth, noisy.as_quat(scalar_first=True)


def test_rotation_sign_flips_do_not_matter() -> None:
    t = np.arange(150) / FPS
    truth, quats = _noisy_rotations(0.5 + np.sin(2 * np.pi * 0.7 * t), seed=4)
    flipped = quats * np.where(np.random.default_rng(5).random(150) < 0.5, -1.0, 1.0)[:, None]
    out = smooth_rotations(t, quats)
    np.testing.assert_allclose(smooth_rotations(t, flipped), out, atol=1e-12)
    assert np.sqrt(np.mean(_angle_error(out, truth) ** 2)) < 0.6 * 0.03 * np.sqrt(3)


def test_rotations_through_pi_stay_continuous() -> None:
    t = np.arange(300) / FPS
    # The angle crosses pi, where axis-angle wraps and the canonical quaternion flips sign.
    truth, quats = _noisy_rotations(np.pi + 0.3 * np.sin(2 * np.pi * 0.5 * t), seed=6)
    out = smooth_rotations(t, quats)
    assert np.min(np.einsum("ij,ij->i", out[1:], out[:-1])) > 0.99
    noisy_error = _angle_error(quats, truth)
    assert np.sqrt(np.mean(_angle_error(out, truth) ** 2)) < 0.6 * np.sqrt(np.mean(noisy_error**2))

    matrices = Rotation.from_quat(quats, scalar_first=True).as_matrix()
    out_matrices = smooth_rotations(t, matrices)
    np.testing.assert_allclose(
        out_matrices, Rotation.from_quat(out, scalar_first=True).as_matrix(), atol=1e-9
    )


@pytest.mark.parametrize("method", METHODS)
def test_rotation_gaps_are_filled(method: str) -> None:
    t = np.arange(40) / FPS
    truth = Rotation.from_rotvec(np.linspace(0, 1.0, 40)[:, None] * np.array([[1.0, 0, 0]]))
    observed = np.ones(40, dtype=bool)
    observed[10:16] = False
    quats = truth.as_quat(scalar_first=True)
    quats[10:16] = np.nan
    config = Candidate(method=method, outlier_z=None, slerp_gaps=True)
    out = smooth_rotations(t, quats, observed, config)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-12)
    # A constant-rate rotation is reproduced through the gap (to 0.06 degrees).
    assert _angle_error(out, truth).max() < 1e-3
    if method == "savgol":
        ends = Rotation.from_quat(out[[9, 16]], scalar_first=True)
        slerped = Slerp(t[[9, 16]], ends)(t[10:16])
        assert (Rotation.from_quat(out[10:16], scalar_first=True) * slerped.inv()).magnitude(
        ).max() < 1e-9


def test_axis_angle_pose_is_smoothed_per_joint() -> None:
    t = np.arange(200) / FPS
    rng = np.random.default_rng(7)
    base = rng.normal(0, 0.4, (16, 3))
    base[0] = [0.0, 0.0, np.pi - 0.05]  # global rotation next to pi
    wobble = 0.2 * np.sin(2 * np.pi * 0.6 * t)[:, None, None]
    truth = base[None] + wobble * np.array([0.0, 0.0, 1.0])
    noisy = Rotation.from_rotvec(rng.normal(0, 0.03, (200 * 16, 3))) * Rotation.from_rotvec(
        truth.reshape(-1, 3)
    )
    noisy_vecs = noisy.as_rotvec().reshape(200, 48)
    out = smooth_axis_angle(t, noisy_vecs)
    assert out.shape == (200, 48)
    truth_rot = Rotation.from_rotvec(truth.reshape(-1, 3))
    err_out = (Rotation.from_rotvec(out.reshape(-1, 3)) * truth_rot.inv()).magnitude()
    err_in = (noisy * truth_rot.inv()).magnitude()
    assert np.sqrt(np.mean(err_out**2)) < 0.6 * np.sqrt(np.mean(err_in**2))
    assert np.all(np.linalg.norm(out.reshape(-1, 3), axis=1) <= np.pi + 1e-9)
