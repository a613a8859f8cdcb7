"""Jobs across nodes (``ray.cluster_utils.Cluster``, raylets on this machine): a job
equals a single-process run of it, row for row, and a worker node removed mid-job loses
no rows.

One cluster serves the module (a cluster costs seconds of the suite to start and stop):
a 2-CPU head, a 1-CPU node with a logical GPU and no CUDA (``device="auto"`` must ask
that node and pick the CPU), and a 2-CPU worker node, removed by the last test.
"""

from __future__ import annotations

import shutil
import threading
import time

import pyarrow as pa
import pytest
import ray
import test_faults_common as common
import torch
from local_cluster import local_cluster

from hflpipe.model.synthetic_checkpoint import synthetic_mano_path
from hflpipe.pipeline.config.run_config import make_config
from hflpipe.pipeline.demo.scene import make_demo_scene
from hflpipe.pipeline.infer.client import LocalInference
from hflpipe.pipeline.infer.predictor import HflnetPredictor
from hflpipe.pipeline.inputs.videos import collect_inputs, video_id_for
from hflpipe.pipeline.output.reader import read_table, visible_files
from hflpipe.pipeline.run.context import InputCache, context_for_video, prepare_context
from hflpipe.pipeline.run.runner import model_device, run
from hflpipe.pipeline.run.video import process_video

pytestmark = [pytest.mark.slow, pytest.mark.own_ray]
FRAMES = 2
#: One short video commits first while the two long ones still wait for most of their batches.
SHORT_FRAMES, LONG_FRAMES = 2, 4


@pytest.fixture(scope="module")
def cluster():
    """(cluster, worker node): the head, the inference node with a logical GPU, and the
    worker node (see the module's docstring)."""
    with local_cluster(2, {"num_cpus": 1, "num_gpus": 1}, {"num_cpus": 2}) as (nodes, added):
        yield nodes, added[1]


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


def test_a_gpu_node_without_cuda_makes_the_run_a_cpu_run(cluster, job):
    assert not torch.cuda.is_available()
    # The cluster lists a GPU, but CUDA does not work on its node: the probe task, placed
    # there by its GPU share, says so: "auto" is the CPU and fp32 (both enter the hash).
    device = model_device(job)
    assert device == "cpu"
    settings = prepare_context(job, device=device).predictor_settings
    assert (settings.device, settings.precision) == ("cpu", "fp32")


def test_a_job_across_nodes_equals_a_single_process_run(cluster, job):
    assert len([n for n in ray.nodes() if n["Alive"]]) == 3
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


@pytest.mark.timeout(300)
def test_a_node_removed_mid_job_loses_no_rows(tmp_path, synthetic_checkpoint, cluster):
    """Last in the module: the worker node goes once a video commits. The actor (1 CPU)
    and three video tasks spread over the nodes, so some of the job runs there."""
    ray_cluster, worker = cluster
    lengths = {"short": SHORT_FRAMES, "long1": LONG_FRAMES, "long2": LONG_FRAMES}
    clips = {common.write_clip(tmp_path / f"{name}.mp4", frames): frames
             for name, frames in lengths.items()}
    boxes = common.write_boxes(tmp_path / "boxes.csv", LONG_FRAMES)
    out = tmp_path / "out"
    # One crop per batch: a long video is four calls to the actor, the short one two.
    config = common.run_config(clips, out, synthetic_checkpoint, boxes, batch_size=1,
                               stall_timeout_s=180)
    committed_at_removal: list[int] = []

    def remove_the_worker_once_a_video_commits() -> None:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            committed = len(visible_files(out / "videos"))
            if committed:
                committed_at_removal.append(committed)
                ray_cluster.remove_node(worker)
                return
            time.sleep(0.05)

    remover = threading.Thread(target=remove_the_worker_once_a_video_commits, daemon=True)
    remover.start()
    summary = run(config, progress=False)
    remover.join(timeout=5)

    assert committed_at_removal and committed_at_removal[0] < len(clips), "removed too late"
    assert not [n for n in ray.nodes() if n["Alive"] and n["NodeID"] == worker.node_id]
    assert summary.statuses == {"ok": len(clips)}
    undisturbed = {(video_id_for(c), f) for c, frames in clips.items() for f in range(frames)}
    assert common.frame_rows(out, "hands") == undisturbed
    assert common.frame_rows(out, "objects") == undisturbed
    common.check_output_is_clean(out)


def _sorted(table: pa.Table) -> pa.Table:
    keys = [("video_id", "ascending"), ("frame_index", "ascending"), ("track_id", "ascending")]
    return table.sort_by(keys).replace_schema_metadata(None)
