"""Scaling: ``hflpipe run`` on a simulated cluster of 1, 2 and 4 CPU worker nodes.

``ray.cluster_utils.Cluster`` starts a head node with no CPUs (the driver's)
and N worker nodes of 2 CPUs each (one predictor actor, one video task), all
raylets on this machine. Weak scaling: each worker gets the same work (videos
of the demo scene), and the run uses N predictor actors, CPU-only, one thread.

Throughput is frames over the processing window, from the first video's
``started_at`` to the last one's ``finished_at`` in the written ``videos``
table, so cluster and actor start-up are left out. Efficiency with N workers is
``fps(N) / (N * fps(1))``, the baseline being 1 worker in the same run. All
nodes share this machine's cores (``cpus_available`` in the machine facts):
once N actors need more cores than it has, efficiency must fall as cores/N.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import ray
from ray.cluster_utils import Cluster

from hflpipe.bench.common import (
    RESULTS_DIR,
    bench_cache,
    print_table,
    processing_window,
    ratio,
    synthetic_checkpoint,
    write_result,
)
from hflpipe.pipeline.config.run_config import make_config
from hflpipe.pipeline.demo.scene import make_demo_scene
from hflpipe.pipeline.run.runner import run as run_pipeline

WORKERS = (1, 2, 4)
QUICK_WORKERS = (1, 2)
VIDEOS_PER_WORKER, FRAMES = 2, 12
QUICK_VIDEOS_PER_WORKER, QUICK_FRAMES = 1, 2
CPUS_PER_NODE = 2
TARGET = 0.9


def run_on_cluster(workers: int, scene, videos_per_worker: int, checkpoint: Path,
                   work: Path) -> dict[str, object]:
    """One run on a fresh cluster of ``workers`` nodes; frames, window seconds, frames/s."""
    clips = []
    for i in range(workers * videos_per_worker):
        clip = work / f"w{workers}" / f"clip{i:02d}.mp4"
        clip.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(scene.video_path, clip)
        clips.append(clip)
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    try:
        for _ in range(workers):
            cluster.add_node(num_cpus=CPUS_PER_NODE)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, log_to_driver=False, configure_logging=False)
        config = make_config(
            videos=[str(c) for c in clips], out=work / f"out{workers}", checkpoint=checkpoint,
            detector="boxes", boxes=scene.boxes_path, intrinsics=str(scene.intrinsics_path),
            object=scene.object_name, device="cpu", num_actors=workers, cpus_per_task=1.0,
            cpus_per_actor=1.0,
            max_concurrent_videos=workers,
        )
        summary = run_pipeline(config, progress=False)
    finally:
        ray.shutdown()
        cluster.shutdown()
    if summary.statuses.get("ok", 0) != len(clips):
        raise RuntimeError(f"{workers} workers: {summary.failures}")
    started, finished = processing_window(config.out)
    window = (finished - started).total_seconds()
    return {"workers": workers, "videos": len(clips), "frames": summary.frames,
            "window_s": round(window, 2), "frames_per_s": round(summary.frames / window, 3),
            "run_s": round(summary.elapsed_s, 2)}


def run(*, quick: bool = False, checkpoint: Path | None = None,
        out_dir: Path = RESULTS_DIR) -> dict[str, object]:
    """Run the benchmark, print its table, write ``scaling.json``; returns the document."""
    workers_list = QUICK_WORKERS if quick else WORKERS
    per_worker, frames = ((QUICK_VIDEOS_PER_WORKER, QUICK_FRAMES) if quick
                          else (VIDEOS_PER_WORKER, FRAMES))
    checkpoint = checkpoint or synthetic_checkpoint()
    if ray.is_initialized():
        ray.shutdown()
    rows = []
    with tempfile.TemporaryDirectory(dir=bench_cache()) as scratch:
        work = Path(scratch)
        scene = make_demo_scene(work / "scene", num_frames=frames)
        for workers in workers_list:
            rows.append(run_on_cluster(workers, scene, per_worker, checkpoint, work))
    base = rows[0]["frames_per_s"]
    for row in rows:
        row["speedup"] = ratio(row["frames_per_s"], base)
        row["efficiency"] = ratio(row["frames_per_s"], row["workers"] * base)
    print_table("weak scaling on ray.cluster_utils.Cluster (CPU inference)", rows, list(rows[0]))
    cores = len(os.sched_getaffinity(0))
    within_cores = [r for r in rows if r["workers"] > 1 and r["workers"] <= cores]
    result = {
        "description": __doc__.strip().splitlines()[0],
        "baseline": "1 worker node, same run",
        "quick": quick,
        "cpus_per_node": CPUS_PER_NODE,
        "videos_per_worker": per_worker,
        "frames_per_video": frames,
        "rows": rows,
        "target": {
            "efficiency_required": TARGET,
            "note": f"{cores} cores: only worker counts up to {cores} can scale here",
            "efficiency_within_cores": [r["efficiency"] for r in within_cores],
            "met_within_cores": all(r["efficiency"] >= TARGET for r in within_cores)
            if within_cores else None,
        },
    }
    write_result("scaling", result, out_dir)
    return result
