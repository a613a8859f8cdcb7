"""Peak memory of a video worker: a 10x longer video, and 10x more videos, must stay flat.

What runs: ``video_job.process_video`` (decode, detect, track, crop, PnP,
smooth: what one Ray video task does), each case in a fresh process so that its
peak RSS (``VmHWM``) is its own. The network runs where the pipeline runs it,
in a process of its own set up as the CPU inference actor (one thread, freed
memory kept); batches cross to it pickled, as they would to an actor, and its
peak is reported beside the worker's (``inference_peak_rss_mib``). Baseline:
each process after loading and before the first video (``rss_after_load_mib``);
the figures are peak ratios between cases.

Videos: the demo scene at 10 fps, 1 minute vs 10 minutes; every ``stride``-th
frame is processed so the model's time stays affordable on a CPU (the output
rows, the tracks and the decoded frame count still grow 10x), once with each
decoding backend (PyAV, the default, and decord, whose reader would decode
ahead while the worker waits for inference if it were not parked between
chunks). Then 10 vs 100 short videos one after another in one worker, one crop
each.

Then the CPU inference actor's process, which keeps freed memory instead of
returning it (:mod:`hflpipe.pipeline.infer.freed_memory`), so a heap that fragmented
would show as growth: the predictor over 10 vs 100 batches of seeded random
sizes from 1 to ``ACTOR_MAX_BATCH`` crops, the first batch always the largest
(so both cases reach the same largest activations).
"""

from __future__ import annotations

import multiprocessing
import shutil
import tempfile
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path

import numpy as np

from hflpipe.bench.common import (
    RESULTS_DIR,
    bench_cache,
    peak_rss_mib,
    print_table,
    ratio,
    rss_mib,
    synthetic_checkpoint,
    write_result,
)
from hflpipe.pipeline.decode.base import DEFAULT_BACKEND

FPS = 10
SIZE = (320, 240)
#: (label, seconds, stride) of the video-length cases.
LENGTHS = (("1 min", 60, 50), ("10 min", 600, 50))
QUICK_LENGTHS = (("1 s", 1, 5), ("10 s", 10, 5))
#: Small batches, full in every case: the network's activations grow with the batch, and
#: a case whose only batch is short would look lighter for that reason alone.
BATCH_SIZE = 4
VIDEO_COUNTS = (10, 100)
QUICK_VIDEO_COUNTS = (2, 5)
SHORT_FRAMES = 4
ACTOR_BATCH_COUNTS = (10, 100)
QUICK_ACTOR_BATCH_COUNTS = (2, 5)
ACTOR_MAX_BATCH = 8
QUICK_ACTOR_MAX_BATCH = 2
TARGET = 1.2


def _scene(folder: Path, seconds: float) -> object:
    from hflpipe.pipeline.demo.scene import make_demo_scene

    return make_demo_scene(folder, num_frames=int(seconds * FPS), fps=FPS, size=SIZE)


def _worker(videos: list[str], boxes: str, intrinsics: str, object_name: str, stride: int,
            batch_size: int, checkpoint: str, out: str, decoder: str) -> dict[str, float]:
    """In a fresh process: process ``videos`` in turn; RSS after loading and peak, frames done,
    and the inference process's peak."""
    from hflpipe.pipeline.config.run_config import make_config
    from hflpipe.pipeline.inputs.videos import VideoInput, video_id_for
    from hflpipe.pipeline.run.context import InputCache, context_for_video, prepare_context
    from hflpipe.pipeline.run.video import process_video

    config = make_config(videos=videos, out=out, checkpoint=checkpoint, detector="boxes",
                         boxes=boxes, intrinsics=intrinsics, object=object_name, stride=stride,
                         batch_size=batch_size, device="cpu", decoder=decoder)
    context = prepare_context(config)
    inference = _InferenceProcess(context.predictor_settings)
    loaded = rss_mib()
    frames = 0
    objects = InputCache()
    try:
        for name in videos:
            video = VideoInput(path=Path(name), video_id=video_id_for(Path(name)))
            outcome = process_video(video, config, context_for_video(context, video, objects),
                                    inference)
            if outcome.video_row["status"] != "ok":
                raise RuntimeError(f"{name}: {outcome.video_row.get('error')}")
            frames += int(outcome.video_row["frames_processed"])
    finally:
        inference_peak = inference.close()
    return {"rss_after_load_mib": loaded, "peak_rss_mib": peak_rss_mib(), "frames": frames,
            "inference_peak_rss_mib": inference_peak}


def _serve_inference(conn: Connection, settings: object) -> None:
    """The inference process: the predictor as the CPU actor runs it, serving requests until
    ``None``; then replies its peak RSS (MiB)."""
    import torch

    from hflpipe.pipeline.infer.predictor_actor import load_actor_predictor

    torch.set_num_threads(1)
    predictor = load_actor_predictor(settings, cpu_threads=1)
    while (batch := conn.recv()) is not None:
        conn.send(predictor(batch))
    conn.send(peak_rss_mib())


class _InferenceProcess:
    """An inference client (``video_job``'s interface) whose predictor lives in a child process."""

    def __init__(self, settings: object) -> None:
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        self._process = context.Process(target=_serve_inference, args=(child, settings),
                                        daemon=True)
        self._process.start()
        child.close()

    def submit(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self._conn.send(batch)
        return self._conn.recv()

    def result(self, handle: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return handle

    def close(self) -> float:
        """Stop the child; its peak RSS (MiB)."""
        self._conn.send(None)
        peak = float(self._conn.recv())
        self._process.join(30)
        return peak


def _actor_worker(batches: int, max_batch: int, checkpoint: str) -> dict[str, float]:
    """In a fresh process set up as the CPU inference actor: run ``batches`` batches."""
    import torch

    from hflpipe.bench.model import make_crops
    from hflpipe.pipeline.infer.predictor import PredictorSettings
    from hflpipe.pipeline.infer.predictor_actor import load_actor_predictor

    torch.set_num_threads(1)
    predictor = load_actor_predictor(PredictorSettings(Path(checkpoint), device="cpu"),
                                     cpu_threads=1)
    loaded = rss_mib()
    crops = {size: make_crops(size) for size in range(1, max_batch + 1)}
    sizes = [max_batch, *np.random.default_rng(0).integers(1, max_batch + 1, batches - 1)]
    for size in sizes:
        predictor(crops[int(size)])
    return {"rss_after_load_mib": loaded, "peak_rss_mib": peak_rss_mib(),
            "frames": int(sum(sizes))}


def _row(label: str, videos: int, got: dict[str, float]) -> dict[str, object]:
    inference_peak = got.get("inference_peak_rss_mib")
    return {"case": label, "videos": videos, "frames_processed": got["frames"],
            "rss_after_load_mib": round(got["rss_after_load_mib"], 1),
            "peak_rss_mib": round(got["peak_rss_mib"], 1),
            "growth_mib": round(got["peak_rss_mib"] - got["rss_after_load_mib"], 1),
            "inference_peak_rss_mib": None if inference_peak is None else round(inference_peak, 1)}


def _call(conn: Connection, fn: Callable[..., object], args: tuple) -> None:
    conn.send(fn(*args))


def _in_fresh_process(fn: Callable[..., dict[str, float]], *args: object) -> dict[str, float]:
    """``fn(*args)`` in a freshly spawned process (not a pool's daemon: the video worker
    starts its own inference process)."""
    context = multiprocessing.get_context("spawn")
    receive, send = context.Pipe(duplex=False)
    process = context.Process(target=_call, args=(send, fn, args))
    process.start()
    send.close()
    try:
        result = receive.recv()
    except EOFError:
        process.join()
        raise RuntimeError(f"{fn.__name__} died (exit code {process.exitcode})") from None
    process.join()
    return result


def _case(label: str, videos: list[Path], scene, stride: int, batch_size: int,
          checkpoint: Path, out: Path, decoder: str = DEFAULT_BACKEND) -> dict[str, object]:
    got = _in_fresh_process(_worker, [str(v) for v in videos], str(scene.boxes_path),
                            str(scene.intrinsics_path), scene.object_name, stride,
                            batch_size, str(checkpoint), str(out), decoder)
    return _row(label, len(videos), got)


def run(*, quick: bool = False, checkpoint: Path | None = None,
        out_dir: Path = RESULTS_DIR) -> dict[str, object]:
    """Run the benchmark, print its table, write ``memory.json``; returns the document."""
    lengths = QUICK_LENGTHS if quick else LENGTHS
    counts = QUICK_VIDEO_COUNTS if quick else VIDEO_COUNTS
    actor_counts = QUICK_ACTOR_BATCH_COUNTS if quick else ACTOR_BATCH_COUNTS
    max_batch = QUICK_ACTOR_MAX_BATCH if quick else ACTOR_MAX_BATCH
    batch_size = 2 if quick else BATCH_SIZE
    # Every case is two fresh processes loading torch: a quick look leaves out decord's pair.
    decoders = (DEFAULT_BACKEND,) if quick else (DEFAULT_BACKEND, "decord")
    checkpoint = checkpoint or synthetic_checkpoint()
    rows = []
    with tempfile.TemporaryDirectory(dir=bench_cache()) as scratch:
        work = Path(scratch)
        for decoder in decoders:
            for label, seconds, stride in lengths:
                scene = _scene(work / f"len{seconds}", seconds)
                suffix = "" if decoder == DEFAULT_BACKEND else f" ({decoder})"
                rows.append(_case(label + suffix, [scene.video_path], scene, stride, batch_size,
                                  checkpoint, work / f"out_len{seconds}_{decoder}", decoder))
        short = _scene(work / "short", SHORT_FRAMES / FPS)
        for count in counts:
            folder = work / f"many{count}"
            folder.mkdir()
            videos = [folder / f"clip{i:03d}.mp4" for i in range(count)]
            for video in videos:
                shutil.copyfile(short.video_path, video)
            rows.append(_case(f"{count} videos", videos, short, SHORT_FRAMES, 1,
                              checkpoint, work / f"out_many{count}"))
        for count in actor_counts:
            got = _in_fresh_process(_actor_worker, count, max_batch, str(checkpoint))
            rows.append(_row(f"actor, {count} batches", 0, got))
    length_ratio = ratio(rows[1]["peak_rss_mib"], rows[0]["peak_rss_mib"])
    decord_length_ratio = (ratio(rows[3]["peak_rss_mib"], rows[2]["peak_rss_mib"])
                           if "decord" in decoders else None)
    count_ratio = ratio(rows[-3]["peak_rss_mib"], rows[-4]["peak_rss_mib"])
    actor_ratio = ratio(rows[-1]["peak_rss_mib"], rows[-2]["peak_rss_mib"])
    inference_ratio = ratio(rows[1]["inference_peak_rss_mib"], rows[0]["inference_peak_rss_mib"])
    print_table("peak RSS of one video worker (network in its own process), then of the CPU "
                "inference actor's setup", rows, list(rows[0]))
    print(f"peak ratio, 10x longer video: {length_ratio} (decord backend {decord_length_ratio}); "
          f"10x more videos: {count_ratio}; "
          f"actor, 10x more batches: {actor_ratio}; inference process over the 10x longer "
          f"video: {inference_ratio}")
    result = {
        "description": __doc__.strip().splitlines()[0],
        "baseline": "the shorter video / the fewer videos, same worker setup",
        "quick": quick,
        "fps": FPS,
        "size": list(SIZE),
        "batch_size": batch_size,
        "rows": rows,
        "peak_ratio_longer_video": length_ratio,
        "decoder": DEFAULT_BACKEND,
        "peak_ratio_longer_video_decord": decord_length_ratio,
        "peak_ratio_more_videos": count_ratio,
        "actor_max_batch": max_batch,
        "peak_ratio_actor_more_batches": actor_ratio,
        "inference_peak_ratio_longer_video": inference_ratio,
        "target": {"ratio_allowed": TARGET,
                   "met": max(r for r in (length_ratio, decord_length_ratio, count_ratio,
                                          actor_ratio) if r is not None) <= TARGET},
    }
    write_result("memory", result, out_dir)
    return result
