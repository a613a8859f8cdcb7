"""The inference actor pool a driver keeps between runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import ray
import test_faults_common as common
from ray.exceptions import RayActorError

from hflpipe.bench.simulated import StandInPool
from hflpipe.pipeline.infer import actor_pool as actor_pool_module
from hflpipe.pipeline.infer.actor_pool import actor_pool
from hflpipe.pipeline.infer.predictor import HflnetPredictor, PredictorSettings
from hflpipe.pipeline.run.runner import run

pytestmark = pytest.mark.slow


def test_a_driver_keeps_its_pool_for_the_same_model_and_replaces_it_for_another(
    local_ray, synthetic_checkpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Light actors: what is kept or replaced is the pool, whatever its actors load (the
    # pipeline tests start real ones).
    pool = StandInPool({"joints2d": np.zeros((1, 21, 2), np.float32)}, latency_s=0.0)
    monkeypatch.setattr(actor_pool_module, "start_actors", pool)
    monkeypatch.setattr(actor_pool_module, "_kept_pool", None)
    settings = PredictorSettings(synthetic_checkpoint, device="cpu", precision="fp32")
    first = actor_pool(settings, 1, 0.0, 1.0, "weights-a")
    assert actor_pool(settings, 1, 0.0, 1.0, "weights-a") is first
    assert ray.get(first[0].ready.remote()) == "stand-in"
    # Other weights under the same path: a new pool, and the old one is released.
    second = actor_pool(settings, 1, 0.0, 1.0, "weights-b")
    assert second is not first
    with pytest.raises(RayActorError):
        ray.get(first[0].ready.remote(), timeout=60)
    assert ray.get(second[0].ready.remote()) == "stand-in"
    # So is a pool of another Ray session's, without killing anything of this one's.
    monkeypatch.setattr(actor_pool_module, "driver_session", lambda: ("elsewhere",))
    third = actor_pool(settings, 1, 0.0, 1.0, "weights-b")
    assert third is not second
    assert ray.get(second[0].ready.remote()) == "stand-in"
    for actor in (*second, *third):
        ray.kill(actor)


def test_a_driver_keeps_its_progress_board_and_each_run_finds_it_empty(local_ray) -> None:
    from hflpipe.pipeline.run.progress import start_board

    board = start_board()
    ray.get(board.report.remote("clip-1", 3, 10))
    again = start_board()
    assert again is board
    assert ray.get(again.snapshot.remote()) == {}


def test_videos_started_one_after_another_begin_on_different_actors(
    local_ray, synthetic_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two one-batch videos, one at a time, over two actors that answer with the network's
    # real outputs for one crop: each video starts on the next actor, so each answers one.
    # Given one start for all, a job of short videos kept one actor busy and the rest idle.
    predictor = HflnetPredictor(PredictorSettings(synthetic_checkpoint, device="cpu"))
    crop = np.random.default_rng(0).integers(0, 256, (1, 256, 256, 3), dtype=np.uint8)
    template = predictor({"images": crop, "hand_boxes": np.float32([[60, 60, 200, 200]]),
                          "object_boxes": np.float32([[100, 90, 230, 220]])})
    pool = StandInPool(template, latency_s=0.0)
    monkeypatch.setattr(actor_pool_module, "start_actors", pool)
    monkeypatch.setattr(actor_pool_module, "_kept_pool", None)
    clips = [common.write_clip(tmp_path / f"clip{i}.mp4", 2) for i in range(2)]
    boxes = common.write_boxes(tmp_path / "boxes.csv", 2)
    config = common.run_config(clips, tmp_path / "out", synthetic_checkpoint, boxes,
                               num_actors=2, cpus_per_actor=0.01, max_concurrent_videos=1)
    try:
        summary = run(config, progress=False)
        assert summary.statuses == {"ok": 2}
        assert pool.answered() == [1, 1]
    finally:
        for actor in pool.actors:
            ray.kill(actor)
