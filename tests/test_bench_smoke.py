"""Every benchmark runs end to end on a tiny input (``python -m bench NAME --quick``).

Nothing here is timed: the checks are that each benchmark finishes, writes its
JSON with the machine facts, and that the things it measures besides speed
hold (parity of the shipped predictor, frame counts, memory rows).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def run_bench(name: str, out: Path, checkpoint: Path | None = None) -> dict:
    command = [sys.executable, "-m", "bench", name, "--quick", "--out", str(out)]
    if checkpoint is not None:
        command += ["--checkpoint", str(checkpoint)]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    document = json.loads((out / f"{name}.json").read_text())
    if name != "smoothing":
        assert document["benchmark"] == name
        assert document["quick"] is True
        assert document["machine"]["cpus_available"] >= 1
    return document


def test_model_bench_shipped_predictor_matches_plain_fp32(
    tmp_path: Path, synthetic_checkpoint: Path
) -> None:
    result = run_bench("model", tmp_path, synthetic_checkpoint)
    assert [row["batch"] for row in result["rows"]] == [1, 2]
    shipped = result["accuracy_vs_plain_fp32"]["shipped"]
    assert shipped["precision"] == "fp32"
    assert shipped["within_tolerance"], shipped["max_abs_error"]
    assert all(row["shipped_crops_per_s"] > 0 for row in result["rows"])


def test_decode_bench_every_reader_sees_every_frame(tmp_path: Path) -> None:
    result = run_bench("decode", tmp_path)
    frames = {row["reader"]: row["frames"] for row in result["rows"]}
    assert set(frames.values()) == {result["frames_per_video"]}, frames
    assert all(row["peak_rss_mib"] >= row["rss_before_mib"] for row in result["rows"])
    assert all(row["cpu_ms_per_frame"] > 0 for row in result["rows"])
    target = result["target"]
    assert target["decoder"] == "pyav" and set(target["other_decoders_worst_ratio"]) == {"decord"}


def test_pipeline_bench_accounts_for_every_frame(
    tmp_path: Path, synthetic_checkpoint: Path
) -> None:
    result = run_bench("pipeline", tmp_path, synthetic_checkpoint)
    assert [s["stage"] for s in result["stages"]] == [
        "decode", "detect", "track", "crop", "transfer", "infer", "pose", "smooth", "write",
        "other",
    ]
    assert result["summary"]["frames"] == result["frames_per_video"]
    seconds = {s["stage"]: s["seconds"] for s in result["stages"]}
    assert seconds["infer"] > 0 and seconds["decode"] > 0 and seconds["smooth"] > 0
    assert seconds["other"] >= 0
    assert result["end_to_end_runs"] == [
        {"frames": result["frames_per_video"], "seconds": result["end_to_end_runs"][0]["seconds"]}
    ]


def test_memory_bench_runs_every_case(tmp_path: Path, synthetic_checkpoint: Path) -> None:
    result = run_bench("memory", tmp_path, synthetic_checkpoint)
    rows = {row["case"]: row for row in result["rows"]}
    assert rows["10 s"]["frames_processed"] == 10 * rows["1 s"]["frames_processed"]
    assert rows["5 videos"]["videos"] == 5
    assert rows["10 s (decord)"]["frames_processed"] == rows["10 s"]["frames_processed"]
    # The actor cases start with the largest batch (2 crops), then random sizes of 1-2.
    assert 3 <= rows["actor, 2 batches"]["frames_processed"] <= 4
    assert 6 <= rows["actor, 5 batches"]["frames_processed"] <= 10
    assert all(row["peak_rss_mib"] >= row["rss_after_load_mib"] for row in result["rows"])


def test_scaling_bench_runs_on_a_simulated_cluster(
    tmp_path: Path, synthetic_checkpoint: Path
) -> None:
    result = run_bench("scaling", tmp_path, synthetic_checkpoint)
    assert [(row["workers"], row["frames"]) for row in result["rows"]] == [(1, 2), (2, 4)]
    assert result["rows"][0]["efficiency"] == 1.0


def test_smoothing_bench_scores_every_method(tmp_path: Path) -> None:
    result = run_bench("smoothing", tmp_path)
    methods = {row["method"] for row in result["rows"]}
    assert len(methods) >= 2
    assert all(row["frames_per_s"] > 0 for row in result["rows"])
