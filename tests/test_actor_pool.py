"""The inference actor pool a driver keeps between runs."""

from __future__ import annotations

import pytest
import ray
from ray.exceptions import RayActorError

from hflpipe.pipeline.infer.actor_pool import actor_pool
from hflpipe.pipeline.infer.predictor import PredictorSettings

pytestmark = pytest.mark.slow


def test_a_driver_keeps_its_pool_for_the_same_model_and_replaces_it_for_another(
    local_ray, synthetic_checkpoint
) -> None:
    settings = PredictorSettings(synthetic_checkpoint, device="cpu", precision="fp32")
    first = actor_pool(settings, 1, 0.0, 1.0, "weights-a")
    assert actor_pool(settings, 1, 0.0, 1.0, "weights-a") is first
    assert ray.get(first[0].ready.remote()) == "cpu"
    # Other weights under the same path: a new pool, and the old one is released.
    second = actor_pool(settings, 1, 0.0, 1.0, "weights-b")
    assert second is not first
    with pytest.raises(RayActorError):
        ray.get(first[0].ready.remote(), timeout=60)
    assert ray.get(second[0].ready.remote()) == "cpu"


def test_a_driver_keeps_its_progress_board_and_each_run_finds_it_empty(local_ray) -> None:
    from hflpipe.pipeline.run.progress import start_board

    board = start_board()
    ray.get(board.report.remote("clip-1", 3, 10))
    again = start_board()
    assert again is board
    assert ray.get(again.snapshot.remote()) == {}
