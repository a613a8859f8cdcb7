"""Benchmark the track smoothers on synthetic tracks with known ground truth.

Candidates (:class:`Candidate`), each with one bandwidth ``cutoff_hz``, all run through the
pipeline's outlier rejection and gap filling (:mod:`hflpipe.pipeline.smooth.filters`):

- ``"rts_ca"``: the pipeline's smoother, Kalman filter + Rauch-Tung-Striebel smoother with a
  constant-acceleration model, the Wiener filter ``1 / (1 + (f / cutoff)^6)``.
- ``"rts_cv"``: the same with a constant-velocity model, ``1 / (1 + (f / cutoff)^4)``; its
  estimate in a gap is a cubic smoothing spline.
- ``"savgol"``: Savitzky-Golay, quadratic, window chosen so its -3 dB point is ``cutoff_hz``
  (Schafer's approximation ``f_c = (order + 1) / (3.2 M - 4.6)`` cycles/sample, window
  ``2M + 1``); it assumes evenly spaced rows, so gaps are pre-filled linearly first.
- ``"one_euro"``: the One-Euro filter run forwards and backwards and averaged, with
  ``cutoff_hz`` as its minimum cutoff; speed is measured in robust noise units, so ``beta``
  is unit-free.

The RTS smoothers estimate the rows they do not smooth (gaps, rejected outliers) as missing
measurements; Savitzky-Golay and One-Euro interpolate their smoothed rows there, linearly,
by SLERP for rotations.

Tracks: 21 joints x 3 coordinates (metres) at 30 fps, smooth random motion (0.2-3 Hz,
amplitude falling as 1/f), plus Gaussian noise, then outliers (rows displaced by 10-20
sigma), then gaps (runs of 1-8 missing frames); rotations are a wobble around a fixed
axis crossing pi, with 2-degree noise. Each method's cutoff (and One-Euro's beta) is tuned on
seeds 0-2 of the hardest scenario, then every figure is measured on seeds 10-14.

Figures are ratios against the raw baseline in the same run: the observations themselves,
with gaps filled linearly (rotations: by SLERP). Speed is frames per second on one
10 000-frame, 63-value track, also as a ratio to that raw baseline.

Run: ``hflpipe bench smoothing`` or ``python -m bench smoothing`` (about a minute on one
core; ``--quick`` takes seconds); writes ``smoothing.json``.
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
from scipy.signal import savgol_filter
from scipy.spatial.transform import Rotation, Slerp

from hflpipe.bench.common import RESULTS_DIR, write_result
from hflpipe.pipeline.smooth.filters import (
    MAD_TO_STD,
    SmoothingConfig,
    interp_linear,
    rts_rows,
    smooth_rotations,
    smooth_vectors,
)

METHODS = ("rts_cv", "rts_ca", "savgol", "one_euro")
SAVGOL_ORDER = 2
FPS = 30.0
NOISE_M = 0.005
ROT_NOISE_RAD = np.deg2rad(2.0)
SCENARIOS = ("noise", "noise+outliers", "noise+outliers+gaps")


@dataclasses.dataclass(frozen=True)
class Settings:
    """How much the benchmark runs: track length, seeds, tuning grid, length of the speed track."""

    frames: int = 600
    tune_seeds: tuple[int, ...] = (0, 1, 2)
    eval_seeds: tuple[int, ...] = (10, 11, 12, 13, 14)
    cutoffs_hz: tuple[float, ...] = (2.0, 3.0, 4.0, 6.0, 8.0)
    one_euro_betas: tuple[float, ...] = (0.0, 0.05, 0.2)
    speed_frames: int = 10_000


FULL = Settings()
#: The same code paths in seconds: short tracks, one seed each, one candidate per method.
QUICK = Settings(frames=120, tune_seeds=(0,), eval_seeds=(10,), cutoffs_hz=(4.0,),
                 one_euro_betas=(0.05,), speed_frames=300)


def constant_velocity(dt: float) -> tuple[np.ndarray, np.ndarray]:
    """Motion model of ``rts_cv``: position and velocity, white acceleration noise."""
    f = np.array([[1.0, dt], [0.0, 1.0]])
    q = np.array([[dt**3 / 3, dt**2 / 2], [dt**2 / 2, dt]])
    return f, q


@dataclasses.dataclass(frozen=True)
class Candidate(SmoothingConfig):
    """A smoother to compare (``method``, see the module docstring) inside the pipeline's
    outlier rejection and gap filling.

    ``one_euro_beta``: One-Euro speed coefficient (unit-free). ``slerp_gaps``: the rows are
    quaternions, so Savitzky-Golay and One-Euro fill by SLERP rather than linearly.
    """

    method: str = "rts_ca"
    one_euro_beta: float = 0.05
    slerp_gaps: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.method not in METHODS:
            raise ValueError(f"unknown smoothing method {self.method!r}: one of {METHODS}")

    def smooth_rows(self, t: np.ndarray, y: np.ndarray, keep: np.ndarray) -> np.ndarray:
        """Smooth the kept rows of ``y`` (n, D) at times ``t`` (n,) and fill the others."""
        if self.method == "rts_ca":
            return super().smooth_rows(t, y, keep)
        if self.method == "rts_cv":
            return rts_rows(t, y, keep, cutoff_hz=self.cutoff_hz, motion=constant_velocity)
        kept = np.flatnonzero(keep)
        if len(kept) < 2:
            return interp_linear(t, t[kept], y[kept])
        if self.method == "savgol":
            # Savitzky-Golay needs evenly spaced rows: run it on the span with gaps pre-filled.
            lo, hi = kept[0], kept[-1] + 1
            dense = interp_linear(t[lo:hi], t[kept], y[kept])
            smoothed = _savgol(t[lo:hi], dense, self.cutoff_hz)[kept - lo]
        else:
            smoothed = _one_euro_both_ways(t[kept], y[kept], self.cutoff_hz, self.one_euro_beta)
        if self.slerp_gaps:
            return _slerp_gaps(t, kept, smoothed)
        return interp_linear(t, t[kept], smoothed)


def _savgol(t: np.ndarray, y: np.ndarray, cutoff_hz: float) -> np.ndarray:
    rate = 1.0 / float(np.median(np.diff(t)))
    half = round(((SAVGOL_ORDER + 1) * rate / cutoff_hz + 4.6) / 3.2)
    window = min(2 * half + 1, len(t) if len(t) % 2 else len(t) - 1)
    if window <= SAVGOL_ORDER:
        return y.copy()
    return savgol_filter(y, window, SAVGOL_ORDER, axis=0, mode="interp")


def _one_euro_both_ways(
    t: np.ndarray, y: np.ndarray, min_cutoff: float, beta: float
) -> np.ndarray:
    # Speeds in robust noise units make beta independent of the quantity's units.
    noise = np.ones(y.shape[1])
    if len(y) > 2:
        # White noise of std s gives second differences of std s * sqrt(6).
        second = np.diff(y, n=2, axis=0)
        mad = MAD_TO_STD * np.median(np.abs(second - np.median(second, axis=0)), axis=0)
        noise = np.where(mad > 0, mad / np.sqrt(6.0), 1.0)
    forward = _one_euro(t, y, min_cutoff, beta, noise)
    backward = _one_euro(-t[::-1], y[::-1], min_cutoff, beta, noise)[::-1]
    return 0.5 * (forward + backward)


def _one_euro(
    t: np.ndarray, y: np.ndarray, min_cutoff: float, beta: float, noise: np.ndarray
) -> np.ndarray:
    """Causal One-Euro filter over rows (k, D) at increasing times t (k,)."""
    derivative_cutoff = 1.0

    def alpha(cutoff: np.ndarray | float, dt: float) -> np.ndarray | float:
        tau = 1.0 / (2 * np.pi * cutoff)
        return 1.0 / (1.0 + tau / dt)

    out = np.empty_like(y)
    out[0] = y[0]
    speed = np.zeros(y.shape[1])
    for i in range(1, len(t)):
        dt = t[i] - t[i - 1]
        raw_speed = (y[i] - out[i - 1]) / dt
        speed = speed + alpha(derivative_cutoff, dt) * (raw_speed - speed)
        cutoff = min_cutoff + beta * np.abs(speed) / noise
        out[i] = out[i - 1] + alpha(cutoff, dt) * (y[i] - out[i - 1])
    return out


def _slerp_gaps(t: np.ndarray, kept: np.ndarray, smoothed: np.ndarray) -> np.ndarray:
    """Rows (n, 4) at ``t``: the smoothed quaternions (k, 4) on rows ``kept``, SLERP between
    them (normalised) elsewhere, with signs continuous with the nearest later kept row."""
    keys = smoothed / np.linalg.norm(smoothed, axis=1, keepdims=True)
    t_keys = t[kept]
    slerp = Slerp(t_keys, Rotation.from_quat(keys, scalar_first=True))
    out = slerp(np.clip(t, t_keys[0], t_keys[-1])).as_quat(scalar_first=True)
    # scipy canonicalises signs; bring each row back to its key's hemisphere.
    nearest = keys[np.clip(np.searchsorted(t_keys, t), 0, len(t_keys) - 1)]
    out *= np.where(np.einsum("ij,ij->i", out, nearest) < 0, -1.0, 1.0)[:, None]
    # Kept rows as smoothed: outlier rejection measures residuals to them before normalising.
    out[kept] = smoothed
    return out


def ground_truth(seed: int, frames: int) -> tuple[np.ndarray, np.ndarray]:
    """Timestamps (n,) and joints (n, 63): a sum of sinusoids per value, 1/f amplitudes."""
    rng = np.random.default_rng(seed)
    t = np.arange(frames) / FPS
    freqs = rng.uniform(0.2, 3.0, (8, 63))
    amps = 0.03 / freqs
    phases = rng.uniform(0, 2 * np.pi, (8, 63))
    path = (amps[None] * np.sin(2 * np.pi * freqs[None] * t[:, None, None] + phases[None]))
    return t, path.sum(axis=1)


def observe(truth: np.ndarray, scenario: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Noisy observations (n, D) and the observed mask (n,) for a scenario."""
    rng = np.random.default_rng(seed + 1000)
    values = truth + rng.normal(0, NOISE_M, truth.shape)
    observed = np.ones(len(truth), dtype=bool)
    if "outliers" in scenario:
        rows = rng.choice(len(truth), len(truth) // 50, replace=False)
        direction = rng.normal(size=(len(rows), truth.shape[1]))
        direction /= np.linalg.norm(direction, axis=1, keepdims=True) / np.sqrt(truth.shape[1])
        values[rows] += rng.uniform(10, 20, (len(rows), 1)) * NOISE_M * direction
    if "gaps" in scenario:
        for start in rng.choice(np.arange(5, len(truth) - 15), 12, replace=False):
            observed[start:start + rng.integers(1, 9)] = False
    values[~observed] = np.nan
    return values, observed


def raw_fill(t: np.ndarray, values: np.ndarray, observed: np.ndarray) -> np.ndarray:
    """The unsmoothed baseline: observations, gaps filled linearly."""
    return np.stack([np.interp(t, t[observed], v[observed]) for v in values.T], axis=1)


def errors(t: np.ndarray, estimate: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """Position RMSE and acceleration RMSE (second differences / dt^2)."""
    dt = t[1] - t[0]
    position = float(np.sqrt(np.mean((estimate - truth) ** 2)))
    acc = np.diff(estimate, 2, axis=0) / dt**2 - np.diff(truth, 2, axis=0) / dt**2
    return position, float(np.sqrt(np.mean(acc**2)))


def vector_scores(config: SmoothingConfig | None, scenario: str, seeds: Sequence[int],
                  frames: int) -> dict[str, float]:
    """Mean position / acceleration RMSE over seeds; ``config`` None is the raw baseline."""
    pos, acc = [], []
    for seed in seeds:
        t, truth = ground_truth(seed, frames)
        values, observed = observe(truth, scenario, seed)
        if config is None:
            estimate = raw_fill(t, values, observed)
        else:
            estimate = smooth_vectors(t, values, observed, config)
        p, a = errors(t, estimate, truth)
        pos.append(p)
        acc.append(a)
    return {"position_rmse": float(np.mean(pos)), "acceleration_rmse": float(np.mean(acc))}


def rotation_track(seed: int, frames: int) -> tuple[np.ndarray, Rotation, np.ndarray, np.ndarray]:
    """Rotations around a fixed axis whose angle wobbles across pi; noisy quaternions with
    random signs, outliers (30-60 degrees off) and gaps as in the hardest vector scenario."""
    rng = np.random.default_rng(seed)
    t = np.arange(frames) / FPS
    angle = np.pi + 0.4 * np.sin(2 * np.pi * 0.4 * t) + 0.2 * np.sin(2 * np.pi * 1.3 * t + 1)
    axis = rng.normal(size=3)
    truth = Rotation.from_rotvec(angle[:, None] * (axis / np.linalg.norm(axis))[None])
    noise = Rotation.from_rotvec(rng.normal(0, ROT_NOISE_RAD / np.sqrt(3), (frames, 3)))
    quats = (noise * truth).as_quat(scalar_first=True)
    rows = rng.choice(frames, frames // 50, replace=False)
    axes = rng.normal(size=(len(rows), 3))
    axes /= np.linalg.norm(axes, axis=1, keepdims=True)
    kicks = axes * rng.uniform(np.deg2rad(30), np.deg2rad(60), (len(rows), 1))
    quats[rows] = (Rotation.from_rotvec(kicks) * Rotation.from_quat(
        quats[rows], scalar_first=True)).as_quat(scalar_first=True)
    quats *= np.where(rng.random(frames) < 0.5, -1.0, 1.0)[:, None]
    observed = np.ones(frames, dtype=bool)
    for start in rng.choice(np.arange(5, frames - 15), 12, replace=False):
        observed[start:start + rng.integers(1, 9)] = False
    quats[~observed] = np.nan
    return t, truth, quats, observed


def rotation_scores(config: Candidate | None, seeds: Sequence[int],
                    frames: int) -> dict[str, float]:
    """Mean angle RMSE (rad) and angular-acceleration RMSE (rad/s^2) over seeds."""
    ang, acc = [], []
    for seed in seeds:
        t, truth, quats, observed = rotation_track(seed, frames)
        if config is None:
            keys = Rotation.from_quat(quats[observed], scalar_first=True)
            estimate = Slerp(t[observed], keys)(np.clip(t, t[observed][0], t[observed][-1]))
        else:
            rotations = dataclasses.replace(config, slerp_gaps=True)
            estimate = Rotation.from_quat(
                smooth_rotations(t, quats, observed, rotations), scalar_first=True
            )
        err = (estimate * truth.inv()).as_rotvec()
        ang.append(float(np.sqrt(np.mean(np.sum(err**2, axis=1)))))
        dt = t[1] - t[0]
        # Angular acceleration from consecutive relative rotations (body rates), vs truth.
        rate_est = (estimate[1:] * estimate[:-1].inv()).as_rotvec() / dt
        rate_true = (truth[1:] * truth[:-1].inv()).as_rotvec() / dt
        acc_err = np.diff(rate_est, axis=0) / dt - np.diff(rate_true, axis=0) / dt
        acc.append(float(np.sqrt(np.mean(np.sum(acc_err**2, axis=1)))))
    return {"angle_rmse_rad": float(np.mean(ang)), "angular_acceleration_rmse": float(np.mean(acc))}


def candidate_configs(method: str, settings: Settings) -> Iterator[Candidate]:
    betas = settings.one_euro_betas if method == "one_euro" else (0.05,)
    for cutoff, beta in itertools.product(settings.cutoffs_hz, betas):
        yield Candidate(method=method, cutoff_hz=cutoff, one_euro_beta=beta)


def tune(method: str, settings: Settings) -> Candidate:
    """The candidate with the lowest position RMSE on the hardest scenario's tuning seeds."""
    scored = [
        (vector_scores(c, SCENARIOS[-1], settings.tune_seeds, settings.frames)["position_rmse"],
         i, c)
        for i, c in enumerate(candidate_configs(method, settings))
    ]
    return min(scored)[2]


def frames_per_second(config: SmoothingConfig | None, n: int) -> float:
    """Frames per second on one ``n``-frame, 63-value track; ``config`` None: the raw fill."""
    rng = np.random.default_rng(0)
    t = np.arange(n) / FPS
    values = np.cumsum(rng.normal(0, 0.001, (n, 63)), axis=0)
    observed = rng.random(n) > 0.05
    values[~observed] = np.nan
    runs = []
    for _ in range(3):
        start = time.perf_counter()
        if config is None:
            raw_fill(t, values, observed)
        else:
            smooth_vectors(t, values, observed, config)
        runs.append(time.perf_counter() - start)
    return n / min(runs)


def ratio(value: float, baseline: float) -> float:
    return round(value / baseline, 4)


def run(*, quick: bool = False, out_dir: Path = RESULTS_DIR) -> dict[str, object]:
    """Run the benchmark, print a line per candidate, write ``smoothing.json``; returns the
    result document."""
    settings = QUICK if quick else FULL
    frames, seeds = settings.frames, settings.eval_seeds
    raw = {s: vector_scores(None, s, seeds, frames) for s in SCENARIOS}
    raw_rot = rotation_scores(None, seeds, frames)
    raw_fps = frames_per_second(None, settings.speed_frames)
    rows = []
    for method in METHODS:
        tuned = tune(method, settings)
        for outlier_z in (tuned.outlier_z, None):
            config = dataclasses.replace(tuned, outlier_z=outlier_z)
            row = {
                "method": method,
                "cutoff_hz": config.cutoff_hz,
                "one_euro_beta": config.one_euro_beta if method == "one_euro" else None,
                "outlier_z": outlier_z,
            }
            for scenario in SCENARIOS:
                scores = vector_scores(config, scenario, seeds, frames)
                row[f"{scenario}/position"] = ratio(scores["position_rmse"],
                                                    raw[scenario]["position_rmse"])
                row[f"{scenario}/acceleration"] = ratio(scores["acceleration_rmse"],
                                                        raw[scenario]["acceleration_rmse"])
            rot = rotation_scores(config, seeds, frames)
            row["rotation/angle"] = ratio(rot["angle_rmse_rad"], raw_rot["angle_rmse_rad"])
            row["rotation/acceleration"] = ratio(rot["angular_acceleration_rmse"],
                                                 raw_rot["angular_acceleration_rmse"])
            fps = frames_per_second(config, settings.speed_frames)
            row["frames_per_s"] = round(fps)
            row["speed_vs_raw"] = ratio(fps, raw_fps)
            rows.append(row)
            print(_format_row(row), flush=True)
    result = {
        "description": __doc__.strip().splitlines()[0],
        "baseline": "raw observations, gaps filled linearly (rotations: SLERP); ratios < 1 are "
                    "better (speed_vs_raw: < 1 is slower)",
        "baseline_absolute": {
            **{s: raw[s] for s in SCENARIOS},
            "rotation": raw_rot,
            "frames_per_s": round(raw_fps),
        },
        "noise": {"position_m": NOISE_M, "rotation_rad": float(ROT_NOISE_RAD)},
        "fps": FPS,
        "frames": frames,
        "tune_seeds": list(settings.tune_seeds),
        "eval_seeds": list(seeds),
        "speed_frames": settings.speed_frames,
        "quick": quick,
        "rows": rows,
    }
    write_result("smoothing", result, out_dir)
    return result


def _format_row(row: dict) -> str:
    parts = [f"{row['method']:9s} {row['cutoff_hz']:4.1f}Hz z={row['outlier_z']!s:5s}"]
    for scenario in SCENARIOS:
        parts.append(f"{scenario}: pos {row[f'{scenario}/position']:.3f} "
                     f"acc {row[f'{scenario}/acceleration']:.3f}")
    parts.append(f"rot: {row['rotation/angle']:.3f}/{row['rotation/acceleration']:.3f}")
    parts.append(f"{row['frames_per_s']} f/s ({row['speed_vs_raw']:.3f}x raw)")
    return " | ".join(parts)


if __name__ == "__main__":
    run()
