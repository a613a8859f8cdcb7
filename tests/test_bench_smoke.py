"""Every benchmark runs end to end on a tiny input (``--quick``).

Nothing here is timed: the checks are that each benchmark finishes, writes its
JSON with the machine facts, and that the things it measures besides speed
hold (parity of the shipped predictor, frame counts, memory rows). The quickest
runs through ``hflpipe bench`` in every test run; the others, a minute or more
each on 2 cores, through ``python -m bench`` nightly.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from hflpipe.bench import common
from hflpipe.bench.smoothing import METHODS
from hflpipe.pipeline.cli.main import cli

REPO = Path(__file__).resolve().parents[1]


def test_hflpipe_bench_writes_the_json_where_asked(tmp_path: Path) -> None:
    out = tmp_path / "results"
    done = CliRunner().invoke(cli, ["bench", "smoothing", "--quick", "--out", str(out)])
    assert done.exit_code == 0, done.output
    assert f"results in {out}" in done.output
    document = json.loads((out / "smoothing.json").read_text())
    assert document["benchmark"] == "smoothing" and document["quick"] is True
    assert {row["method"] for row in document["rows"]} == set(METHODS)
    assert all(row["frames_per_s"] > 0 for row in document["rows"])
    assert document["machine"]["cpus_available"] >= 1


def test_hflpipe_bench_refuses_an_unknown_name_before_running_any() -> None:
    done = CliRunner().invoke(cli, ["bench", "smoothing", "modle"])
    assert done.exit_code == 2 and "'modle' is not one of" in done.output


def test_python_m_bench_runs_from_the_checkout() -> None:
    done = subprocess.run([sys.executable, "-m", "bench", "--help"], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "usage: python -m bench" in done.stdout


def test_results_go_to_the_checkout_else_the_current_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert common.CHECKOUT == REPO
    assert common.default_results_dir() == REPO / "bench" / "results"
    # An installed copy: no checkout above the package, so no git commit of some other tree.
    monkeypatch.setattr(common, "CHECKOUT", None)
    monkeypatch.chdir(tmp_path)
    assert common.default_results_dir() == tmp_path / "hflpipe-bench-results"
    assert common._git_commit() is None


def run_bench(name: str, out: Path, checkpoint: Path | None = None) -> dict:
    command = [sys.executable, "-m", "bench", name, "--quick", "--out", str(out)]
    if checkpoint is not None:
        command += ["--checkpoint", str(checkpoint)]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    document = json.loads((out / f"{name}.json").read_text())
    assert document["benchmark"] == name
    assert document["quick"] is True
    assert document["machine"]["cpus_available"] >= 1
    return document


@pytest.mark.nightly
def test_model_bench_shipped_predictor_matches_plain_fp32(
    tmp_path: Path, synthetic_checkpoint: Path
) -> None:
    result = run_bench("model", tmp_path, synthetic_checkpoint)
    assert [row["batch"] for row in result["rows"]] == [2]
    shipped = result["accuracy_vs_plain_fp32"]["shipped"]
    assert shipped["precision"] == "fp32"
    assert shipped["within_tolerance"], shipped["max_abs_error"]
    assert all(row["shipped_crops_per_s"] > 0 for row in result["rows"])


@pytest.mark.nightly
def test_decode_bench_every_reader_sees_every_frame(tmp_path: Path) -> None:
    result = run_bench("decode", tmp_path)
    frames = {row["reader"]: row["frames"] for row in result["rows"]}
    assert set(frames.values()) == {result["frames_per_video"]}, frames
    assert all(row["peak_rss_mib"] >= row["rss_before_mib"] for row in result["rows"])
    assert all(row["cpu_ms_per_frame"] > 0 for row in result["rows"])
    target = result["target"]
    assert target["decoder"] == "pyav" and set(target["other_decoders_worst_ratio"]) == {"decord"}


@pytest.mark.nightly
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


@pytest.mark.nightly
def test_memory_bench_runs_every_case(tmp_path: Path, synthetic_checkpoint: Path) -> None:
    result = run_bench("memory", tmp_path, synthetic_checkpoint)
    rows = {row["case"]: row for row in result["rows"]}
    assert rows["10 s"]["frames_processed"] == 10 * rows["1 s"]["frames_processed"]
    assert rows["5 videos"]["videos"] == 5
    assert result["peak_ratio_longer_video_decord"] is None  # decord's pair is left out
    # The actor cases start with the largest batch (2 crops), then random sizes of 1-2.
    assert 3 <= rows["actor, 2 batches"]["frames_processed"] <= 4
    assert 6 <= rows["actor, 5 batches"]["frames_processed"] <= 10
    assert all(row["peak_rss_mib"] >= row["rss_after_load_mib"] for row in result["rows"])


@pytest.mark.nightly
def test_scaling_bench_runs_on_a_simulated_cluster(
    tmp_path: Path, synthetic_checkpoint: Path
) -> None:
    result = run_bench("scaling", tmp_path, synthetic_checkpoint)
    assert [(row["workers"], row["frames"]) for row in result["rows"]] == [(1, 2), (2, 4)]
    assert result["rows"][0]["efficiency"] == 1.0


@pytest.mark.nightly
def test_simulated_bench_runs_stand_in_actors_through_the_real_pipeline(
    tmp_path: Path, synthetic_checkpoint: Path
) -> None:
    result = run_bench("simulated", tmp_path, synthetic_checkpoint)
    lengths = result["video_frames"]
    for key in ("default", "with_vertices"):
        rows = result["runs"][key]
        assert [row["actors"] for row in rows] == [1, 2]
        # Every frame of the 2 x len(lengths) videos went through and was written.
        assert [row["frames"] for row in rows] == [sum(lengths), 2 * sum(lengths)]
        assert rows[0]["efficiency"] == 1.0
        assert all(0 < row["model_busy"] <= 1.0 and row["driver_cpu_s"] >= 0 for row in rows)
    vertices, plain = result["runs"]["with_vertices"], result["runs"]["default"]
    assert vertices[0]["output_mib"] > plain[0]["output_mib"]  # the vertices were written
    stages = result["cpu_per_frame_outside_model"]["default"]["stages"]
    assert "infer" not in {row["stage"] for row in stages}
    assert all(row["ms_per_frame"] >= 0 for row in stages)
    assert [row["gpu_frames_per_s"] for row in result["cores_per_gpu"]] == [250, 500, 1000, 2000]


@pytest.mark.nightly
def test_detector_bench_compares_runtimes_on_the_same_frames(
    tmp_path: Path, synthetic_checkpoint: Path
) -> None:
    result = run_bench("detector", tmp_path, synthetic_checkpoint)
    rows = result["detector_alone"]
    ours = {r["frames"]: r["hands_per_frame"] for r in rows if r["runtime"] == "ours (torch)"}
    assert list(ours.values()) == [1.0, 2.0]  # the drawn hands are found
    # Google's interpreter runs the same files in the same solution code: the same hands.
    assert {r["runtime"] for r in rows} >= {"ours (torch)", "ours, eager layers",
                                            "Google's interpreter (ai-edge-litert)"}
    assert all(r["hands_per_frame"] == ours[r["frames"]] for r in rows)
    assert "MediaPipe's solution" in result["notes"]
    batched = [(r["network"], r["batch"]) for r in result["networks_batched"]
               if r["device"] == "cpu"]
    assert batched == [(n, b) for n in ("palm", "landmarks") for b in (1, 8, 32)]
    # Every CPU batch is also timed with eager layers taking the whole batch.
    assert [r["batch"] for r in result["networks_batched"]
            if r.get("fused_graph_vs_eager_layers", 0) > 0] == [1, 8, 32, 1, 8, 32]
    # With the networks on an actor the task keeps the sampling and tracking only.
    side = {(r["frames"], r["networks"]): r["task_cpu_ms_per_frame"]
            for r in result["video_task_side"]}
    for frames in ours:
        assert side[frames, "networks on an actor"] < side[frames, "networks in this process"]
    assert [r["detector"] for r in result["pipeline"]] == ["this detector", "boxes file"]
    assert all(r["frames_per_s"] > 0 for r in result["pipeline"])
