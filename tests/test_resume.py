"""Resume and idempotency: config versions, the output lock, per-video contexts, progress.

A stopped run resumed to the rows of an uninterrupted one is ``test_stop``'s; a killed
driver's is ``test_faults_driver``'s.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hflpipe.pipeline.common.errors import ConfigError, OutputError
from hflpipe.pipeline.config.run_config import RunConfig
from hflpipe.pipeline.infer.predictor import PredictorSettings
from hflpipe.pipeline.inputs.camera import Intrinsics
from hflpipe.pipeline.inputs.videos import VideoInput
from hflpipe.pipeline.output.schema import OutputMetadata
from hflpipe.pipeline.run.context import (
    JOB_RECORD,
    InputCache,
    RunContext,
    claim_output,
    context_for_video,
    output_folder,
    video_config_hash,
)
from hflpipe.pipeline.run.runner import estimate_progress


def _config(tmp_path: Path, **extra: object) -> RunConfig:
    return RunConfig(videos=["x.mp4"], out=tmp_path / "out", **extra)


def test_a_changed_config_is_refused_or_goes_to_a_new_version(tmp_path):
    config = _config(tmp_path)
    assert output_folder(config, "aaaa", {}, {}) == config.out
    with claim_output(config.out, config, "aaaa"):
        pass
    assert json.loads((config.out / JOB_RECORD).read_text())["config_hash"] == "aaaa"
    assert output_folder(config, "aaaa", {}, {}) == config.out
    with pytest.raises(ConfigError, match=r"config hash aaaa, this run's is bbbb.*--new-version"):
        output_folder(config, "bbbb", {}, {})
    newer = _config(tmp_path, new_version=True)
    assert output_folder(newer, "bbbb", {}, {}) == config.out / "versions" / "bbbb"
    assert output_folder(newer, "aaaa", {}, {}) == config.out


def test_a_folder_without_a_record_is_judged_by_its_rows(tmp_path):
    config = _config(tmp_path)
    rows = {"v1": {"config_hash": "aaaa"}, "v2": {"config_hash": "cccc"}}
    assert output_folder(config, "aaaa", rows, {"v2": "cccc"}) == config.out
    with pytest.raises(ConfigError, match="config hash cccc"):
        output_folder(config, "aaaa", rows, {})


def test_two_runs_cannot_write_one_folder_at_once(tmp_path):
    config = _config(tmp_path)
    with (
        claim_output(config.out, config, "aaaa"),
        pytest.raises(OutputError, match="another hflpipe run is writing"),
        claim_output(config.out, config, "aaaa"),
    ):
        pass
    with claim_output(config.out, config, "aaaa"):  # released when the first run ends
        pass


def _context() -> RunContext:
    return RunContext(
        config_hash="job", metadata=OutputMetadata("c", "m", "job"),
        predictor_settings=PredictorSettings(checkpoint=Path("c"), mano=None, device="cpu",
                                             precision="fp32"),
        intrinsics=None, object_name=None, control_points=None, boxes=None,
    )


def test_manifest_overrides_give_a_video_its_own_context_and_hash(tmp_path):
    context = _context()
    plain = VideoInput(Path("a.mp4"), "a")
    same = context_for_video(context, plain, InputCache())
    assert same.config_hash == context.config_hash and same.inputs_sha256 is not None
    special = VideoInput(Path("b.mp4"), "b", object="cracker_box", intrinsics="500,500,10,20")
    own = context_for_video(context, special, InputCache())
    assert own.config_hash == video_config_hash("job", special) != "job"
    assert own.metadata.config_hash == own.config_hash
    assert isinstance(own.intrinsics, Intrinsics) and own.intrinsics.K[0, 2] == 10
    assert own.object_name == "cracker_box" and own.control_points.shape == (21, 3)
    assert own.inputs_sha256 != same.inputs_sha256
    other = VideoInput(Path("b.mp4"), "b", object="cracker_box", intrinsics="501,500,10,20")
    assert video_config_hash("job", other) != own.config_hash


def test_progress_estimate_extrapolates_from_seen_videos():
    estimate = estimate_progress(finished_frames=100, finished_videos=1,
                                 in_flight=[(50, 100, 0.0)], not_started=2, elapsed_s=10.0)
    assert (estimate.frames_done, estimate.frames_total) == (150, 400)
    assert estimate.frames_per_s == pytest.approx(15.0)
    assert estimate.eta_s == pytest.approx(250 / 15.0)
    assert "frames 150/~400" in estimate.describe() and "ETA 0:00:17" in estimate.describe()
    nothing = estimate_progress(0, 0, [], 5, 0.0)
    assert nothing.frames_total is None and nothing.eta_s is None


def test_per_video_progress_lists_the_furthest_videos_first():
    from hflpipe.pipeline.run.runner import per_video_progress

    states = {"a-1": (10, 100, 0.0), "b-2": (90, 100, 0.0), "c-3": (0, 0, 0.0),
              "d-4": (50, 100, 0.0), "e-5": (1, 100, 0.0)}
    assert per_video_progress(states) == "b-2 90%, d-4 50%, a-1 10% (+2)"
    assert per_video_progress({}) == ""
