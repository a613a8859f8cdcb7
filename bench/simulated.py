"""Simulated scale: the real orchestration with a stand-in model, 1 to 16 simulated GPUs.

One small machine pretends to have many GPUs: ``hflpipe run`` runs for real (real Ray,
real video tasks decoding real videos, real tracking, pose fitting, PnP, smoothing,
real Parquet written by the workers), but each inference actor is a stand-in that
answers a batch after a fixed latency (``LATENCY_S``, whatever the batch's size, as a
GPU does) with outputs the real network gave for real crops of the same scene. It
asks Ray for almost no CPU, so 16 of them fit on 2 cores.

Weak scaling: with N actors the job has 6N videos of the demo scene (64, 48 and 32
frames, in that order, over and over, so that videos end at different times, as in a
real archive) and 2N of them run at once. Throughput is frames over the processing
window (first video started to last finished, from the written ``videos`` table), so
cluster and actor start-up are left out; efficiency is ``fps(N) / (N * fps(1))``, the
1-actor run of the same benchmark being the baseline; ``model_busy`` is the share of the window the
actors spent on batches (batches x latency / (N x window)).

The stand-in GPUs are slow on purpose (``BATCH_SIZE / LATENCY_S`` frames/s each):
16 of them must need well under this machine's cores, so that what is measured is
the orchestration and the driver, not a CPU the video tasks have run out of. The
machine's busy cores during each window are recorded beside the figures.

The driver is this process: its CPU seconds and resident memory are sampled through
each run, and its CPU per frame over the window must stay flat as actors are added.
The same runs are repeated with ``--vertices`` (18 KB per hand row, written by the
workers, never sent through the driver).

Then the CPU cost per frame outside the model, by stage: the pipeline benchmark's
staged run (``process_video`` in this process, one thread, stage functions timed)
with a model that answers at once and a boxes file; the hand-object detector's
CPU-side preparation of a frame (resize, normalise, half floats), paid per detected
frame; and what that means for a GPU node: cores that keep one GPU busy at a given
model rate.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import ray
import torch

from hflpipe.bench.common import (
    RESULTS_DIR,
    bench_cache,
    best_times,
    print_table,
    processing_window,
    ratio,
    rss_mib,
    synthetic_checkpoint,
    write_result,
)
from hflpipe.bench.pipeline import STAGES, StageClock, stage_seconds, staged_video
from hflpipe.model.hand_object.transforms import prepare_image
from hflpipe.pipeline.config.run_config import RunConfig, make_config
from hflpipe.pipeline.demo.scene import make_demo_scene
from hflpipe.pipeline.infer import actor_pool
from hflpipe.pipeline.infer.predictor_actor import load_actor_predictor
from hflpipe.pipeline.run.context import prepare_context
from hflpipe.pipeline.run.runner import run as run_pipeline

ACTORS = (1, 2, 4, 8, 16)
QUICK_ACTORS = (1, 2)
BATCH_SIZE = 16
QUICK_BATCH_SIZE = 4
LATENCY_S = 6.0
QUICK_LATENCY_S = 0.3
#: Frames of each of an actor's videos: different lengths, so videos end at different times.
VIDEO_FRAMES = (64, 48, 32, 64, 48, 32)
QUICK_VIDEO_FRAMES = (8, 4)
#: Videos running at once per actor. Each keeps two batches in flight and spreads them
#: over all actors, so 2 per actor keep about 4 batches queued for each, enough while
#: some videos start, smooth and write. A real GPU node runs more (one per CPU, 8 per
#: GPU on a g5.2xlarge); every video task is a process of about 0.4 GB here, which
#: bounds this on 24 GB.
VIDEOS_AT_ONCE_PER_ACTOR = 2
#: Model rates of a GPU (frames/s) for which the cores that keep it busy are shown.
GPU_RATES = (250, 500, 1000, 2000)
TARGET_EFFICIENCY = 0.9
SAMPLE_S = 0.2


class StandInPool:
    """A replacement for ``actor_pool.start_actors`` that starts stand-in actors: each
    ``infer`` sleeps ``latency_s`` and returns ``template``'s rows (real outputs), cycled
    to the batch's size, and counts the batches it answered.

    The actors get neither the predictor's settings nor torch: a stand-in is a small
    process, so that 16 of them fit beside the video tasks in this machine's memory.
    ``actors``: the ones the last call started.
    """

    def __init__(self, template: dict[str, np.ndarray], latency_s: float) -> None:
        self.actor_class = _stand_in_actor(template, latency_s)
        self.actors: list = []

    def __call__(self, settings: object, num_actors: int, gpus_per_actor: float,
                 cpus_per_actor: float) -> list:
        remote = ray.remote(num_cpus=cpus_per_actor, num_gpus=gpus_per_actor)(self.actor_class)
        self.actors = [remote.remote() for _ in range(num_actors)]
        ray.get([actor.ready.remote() for actor in self.actors])
        return self.actors

    def answered(self) -> list[int]:
        """Batches each actor of the last call answered, in the pool's order."""
        return ray.get([actor.answered.remote() for actor in self.actors])


def _stand_in_actor(template: dict[str, np.ndarray], latency_s: float) -> type:
    # Defined in a function so that Ray ships the class with its template by value.
    class StandInActor:
        def __init__(self) -> None:
            self.batches = 0

        def infer(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            time.sleep(latency_s)
            self.batches += 1
            rows = np.arange(len(batch["images"])) % len(next(iter(template.values())))
            return {name: value[rows] for name, value in template.items()}

        def answered(self) -> int:
            return self.batches

        def ready(self) -> str:
            return "stand-in"

    return StandInActor


class Answer:
    """A model for the staged run that answers at once with ``template``'s rows."""

    def __init__(self, template: dict[str, np.ndarray]) -> None:
        self.template = template

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = np.arange(len(batch["images"])) % len(next(iter(self.template.values())))
        return {name: value[rows] for name, value in self.template.items()}


class Recorder:
    """The real predictor, keeping the outputs of every batch it ran."""

    def __init__(self, predictor: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]):
        self.predictor = predictor
        self.outputs: list[dict[str, np.ndarray]] = []

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = self.predictor(batch)
        self.outputs.append(out)
        return out


class Sampler:
    """Samples this process's CPU seconds and RSS, and the machine's busy cores, in a thread."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, float, float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        while True:
            self.samples.append((time.time(), time.process_time(), rss_mib(), _busy_cpu_s()))
            if self._stop.wait(SAMPLE_S):
                return

    def between(self, start: float, end: float) -> dict[str, float]:
        """Driver CPU seconds, driver peak RSS and the machine's mean busy cores in [start, end]."""
        inside = [s for s in self.samples if start <= s[0] <= end] or self.samples[-1:]
        first = min(self.samples, key=lambda s: abs(s[0] - start))
        last = min(self.samples, key=lambda s: abs(s[0] - end))
        span = max(last[0] - first[0], 1e-9)
        return {"driver_cpu_s": last[1] - first[1],
                "driver_peak_rss_mib": max(s[2] for s in inside),
                "machine_busy_cores": (last[3] - first[3]) / span}


def _busy_cpu_s() -> float:
    """CPU seconds all cores of the machine have spent busy since boot (``/proc/stat``)."""
    with open("/proc/stat") as stat:
        fields = [int(v) for v in stat.readline().split()[1:]]
    idle = fields[3] + fields[4]
    return (sum(fields[:8]) - idle) / 100.0


def make_archive(folder: Path, actors: int, lengths: tuple[int, ...],
                 scenes: dict[int, Any]) -> tuple[list[str], Path]:
    """``actors`` copies of each scene length as videos, the lengths taking turns, and one
    boxes file with a ``video`` column for all of them; returns (video paths, boxes file)."""
    folder.mkdir(parents=True)
    paths, tables = [], []
    for copy in range(actors):
        for turn, frames in enumerate(lengths):
            path = folder / f"clip{copy:02d}_{turn}_{frames}.mp4"
            shutil.copyfile(scenes[frames].video_path, path)
            paths.append(str(path))
            boxes = pacsv.read_csv(scenes[frames].boxes_path)
            tables.append(boxes.append_column("video", pa.array([path.name] * len(boxes))))
    boxes_path = folder / "boxes.csv"
    pacsv.write_csv(pa.concat_tables(tables), boxes_path)
    return paths, boxes_path


def simulated_run(config: RunConfig, actors: int, latency_s: float,
                  pool: StandInPool) -> dict[str, object]:
    """One ``hflpipe run`` with ``actors`` new stand-in actors; its figures."""
    with mock.patch.object(actor_pool, "start_actors", pool), \
            mock.patch.object(actor_pool, "_kept_pool", None), Sampler() as sampler:
        summary = run_pipeline(config, progress=False)
    answered = pool.answered()
    for actor in pool.actors:
        ray.kill(actor)
    expected = len(config.videos)
    if summary.statuses != {"ok": expected}:
        raise RuntimeError(f"simulated run: {summary.statuses} of {expected} videos: "
                           f"{summary.failures}")
    start, end = processing_window(config.out)
    window = (end - start).total_seconds()
    driver = sampler.between(start.timestamp(), end.timestamp())
    batches = sum(-(-frames // config.batch_size) for frames in _video_lengths(config))
    return {
        "actors": actors,
        "videos": expected,
        "frames": summary.frames,
        "batches": batches,
        "window_s": round(window, 2),
        "frames_per_s": round(summary.frames / window, 2),
        "model_busy": ratio(batches * latency_s, actors * window),
        "batches_per_actor_min_max": [min(answered), max(answered)],
        "driver_cpu_s": round(driver["driver_cpu_s"], 2),
        "driver_cpu_ms_per_frame": round(1000 * driver["driver_cpu_s"] / summary.frames, 3),
        "driver_cpu_cores": round(driver["driver_cpu_s"] / window, 3),
        "driver_peak_rss_mib": round(driver["driver_peak_rss_mib"], 1),
        "driver_rss_growth_mib": round(driver["driver_peak_rss_mib"] - sampler.samples[0][2], 1),
        "machine_busy_cores": round(driver["machine_busy_cores"], 2),
        "output_mib": round(_folder_bytes(config.out) / 2**20, 2),
    }


def _video_lengths(config: RunConfig) -> list[int]:
    return [int(Path(str(path)).stem.rsplit("_", 1)[1]) for path in config.videos]


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())


def scaling_rows(rows: list[dict[str, object]]) -> None:
    """Adds speedup and efficiency against the 1-actor row, in place."""
    base = rows[0]
    for row in rows:
        row["speedup"] = ratio(row["frames_per_s"], base["frames_per_s"])
        row["efficiency"] = ratio(row["frames_per_s"],
                                  row["actors"] * base["frames_per_s"])
        row["driver_cpu_per_frame_vs_1"] = ratio(row["driver_cpu_ms_per_frame"],
                                                 base["driver_cpu_ms_per_frame"])


def cpu_side_stages(config: RunConfig, template: dict[str, np.ndarray],
                    work: Path) -> tuple[list[dict[str, object]], float]:
    """Per-stage CPU milliseconds per frame outside the model, and their total."""
    context = prepare_context(config)
    clock = StageClock()
    for path in config.videos:
        staged_video(Path(path), config, context, Answer(template), work, clock)
    frames = sum(_video_lengths(config))
    seconds = stage_seconds(clock)
    rows = [{"stage": s, "ms_per_frame": round(1000 * seconds.get(s, 0.0) / frames, 3)}
            for s in STAGES if s != "infer"]
    return rows, sum(row["ms_per_frame"] for row in rows)


def detector_preparation_ms(repeats: int) -> list[dict[str, object]]:
    """CPU milliseconds per frame that the hand-object detector's preparation (resize,
    normalise, half floats for the trip to the device) costs, best of ``repeats``."""
    rng = np.random.default_rng(0)
    rows = []
    for width, height in ((640, 480), (1920, 1080)):
        frame = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        timing = best_times({"prepare": lambda f=frame: prepare_image(f)[0].astype(np.float16)},
                            repeats)["prepare"]
        rows.append({"frame": f"{width}x{height}",
                     "ms_per_detected_frame": round(1000 * timing.cpu_s, 2)})
    return rows


def run(*, quick: bool = False, checkpoint: Path | None = None,
        out_dir: Path = RESULTS_DIR) -> dict[str, object]:
    """Run the benchmark, print its tables, write ``simulated.json``; returns the document."""
    torch.set_num_threads(1)
    counts = QUICK_ACTORS if quick else ACTORS
    batch_size = QUICK_BATCH_SIZE if quick else BATCH_SIZE
    latency_s = QUICK_LATENCY_S if quick else LATENCY_S
    lengths = QUICK_VIDEO_FRAMES if quick else VIDEO_FRAMES
    checkpoint = checkpoint or synthetic_checkpoint()
    with tempfile.TemporaryDirectory(dir=bench_cache()) as scratch:
        work = Path(scratch)
        scenes = {frames: make_demo_scene(work / f"scene{frames}", num_frames=frames)
                  for frames in {*lengths, batch_size}}
        scene = scenes[batch_size]
        options = dict(checkpoint=checkpoint, mano=None, detector="boxes",
                       intrinsics=str(scene.intrinsics_path), object=scene.object_name,
                       batch_size=batch_size, device="cpu", cpus_per_task=1.0,
                       cpus_per_actor=0.01)

        # The stand-in's answers: the real network's outputs for one batch of real crops.
        template_config = make_config(videos=[str(scene.video_path)], out=work / "template",
                                      boxes=scene.boxes_path, **options)
        context = prepare_context(template_config)
        recorder = Recorder(load_actor_predictor(context.predictor_settings, cpu_threads=1))
        staged_video(scene.video_path, template_config, context, recorder, work / "template",
                     StageClock())
        template = recorder.outputs[0]
        del recorder, context  # the driver of a real run holds no model

        stage_tables = {}
        for vertices in (False, True):
            paths, boxes = make_archive(work / f"staged{int(vertices)}", 1, lengths, scenes)
            config = make_config(videos=paths, out=work / f"staged-out{int(vertices)}",
                                 boxes=boxes, with_vertices=vertices, **options)
            stage_tables[vertices] = cpu_side_stages(config, template,
                                                     work / f"staged-out{int(vertices)}")

        most = max(counts)
        ray.init(num_cpus=VIDEOS_AT_ONCE_PER_ACTOR * most + 2, include_dashboard=False,
                 log_to_driver=False, configure_logging=False,
                 _system_config={"idle_worker_killing_time_threshold_ms": 3_600_000})
        try:
            pool = StandInPool(template, latency_s)
            # Start the most worker processes any run needs once, before any is timed:
            # a new worker imports torch and the pipeline, seconds of a core each.
            warm_paths, warm_boxes = make_archive(
                work / "warm", VIDEOS_AT_ONCE_PER_ACTOR * most, (lengths[-1],), scenes)
            simulated_run(make_config(videos=warm_paths, out=work / "warm-out", boxes=warm_boxes,
                                      max_concurrent_videos=VIDEOS_AT_ONCE_PER_ACTOR * most,
                                      num_actors=most, **options),
                          most, 0.0, StandInPool(template, 0.0))
            results: dict[str, list[dict[str, object]]] = {}
            for vertices in (False, True):
                rows = []
                for actors in counts:
                    name = f"n{actors}v{int(vertices)}"
                    paths, boxes = make_archive(work / name, actors, lengths, scenes)
                    config = make_config(
                        videos=paths, out=work / f"{name}-out", boxes=boxes,
                        with_vertices=vertices, num_actors=actors,
                        max_concurrent_videos=VIDEOS_AT_ONCE_PER_ACTOR * actors, **options)
                    rows.append(simulated_run(config, actors, latency_s, pool))
                scaling_rows(rows)
                results["with_vertices" if vertices else "default"] = rows
        finally:
            ray.shutdown()

    columns = ["actors", "frames", "window_s", "frames_per_s", "speedup", "efficiency",
               "model_busy", "batches_per_actor_min_max", "driver_cpu_ms_per_frame",
               "driver_cpu_cores", "driver_rss_growth_mib", "machine_busy_cores"]
    for key, rows in results.items():
        print_table(f"simulated actors ({key.replace('_', ' ')})", rows, columns)
    stage_rows = {("with_vertices" if v else "default"): {"stages": table, "total_ms": round(t, 2)}
                  for v, (table, t) in stage_tables.items()}
    for key, value in stage_rows.items():
        print_table(f"CPU per frame outside the model ({key.replace('_', ' ')}): "
                    f"{value['total_ms']} ms", value["stages"], ["stage", "ms_per_frame"])
    preparation = detector_preparation_ms(3 if quick else 20)
    print_table("hand-object detector's CPU-side preparation, per detected frame", preparation,
                ["frame", "ms_per_detected_frame"])
    cpu_ms = stage_rows["default"]["total_ms"]
    cores = [{"gpu_frames_per_s": rate, "cores_to_keep_it_busy": round(rate * cpu_ms / 1000, 1),
              "with_vertices": round(rate * stage_rows["with_vertices"]["total_ms"] / 1000, 1)}
             for rate in GPU_RATES]
    print_table("cores that keep one GPU busy (CPU per frame x the GPU's model rate)", cores,
                ["gpu_frames_per_s", "cores_to_keep_it_busy", "with_vertices"])

    at_most = {key: rows[-1] for key, rows in results.items()}
    driver_growth = {key: rows[-1]["driver_cpu_per_frame_vs_1"] for key, rows in results.items()}
    document = {
        "description": __doc__.strip().splitlines()[0],
        "baseline": "1 stand-in actor, same run",
        "quick": quick,
        "batch_size": batch_size,
        "latency_s_per_batch": latency_s,
        "stand_in_frames_per_s_per_actor": round(batch_size / latency_s, 2),
        "video_frames": list(lengths),
        "videos_per_actor": len(lengths),
        "videos_at_once_per_actor": VIDEOS_AT_ONCE_PER_ACTOR,
        "runs": results,
        "cpu_per_frame_outside_model": stage_rows,
        "hand_object_preparation": preparation,
        "cores_per_gpu": cores,
        "target": {
            "efficiency_required": TARGET_EFFICIENCY,
            "efficiency_at_most_actors": {k: r["efficiency"] for k, r in at_most.items()},
            "efficiency_met": all(r["efficiency"] >= TARGET_EFFICIENCY
                                  for r in at_most.values()),
            "driver_cpu_per_frame_at_most_actors_vs_1": driver_growth,
        },
    }
    write_result("simulated", document, out_dir)
    return document
