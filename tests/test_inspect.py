"""``hflpipe inspect``: per-job totals, grouped failures, per-track quality, plots."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from test_evaluate import META, write_output
from test_schema import sample_hand_columns, sample_object_columns, sample_video_row

from hflpipe.pipeline.cli.results import inspect_command
from hflpipe.pipeline.common.errors import InputError
from hflpipe.pipeline.output.schema import OutputMetadata
from hflpipe.pipeline.output.writer import write_video_status
from hflpipe.pipeline.results.inspect import failure_reason, find_output_roots, inspect_output

OTHER = OutputMetadata(checkpoint_sha256="a" * 64, mano_sha256="b" * 64, config_hash="beef")


def _failed(out, video_id: str, error: str, meta: OutputMetadata = META,
            status: str = "failed") -> None:
    row = sample_video_row(video_id, status) | {"error": error,
                                                "config_hash": meta.config_hash}
    write_video_status(out, video_id, row, meta)


def _quality_hands(video_id: str) -> dict:
    """Six rows of one hand track: two suspect (low confidence, jitter), one interpolated."""
    cols = sample_hand_columns(video_id, 6)
    cols["interpolated"] = np.arange(6) == 2
    cols["confidence"] = np.float32([0.9, 0.1, 0.0, 0.9, 0.9, 0.9])
    cols["detector_score"] = np.ones(6, np.float32)
    cols["jitter_mps2"] = np.ma.masked_invalid([np.nan, 3.0, np.nan, 90.0, 4.0, np.nan])
    cols["handedness_flip"] = np.ma.masked_array(np.zeros(6, bool), mask=cols["interpolated"])
    cols["hand_object_distance_m"] = np.ma.masked_all(6, np.float32)
    cols["suspect"] = np.array([False, True, False, True, False, False])
    cols["suspect_reasons"] = np.array([None, "low_confidence", None, "jitter", None, None],
                                       dtype=object)
    for name in ("joints2d", "joints3d", "mano_pose", "translation"):
        cols[f"{name}_raw"] = np.nan_to_num(cols[f"{name}_raw"])
    return cols


@pytest.fixture
def output(tmp_path):
    out = tmp_path / "out"
    write_output(out, "good", _quality_hands("good"), sample_object_columns("good", 6))
    _failed(out, "broken1", f"{tmp_path}/in/broken1.mp4: moov atom not found at byte 12")
    _failed(out, "broken2", f"{tmp_path}/in/broken2.mp4: moov atom not found at byte 7734")
    _failed(out, "gone", "no such file", status="skipped")
    _failed(out, "old", "decoder hung for 600 s", meta=OTHER)
    return out


def test_totals_per_job_and_failures_grouped(output) -> None:
    report = inspect_output(output)
    jobs = {job.config_hash: job for job in report.jobs}
    assert set(jobs) == {"c0ffee", "beef"}
    job = jobs["c0ffee"]
    assert (job.videos_ok, job.videos_failed, job.videos_skipped) == (1, 2, 1)
    assert (job.frames, job.hand_tracks, job.object_tracks) == (6, 1, 1)
    assert (job.hand_rows, job.object_rows, job.interpolated_hand_rows) == (6, 6, 1)
    assert job.suspect_hand_rows == 2
    assert job.suspect_reasons == {"hand:low_confidence": 1, "hand:jitter": 1}
    # The two decode failures differ only in path and byte offset: one group.
    assert job.failures == {
        "failed: <path>: moov atom not found at byte <n>": ["broken1", "broken2"],
        "skipped: no such file": ["gone"],
    }
    assert jobs["beef"].videos_failed == 1 and jobs["beef"].hand_rows == 0
    hand = next(t for t in report.tracks if t.kind == "hand")
    assert (hand.frames, hand.interpolated, hand.suspect) == (6, 1, 2)
    assert hand.median_jitter_mps2 == pytest.approx(4.0)
    assert hand.reasons == {"low_confidence": 1, "jitter": 1}
    obj = next(t for t in report.tracks if t.kind == "object")
    assert obj.suspect == 0  # the sample objects carry no quality columns: not assessed
    assert obj.pose_frames == 4 and obj.label == "003_cracker_box"


def test_failure_reason_keeps_the_cause() -> None:
    assert failure_reason("/a/b.mp4: 3 frames bad", "/a/b.mp4") == "<video>: <n> frames bad"
    assert failure_reason(None) == "unknown error"


def test_versioned_layouts_are_found(tmp_path, output) -> None:
    nested = tmp_path / "job" / "versions" / "abc"
    write_output(nested, "v", _quality_hands("v"), sample_object_columns("v", 6))
    write_output(tmp_path / "job", "w", _quality_hands("w"), sample_object_columns("w", 6))
    assert find_output_roots(tmp_path / "job") == [tmp_path / "job", nested]
    with pytest.raises(InputError, match="no hflpipe output"):
        find_output_roots(tmp_path / "job" / "versions" / "abc" / "hands")
    with pytest.raises(InputError, match="not a directory"):
        find_output_roots(tmp_path / "missing")


def test_cli_text_json_and_plots(output, tmp_path) -> None:
    runner = CliRunner()
    text = runner.invoke(inspect_command, [str(output)])
    assert text.exit_code == 0, text.output
    assert "videos     ok 1  failed 2  skipped 1" in text.output
    assert "2 x failed: <path>: moov atom not found at byte <n>  [broken1, broken2]" in (
        text.output)
    assert "hand 0 right" in text.output

    data = json.loads(runner.invoke(inspect_command, [str(output), "--format", "json",
                                                      "--no-tracks"]).output)
    assert "tracks" not in data
    assert {j["config_hash"]: j["videos_failed"] for j in data["jobs"]} == {
        "c0ffee": 2, "beef": 1}

    plots = tmp_path / "plots"
    result = runner.invoke(inspect_command, [str(output), "--plots", str(plots)])
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in plots.iterdir())
    assert names == ["good_quality.png", "good_trajectories.png", "quality_histogram.png"]
    for name in names:
        assert (plots / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert (plots / name).stat().st_size > 10_000


def test_cli_on_a_folder_without_output_fails_in_one_line(tmp_path) -> None:
    result = CliRunner().invoke(inspect_command, [str(tmp_path)])
    assert result.exit_code != 0
    assert isinstance(result.exception, InputError)
    assert "no hflpipe output" in str(result.exception)

