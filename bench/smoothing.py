"""Benchmark the track smoothers on synthetic tracks with known ground truth.

Tracks: 21 joints x 3 coordinates (metres) at 30 fps, smooth random motion (0.2-3 Hz,
amplitude falling as 1/f), plus Gaussian noise, then outliers (rows displaced by 10-20
sigma), then gaps (runs of 1-8 missing frames); rotations are a wobble around a fixed
axis crossing pi, with 2-degree noise. Each method's cutoff (and One-Euro's beta) is tuned on
seeds 0-2 of the hardest scenario, then every figure is measured on seeds 10-14.

Figures are ratios against the raw baseline in the same run: the observations themselves,
with gaps filled linearly (rotations: by SLERP). Speed is frames per second on one
10 000-frame, 63-value track, also as a ratio to that raw baseline.

Run: ``python bench/smoothing.py`` (about a minute on one core); writes
``bench/results/smoothing.json``.
"""

from __future__ import annotations

import itertools
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import scipy
from scipy.spatial.transform import Rotation, Slerp

from hflpipe.pipeline.smooth.filters import (
    METHODS,
    SmoothingConfig,
    smooth_rotations,
    smooth_vectors,
)

FPS = 30.0
FRAMES = 600
NOISE_M = 0.005
ROT_NOISE_RAD = np.deg2rad(2.0)
SCENARIOS = ("noise", "noise+outliers", "noise+outliers+gaps")
TUNE_SEEDS = (0, 1, 2)
EVAL_SEEDS = (10, 11, 12, 13, 14)
CUTOFFS_HZ = (2.0, 3.0, 4.0, 6.0, 8.0)
ONE_EURO_BETAS = (0.0, 0.05, 0.2)
RESULTS = Path(__file__).resolve().parent / "results" / "smoothing.json"


def ground_truth(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Timestamps (n,) and joints (n, 63): a sum of sinusoids per value, 1/f amplitudes."""
    rng = np.random.default_rng(seed)
    t = np.arange(FRAMES) / FPS
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


def vector_scores(config: SmoothingConfig | None, scenario: str, seeds) -> dict[str, float]:
    """Mean position / acceleration RMSE over seeds; ``config`` None is the raw baseline."""
    pos, acc = [], []
    for seed in seeds:
        t, truth = ground_truth(seed)
        values, observed = observe(truth, scenario, seed)
        if config is None:
            estimate = raw_fill(t, values, observed)
        else:
            estimate = smooth_vectors(t, values, observed, config)
        p, a = errors(t, estimate, truth)
        pos.append(p)
        acc.append(a)
    return {"position_rmse": float(np.mean(pos)), "acceleration_rmse": float(np.mean(acc))}


def rotation_track(seed: int) -> tuple[np.ndarray, Rotation, np.ndarray, np.ndarray]:
    """Rotations around a fixed axis whose angle wobbles across pi; noisy quaternions with
    random signs, outliers (30-60 degrees off) and gaps as in the hardest vector scenario."""
    rng = np.random.default_rng(seed)
    t = np.arange(FRAMES) / FPS
    angle = np.pi + 0.4 * np.sin(2 * np.pi * 0.4 * t) + 0.2 * np.sin(2 * np.pi * 1.3 * t + 1)
    axis = rng.normal(size=3)
    truth = Rotation.from_rotvec(angle[:, None] * (axis / np.linalg.norm(axis))[None])
    noise = Rotation.from_rotvec(rng.normal(0, ROT_NOISE_RAD / np.sqrt(3), (FRAMES, 3)))
    quats = (noise * truth).as_quat(scalar_first=True)
    rows = rng.choice(FRAMES, FRAMES // 50, replace=False)
    axes = rng.normal(size=(len(rows), 3))
    axes /= np.linalg.norm(axes, axis=1, keepdims=True)
    kicks = axes * rng.uniform(np.deg2rad(30), np.deg2rad(60), (len(rows), 1))
    quats[rows] = (Rotation.from_rotvec(kicks) * Rotation.from_quat(
        quats[rows], scalar_first=True)).as_quat(scalar_first=True)
    quats *= np.where(rng.random(FRAMES) < 0.5, -1.0, 1.0)[:, None]
    observed = np.ones(FRAMES, dtype=bool)
    for start in rng.choice(np.arange(5, FRAMES - 15), 12, replace=False):
        observed[start:start + rng.integers(1, 9)] = False
    quats[~observed] = np.nan
    return t, truth, quats, observed


def rotation_scores(config: SmoothingConfig | None, seeds) -> dict[str, float]:
    """Mean angle RMSE (rad) and angular-acceleration RMSE (rad/s^2) over seeds."""
    ang, acc = [], []
    for seed in seeds:
        t, truth, quats, observed = rotation_track(seed)
        if config is None:
            keys = Rotation.from_quat(quats[observed], scalar_first=True)
            estimate = Slerp(t[observed], keys)(np.clip(t, t[observed][0], t[observed][-1]))
        else:
            estimate = Rotation.from_quat(
                smooth_rotations(t, quats, observed, config), scalar_first=True
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


def candidate_configs(method: str):
    betas = ONE_EURO_BETAS if method == "one_euro" else (0.05,)
    for cutoff, beta in itertools.product(CUTOFFS_HZ, betas):
        yield SmoothingConfig(method=method, cutoff_hz=cutoff, one_euro_beta=beta)


def tune(method: str) -> SmoothingConfig:
    """The candidate with the lowest position RMSE on the hardest scenario's tuning seeds."""
    scored = [
        (vector_scores(c, SCENARIOS[-1], TUNE_SEEDS)["position_rmse"], i, c)
        for i, c in enumerate(candidate_configs(method))
    ]
    return min(scored)[2]


def frames_per_second(config: SmoothingConfig | None) -> float:
    rng = np.random.default_rng(0)
    n = 10_000
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


def machine() -> dict[str, object]:
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next(line.split(":", 1)[1].strip() for line in info if "model name" in line)
    except (OSError, StopIteration):
        pass
    return {
        "cpu": cpu,
        "cpus_available": len(os.sched_getaffinity(0)),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "platform": platform.platform(),
    }


def ratio(value: float, baseline: float) -> float:
    return round(value / baseline, 4)


def main() -> None:
    raw = {s: vector_scores(None, s, EVAL_SEEDS) for s in SCENARIOS}
    raw_rot = rotation_scores(None, EVAL_SEEDS)
    raw_fps = frames_per_second(None)
    rows = []
    for method in METHODS:
        tuned = tune(method)
        for outlier_z in (tuned.outlier_z, None):
            config = SmoothingConfig(method=method, cutoff_hz=tuned.cutoff_hz,
                                     one_euro_beta=tuned.one_euro_beta, outlier_z=outlier_z)
            row = {
                "method": method,
                "cutoff_hz": config.cutoff_hz,
                "one_euro_beta": config.one_euro_beta if method == "one_euro" else None,
                "outlier_z": outlier_z,
            }
            for scenario in SCENARIOS:
                scores = vector_scores(config, scenario, EVAL_SEEDS)
                row[f"{scenario}/position"] = ratio(scores["position_rmse"],
                                                    raw[scenario]["position_rmse"])
                row[f"{scenario}/acceleration"] = ratio(scores["acceleration_rmse"],
                                                        raw[scenario]["acceleration_rmse"])
            rot = rotation_scores(config, EVAL_SEEDS)
            row["rotation/angle"] = ratio(rot["angle_rmse_rad"], raw_rot["angle_rmse_rad"])
            row["rotation/acceleration"] = ratio(rot["angular_acceleration_rmse"],
                                                 raw_rot["angular_acceleration_rmse"])
            fps = frames_per_second(config)
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
        "frames": FRAMES,
        "tune_seeds": list(TUNE_SEEDS),
        "eval_seeds": list(EVAL_SEEDS),
        "rows": rows,
        "machine": machine(),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    temp = RESULTS.with_suffix(".json.tmp")
    temp.write_text(json.dumps(result, indent=2) + "\n")
    os.replace(temp, RESULTS)
    print(f"wrote {RESULTS}")


def _format_row(row: dict) -> str:
    parts = [f"{row['method']:9s} {row['cutoff_hz']:4.1f}Hz z={row['outlier_z']!s:5s}"]
    for scenario in SCENARIOS:
        parts.append(f"{scenario}: pos {row[f'{scenario}/position']:.3f} "
                     f"acc {row[f'{scenario}/acceleration']:.3f}")
    parts.append(f"rot: {row['rotation/angle']:.3f}/{row['rotation/acceleration']:.3f}")
    parts.append(f"{row['frames_per_s']} f/s ({row['speed_vs_raw']:.3f}x raw)")
    return " | ".join(parts)


if __name__ == "__main__":
    main()
