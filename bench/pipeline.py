"""End to end: ``hflpipe run`` frames/s vs the predictor alone on the same crops.

Inputs: the demo scene (a hand holding a YCB box, boxes file, intrinsics)
rendered once and copied under several names, so every video has one hand-object
pair per frame. Three measurements, in this order:

1. Stages: each video through ``video_job.process_video`` in this process, the
   stage functions it calls wrapped with timers: decode (producing chunks from
   ``read_chunks``), detect (``detector.detect``), track (tracking and
   hand-object pairing), crop (``crop_batch.add_crop``), transfer (pickling each
   batch both ways, as shipping it to an actor does, without Ray's shared
   memory), infer (the predictor), pose (2D-3D hand fit, object PnP), smooth
   (``video_tables``: smoothing, MANO re-posing, Arrow tables), then write
   (``write_video_output``); ``other`` is the rest of ``process_video``
   (probing, hashing the file, batching, bookkeeping).
2. ``runner.run`` on local Ray (already started), wall clock, twice: on half
   the videos and on all of them. The difference between the two is the steady
   rate of a long job; the full run's own rate, which also pays for the
   start-up (checking the checkpoint, the actor loading its model), is kept beside.
3. The predictor alone on the crops of step 1, in batches of the run's size.

Pipeline efficiency = steady end-to-end frames/s / predictor-only frames/s,
where the predictor-only figure is the better of steps 1 and 3 (the harder
comparison).
On CPU the predictor runs with one thread (``cpus_per_actor`` 1). On a CUDA
machine the predictor runs on the GPU, the videos are more and longer, and the
GPU's utilisation is sampled through the full run (:mod:`hflpipe.bench.gpu_monitor`),
summarised over the whole run and over its processing window (first video
started to last finished, i.e. without loading the model): the idle share there
is the time the GPU waited for the CPU side.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import pickle
import shutil
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import ray
import torch

from hflpipe.bench.common import (
    RESULTS_DIR,
    bench_cache,
    print_table,
    processing_window,
    ratio,
    synthetic_checkpoint,
    write_result,
)
from hflpipe.bench.gpu_monitor import GpuMonitor
from hflpipe.pipeline.config.run_config import RunConfig, make_config
from hflpipe.pipeline.decode.base import Decoder, get_decoder
from hflpipe.pipeline.demo.scene import make_demo_scene
from hflpipe.pipeline.detect.base import Detector
from hflpipe.pipeline.infer import batching
from hflpipe.pipeline.infer.client import LocalInference
from hflpipe.pipeline.infer.predictor import HflnetPredictor
from hflpipe.pipeline.infer.predictor_actor import load_actor_predictor
from hflpipe.pipeline.inputs.videos import VideoInput, video_id_for
from hflpipe.pipeline.output.writer import write_video_output
from hflpipe.pipeline.run import video as video_job
from hflpipe.pipeline.run.context import (
    InputCache,
    RunContext,
    context_for_video,
    prepare_context,
)
from hflpipe.pipeline.run.runner import run as run_pipeline
from hflpipe.pipeline.run.worker_cache import video_detector

VIDEOS, FRAMES = 4, 32
GPU_VIDEOS, GPU_FRAMES = 16, 128
QUICK_VIDEOS, QUICK_FRAMES = 1, 4
BATCH_SIZE = 32
TARGET = 0.85
STAGES = ("decode", "detect", "track", "crop", "transfer", "infer", "pose", "smooth", "write",
          "other")


def make_videos(folder: Path, videos: int, frames: int) -> tuple[list[Path], Any]:
    """The demo scene once, its video copied ``videos`` times; (video paths, scene)."""
    scene = make_demo_scene(folder / "scene", num_frames=frames)
    paths = []
    for i in range(videos):
        path = folder / f"clip{i:02d}.mp4"
        shutil.copyfile(scene.video_path, path)
        paths.append(path)
    return paths, scene


class StageClock:
    """Seconds per stage, accumulated."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)

    def timed(self, stage: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        """``fn`` with every call's duration added to ``stage``."""
        @functools.wraps(fn)
        def call(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[stage] += time.perf_counter() - start
        return call

    def timed_iterator(self, stage: str, iterator: Iterator[Any]) -> Iterator[Any]:
        """``iterator`` with the time spent producing each item added to ``stage``."""
        while True:
            start = time.perf_counter()
            try:
                item = next(iterator)
            except StopIteration:
                return
            finally:
                self.seconds[stage] += time.perf_counter() - start
            yield item


class TimedDecoder:
    """A decoder whose reads count as the ``decode`` stage (consumers' work between
    chunks, such as cropping, is not counted)."""

    def __init__(self, decoder: Decoder, clock: StageClock) -> None:
        self._decoder, self._clock, self.name = decoder, clock, decoder.name

    def probe(self, path: str) -> Any:
        return self._decoder.probe(path)

    def read_chunks(self, path: str, **options: Any) -> Iterator[Any]:
        return self._clock.timed_iterator("decode", self._decoder.read_chunks(path, **options))


class TimedDetector:
    """A detector whose ``detect`` calls count as the ``detect`` stage."""

    def __init__(self, detector: Detector, clock: StageClock) -> None:
        self._detector = detector
        self.needs_frames = detector.needs_frames
        self.detect = clock.timed("detect", detector.detect)

    def close(self) -> None:
        self._detector.close()


class TimedInference(LocalInference):
    """In-process inference: each batch pickled both ways first (``transfer``, what
    shipping it to an actor costs without Ray's shared memory), then run (``infer``)."""

    def __init__(self, predictor: HflnetPredictor, clock: StageClock) -> None:
        super().__init__(predictor)
        self._clock = clock
        self.batches: list[dict[str, np.ndarray]] = []

    def submit(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        shipped = self._clock.timed("transfer", _pickle_round_trip)(batch)
        self.batches.append(shipped)
        return self._clock.timed("infer", self.predictor)(shipped)


def _pickle_round_trip(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return pickle.loads(pickle.dumps(batch, protocol=5))


#: Stage of each function ``video_job`` calls, patched in its namespace while timing.
_STAGE_OF = {
    (video_job, "track"): "track",
    (video_job, "pair_hands_with_objects"): "track",
    (batching, "add_crop"): "crop",
    (video_job, "_hand_observations"): "pose",
    (video_job, "solve_object_poses"): "pose",
    (video_job, "video_tables"): "smooth",
}


def stage_seconds(clock: StageClock) -> dict[str, float]:
    """Seconds per stage of :func:`staged_video` runs, ``other`` being the rest of
    ``process_video`` (its total less the stages it called; writing comes after it)."""
    seconds = dict(clock.seconds)
    seconds["other"] = seconds.pop("total") - sum(seconds.get(s, 0.0) for s in STAGES
                                                  if s not in ("write", "other"))
    return seconds


def timed_detector(clock: StageClock) -> Callable[..., contextlib.AbstractContextManager]:
    """``video_detector`` whose detector is timed by ``clock``."""

    @contextlib.contextmanager
    def timed(*args: object) -> Iterator[TimedDetector]:
        with video_detector(*args) as detector:
            yield TimedDetector(detector, clock)

    return timed


def staged_video(path: Path, config: RunConfig, context: RunContext, predictor: HflnetPredictor,
                 out: Path, clock: StageClock) -> list[dict[str, np.ndarray]]:
    """One video through ``video_job.process_video`` in this process, each stage function
    wrapped with a timer, then written; returns the model input batches it sent."""
    video = VideoInput(path=path, video_id=video_id_for(path))
    context = context_for_video(context, video, InputCache())
    inference = TimedInference(predictor, clock)
    with contextlib.ExitStack() as patches:
        for (module, name), stage in _STAGE_OF.items():
            patches.enter_context(mock.patch.object(
                module, name, clock.timed(stage, getattr(module, name))))
        patches.enter_context(mock.patch.object(
            video_job, "get_decoder",
            lambda name, **options: TimedDecoder(get_decoder(name, **options), clock)))
        patches.enter_context(mock.patch.object(
            video_job, "video_detector", timed_detector(clock)))
        start = time.perf_counter()
        outcome = video_job.process_video(video, config, context, inference)
        clock.seconds["total"] += time.perf_counter() - start
    if outcome.hands is None or outcome.objects is None:
        raise RuntimeError(f"{path}: {outcome.video_row.get('error')}")
    row = outcome.video_row | {"finished_at": dt.datetime.now(dt.UTC)}
    clock.timed("write", write_video_output)(out, video.video_id, outcome.hands, outcome.objects,
                                            row, context.metadata)
    return inference.batches


def predictor_only(predictor: HflnetPredictor, batches: list[dict[str, np.ndarray]]) -> float:
    """Wall seconds for the predictor over ``batches``."""
    start = time.perf_counter()
    for batch in batches:
        predictor(batch)
    return time.perf_counter() - start


def run(*, quick: bool = False, checkpoint: Path | None = None,
        out_dir: Path = RESULTS_DIR) -> dict[str, object]:
    """Run the benchmark, print its tables, write ``pipeline.json``; returns the document."""
    torch.set_num_threads(1)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    videos, frames = ((QUICK_VIDEOS, QUICK_FRAMES) if quick else
                      (GPU_VIDEOS, GPU_FRAMES) if device == "cuda" else (VIDEOS, FRAMES))
    checkpoint = checkpoint or synthetic_checkpoint()
    with tempfile.TemporaryDirectory(dir=bench_cache()) as scratch:
        work = Path(scratch)
        paths, scene = make_videos(work, videos, frames)
        config = make_config(
            videos=[str(p) for p in paths], out=work / "run", checkpoint=checkpoint,
            mano=None, detector="boxes", boxes=scene.boxes_path,
            intrinsics=str(scene.intrinsics_path), object=scene.object_name,
            batch_size=BATCH_SIZE, device=device, cpus_per_task=1.0, cpus_per_actor=1.0,
        )
        context = prepare_context(config)
        # Set up as the actors are, so the predictor-alone figure is not handicapped.
        predictor = load_actor_predictor(context.predictor_settings, cpu_threads=1)
        clock = StageClock()
        batches = []
        for path in paths:
            batches += staged_video(path, config, context, predictor, work / "staged", clock)
        total_frames = videos * frames

        if not ray.is_initialized():
            ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
        # Two runs, half the videos and all of them: their difference is the steady rate,
        # free of the fixed start-up (checking the checkpoint, loading the actor's model).
        runs = []
        monitor = GpuMonitor()
        gpu_utilisation = None
        for count in sorted({max(1, videos // 2), videos}):
            part = config.model_copy(update={"videos": config.videos[:count],
                                             "out": work / f"run{count}"})
            full = count == videos and device == "cuda"
            with monitor if full else contextlib.nullcontext():
                summary = run_pipeline(part, progress=False)
            if summary.frames != count * frames:
                raise RuntimeError(f"run processed {summary.frames} of {count * frames} frames: "
                                   f"{summary.failures}")
            runs.append((count * frames, summary.elapsed_s))
            if full:
                window = processing_window(part.out)
                gpu_utilisation = {"whole_run": monitor.summary(),
                                   "processing_window": monitor.summary(*window)}
        alone_s = min(predictor_only(predictor, batches), clock.seconds["infer"])
        ray.shutdown()

    seconds = stage_seconds(clock)
    stage_total = sum(seconds.values())
    stage_rows = [{"stage": s, "seconds": round(seconds.get(s, 0.0), 3),
                   "ms_per_frame": round(1000 * seconds.get(s, 0.0) / total_frames, 2),
                   "share": ratio(seconds.get(s, 0.0), stage_total)} for s in STAGES]
    print_table("per-stage breakdown (process_video in process, one video at a time)", stage_rows,
                ["stage", "seconds", "ms_per_frame", "share"])
    (small_frames, small_s), (all_frames, all_s) = runs[0], runs[-1]
    alone_fps = total_frames / alone_s
    e2e_fps = all_frames / all_s
    steady_fps = ((all_frames - small_frames) / (all_s - small_s)
                  if all_frames > small_frames and all_s > small_s else e2e_fps)
    efficiency = ratio(steady_fps, alone_fps)
    summary_row = {"videos": videos, "frames": total_frames,
                   "end_to_end_frames_per_s": round(e2e_fps, 3),
                   "steady_frames_per_s": round(steady_fps, 3),
                   "predictor_only_frames_per_s": round(alone_fps, 3),
                   "efficiency_with_startup": ratio(e2e_fps, alone_fps),
                   "efficiency": efficiency}
    print_table("pipeline efficiency (end to end / predictor alone)", [summary_row],
                list(summary_row))
    result = {
        "description": __doc__.strip().splitlines()[0],
        "baseline": "the predictor alone on the same crops, same batch size, one thread",
        "quick": quick,
        "device": device,
        "gpu_utilisation": gpu_utilisation,
        "batch_size": BATCH_SIZE,
        "frames_per_video": frames,
        "hand_object_pairs_per_frame": 1,
        "stages": stage_rows,
        "stage_total_s": round(stage_total, 3),
        "end_to_end_runs": [{"frames": f, "seconds": round(t, 3)} for f, t in runs],
        "predictor_only_s": round(alone_s, 3),
        "summary": summary_row,
        "target": {"efficiency_required": TARGET, "efficiency_measured": efficiency,
                   "met": efficiency >= TARGET},
    }
    write_result("pipeline", result, out_dir)
    return result
