"""A worker node removed mid-job (several raylets on one machine): the job still finishes
with exactly the rows an undisturbed run gives."""

from __future__ import annotations

import threading
import time

import pytest
import ray
import test_faults_common as common
from ray.cluster_utils import Cluster

from hflpipe.pipeline.inputs.videos import video_id_for
from hflpipe.pipeline.output.reader import visible_files
from hflpipe.pipeline.run.runner import run

pytestmark = [pytest.mark.slow, pytest.mark.own_ray, pytest.mark.timeout(480)]
FRAMES = 6
VIDEOS = 4


@pytest.fixture
def cluster(tmp_path):
    # The head runs only the driver (and the progress board); the work goes to two workers.
    cluster = Cluster(initialize_head=True,
                      head_node_args={"num_cpus": 0, "include_dashboard": False})
    workers = [cluster.add_node(num_cpus=2) for _ in range(2)]
    cluster.wait_for_nodes()
    trace = tmp_path / "trace"
    trace.mkdir()
    env = common.fault_runtime_env(trace, HFLPIPE_FAULT_TRACE_INFERENCE="1")
    ray.init(address=cluster.address, log_to_driver=False, configure_logging=False,
             runtime_env=env)
    yield cluster, workers, trace
    ray.shutdown()
    cluster.shutdown()


def test_a_node_removed_mid_job_loses_no_rows(tmp_path, synthetic_checkpoint, cluster):
    ray_cluster, workers, trace = cluster
    clips = [common.write_clip(tmp_path / f"clip{i}.mp4", FRAMES) for i in range(VIDEOS)]
    boxes = common.write_boxes(tmp_path / "boxes.csv", FRAMES)
    out = tmp_path / "out"
    config = common.run_config(clips, out, synthetic_checkpoint, boxes, stall_timeout_s=180)
    committed_at_removal: list[int] = []

    def remove_a_node_once_work_is_under_way() -> None:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            # Two batches inferred: three videos are in flight, on both nodes (3 task slots),
            # and most of the work is still to do.
            if len(list(trace.glob("infer-*"))) >= 2:
                videos = out / "videos"
                committed_at_removal.append(len(visible_files(videos)))
                ray_cluster.remove_node(workers[0])
                return
            time.sleep(0.1)

    remover = threading.Thread(target=remove_a_node_once_work_is_under_way, daemon=True)
    remover.start()
    summary = run(config, progress=False)
    remover.join(timeout=5)

    assert committed_at_removal and committed_at_removal[0] < VIDEOS, "removed too late"
    assert summary.statuses == {"ok": VIDEOS}
    undisturbed = {(video_id_for(c), f) for c in clips for f in range(FRAMES)}
    assert common.frame_rows(out, "hands") == undisturbed
    assert common.frame_rows(out, "objects") == undisturbed
    common.check_output_is_clean(out)
