"""The config hash: what the model really runs with is in it, options a run ignores are not."""

from __future__ import annotations

from pathlib import Path

import pytest

from hflpipe.pipeline.config.run_config import RunConfig, make_config
from hflpipe.pipeline.run.context import config_hash, prepare_context, run_precision

SHAS = ("c" * 64, "m" * 64)


def _config(tmp_path: Path, **options: object) -> RunConfig:
    return make_config(videos=["clip.mp4"], out=tmp_path / "out", **options)


def _hash(config: RunConfig, device: str = "cpu") -> str:
    return config_hash(config, *SHAS, device, run_precision(config, device))


def test_auto_device_and_precision_are_resolved_before_hashing(tmp_path) -> None:
    config = _config(tmp_path)
    assert run_precision(config, "cpu") == "fp32"
    assert run_precision(config, "cuda") == "fp16"
    assert run_precision(_config(tmp_path, precision="bf16"), "cuda") == "bf16"
    # A CPU fp32 run resumed on a GPU in fp16 must not mix its rows in.
    assert _hash(config, "cpu") != _hash(config, "cuda")
    # "auto" on the CPU is the same run as an explicit fp32 on the CPU.
    assert _hash(config, "cpu") == _hash(_config(tmp_path, precision="fp32"), "cpu")
    assert _hash(_config(tmp_path, precision="fp16"), "cuda") == _hash(config, "cuda")


def test_prepare_context_hashes_and_runs_the_resolved_settings(tmp_path, synthetic_checkpoint):
    config = _config(tmp_path, checkpoint=synthetic_checkpoint)
    on_cpu = prepare_context(config)
    on_gpu = prepare_context(config, device="cuda")
    assert (on_cpu.predictor_settings.device, on_cpu.predictor_settings.precision) == (
        "cpu", "fp32")
    assert (on_gpu.predictor_settings.device, on_gpu.predictor_settings.precision) == (
        "cuda", "fp16")
    assert on_cpu.config_hash != on_gpu.config_hash


@pytest.mark.parametrize(
    ("base", "change"),
    [
        ({"intrinsics": "600,600,320,240"}, {"hfov_deg": 90.0}),
        ({}, {"boxes": Path("b.csv")}),
        ({}, {"torchvision_classes": {1: "hand", 2: "object"}}),
        ({}, {"batch_size": 4, "chunk_size": 8, "decoder": "decord", "max_retries": 5}),
    ],
)
def test_options_the_run_ignores_do_not_change_the_hash(tmp_path, base, change) -> None:
    assert _hash(_config(tmp_path, **base)) == _hash(_config(tmp_path, **(base | change)))


@pytest.mark.parametrize(
    ("base", "change"),
    [
        ({}, {"score_threshold": 0.9}),
        ({"detector": "boxes", "boxes": Path("b.csv")}, {"score_threshold": 0.9}),
        ({}, {"hfov_deg": 90.0}),
        ({"detector": "boxes", "boxes": Path("b.csv")}, {"boxes": Path("other.csv")}),
        ({}, {"intrinsics": "600,600,320,240"}),
        ({}, {"stride": 2}),
        ({}, {"stream": 1}),
        ({}, {"with_vertices": True}),
    ],
)
def test_options_that_change_results_change_the_hash(tmp_path, base, change) -> None:
    assert _hash(_config(tmp_path, **base)) != _hash(_config(tmp_path, **(base | change)))
