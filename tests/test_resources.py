"""Runs that can never be scheduled are refused before any work; a video that never
starts fails after the stall timeout instead of hanging the run."""

from __future__ import annotations

import json
import time

import pytest
import ray
from conftest import SHARED_RAY_CPUS

from hflpipe.model.synthetic_checkpoint import synthetic_mano_path
from hflpipe.pipeline.demo.scene import make_demo_scene
from hflpipe.pipeline.run.resources import Demand, unschedulable

ONE_ACTOR = Demand(actors=1, cpus_per_actor=1.0, gpus_per_actor=0.0, cpus_per_task=1.0)


@pytest.mark.parametrize(("nodes", "demand", "expected"), [
    ([{"CPU": 2.0}], Demand(2, 1.0, 0.0, 1.0), "no video could ever start"),
    ([{"CPU": 1.0}], ONE_ACTOR, "hold 1 of the cluster's 1 CPUs"),
    ([{"CPU": 4.0}], Demand(1, 3.0, 0.0, 3.0), "needs 3 more on one node"),
    ([{"CPU": 8.0}], Demand(1, 1.0, 1.0, 1.0), "only 0 fit"),
    ([{"CPU": 4.0}], ONE_ACTOR, None),
    ([{"CPU": 1.0}, {"CPU": 1.0}], ONE_ACTOR, None),
    ([{"CPU": 0.0}, {"CPU": 8.0, "GPU": 1.0}], Demand(1, 1.0, 1.0, 1.0), None),
])
def test_what_can_never_be_scheduled_is_named(nodes, demand, expected):
    problem = unschedulable(nodes, demand)
    if expected is None:
        assert problem is None
    else:
        assert expected in problem


@pytest.fixture(scope="module")
def small_job(tmp_path_factory, synthetic_checkpoint):
    scene = make_demo_scene(tmp_path_factory.mktemp("scene"), num_frames=2, size=(320, 240))
    return ["--videos", str(scene.video_path), "--boxes", str(scene.boxes_path),
            "--checkpoint", str(synthetic_checkpoint), "--mano", str(synthetic_mano_path()),
            "--device", "cpu", "-q", "--format", "json"]


@pytest.mark.timeout(120)  # without the check, these runs wait forever
@pytest.mark.parametrize("args", [["--cpus-per-task", "3"], ["--actors", "4"]])
def test_a_run_that_can_never_fit_is_refused_in_one_line(small_job, args, tmp_path,
                                                         local_ray, hflpipe_cli):
    result = hflpipe_cli("run", *small_job, "--out", tmp_path / "out", *args)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "no video could ever start" in result.stderr
    assert not (tmp_path / "out" / "videos").exists()


def test_a_joined_cluster_that_may_still_grow_gets_a_warning_not_a_refusal(
        local_ray, monkeypatch, caplog):
    # A ray-up cluster whose autoscaler publishes no node types looks like its bare head:
    # refusing there would refuse every run the cluster could serve once it scales up.
    from types import SimpleNamespace

    from hflpipe.pipeline.config.run_config import make_config
    from hflpipe.pipeline.run import runner

    config = make_config(videos=["x.mp4"], out="out", checkpoint="c.pth", num_actors=4)
    context = SimpleNamespace(predictor_settings=SimpleNamespace(device="cpu"))
    with pytest.raises(runner.ConfigError, match="no video could ever start"):
        runner._check_resources(config, context)
    monkeypatch.setenv("RAY_ADDRESS", ray.get_runtime_context().gcs_address)
    demand = runner._check_resources(config, context)
    assert demand.actors == 4
    assert "no video could ever start" in caplog.text


@ray.remote
class _Hog:
    def ready(self) -> bool:
        return True


@pytest.mark.timeout(180)
def test_a_video_that_never_starts_fails_after_the_stall_timeout(small_job, tmp_path,
                                                                 local_ray, hflpipe_cli):
    # A first run leaves the inference actor up (a driver keeps its pool); then other work
    # takes every free CPU: the run fits the cluster, yet its video task never gets a CPU.
    first = hflpipe_cli("run", *small_job, "--out", tmp_path / "first")
    assert first.returncode == 0, first.stderr
    deadline = time.monotonic() + 30
    # The cluster's view of free CPUs follows a finished task with a short delay.
    while ray.available_resources().get("CPU", 0.0) < SHARED_RAY_CPUS // 2:  # actor: half
        assert time.monotonic() < deadline, ray.available_resources()
        time.sleep(0.2)
    hog = _Hog.options(num_cpus=ray.available_resources()["CPU"]).remote()
    ray.get(hog.ready.remote())
    try:
        result = hflpipe_cli("run", *small_job, "--out", tmp_path / "out", "--stall-timeout", "2")
    finally:
        ray.kill(hog)
    assert result.returncode == 2, result.stderr
    (failure,) = json.loads(result.stdout)["failures"]
    assert "never started" in failure["error"]


def test_the_progress_line_says_when_videos_wait_for_resources(local_ray):
    import io

    from tqdm import tqdm

    from hflpipe.pipeline.run.runner import RunSummary, _show_frames

    bar = tqdm(total=2, file=io.StringIO())
    _show_frames(bar, {}, RunSummary(out=None, config_hash=""), not_started=0, waiting=2)
    assert "waiting for resources: 2 videos queued" in bar.postfix
    _show_frames(bar, {"a-1": (1, 4, 0.0)}, RunSummary(out=None, config_hash=""), 0, waiting=1)
    assert "waiting" not in bar.postfix and "a-1 25%" in bar.postfix


@pytest.mark.parametrize(("nodes", "actors", "expected"), [
    ([{"CPU": 16.0}], 1, 8.0),
    ([{"CPU": 2.0}], 1, 1.0),
    ([{"CPU": 1.0}], 1, 1.0),
    ([{"CPU": 4.0}], 4, 1.0),
    ([{"CPU": 8.0}, {"CPU": 8.0}], 2, 4.0),
    ([{"CPU": 0.0}, {"CPU": 32.0}], 1, 16.0),
    ([], 1, 1.0),
])
def test_cpu_actors_take_half_the_cpus_they_share(nodes, actors, expected):
    from hflpipe.pipeline.run.resources import cpu_actor_share

    assert cpu_actor_share(nodes, actors) == expected


def test_a_cpu_actor_reserves_its_share_unless_told_otherwise(local_ray):
    from types import SimpleNamespace

    from hflpipe.pipeline.config.run_config import make_config
    from hflpipe.pipeline.run import runner

    cpu = SimpleNamespace(predictor_settings=SimpleNamespace(device="cpu"))
    config = make_config(videos=["x.mp4"], out="out", checkpoint="c.pth")
    assert runner._check_resources(config, cpu).cpus_per_actor == SHARED_RAY_CPUS // 2
    given = make_config(videos=["x.mp4"], out="out", checkpoint="c.pth", cpus_per_actor=1.5)
    assert runner._check_resources(given, cpu).cpus_per_actor == 1.5
