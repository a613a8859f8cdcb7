"""Resume and idempotency: a killed run, re-run, equals an uninterrupted one; versions; lock."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds
import pytest
import yaml

from hflpipe.model.synthetic_checkpoint import synthetic_mano_path
from hflpipe.pipeline.common.errors import ConfigError, OutputError
from hflpipe.pipeline.config.run_config import RunConfig
from hflpipe.pipeline.demo.scene import make_demo_scene
from hflpipe.pipeline.infer.predictor import PredictorSettings
from hflpipe.pipeline.inputs.camera import Intrinsics
from hflpipe.pipeline.inputs.videos import VideoInput
from hflpipe.pipeline.output.reader import read_table, visible_files
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

FRAMES = 4
VIDEOS = 3


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


@pytest.fixture(scope="module")
def archive(tmp_path_factory, synthetic_checkpoint):
    """Three copies of a short demo video (different paths, so different videos) and a spec."""
    return write_copies_job(tmp_path_factory.mktemp("archive"), synthetic_checkpoint,
                            FRAMES, VIDEOS)


def write_copies_job(root: Path, checkpoint: Path, frames: int, videos: int) -> Path:
    """``videos`` copies of a demo video of ``frames`` frames in ``root`` and the spec of a
    job that does them one at a time into ``root/out``; returns the spec."""
    scene = make_demo_scene(root / "scene", num_frames=frames)
    for index in range(videos):
        shutil.copy(scene.video_path, root / f"clip{index}.mp4")
    spec = root / "job.yaml"
    spec.write_text(yaml.safe_dump({
        "inputs": {"videos": [str(root / "clip*.mp4")]},
        "output": {"out": str(root / "out")},
        "model": {"checkpoint": str(checkpoint), "mano": str(synthetic_mano_path())},
        "scene": {"intrinsics": str(scene.intrinsics_path), "object": scene.object_name},
        "detection": {"boxes": str(scene.boxes_path)},
        "resources": {"max_concurrent_videos": 1, "batch_size": 4},
    }))
    return spec


def _kill_run(spec: Path, out: Path, kill_after_videos: int) -> None:
    """``hflpipe run`` in its own process group and Ray temp folder, SIGKILLed once
    ``kill_after_videos`` videos are committed (a process of its own: it is killed)."""
    temp = tempfile.mkdtemp(prefix="hfq", dir="/tmp")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env["RAY_TMPDIR"] = temp
    command = [sys.executable, "-m", "hflpipe", "run", str(spec), "-q", "--format", "json"]
    process = subprocess.Popen(command, env=env, text=True, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 400
        while len(visible_files(out / "videos")) < kill_after_videos:
            assert process.poll() is None, process.stderr.read()
            assert time.monotonic() < deadline, "the run made no progress"
            time.sleep(0.2)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        _kill_strays(temp)
        shutil.rmtree(temp, ignore_errors=True)


def _kill_strays(temp: str) -> None:
    """Ray processes of the killed run that left its process group (found by temp folder)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if temp in cmdline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(entry.name), signal.SIGKILL)


def _sorted_rows(out: Path, table: str) -> pa.Table:
    rows = read_table(out, table)
    rows = rows.drop_columns([c for c in ("started_at", "finished_at") if c in rows.column_names])
    keys = [k for k in ("video_id", "frame_index", "track_id") if k in rows.column_names]
    return rows.sort_by([(k, "ascending") for k in keys]).replace_schema_metadata(None)


@pytest.mark.slow
def test_a_killed_run_resumes_to_the_same_rows_as_an_uninterrupted_one(
    archive, local_ray, hflpipe_cli
):
    def _run(spec: Path, *args: str):
        return hflpipe_cli("run", spec, "-q", "--format", "json", *args)

    spec = archive
    out = spec.parent / "out"
    _kill_run(spec, out, kill_after_videos=1)
    committed = len(visible_files(out / "videos"))
    assert 1 <= committed < VIDEOS
    # Readable right after the kill: only whole videos are visible, to every reader.
    hands = read_table(out, "hands")
    assert hands.num_rows == committed * FRAMES
    assert ds.dataset(out / "hands", format="parquet").count_rows() <= committed * FRAMES

    resumed = _run(spec)
    assert resumed.returncode == 0, resumed.stderr
    summary = json.loads(resumed.stdout)
    assert summary["already_done"] == committed and summary["ok"] == VIDEOS - committed

    reference = spec.parent / "reference"
    whole = _run(spec, "--out", str(reference))
    assert whole.returncode == 0, whole.stderr
    for table in ("hands", "objects", "videos"):
        got, expected = _sorted_rows(out, table), _sorted_rows(reference, table)
        assert got.num_rows == (VIDEOS if table == "videos" else VIDEOS * FRAMES)
        keys = ["video_id", "frame_index", "track_id"] if table != "videos" else ["video_id"]
        assert not got.select(keys).to_pandas().duplicated().any()
        assert got.equals(expected), table
    # Raw readers see exactly the committed rows: nothing partial or duplicated is left.
    assert ds.dataset(out / "hands", format="parquet").count_rows() == VIDEOS * FRAMES

    again = _run(spec)
    assert json.loads(again.stdout)["already_done"] == VIDEOS

    changed = _run(spec, "--stride", "2")
    assert changed.returncode == 1
    assert "holds results of another configuration" in changed.stderr
    assert len(changed.stderr.strip().splitlines()) == 1


def test_per_video_progress_lists_the_furthest_videos_first():
    from hflpipe.pipeline.run.runner import per_video_progress

    states = {"a-1": (10, 100, 0.0), "b-2": (90, 100, 0.0), "c-3": (0, 0, 0.0),
              "d-4": (50, 100, 0.0), "e-5": (1, 100, 0.0)}
    assert per_video_progress(states) == "b-2 90%, d-4 50%, a-1 10% (+2)"
    assert per_video_progress({}) == ""
