"""A worker node removed mid-job (two raylets on one machine): the job still finishes
with exactly the rows an undisturbed run gives."""

from __future__ import annotations

import threading
import time

import pytest
import ray
import test_faults_common as common
from local_cluster import local_cluster

from hflpipe.pipeline.inputs.videos import video_id_for
from hflpipe.pipeline.output.reader import visible_files
from hflpipe.pipeline.run.runner import run

pytestmark = [pytest.mark.slow, pytest.mark.own_ray, pytest.mark.timeout(300)]
#: One short video commits first while the two long ones still wait for most of their batches.
SHORT_FRAMES, LONG_FRAMES = 2, 4
NODE_CPUS = 2


@pytest.fixture
def cluster():
    # Head and worker of 2 CPUs each: the actor (1 CPU) and three video tasks fill both,
    # so whatever runs when the worker goes, some of it runs there.
    with local_cluster(NODE_CPUS, {"num_cpus": NODE_CPUS}) as (nodes, (worker,)):
        yield nodes, worker


def test_a_node_removed_mid_job_loses_no_rows(tmp_path, synthetic_checkpoint, cluster):
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
