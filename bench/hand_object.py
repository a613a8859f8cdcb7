"""The 100DOH hand-object detector: frames/s of the network, and of the pipeline with it.

Three measurements, each against a baseline taken in the same run:

1. the detector alone at the original's test-time settings (640x480 frames resized to
   600x800, 300 proposals, fp32, batch 1), frames/s on the CPU;
2. with CUDA, fp16 and fp16 + channels-last against fp32 (batch 4);
3. the whole pipeline on the same demo videos with ``--detector hand-object
   --detect-every 5`` against the pipeline reading the scene's boxes file.

The weights are random: the network's arithmetic per frame does not depend on them, but
random weights find few or no hands, so the pipeline row then measures the detector's own
cost with little HFL-Net work; with trained weights on real footage HFL-Net also runs on
the hands it finds.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import ray
import torch

from hflpipe.bench.common import (
    RESULTS_DIR,
    bench_cache,
    best_times,
    print_table,
    ratio,
    synthetic_checkpoint,
    write_result,
)
from hflpipe.bench.pipeline import make_videos
from hflpipe.model.hand_object import HandObjectDetector
from hflpipe.model.hand_object.loader import official_state_dict
from hflpipe.model.hand_object.transforms import prepare_image
from hflpipe.pipeline.config.run_config import make_config
from hflpipe.pipeline.run.runner import run as run_pipeline

#: The original's test-time input: a VGA frame, resized to 600x800.
FRAME_SIZE = (480, 640)
DETECT_EVERY = 5
VIDEOS, FRAMES = 2, 20
QUICK_VIDEOS, QUICK_FRAMES = 1, 5


def detector_weights() -> Path:
    """A randomly initialised detector in the release file's layout, written once."""
    path = bench_cache() / "random_handobj.pth"
    if not path.is_file():
        torch.manual_seed(0)
        net = HandObjectDetector().eval()
        torch.save({"model": official_state_dict(net), "pooling_mode": "align",
                    "class_agnostic": False}, path)
    return path


def _network_rows(repeats: int) -> list[dict[str, object]]:
    from hflpipe.model import load_hand_object_detector

    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (*FRAME_SIZE, 3), dtype=np.uint8)
    image, scale = prepare_image(frame)
    net = load_hand_object_detector(detector_weights())
    rows = []
    timing = best_times({"cpu fp32": lambda: net.detect_resized(image[None], [scale])},
                        repeats)["cpu fp32"]
    rows.append({"variant": "cpu fp32, batch 1", "frames_per_s": round(1 / timing.wall_s, 3),
                 "vs_baseline": 1.0})
    if not torch.cuda.is_available():
        return rows
    batch = np.repeat(image[None], 4, axis=0)
    gpu = {}
    for name, dtype, layout in (("fp32", torch.float32, torch.contiguous_format),
                                ("fp16", torch.float16, torch.contiguous_format),
                                ("fp16 channels-last", torch.float16, torch.channels_last)):
        model = load_hand_object_detector(detector_weights(), device="cuda").to(
            dtype=dtype, memory_format=layout)
        images = torch.from_numpy(batch).cuda()
        gpu[name] = (lambda m=model, x=images: m.detect_resized(x, [scale] * 4))
    torch.backends.cudnn.benchmark = True
    times = best_times(gpu, repeats, sync=torch.cuda.synchronize)
    base = 4 / times["fp32"].wall_s
    for name, timing in times.items():
        rows.append({"variant": f"cuda {name}, batch 4",
                     "frames_per_s": round(4 / timing.wall_s, 1),
                     "vs_baseline": ratio(4 / timing.wall_s, base)})
    return rows


def _pipeline_rows(videos: int, frames: int) -> list[dict[str, object]]:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with tempfile.TemporaryDirectory(dir=bench_cache()) as scratch:
        work = Path(scratch)
        paths, scene = make_videos(work, videos, frames)
        common = {"videos": [str(p) for p in paths], "checkpoint": synthetic_checkpoint(),
                  "intrinsics": str(scene.intrinsics_path), "object": scene.object_name,
                  "device": device}
        variants = {
            "boxes file": make_config(out=work / "boxes", detector="boxes",
                                      boxes=scene.boxes_path, **common),
            f"hand-object, detect every {DETECT_EVERY}": make_config(
                out=work / "hand_object", detector="hand-object",
                hand_object_weights=detector_weights(), detect_every=DETECT_EVERY, **common),
        }
        if not ray.is_initialized():
            ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
        rows, base = [], None
        for name, config in variants.items():
            start = time.perf_counter()
            summary = run_pipeline(config, progress=False)
            seconds = time.perf_counter() - start
            rate = summary.frames / seconds
            base = base or rate
            rows.append({"variant": name, "frames": summary.frames, "seconds": round(seconds, 1),
                         "frames_per_s": round(rate, 2), "vs_baseline": ratio(rate, base)})
    return rows


def run(*, quick: bool = False, out_dir: Path = RESULTS_DIR) -> dict[str, object]:
    """Run the benchmark, print its tables, write ``hand_object.json``; returns the document."""
    network = _network_rows(1 if quick else 3)
    print_table("hand-object detector alone (600x800 input)", network,
                ["variant", "frames_per_s", "vs_baseline"])
    videos, frames = (QUICK_VIDEOS, QUICK_FRAMES) if quick else (VIDEOS, FRAMES)
    pipeline = _pipeline_rows(videos, frames)
    print_table("pipeline: hand-object detector vs a boxes file (same videos)", pipeline,
                ["variant", "frames", "seconds", "frames_per_s", "vs_baseline"])
    result = {
        "description": __doc__.strip().splitlines()[0],
        "quick": quick,
        "input": "640x480 frames resized to 600x800 (the original's test-time scale)",
        "network": network,
        "pipeline": pipeline,
        "pipeline_baseline": "the same videos with the demo scene's boxes file",
        "target": "detection does not halve the pipeline's GPU throughput at --detect-every 5",
    }
    write_result("hand_object", result, out_dir)
    return result
