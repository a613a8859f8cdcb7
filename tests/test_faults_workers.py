"""Processes that die or hang, on real Ray: poison videos, a lost inference actor, a bad crop.

One job holds a healthy clip, a clip whose decoding kills the worker process every time and
a clip with one crop the model fails on every time; the inference actor's process is also
killed once mid-job. A clip whose decoding never returns runs alone, with a short stall
timeout (in the job, that timeout would also have to outlast the crashing clip's retries
on a loaded machine). Faults are injected into the Ray workers by
:func:`test_faults_common.install_faults`.
"""

from __future__ import annotations

import pytest
import test_faults_common as common

from hflpipe.pipeline.inputs.videos import video_id_for
from hflpipe.pipeline.output.reader import read_table
from hflpipe.pipeline.run.runner import run

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]
FRAMES = 3
MAGENTA_FRAME = 1
MAX_RETRIES = 1
#: The hung clip's run holds only a clip without boxes (probed, never decoded), which
#: finishes well within this even on a loaded 2-core machine.
STALL_TIMEOUT_S = 5.0


@pytest.fixture(scope="module")
def job(tmp_path_factory, synthetic_checkpoint, local_ray):
    root = tmp_path_factory.mktemp("workers")
    faults = local_ray
    videos = {
        "healthy": common.write_clip(root / "healthy.mp4", FRAMES),
        "crash": common.write_clip(root / "poison_crash.mp4", FRAMES),
        "bad_crop": common.write_clip(root / "bad_crop.mp4", FRAMES,
                                      magenta_frames=[MAGENTA_FRAME]),
    }
    boxes = common.write_boxes(root / "boxes.csv", FRAMES)
    out = root / "out"
    config = common.run_config(videos.values(), out, synthetic_checkpoint, boxes,
                               max_retries=MAX_RETRIES)
    actor_crash = common.arm_actor_crash(faults)
    summary = run(config, progress=False)
    return videos, out, summary, faults, actor_crash


@pytest.fixture(scope="module")
def hung_job(tmp_path_factory, synthetic_checkpoint, local_ray):
    """The hung clip beside a healthy one that the boxes file has no rows for."""
    root = tmp_path_factory.mktemp("hung")
    hung = common.write_clip(root / "poison_hang.mp4", FRAMES)
    healthy = common.write_clip(root / "healthy.mp4", FRAMES)
    boxes = common.write_boxes(root / "all.csv", FRAMES)
    lines = boxes.read_text().splitlines()
    boxes.write_text("\n".join([f"video,{lines[0]}"] + [f"{hung.name},{line}"
                                                          for line in lines[1:]]) + "\n")
    config = common.run_config([hung, healthy], root / "out", synthetic_checkpoint, boxes,
                               max_retries=MAX_RETRIES, stall_timeout_s=STALL_TIMEOUT_S)
    return hung, healthy, root / "out", run(config, progress=False)


def _row(out, path):
    return read_table(out, "videos").to_pandas().set_index("path").loc[str(path)]


def test_a_video_that_kills_its_worker_is_quarantined_after_bounded_tries(job):
    videos, out, _, faults, _ = job
    row = _row(out, videos["crash"])
    assert row["status"] == "failed"
    assert row["error"].startswith(f"{videos['crash']}: worker died while processing")
    attempts = list(faults.glob("attempt-poison_crash.mp4-*"))
    assert len(attempts) == MAX_RETRIES + 1


def test_a_video_whose_decoder_hangs_fails_after_the_stall_timeout(hung_job):
    hung, healthy, out, summary = hung_job
    assert summary.statuses == {"ok": 1, "failed": 1}, summary.failures
    row = _row(out, hung)
    assert row["status"] == "failed"
    assert row["error"].startswith(f"{hung}: no progress for {STALL_TIMEOUT_S:.0f} s")
    assert _row(out, healthy)["num_frames"] == FRAMES


def test_a_lost_inference_actor_is_restarted_and_its_batch_retried(job):
    videos, out, summary, _, actor_crash = job
    assert actor_crash.exists(), "the injected actor crash did not happen"
    assert summary.statuses == {"ok": 2, "failed": 1}, summary.failures
    healthy = video_id_for(videos["healthy"])
    assert {f for v, f in common.frame_rows(out) if v == healthy} == set(range(FRAMES))
    assert _row(out, videos["healthy"])["failed_crops"] == 0
    common.check_output_is_clean(out)


def test_a_crop_that_always_fails_costs_that_crop_not_the_video(job):
    videos, out, _, _, _ = job
    row = _row(out, videos["bad_crop"])
    assert row["status"] == "ok" and row["failed_crops"] == 1
    hands = read_table(out, "hands").to_pandas()
    hands = hands[hands["video_id"] == video_id_for(videos["bad_crop"])]
    observed = set(hands.loc[~hands["interpolated"], "frame_index"])
    assert observed == set(range(FRAMES)) - {MAGENTA_FRAME}
    # The tracker bridges the one-frame gap; the row says it is interpolated.
    assert set(hands["frame_index"]) == set(range(FRAMES))
