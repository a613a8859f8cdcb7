"""End to end: ``hflpipe run`` frames/s vs the predictor alone on the same crops.

Inputs: the demo scene (a hand holding a YCB box, boxes file, intrinsics)
rendered once and copied under several names, so every video has one hand-object
pair per frame. Three measurements, in this order:

1. Stages, one video after another in this process, each stage function called
   directly and timed: decode (``read_chunks``), detect (``detector.detect``),
   track (tracking and hand-object pairing), crop (``crop_hand_object``),
   transfer (stacking a batch and pickling it both ways, as shipping it to an
   actor does, without Ray's shared-memory store), infer (the predictor), pose
   (2D-3D hand fit and object PnP), smooth (``hand_table``/``object_table``:
   smoothing, MANO re-posing, Arrow tables) and write (``write_video_output``).
2. ``runner.run`` on local Ray (already started), wall clock, twice: on half
   the videos and on all of them. The difference between the two is the steady
   rate of a long job; the full run's own rate, which also pays for the
   start-up (checking the checkpoint, the actor loading its model), is kept beside.
3. The predictor alone on the crops of step 1, in batches of the run's size.

Pipeline efficiency = steady end-to-end frames/s / predictor-only frames/s,
where the predictor-only figure is the better of steps 1 and 3 (the harder
comparison).
Everything on CPU, the predictor with one thread (``cpus_per_task`` 1).
"""

from __future__ import annotations

import datetime as dt
import pickle
import shutil
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import ray
import torch

from bench.common import (
    RESULTS_DIR,
    bench_cache,
    print_table,
    ratio,
    synthetic_checkpoint,
    write_result,
)
from hflpipe.model.crop import crop_hand_object
from hflpipe.pipeline import video_job
from hflpipe.pipeline.config import RunConfig, make_config
from hflpipe.pipeline.decode import get_decoder
from hflpipe.pipeline.demo_scene import make_demo_scene
from hflpipe.pipeline.detectors import detector_for
from hflpipe.pipeline.inference import LocalInference
from hflpipe.pipeline.inputs import VideoInput, video_id_for
from hflpipe.pipeline.object_poses import solve_object_poses
from hflpipe.pipeline.predictor import HflnetPredictor
from hflpipe.pipeline.run_context import (
    ObjectCache,
    RunContext,
    context_for_video,
    prepare_context,
)
from hflpipe.pipeline.runner import run as run_pipeline
from hflpipe.pipeline.track_tables import hand_table, object_table
from hflpipe.pipeline.tracking import TrackingConfig, pair_hands_with_objects, track
from hflpipe.pipeline.writer import write_video_output

VIDEOS, FRAMES = 4, 32
QUICK_VIDEOS, QUICK_FRAMES = 1, 4
BATCH_SIZE = 32
TARGET = 0.85
STAGES = ("decode", "detect", "track", "crop", "transfer", "infer", "pose", "smooth", "write")


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

    def time(self, stage: str, fn, *args, **kwargs):
        start = time.perf_counter()
        result = fn(*args, **kwargs)
        self.seconds[stage] += time.perf_counter() - start
        return result


def staged_video(path: Path, config: RunConfig, context: RunContext, predictor: HflnetPredictor,
                 out: Path, clock: StageClock) -> list[dict[str, np.ndarray]]:
    """One video through every stage, timed; returns its model input batches."""
    video = VideoInput(path=path, video_id=video_id_for(path))
    context = context_for_video(context, video, ObjectCache())
    decoder = get_decoder(config.decoder)
    info = decoder.probe(str(path))
    chunks = clock.time("decode", lambda: list(decoder.read_chunks(str(path),
                                                                     chunk_size=config.chunk_size)))
    detector = detector_for(config, context, path)
    detections: list = []
    try:
        for chunk in chunks:
            frames = chunk.frames if detector.needs_frames else None
            detections += clock.time("detect", detector.detect, chunk.indices,
                                     chunk.timestamps_s, frames)
    finally:
        detector.close()
    indices = np.concatenate([c.indices for c in chunks])

    def pair() -> list[video_job.CropJob]:
        tracked = track(indices, detections, TrackingConfig(max_gap=config.max_gap))
        return [video_job.CropJob(int(i), frame[h], frame[o] if o is not None else None)
                for i, frame in zip(indices.tolist(), tracked, strict=True)
                for h, o in pair_hands_with_objects(frame)]

    jobs = clock.time("track", pair)
    frame_of = {int(i): f for c in chunks for i, f in zip(c.indices, c.frames, strict=True)}
    timestamp_of = {int(i): float(t) for c in chunks
                    for i, t in zip(c.indices, c.timestamps_s, strict=True)}

    def cut(job: video_job.CropJob):
        obj_box = job.obj.box if job.obj is not None else job.hand.box
        return crop_hand_object(frame_of[job.frame_index], job.hand.box, obj_box,
                                mirror=job.hand.handedness == "left")

    crops = [clock.time("crop", cut, job) for job in jobs]
    batches, outputs = [], []
    for begin in range(0, len(crops), config.batch_size):
        part = crops[begin:begin + config.batch_size]

        def ship(part=part) -> dict[str, np.ndarray]:
            batch = {"images": np.stack([c.image for c in part]),
                     "hand_boxes": np.stack([c.hand_box for c in part]),
                     "object_boxes": np.stack([c.object_box for c in part])}
            return pickle.loads(pickle.dumps(batch, protocol=5))

        batch = clock.time("transfer", ship)
        batches.append(batch)
        outputs.append(clock.time("infer", predictor, batch))
    merged = {k: np.concatenate([o[k] for o in outputs]) for k in outputs[0]}
    merged |= {
        "affine": np.stack([c.affine for c in crops]),
        "mirrored": np.array([c.mirrored for c in crops]),
        "frame_width": np.array([c.frame_width for c in crops]),
        "timestamp_s": np.array([timestamp_of[j.frame_index] for j in jobs]),
    }
    camera_K = context.intrinsics.K
    hands = clock.time("pose", video_job._hand_observations, jobs, merged, camera_K)
    objects = clock.time("pose", solve_object_poses, jobs, merged, camera_K, context)
    inference = LocalInference(predictor)
    hand_rows = clock.time("smooth", hand_table, video.video_id, hands, config, context.metadata,
                           inference)
    object_rows = clock.time("smooth", object_table, video.video_id, objects, config,
                             context.metadata)
    row = video_job.base_row(video, context) | {
        "status": "ok", "num_frames": info.num_frames, "frames_processed": len(indices),
        "fps": info.fps, "width": info.width, "height": info.height,
        "finished_at": dt.datetime.now(dt.UTC),
    }
    clock.time("write", write_video_output, out, video.video_id, hand_rows, object_rows, row,
               context.metadata)
    return batches


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
    videos, frames = (QUICK_VIDEOS, QUICK_FRAMES) if quick else (VIDEOS, FRAMES)
    checkpoint = checkpoint or synthetic_checkpoint()
    with tempfile.TemporaryDirectory(dir=bench_cache()) as scratch:
        work = Path(scratch)
        paths, scene = make_videos(work, videos, frames)
        config = make_config(
            videos=[str(p) for p in paths], out=work / "run", checkpoint=checkpoint,
            mano=None, detector="boxes", boxes=scene.boxes_path,
            intrinsics=str(scene.intrinsics_path), object=scene.object_name,
            batch_size=BATCH_SIZE, device="cpu", cpus_per_task=1.0,
        )
        context = prepare_context(config)
        predictor = HflnetPredictor(context.predictor_settings)
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
        for count in sorted({max(1, videos // 2), videos}):
            part = config.model_copy(update={"videos": config.videos[:count],
                                             "out": work / f"run{count}"})
            summary = run_pipeline(part, progress=False)
            if summary.frames != count * frames:
                raise RuntimeError(f"run processed {summary.frames} of {count * frames} frames: "
                                   f"{summary.failures}")
            runs.append((count * frames, summary.elapsed_s))
        alone_s = min(predictor_only(predictor, batches), clock.seconds["infer"])
        ray.shutdown()

    stage_total = sum(clock.seconds.values())
    stage_rows = [{"stage": s, "seconds": round(clock.seconds[s], 3),
                   "ms_per_frame": round(1000 * clock.seconds[s] / total_frames, 2),
                   "share": ratio(clock.seconds[s], stage_total)} for s in STAGES]
    print_table("per-stage breakdown (in process, sequential)", stage_rows,
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
        "device": "cpu",
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
