"""Peak memory of a video worker: a 10x longer video, and 10x more videos, must stay flat.

What runs: ``video_job.process_video`` (decode, detect, track, crop, infer, PnP,
smooth: what one Ray video task does) with the predictor in the same process,
each case in a fresh process so that its peak RSS (``VmHWM``) is its own.
Baseline: the same process after loading the model and before the first video
(``rss_after_load_mib``); the figures are peak ratios between cases.

Videos: the demo scene at 10 fps, 1 minute vs 10 minutes; every ``stride``-th
frame is processed so the model's time stays affordable on a CPU (the output
rows, the tracks and the decoded frame count still grow 10x). Then 10 vs 100
short videos one after another in one worker, one crop each.
"""

from __future__ import annotations

import multiprocessing
import shutil
import tempfile
from pathlib import Path

from bench.common import (
    RESULTS_DIR,
    bench_cache,
    peak_rss_mib,
    print_table,
    ratio,
    rss_mib,
    synthetic_checkpoint,
    write_result,
)

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
TARGET = 1.2


def _scene(folder: Path, seconds: float) -> object:
    from hflpipe.pipeline.demo_scene import make_demo_scene

    return make_demo_scene(folder, num_frames=int(seconds * FPS), fps=FPS, size=SIZE)


def _worker(videos: list[str], boxes: str, intrinsics: str, object_name: str, stride: int,
            batch_size: int, checkpoint: str, out: str) -> dict[str, float]:
    """In a fresh process: process ``videos`` in turn; RSS after loading and peak, frames done."""
    import torch

    from hflpipe.pipeline.config import make_config
    from hflpipe.pipeline.inference import LocalInference
    from hflpipe.pipeline.inputs import VideoInput, video_id_for
    from hflpipe.pipeline.predictor import HflnetPredictor
    from hflpipe.pipeline.run_context import ObjectCache, context_for_video, prepare_context
    from hflpipe.pipeline.video_job import process_video

    torch.set_num_threads(1)
    config = make_config(videos=videos, out=out, checkpoint=checkpoint, detector="boxes",
                         boxes=boxes, intrinsics=intrinsics, object=object_name, stride=stride,
                         batch_size=batch_size, device="cpu")
    context = prepare_context(config)
    inference = LocalInference(HflnetPredictor(context.predictor_settings))
    loaded = rss_mib()
    frames = 0
    objects = ObjectCache()
    for name in videos:
        video = VideoInput(path=Path(name), video_id=video_id_for(Path(name)))
        outcome = process_video(video, config, context_for_video(context, video, objects),
                                inference)
        if outcome.video_row["status"] != "ok":
            raise RuntimeError(f"{name}: {outcome.video_row.get('error')}")
        frames += int(outcome.video_row["frames_processed"])
    return {"rss_after_load_mib": loaded, "peak_rss_mib": peak_rss_mib(), "frames": frames}


def _case(pool, label: str, videos: list[Path], scene, stride: int, batch_size: int,
          checkpoint: Path, out: Path) -> dict[str, object]:
    got = pool.apply(_worker, ([str(v) for v in videos], str(scene.boxes_path),
                               str(scene.intrinsics_path), scene.object_name, stride,
                               batch_size, str(checkpoint), str(out)))
    return {"case": label, "videos": len(videos), "frames_processed": got["frames"],
            "rss_after_load_mib": round(got["rss_after_load_mib"], 1),
            "peak_rss_mib": round(got["peak_rss_mib"], 1),
            "growth_mib": round(got["peak_rss_mib"] - got["rss_after_load_mib"], 1)}


def run(*, quick: bool = False, checkpoint: Path | None = None,
        out_dir: Path = RESULTS_DIR) -> dict[str, object]:
    """Run the benchmark, print its table, write ``memory.json``; returns the document."""
    lengths = QUICK_LENGTHS if quick else LENGTHS
    counts = QUICK_VIDEO_COUNTS if quick else VIDEO_COUNTS
    batch_size = 2 if quick else BATCH_SIZE
    checkpoint = checkpoint or synthetic_checkpoint()
    context = multiprocessing.get_context("spawn")
    rows = []
    with tempfile.TemporaryDirectory(dir=bench_cache()) as scratch, \
            context.Pool(1, maxtasksperchild=1) as pool:
        work = Path(scratch)
        for label, seconds, stride in lengths:
            scene = _scene(work / f"len{seconds}", seconds)
            rows.append(_case(pool, label, [scene.video_path], scene, stride, batch_size,
                              checkpoint, work / f"out_len{seconds}"))
        short = _scene(work / "short", SHORT_FRAMES / FPS)
        for count in counts:
            folder = work / f"many{count}"
            folder.mkdir()
            videos = [folder / f"clip{i:03d}.mp4" for i in range(count)]
            for video in videos:
                shutil.copyfile(short.video_path, video)
            rows.append(_case(pool, f"{count} videos", videos, short, SHORT_FRAMES, 1,
                              checkpoint, work / f"out_many{count}"))
    length_ratio = ratio(rows[1]["peak_rss_mib"], rows[0]["peak_rss_mib"])
    count_ratio = ratio(rows[3]["peak_rss_mib"], rows[2]["peak_rss_mib"])
    print_table("peak RSS of one video worker (model loaded in-process)", rows, list(rows[0]))
    print(f"peak ratio, 10x longer video: {length_ratio}; 10x more videos: {count_ratio}")
    result = {
        "description": __doc__.strip().splitlines()[0],
        "baseline": "the shorter video / the fewer videos, same worker setup",
        "quick": quick,
        "fps": FPS,
        "size": list(SIZE),
        "batch_size": batch_size,
        "rows": rows,
        "peak_ratio_longer_video": length_ratio,
        "peak_ratio_more_videos": count_ratio,
        "target": {"ratio_allowed": TARGET,
                   "met": length_ratio <= TARGET and count_ratio <= TARGET},
    }
    write_result("memory", result, out_dir)
    return result
