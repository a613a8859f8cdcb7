"""The hand detector: our torch MediaPipe vs Google's runtimes on the same frames, and its cost
to the pipeline.

1. The detector alone, frames/s on the same frames (drawn hands that MediaPipe
   recognises, :mod:`hflpipe.pipeline.demo.drawn_hands`; one hand at 640x480,
   two hands at 640x360, both moving):

   - ours: the palm and landmark networks run by torch
     (:mod:`hflpipe.model.tflite_net`) inside our MediaPipe solution code
     (:class:`hflpipe.model.mediapipe_hands.HandTracker`: sampling, decoding,
     weighted NMS, tracking), as shipped (each image through the network traced with
     oneDNN Graph fusion) and with eager layers (``TfliteNet(cpu_graph=False)``), the
     way before the fused graph;
   - Google's interpreter: ``ai-edge-litert`` (XNNPACK) running the same two
     ``.tflite`` files inside the same solution code, so only the networks' runtime
     differs; skipped with a note when ``ai_edge_litert`` is not installed;
   - MediaPipe's own solution (``solutions.hands`` in video mode, 2 hands, full
     models), in this Python when it has ``mediapipe``, else in the Python that
     ``HFLPIPE_MEDIAPIPE_PYTHON`` names (MediaPipe 0.10.21 needs numpy < 2), else
     skipped with a note. It runs as a child process (:mod:`mediapipe_solution`).

   Same CPUs for all: the process and the MediaPipe child are pinned to the same
   ``THREADS`` CPUs, and torch, OpenCV and the interpreter get ``THREADS`` threads.
   Each variant makes one untimed pass, then the best of the repeats (interleaved)
   is kept, in wall and process-CPU time (the steadier one on a shared machine).
2. The networks as the inference actors run them for many videos (``--mediapipe-on
   actors``): palm images and hand regions per second at batch sizes 1, 8 and 32, on
   the CPU (``THREADS`` threads) and on the GPU when there is one; what batching the
   videos' requests together gains (the networks as shipped); on the CPU, what the fused
   graph gains over eager layers taking the whole batch (``TfliteNet``'s
   ``cpu_graph``), interleaved in the same rounds. And what stays with a video
   task when the networks are on an actor (a real Ray actor, on this machine's CPU):
   this process's CPU time per frame for sampling the regions, the round trips and the
   tracking, against running the networks itself; and the wall time per frame one
   video takes.
3. The pipeline: ``process_video`` in this process (as :mod:`hflpipe.bench.pipeline`
   stages it, one thread) on a generated video of the one-hand sequence, with this
   detector and with a boxes file holding the boxes it found: the same crops through
   the same model, so the difference is the detector.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import ray
import torch

from hflpipe.atomic import atomic_write_text
from hflpipe.bench.common import (
    RESULTS_DIR,
    bench_cache,
    best_times,
    print_table,
    ratio,
    synthetic_checkpoint,
    write_result,
)
from hflpipe.bench.pipeline import StageClock, staged_video
from hflpipe.model.mediapipe_files import HAND_LANDMARK_FILE, PALM_DETECTION_FILE
from hflpipe.model.mediapipe_hands import (
    LANDMARK_SIZE,
    PALM_SIZE,
    HandNetworks,
    HandTracker,
    TorchHandNetworks,
)
from hflpipe.model.tflite_file import read_tflite
from hflpipe.model.tflite_net import TfliteNet
from hflpipe.pipeline.config.run_config import make_config
from hflpipe.pipeline.decode.base import get_decoder
from hflpipe.pipeline.demo.drawn_hands import hand_scene
from hflpipe.pipeline.demo.scene import write_video
from hflpipe.pipeline.detect.base import Detection
from hflpipe.pipeline.detect.mediapipe import MediaPipeHandDetector, local_networks
from hflpipe.pipeline.infer.actor_pool import ActorInference, start_actors
from hflpipe.pipeline.infer.predictor import PredictorSettings
from hflpipe.pipeline.infer.predictor_actor import load_actor_predictor
from hflpipe.pipeline.run.context import prepare_context

THREADS = 1
FRAMES, QUICK_FRAMES = 48, 8
REPEATS, QUICK_REPEATS = 3, 1
PIPELINE_FRAMES, QUICK_PIPELINE_FRAMES = 24, 6
PIPELINE_REPEATS, QUICK_PIPELINE_REPEATS = 2, 1
#: Section 1's row for our networks with eager layers.
OURS_EAGER = "ours, eager layers"
#: Python with ``mediapipe`` installed, for MediaPipe's own solution.
MEDIAPIPE_PYTHON_VARIABLE = "HFLPIPE_MEDIAPIPE_PYTHON"
#: (width, height, hands) per sequence; hands as ``hand_scene`` takes them, per frame i.
SEQUENCES: dict[str, tuple[int, int, Callable[[int], list]]] = {
    "one hand, 640x480": (640, 480, lambda i: [
        (320 + 40 * np.sin(i / 8), 250 + 20 * np.cos(i / 8), 300, 10 * np.sin(i / 6), False)]),
    "two hands, 640x360": (640, 360, lambda i: [
        (170 + 15 * np.sin(i / 6), 190, 250, 5 + 4 * np.sin(i / 5), False),
        (470 - 15 * np.sin(i / 6), 190, 250, -5 - 4 * np.sin(i / 5), True)]),
}


def make_frames(frames: int) -> dict[str, np.ndarray]:
    """Each sequence's frames: (N, H, W, 3) uint8 RGB."""
    return {name: np.stack([hand_scene(width, height, hands(i), seed=i) for i in range(frames)])
            for name, (width, height, hands) in SEQUENCES.items()}


class LiteRtNetwork:
    """Google's TFLite interpreter on a ``.tflite`` file, called as our torch network is:
    (B, 3, H, W) float32 -> the file's outputs with batch B (one invoke per image: the
    files fix batch 1)."""

    def __init__(self, path: Path, threads: int) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self._interpreter = Interpreter(model_path=str(path), num_threads=threads)
        self._interpreter.allocate_tensors()
        self._input = self._interpreter.get_input_details()[0]["index"]
        self._outputs = [d["index"] for d in self._interpreter.get_output_details()]

    def to(self, device: str | torch.device) -> LiteRtNetwork:
        """The interpreter runs on this process's CPU whatever the device."""
        return self

    def __call__(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        per_image = []
        for image in np.ascontiguousarray(images.permute(0, 2, 3, 1).numpy()):
            self._interpreter.set_tensor(self._input, image[None])
            self._interpreter.invoke()
            per_image.append([self._interpreter.get_tensor(i)[0] for i in self._outputs])
        return tuple(torch.from_numpy(np.stack(column)) for column in zip(*per_image, strict=True))


def _tracker_pass(networks: HandNetworks, frames: np.ndarray
                  ) -> tuple[float, float, list[int]]:
    """Wall and process-CPU seconds of a fresh tracker over ``frames``, and hands per frame."""
    tracker = HandTracker(networks, max_hands=2)
    start, start_cpu = time.perf_counter(), time.process_time()
    found = [len(hands) for hands in tracker.process(frames)]
    return time.perf_counter() - start, time.process_time() - start_cpu, found


def _mediapipe_python() -> tuple[str | None, str]:
    """The Python to run MediaPipe's solution in, or None and why not."""
    if importlib.util.find_spec("mediapipe") is not None:
        return sys.executable, "this Python"
    named = os.environ.get(MEDIAPIPE_PYTHON_VARIABLE)
    if named:
        return named, f"{MEDIAPIPE_PYTHON_VARIABLE}={named}"
    return None, (f"skipped: mediapipe is not importable here (0.10.21 needs numpy < 2); set "
                  f"{MEDIAPIPE_PYTHON_VARIABLE} to a Python that has it")


def _mediapipe_solution(python: str, sequences: dict[str, np.ndarray], repeats: int,
                        cpus: set[int], scratch: Path) -> dict:
    frames_file = scratch / "frames.npz"
    np.savez(frames_file, **{f"s{i}": frames for i, frames in enumerate(sequences.values())})
    script = Path(__file__).with_name("mediapipe_solution.py")
    done = subprocess.run(
        [python, str(script), str(frames_file), str(repeats), ",".join(map(str, sorted(cpus)))],
        capture_output=True, text=True, timeout=1800, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"MediaPipe's solution failed in {python}: {done.stderr[-2000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["sequences"] = {name: result["sequences"][f"s{i}"]
                           for i, name in enumerate(sequences)}
    return result


def detector_alone(sequences: dict[str, np.ndarray], repeats: int, scratch: Path
                   ) -> tuple[list[dict], dict[str, str]]:
    """Section 1: rows per sequence and runtime, and notes on what was skipped."""
    cpus = set(sorted(os.sched_getaffinity(0))[:THREADS])
    kept_cpus, kept_cv2_threads = os.sched_getaffinity(0), cv2.getNumThreads()
    notes: dict[str, str] = {}
    variants: dict[str, HandNetworks] = {"ours (torch)": local_networks(),
                                         OURS_EAGER: _eager_networks()}
    if importlib.util.find_spec("ai_edge_litert") is not None:
        variants["Google's interpreter (ai-edge-litert)"] = TorchHandNetworks(
            LiteRtNetwork(PALM_DETECTION_FILE, THREADS),
            LiteRtNetwork(HAND_LANDMARK_FILE, THREADS))
    else:
        notes["Google's interpreter"] = "skipped: ai_edge_litert is not installed (pip install " \
                                        "ai-edge-litert)"
    os.sched_setaffinity(0, cpus)
    cv2.setNumThreads(THREADS)
    torch.set_num_threads(THREADS)
    try:
        best: dict[tuple[str, str], tuple[float, float, list[int]]] = {}
        for name, frames in sequences.items():
            for networks in variants.values():
                _tracker_pass(networks, frames)  # warm-up
            for _ in range(repeats):
                for variant, networks in variants.items():
                    wall, cpu, found = _tracker_pass(networks, frames)
                    kept = best.get((name, variant))
                    best[name, variant] = (min(wall, kept[0]) if kept else wall,
                                           min(cpu, kept[1]) if kept else cpu, found)
        python, where = _mediapipe_python()
        notes["MediaPipe's solution"] = where
        if python is not None:
            solution = _mediapipe_solution(python, sequences, repeats, cpus, scratch)
            label = f"MediaPipe's solution ({solution['mediapipe']})"
            for name, timing in solution["sequences"].items():
                best[name, label] = (timing["wall_s"], timing["cpu_s"], timing["hands"])
    finally:
        os.sched_setaffinity(0, kept_cpus)
        cv2.setNumThreads(kept_cv2_threads)
    rows = []
    for name, frames in sequences.items():
        ours_cpu = best[name, "ours (torch)"][1]
        for (sequence, variant), (wall, cpu, found) in best.items():
            if sequence != name:
                continue
            rows.append({
                "frames": name, "runtime": variant, "frame_count": len(frames),
                "frames_per_s": round(len(frames) / wall, 2),
                "cpu_ms_per_frame": round(1000 * cpu / len(frames), 2),
                "ours_speed_vs_this": ratio(cpu, ours_cpu),
                "hands_per_frame": round(float(np.mean(found)), 2),
            })
    return rows, notes


def detect_whole_video(video: Path, networks: HandNetworks | None = None
                       ) -> list[list[Detection]]:
    """Per frame, the hands our detector finds in this process on every decoded frame
    (with ``networks``, or the process's shipped ones)."""
    frames = np.concatenate([c.frames for c in get_decoder("pyav").read_chunks(str(video))])
    detector = MediaPipeHandDetector(networks=networks)
    try:
        return detector.detect(np.arange(len(frames)), np.zeros(len(frames)), frames)
    finally:
        detector.close()


def _write_boxes_file(video: Path, path: Path) -> None:
    """The boxes our detector finds on the decoded video, as a boxes file (JSON rows)."""
    found = detect_whole_video(video)
    rows = [{"frame_index": index, "kind": "hand", "x0": float(d.box[0]), "y0": float(d.box[1]),
             "x1": float(d.box[2]), "y1": float(d.box[3]), "score": float(d.score),
             "handedness": d.handedness}
            for index, detections in enumerate(found) for d in detections]
    atomic_write_text(path, json.dumps(rows))


def pipeline_with_and_without(frames: np.ndarray, repeats: int, checkpoint: Path,
                              scratch: Path) -> list[dict]:
    """Section 2: ``process_video`` with this detector vs with a boxes file of its boxes."""
    torch.set_num_threads(1)
    height, width = frames.shape[1:3]
    video = scratch / "hands.mp4"
    write_video(video, iter(frames), 30.0, (width, height))
    boxes = scratch / "hands_boxes.json"
    _write_boxes_file(video, boxes)
    configs = {
        "this detector": make_config(videos=[str(video)], out=scratch / "run", mano=None,
                                     checkpoint=checkpoint, detector="mediapipe",
                                     device="cpu", cpus_per_task=1.0, cpus_per_actor=1.0),
        "boxes file": make_config(videos=[str(video)], out=scratch / "run", mano=None,
                                  checkpoint=checkpoint, detector="boxes", boxes=boxes,
                                  device="cpu", cpus_per_task=1.0, cpus_per_actor=1.0),
    }
    contexts = {name: prepare_context(config) for name, config in configs.items()}
    predictor = load_actor_predictor(contexts["boxes file"].predictor_settings, cpu_threads=1)
    best: dict[str, StageClock] = {}
    for round_index in range(repeats):
        for name, config in configs.items():
            clock = StageClock()
            out = scratch / f"out_{round_index}_{name.replace(' ', '_')}"
            staged_video(video, config, contexts[name], predictor, out, clock)
            kept = best.get(name)
            if kept is None or clock.seconds["total"] < kept.seconds["total"]:
                best[name] = clock
    baseline = best["boxes file"].seconds["total"] + best["boxes file"].seconds["write"]
    rows = []
    for name, clock in best.items():
        seconds = clock.seconds["total"] + clock.seconds["write"]
        rows.append({
            "detector": name, "frames": len(frames),
            "frames_per_s": round(len(frames) / seconds, 2),
            "detect_ms_per_frame": round(1000 * clock.seconds["detect"] / len(frames), 2),
            "infer_ms_per_frame": round(1000 * clock.seconds["infer"] / len(frames), 2),
            "vs_boxes_file": ratio(baseline, seconds),
        })
    return rows


#: Images per network call in section 2.
DEVICE_BATCHES = (1, 8, 32)


def _eager_networks() -> TorchHandNetworks:
    """Both networks on the CPU with eager layers taking the whole batch (``TfliteNet``'s
    ``cpu_graph`` off): the way before the fused graph."""
    return TorchHandNetworks(
        TfliteNet(read_tflite(PALM_DETECTION_FILE), cpu_graph=False).eval(),
        TfliteNet(read_tflite(HAND_LANDMARK_FILE), cpu_graph=False).eval())


def networks_batched(sequences: dict[str, np.ndarray], repeats: int) -> list[dict]:
    """Section 2: each network alone on 8-bit tensors, per device and batch size; on the
    CPU both through the fused graph and with eager layers, interleaved."""
    frames = [frame for sequence in sequences.values() for frame in sequence]
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    torch.set_num_threads(THREADS)
    rows = []
    for device in devices:
        shipped = local_networks(device=device)
        # On the CPU every batch runs both ways: the shipped networks (the fused graph)
        # and a copy with eager layers; the shipped rows are the graph's timings.
        ways = ({"graph": shipped, "eager": _eager_networks()}
                if device == "cpu" else {})
        for name, size in (("palm", PALM_SIZE), ("landmarks", LANDMARK_SIZE)):
            variants, batches = {}, {}
            for batch in DEVICE_BATCHES:
                images = np.stack([cv2.resize(frames[i % len(frames)], (size, size))
                                   for i in range(batch)])
                runners = ({f"{batch} {way}": runner for way, runner in ways.items()}
                           if ways else {str(batch): shipped})
                for label, runner in runners.items():
                    run_network = (runner.palm_outputs if name == "palm"
                                   else runner.landmark_outputs)
                    variants[label] = functools.partial(run_network, images)
                    batches[label] = batch
            timings = best_times(variants, repeats)
            # One CPU thread: its process time; a GPU: the wall clock (outputs come back).
            seconds = {label: (t.cpu_s if device == "cpu" else t.wall_s) / batches[label]
                       for label, t in timings.items()}
            shipped_seconds = {batch: seconds[f"{batch} graph" if ways else str(batch)]
                               for batch in DEVICE_BATCHES}
            for batch in DEVICE_BATCHES:
                per_image = shipped_seconds[batch]
                row = {"device": device, "network": name, "batch": batch,
                       "images_per_s": round(1 / per_image, 1),
                       "ms_per_image": round(1000 * per_image, 3),
                       "speed_vs_batch_1": ratio(shipped_seconds[1], per_image)}
                if f"{batch} eager" in seconds:
                    row["fused_graph_vs_eager_layers"] = ratio(seconds[f"{batch} eager"],
                                                               seconds[f"{batch} graph"])
                rows.append(row)
    return rows


def video_task_side(sequences: dict[str, np.ndarray], checkpoint: Path) -> list[dict]:
    """Section 2, second part: the tracker in this process, its networks on an inference
    actor (one CPU thread), against the same tracker running them itself."""
    started_ray = not ray.is_initialized()
    if started_ray:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                 configure_logging=False)
    settings = PredictorSettings(checkpoint, device="cpu", mediapipe_hands=True)
    (actor,) = start_actors(settings, 1, gpus_per_actor=0.0, cpus_per_actor=1.0)
    torch.set_num_threads(THREADS)
    variants = {"networks in this process": local_networks(),
                "networks on an actor": ActorInference([actor]).hand_networks()}
    rows = []
    try:
        for name, frames in sequences.items():
            # Both warmed up before either is timed: the actor's start-up (torch, the
            # model) would otherwise share the CPU with the first timing.
            for networks in variants.values():
                _tracker_pass(networks, frames[:4])
            for variant, networks in variants.items():
                wall, cpu, _ = _tracker_pass(networks, frames)
                rows.append({"frames": name, "networks": variant,
                             "task_cpu_ms_per_frame": round(1000 * cpu / len(frames), 2),
                             "wall_ms_per_frame": round(1000 * wall / len(frames), 2)})
    finally:
        ray.kill(actor)
        if started_ray:
            ray.shutdown()
    return rows


def _load() -> dict[str, float]:
    return {"load_average_1m": round(os.getloadavg()[0], 2),
            "cpus": len(os.sched_getaffinity(0))}


def run(*, quick: bool = False, checkpoint: Path | None = None,
        out_dir: Path = RESULTS_DIR) -> dict[str, object]:
    """Run the benchmark, print its tables, write ``detector.json``; returns the document."""
    frames = QUICK_FRAMES if quick else FRAMES
    repeats = QUICK_REPEATS if quick else REPEATS
    checkpoint = checkpoint or synthetic_checkpoint()
    sequences = make_frames(frames)
    load_before = _load()
    with tempfile.TemporaryDirectory(dir=bench_cache()) as scratch:
        work = Path(scratch)
        alone, notes = detector_alone(sequences, repeats, work)
        print_table(f"hand detector alone, {THREADS} thread(s), same CPUs", alone,
                    ["frames", "runtime", "frame_count", "frames_per_s", "cpu_ms_per_frame",
                     "ours_speed_vs_this", "hands_per_frame"])
        for what, note in notes.items():
            print(f"  {what}: {note}")
        batched = networks_batched(sequences, repeats)
        print_table(f"the networks batched as on the actors ({THREADS} CPU thread(s))",
                    batched, ["device", "network", "batch", "images_per_s", "ms_per_image",
                              "speed_vs_batch_1", "fused_graph_vs_eager_layers"])
        task_side = video_task_side(sequences, checkpoint)
        print_table("a video task's share with the networks on an actor (this CPU)", task_side,
                    ["frames", "networks", "task_cpu_ms_per_frame", "wall_ms_per_frame"])
        pipeline_frames = (QUICK_PIPELINE_FRAMES if quick else PIPELINE_FRAMES)
        one_hand = next(iter(sequences.values()))[:pipeline_frames]
        pipeline = pipeline_with_and_without(
            one_hand, QUICK_PIPELINE_REPEATS if quick else PIPELINE_REPEATS, checkpoint, work)
    print_table("pipeline (process_video, one thread): this detector vs a boxes file", pipeline,
                ["detector", "frames", "frames_per_s", "detect_ms_per_frame",
                 "infer_ms_per_frame", "vs_boxes_file"])
    load_after = _load()
    busy = max(load_before["load_average_1m"], load_after["load_average_1m"]) > load_before["cpus"]
    ours = {r["frames"]: r["cpu_ms_per_frame"] for r in alone if r["runtime"] == "ours (torch)"}
    solution = [r for r in alone if r["runtime"].startswith("MediaPipe's solution")]
    result = {
        "description": __doc__.strip().splitlines()[0],
        "baseline": "MediaPipe's own solution on the same frames, same CPUs (CPU time per frame)",
        "quick": quick,
        "threads": THREADS,
        "repeats": repeats,
        # Other work on the machine: it stretches wall times; CPU times and the
        # interleaved ratios hold up better.
        "conditions": {
            "before": load_before, "after": load_after,
            "machine": ("shared and loaded (load average above the CPU count): wall-clock "
                        "figures are low, compare CPU ms per frame" if busy else "not loaded"),
        },
        "detector_alone": alone,
        "notes": notes,
        "networks_batched": batched,
        "video_task_side": task_side,
        "pipeline": pipeline,
        "target": {
            "required": "ours at least as fast as MediaPipe's solution on the CPU",
            "measured": bool(solution),
            "met": (all(r["cpu_ms_per_frame"] >= ours[r["frames"]] for r in solution)
                    if solution else None),
        },
    }
    write_result("detector", result, out_dir)
    return result
