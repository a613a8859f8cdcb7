"""Predictor throughput: ``HflnetPredictor`` as shipped vs the plain fp32 eager network.

Baseline: the network exactly as loaded (same synthetic weights, float32,
eager, contiguous layout) called on ready-made float tensors. The shipped
predictor is timed from numpy uint8 crops to numpy results, so its figure also
pays for the input conversion and the on-device result selection the baseline
skips. Opt-in paths are measured beside it (bf16 autocast on CPUs with bf16
units; fp32 without fp16 on CUDA; ``torch.compile`` at the target batch, with
its one-off compile time), each with its error against the baseline.

Throughput is crops per second, best of ``repeats`` interleaved rounds. On CPU
everything runs with one thread, as an inference actor does by default
(``cpus_per_task`` 1), timed in process CPU seconds (the wall-clock ratio is
kept beside it), and the batch sweep stops at 16 (a batch of 128 takes minutes
per pass on one core); on CUDA it is wall-clock time over batches 1-128.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from bench.common import (
    RESULTS_DIR,
    best_times,
    print_table,
    ratio,
    synthetic_checkpoint,
    write_result,
)
from hflpipe.model.checkpoint import load_hflnet
from hflpipe.pipeline.predictor import HflnetPredictor, PredictorSettings

CPU_BATCHES = (1, 4, 16)
GPU_BATCHES = (1, 2, 4, 8, 16, 32, 64, 128)
#: The batch each target is stated at.
TARGET_BATCH = {"cpu": 16, "cuda": 64}
TARGET_SPEEDUP = {"cpu": 1.5, "cuda": 3.0}
CPU_THREADS = 1

#: Max abs error allowed against plain fp32, per output. fp32 paths: the parity fixtures'
#: tolerances (../shared/fixtures/hflnet/README.md); half precision: those of
#: tests/test_hflnet_parity.py for fp16 autocast.
FP32_TOLERANCE = {"joints2d": 1e-4, "joints3d": 1e-5, "mano_pose_aa": 1e-4,
                  "obj_pred_x": 1e-4, "obj_pred_y": 1e-4, "obj_conf": 1e-4}
HALF_TOLERANCE = {"joints2d": 2e-2, "joints3d": 5e-4, "mano_pose_aa": 1e-2,
                  "obj_pred_x": 5e-3, "obj_pred_y": 5e-3, "obj_conf": 1e-2}


def make_crops(batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    """``batch`` seeded crops: smooth colour fields plus noise (uint8), and plausible boxes."""
    rng = np.random.default_rng(seed)
    coarse = torch.from_numpy(rng.random((batch, 3, 8, 8), dtype=np.float32))
    smooth = torch.nn.functional.interpolate(coarse, size=(256, 256), mode="bilinear")
    images = smooth.permute(0, 2, 3, 1).numpy() * 200 + rng.normal(0, 12, (batch, 256, 256, 3))
    centres = rng.uniform(90, 166, (batch, 2, 2))
    halves = rng.uniform(40, 80, (batch, 2, 1))
    boxes = np.concatenate([centres - halves, centres + halves], axis=2).astype(np.float32)
    return {"images": np.clip(images, 0, 255).astype(np.uint8),
            "hand_boxes": boxes[:, 0], "object_boxes": boxes[:, 1]}


def _tensors(crops: dict[str, np.ndarray], device: torch.device) -> tuple[torch.Tensor, ...]:
    images = torch.from_numpy(crops["images"]).to(device).permute(0, 3, 1, 2).float() / 255.0
    return (images.contiguous(), torch.from_numpy(crops["hand_boxes"]).to(device),
            torch.from_numpy(crops["object_boxes"]).to(device))


def parity(predictor: HflnetPredictor, reference: dict[str, torch.Tensor],
           crops: dict[str, np.ndarray], tolerance: dict[str, float]) -> dict[str, object]:
    """Max abs error of each output against the reference, and whether all are in tolerance."""
    out = predictor.network_outputs(crops)
    errors = {name: float((out[name].float() - reference[name].float()).abs().max())
              for name in tolerance}
    return {"max_abs_error": errors, "tolerance": tolerance,
            "within_tolerance": all(errors[n] <= tolerance[n] for n in tolerance)}


def run(*, quick: bool = False, checkpoint: Path | None = None,
        out_dir: Path = RESULTS_DIR) -> dict[str, object]:
    """Run the benchmark, print its table, write ``model.json``; returns the result document."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cpu":
        torch.set_num_threads(CPU_THREADS)
    else:
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    checkpoint = checkpoint or synthetic_checkpoint()
    batches = (1, 2) if quick else (CPU_BATCHES if device.type == "cpu" else GPU_BATCHES)
    repeats = 1 if quick else (2 if device.type == "cpu" else 10)

    plain = load_hflnet(checkpoint, device=device)
    shipped = HflnetPredictor(PredictorSettings(checkpoint, device=str(device)))
    opt_in_precision = "bf16" if device.type == "cpu" else "fp32"
    opt_in = HflnetPredictor(PredictorSettings(checkpoint, device=str(device),
                                               precision=opt_in_precision))
    opt_in_name = f"shipped+{opt_in_precision}" if device.type == "cpu" else "shipped-fp32"
    target_batch = TARGET_BATCH[device.type]
    # Compiling takes minutes: measured at the target batch only, and not in --quick runs.
    compiled = None if quick else HflnetPredictor(
        PredictorSettings(checkpoint, device=str(device), compile=True))
    compile_s = None

    probe = make_crops(4, seed=1)
    with torch.inference_mode():
        reference = plain(*_tensors(probe, device))
    shipped_tolerance = FP32_TOLERANCE if shipped.autocast_dtype is None else HALF_TOLERANCE
    opt_in_tolerance = FP32_TOLERANCE if opt_in.autocast_dtype is None else HALF_TOLERANCE
    accuracy = {
        "shipped": {"precision": str(shipped.autocast_dtype or "fp32"),
                    **parity(shipped, reference, probe, shipped_tolerance)},
        opt_in_name: {"precision": str(opt_in.autocast_dtype or "fp32"),
                      **parity(opt_in, reference, probe, opt_in_tolerance)},
    }

    sync = torch.cuda.synchronize if device.type == "cuda" else None
    # One CPU thread: CPU seconds measure the work, undisturbed by neighbours on a shared box.
    clock = "cpu_s" if device.type == "cpu" else "wall_s"
    rows = []
    for batch in batches:
        crops = make_crops(batch)
        tensors = _tensors(crops, device)

        def run_plain(tensors: tuple[torch.Tensor, ...] = tensors) -> None:
            with torch.inference_mode():
                plain(*tensors)

        variants: dict[str, Callable[[], object]] = {
            "plain": run_plain,
            "shipped": lambda crops=crops: shipped(crops),
            opt_in_name: lambda crops=crops: opt_in(crops),
        }
        if compiled is not None and batch == target_batch:
            start = time.perf_counter()
            compiled(crops)
            compile_s = round(time.perf_counter() - start, 1)
            variants["shipped+compile"] = lambda crops=crops: compiled(crops)
        times = best_times(variants, repeats, sync)
        seconds = {name: getattr(t, clock) for name, t in times.items()}
        row: dict[str, object] = {"batch": batch}
        for name, value in seconds.items():
            row[f"{name}_crops_per_s"] = round(batch / value, 3)
        for name in seconds:
            if name != "plain":
                row[f"{name}_speedup"] = ratio(seconds["plain"], seconds[name])
        row["shipped_speedup_wall_clock"] = ratio(times["plain"].wall_s, times["shipped"].wall_s)
        rows.append(row)
        print_table(f"batch {batch} on {device}", [row], list(row))

    if compiled is not None:
        accuracy["shipped+compile"] = {"precision": str(compiled.autocast_dtype or "fp32"),
                                       **parity(compiled, reference, probe, shipped_tolerance)}
    at_target = next((r for r in rows if r["batch"] == target_batch), None)
    result = {
        "description": __doc__.strip().splitlines()[0],
        "device": str(device),
        "threads": torch.get_num_threads() if device.type == "cpu" else None,
        "baseline": "plain network: same weights, fp32, eager, contiguous layout, float inputs",
        "shipped": {"precision": str(shipped.autocast_dtype or "fp32"),
                    "fold_batch_norm": True, "channels_last": True},
        "quick": quick,
        "repeats": repeats,
        "clock": "process CPU time" if clock == "cpu_s" else "wall clock (CUDA synchronised)",
        "rows": rows,
        "compile_s": compile_s,
        "accuracy_vs_plain_fp32": accuracy,
        "target": {
            "batch": target_batch,
            "speedup_required": TARGET_SPEEDUP[device.type],
            "speedup_measured": at_target["shipped_speedup"] if at_target else None,
            "met": (at_target["shipped_speedup"] >= TARGET_SPEEDUP[device.type]
                    and accuracy["shipped"]["within_tolerance"]) if at_target else None,
            "speedup_measured_with_compile": at_target.get("shipped+compile_speedup")
            if at_target else None,
        },
    }
    columns = list(dict.fromkeys(c for r in rows for c in r))
    print_table(f"predictor vs plain fp32 eager ({device})", rows, columns)
    for name, acc in accuracy.items():
        worst = max(acc["max_abs_error"].items(), key=lambda kv: kv[1] / acc["tolerance"][kv[0]])
        print(f"{name} ({acc['precision']}): within tolerance {acc['within_tolerance']}, "
              f"worst {worst[0]} {worst[1]:.2e} (tolerance {acc['tolerance'][worst[0]]:.0e})")
    write_result("model", result, out_dir)
    return result
