"""A job across two nodes (``ray.cluster_utils.Cluster``) equals a single-process run of
the same job, row for row.

The inference node has a logical GPU and no CUDA: Ray places the predictor actor there
(it asks for one GPU) and ``device="auto"`` must still pick the CPU.
"""

from __future__ import annotations

import shutil

import pyarrow as pa
import pytest
import ray
import torch
from local_cluster import local_cluster

from hflpipe.model.synthetic_checkpoint import synthetic_mano_path
from hflpipe.pipeline.config.run_config import make_config
from hflpipe.pipeline.demo.scene import make_demo_scene
from hflpipe.pipeline.infer.actor_pool import start_actors
from hflpipe.pipeline.infer.client import LocalInference
from hflpipe.pipeline.infer.predictor import HflnetPredictor
from hflpipe.pipeline.inputs.videos import collect_inputs
from hflpipe.pipeline.output.reader import read_table
from hflpipe.pipeline.run.context import InputCache, context_for_video, prepare_context
from hflpipe.pipeline.run.runner import model_device, run
from hflpipe.pipeline.run.video import process_video

pytestmark = [pytest.mark.slow, pytest.mark.own_ray]
FRAMES = 2


@pytest.fixture(scope="module")
def cluster():
    """A 2-CPU head (the driver, video tasks) and a 1-CPU node with one logical GPU.

    The actor and two video tasks do not fit on the head alone: the job spans both nodes.
    """
    with local_cluster(2, {"num_cpus": 1, "num_gpus": 1}) as (nodes, _):
        yield nodes


@pytest.fixture(scope="module")
def job(tmp_path_factory, synthetic_checkpoint):
    root = tmp_path_factory.mktemp("multinode")
    scene = make_demo_scene(root / "scene", num_frames=FRAMES)
    for name in ("a", "b"):
        shutil.copy(scene.video_path, root / f"{name}.mp4")
    return make_config(
        videos=[str(root / "*.mp4")], out=root / "out", checkpoint=synthetic_checkpoint,
        mano=synthetic_mano_path(), detector="boxes", boxes=scene.boxes_path,
        intrinsics=str(scene.intrinsics_path), object=scene.object_name, batch_size=4,
        gpus_per_actor=1.0, cpus_per_task=1.0,
    )


def test_the_actor_on_the_gpu_node_runs_on_cpu_without_cuda(cluster, job):
    assert not torch.cuda.is_available()
    # The cluster lists a GPU, but CUDA does not work on its node: "auto" is the CPU, and
    # the config hash says so.
    assert model_device(job) == "cpu"
    context = prepare_context(job)
    (actor,) = start_actors(context.predictor_settings, 1, gpus_per_actor=1.0,
                            cpus_per_actor=1.0)
    try:
        assert ray.get(actor.ready.remote()) == "cpu"
    finally:
        ray.kill(actor)


def test_a_job_across_nodes_equals_a_single_process_run(cluster, job):
    assert len([n for n in ray.nodes() if n["Alive"]]) == 2
    summary = run(job, progress=False)
    assert summary.statuses == {"ok": 2}

    context = prepare_context(job)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the actor: one CPU, one thread
    try:
        local = LocalInference(HflnetPredictor(context.predictor_settings))
        outcomes = [
            process_video(video, job, context_for_video(context, video, InputCache()), local)
            for video in collect_inputs(job.videos, job.video_list, job.manifest)
        ]
    finally:
        torch.set_num_threads(threads)
    for table in ("hands", "objects"):
        expected = pa.concat_tables([getattr(o, table) for o in outcomes])
        got = read_table(job.out, table)
        assert got.num_rows == 2 * FRAMES
        assert _sorted(got).equals(_sorted(expected)), table
    videos = read_table(job.out, "videos").to_pylist()
    by_id = {o.video_id: o.video_row for o in outcomes}
    for row in videos:
        assert row["frames_processed"] == by_id[row["video_id"]]["frames_processed"] == FRAMES
        assert row["config_hash"] == by_id[row["video_id"]]["config_hash"]


def _sorted(table: pa.Table) -> pa.Table:
    keys = [("video_id", "ascending"), ("frame_index", "ascending"), ("track_id", "ascending")]
    return table.sort_by(keys).replace_schema_metadata(None)
