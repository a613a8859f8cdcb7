"""Processes that die or hang, on real Ray: poison videos, a lost inference actor, a bad crop.

One job holds a healthy clip, a clip whose decoding kills the worker process every time, a
clip whose decoding never returns, and a clip with one crop the model fails on every time;
the inference actor's process is also killed once mid-job. Faults are injected into the Ray
workers by :func:`test_faults_common.install_faults`.
"""

from __future__ import annotations

import pytest
import test_faults_common as common

from hflpipe.pipeline.inputs.videos import video_id_for
from hflpipe.pipeline.output.reader import read_table
from hflpipe.pipeline.run.runner import run

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]
FRAMES = 6
MAGENTA_FRAME = 2
MAX_RETRIES = 1
#: Longer than a retried task takes to start a fresh worker on a loaded 2-core machine (the
#: stall clock runs until the retry reports), short enough not to dominate the test run.
STALL_TIMEOUT_S = 30.0


@pytest.fixture(scope="module")
def job(tmp_path_factory, synthetic_checkpoint, local_ray):
    root = tmp_path_factory.mktemp("workers")
    faults = local_ray
    videos = {
        "healthy": common.write_clip(root / "healthy.mp4", FRAMES),
        "crash": common.write_clip(root / "poison_crash.mp4", FRAMES),
        "hang": common.write_clip(root / "poison_hang.mp4", FRAMES),
        "bad_crop": common.write_clip(root / "bad_crop.mp4", FRAMES,
                                      magenta_frames=[MAGENTA_FRAME]),
    }
    boxes = common.write_boxes(root / "boxes.csv", FRAMES)
    out = root / "out"
    config = common.run_config(videos.values(), out, synthetic_checkpoint, boxes,
                               max_retries=MAX_RETRIES, stall_timeout_s=STALL_TIMEOUT_S)
    actor_crash = common.arm_actor_crash(faults)
    summary = run(config, progress=False)
    return videos, out, summary, faults, actor_crash


def _row(out, path):
    return read_table(out, "videos").to_pandas().set_index("path").loc[str(path)]


def test_a_video_that_kills_its_worker_is_quarantined_after_bounded_tries(job):
    videos, out, _, faults, _ = job
    row = _row(out, videos["crash"])
    assert row["status"] == "failed"
    assert row["error"].startswith(f"{videos['crash']}: worker died while processing")
    attempts = list(faults.glob("attempt-poison_crash.mp4-*"))
    assert len(attempts) == MAX_RETRIES + 1


def test_a_video_whose_decoder_hangs_fails_after_the_stall_timeout(job):
    videos, out, _, _, _ = job
    row = _row(out, videos["hang"])
    assert row["status"] == "failed"
    assert row["error"].startswith(f"{videos['hang']}: no progress for {STALL_TIMEOUT_S:.0f} s")


def test_a_lost_inference_actor_is_restarted_and_its_batch_retried(job):
    videos, out, summary, _, actor_crash = job
    assert actor_crash.exists(), "the injected actor crash did not happen"
    assert summary.statuses == {"ok": 2, "failed": 2}, summary.failures
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
