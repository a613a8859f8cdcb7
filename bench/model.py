"""Predictor throughput: ``HflnetPredictor`` as shipped vs the plain fp32 eager network.

Baseline: the network exactly as loaded (same synthetic weights, float32,
eager, contiguous layout) called on ready-made float tensors. The shipped
predictor is timed from numpy uint8 crops to numpy results, so its figure also
pays for the input conversion and the on-device result selection the baseline
skips. Opt-in paths are measured beside it (bf16 autocast on CPUs with bf16
units; fp32 without fp16 on CUDA; ``torch.compile`` at the target batch, with
its one-off compile time), each with its error against the baseline.

Each variant runs in a process of its own, because the shipped predictor
changes process-wide state: on CPU it makes glibc keep freed memory
(:mod:`hflpipe.pipeline.infer.freed_memory`), which must not reach the baseline. The
variant ``plain+allocator`` is the plain network in a process with that setting,
so the table shows how much of the speed-up the setting alone brings.

Throughput is crops per second, best of ``repeats`` rounds in which the variants
take turns. On CPU everything runs with one thread, as an inference actor does
by default (``cpus_per_task`` 1), timed in process CPU seconds (the wall-clock
ratio is kept beside it), and the batch sweep stops at 32, the pipeline's
default batch (a batch of 128 takes a minute per pass on one core); on CUDA it
is wall-clock time over batches 1-128.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import time
import traceback
from multiprocessing.connection import Connection
from pathlib import Path

import numpy as np
import torch

from hflpipe.bench.common import (
    RESULTS_DIR,
    print_table,
    ratio,
    synthetic_checkpoint,
    write_result,
)
from hflpipe.model.checkpoint import load_hflnet
from hflpipe.pipeline.infer.freed_memory import keep_freed_memory
from hflpipe.pipeline.infer.predictor import PredictorSettings
from hflpipe.pipeline.infer.predictor_actor import load_actor_predictor

CPU_BATCHES = (1, 4, 16, 32)
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


#: Outputs compared against the plain network (all with a tolerance above).
PARITY_OUTPUTS = tuple(FP32_TOLERANCE)


class _Variant:
    """One way of running the network, built inside its worker process."""

    def __init__(self, name: str, checkpoint: Path, device: torch.device) -> None:
        self.device = device
        self.plain = name.startswith("plain")
        if name == "plain+allocator":
            keep_freed_memory()
        if self.plain:
            self.net = load_hflnet(checkpoint, device=device)
            self.precision = "fp32"
            return
        precision = {"shipped+bf16": "bf16", "shipped-fp32": "fp32"}.get(name, "auto")
        # As an inference actor runs it (on CPU its process keeps freed memory).
        self.predictor = load_actor_predictor(PredictorSettings(
            checkpoint, device=str(device), precision=precision,
            compile=name == "shipped+compile"), CPU_THREADS)
        self.precision = str(self.predictor.autocast_dtype or "fp32")

    @torch.inference_mode()
    def run(self, crops: dict[str, np.ndarray], tensors: tuple[torch.Tensor, ...]) -> None:
        """One timed call: the plain network on ready tensors, the predictor on uint8 crops."""
        if self.plain:
            self.net(*tensors)
        else:
            self.predictor(crops)

    @torch.inference_mode()
    def outputs(self, crops: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The network outputs compared for parity, as float32 numpy."""
        if self.plain:
            out = self.net(*_tensors(crops, self.device))
        else:
            out = self.predictor.network_outputs(crops)
        return {name: out[name].float().cpu().numpy() for name in PARITY_OUTPUTS}


def _serve(conn: Connection, name: str, checkpoint: str, device_name: str) -> None:
    """Worker process: build one variant, then answer the parent's requests until ``None``.

    Requests: ``("load", batch)`` makes that batch's crops; ``("warm",)`` runs once and
    replies the wall seconds (a compiled variant compiles then); ``("time",)`` replies
    ``(wall_s, cpu_s)`` of one call; ``("outputs", crops)`` replies the parity outputs.
    Every reply is ``("ok", value)`` or ``("error", traceback text)``.
    """
    device = torch.device(device_name)
    if device.type == "cpu":
        torch.set_num_threads(CPU_THREADS)
    else:
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    try:
        variant = _Variant(name, Path(checkpoint), device)
        conn.send(("ok", variant.precision))
    except Exception:  # any failure goes back to the parent, which reports it
        conn.send(("error", traceback.format_exc()))
        return
    crops: dict[str, np.ndarray] = {}
    tensors: tuple[torch.Tensor, ...] = ()
    while (request := conn.recv()) is not None:
        try:
            kind = request[0]
            if kind == "load":
                crops = make_crops(request[1])
                tensors = _tensors(crops, device)
                reply: object = None
            elif kind == "outputs":
                reply = variant.outputs(request[1])
            else:
                sync()
                start, start_cpu = time.perf_counter(), time.process_time()
                variant.run(crops, tensors)
                sync()
                wall, cpu = time.perf_counter() - start, time.process_time() - start_cpu
                reply = wall if kind == "warm" else (wall, cpu)
            conn.send(("ok", reply))
        except Exception:  # any failure goes back to the parent, which reports it
            conn.send(("error", traceback.format_exc()))


class _Worker:
    """The parent's handle on one variant's process."""

    def __init__(self, name: str, checkpoint: Path, device: torch.device) -> None:
        context = multiprocessing.get_context("spawn")
        self.name = name
        self.conn, child = context.Pipe()
        self.process = context.Process(target=_serve, daemon=True,
                                       args=(child, name, str(checkpoint), str(device)))
        self.process.start()
        child.close()
        self.precision = str(self._reply())

    def ask(self, *request: object) -> object:
        self.conn.send(request)
        return self._reply()

    def _reply(self) -> object:
        try:
            status, value = self.conn.recv()
        except EOFError:
            self.process.join(5)
            raise RuntimeError(f"benchmark variant {self.name!r} died "
                               f"(exit code {self.process.exitcode})") from None
        if status == "error":
            raise RuntimeError(f"benchmark variant {self.name!r} failed:\n{value}")
        return value

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.conn.send(None)
        self.process.join(30)
        if self.process.is_alive():
            self.process.kill()


def parity(worker: _Worker, reference: dict[str, np.ndarray], crops: dict[str, np.ndarray],
           tolerance: dict[str, float]) -> dict[str, object]:
    """Max abs error of each output against the reference, and whether all are in tolerance."""
    out = worker.ask("outputs", crops)
    errors = {name: float(np.abs(out[name] - reference[name]).max()) for name in tolerance}
    return {"precision": worker.precision, "max_abs_error": errors, "tolerance": tolerance,
            "within_tolerance": all(errors[n] <= tolerance[n] for n in tolerance)}


def _time_batch(workers: dict[str, _Worker], batch: int, repeats: int
                ) -> tuple[dict[str, tuple[float, float]], dict[str, float]]:
    """Best (wall, cpu) seconds per variant at ``batch``, and each variant's warm-up seconds."""
    for worker in workers.values():
        worker.ask("load", batch)
    warm = {name: float(worker.ask("warm")) for name, worker in workers.items()}
    best = dict.fromkeys(workers, (float("inf"), float("inf")))
    for _ in range(repeats):
        # Variants take turns within a round, so a neighbour's burst hits one round.
        for name, worker in workers.items():
            wall, cpu = worker.ask("time")
            best[name] = (min(best[name][0], wall), min(best[name][1], cpu))
    return best, warm


def run(*, quick: bool = False, checkpoint: Path | None = None,
        out_dir: Path = RESULTS_DIR) -> dict[str, object]:
    """Run the benchmark, print its table, write ``model.json``; returns the result document."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    checkpoint = checkpoint or synthetic_checkpoint()
    batches = (2,) if quick else (CPU_BATCHES if device.type == "cpu" else GPU_BATCHES)
    repeats = 1 if quick else (2 if device.type == "cpu" else 10)
    target_batch = TARGET_BATCH[device.type]
    # A quick look times the target's two sides only: each variant is a process loading
    # the network, and on 2 cores four of them take minutes.
    names = ["plain", "shipped"]
    if not quick:
        names.append("shipped+bf16" if device.type == "cpu" else "shipped-fp32")
        if device.type == "cpu":
            names.insert(1, "plain+allocator")
    # Compiling takes minutes: measured at the target batch only, and not in --quick runs.
    compiled = None if quick else "shipped+compile"

    workers = {name: _Worker(name, checkpoint, device) for name in names}
    try:
        if compiled:
            workers[compiled] = _Worker(compiled, checkpoint, device)
        probe = make_crops(2 if quick else 4, seed=1)
        reference = workers["plain"].ask("outputs", probe)
        rows = []
        compile_s = None
        # One CPU thread: CPU seconds measure the work, undisturbed by neighbours on a shared box.
        clock = 1 if device.type == "cpu" else 0
        for batch in batches:
            active = {n: w for n, w in workers.items() if n != compiled or batch == target_batch}
            best, warm = _time_batch(active, batch, repeats)
            if compiled in active:
                compile_s = round(warm[compiled], 1)
            row: dict[str, object] = {"batch": batch}
            for name, times in best.items():
                row[f"{name}_crops_per_s"] = round(batch / times[clock], 3)
            for name, times in best.items():
                if name != "plain":
                    row[f"{name}_speedup"] = ratio(best["plain"][clock], times[clock])
            row["shipped_speedup_wall_clock"] = ratio(best["plain"][0], best["shipped"][0])
            rows.append(row)
            print_table(f"batch {batch} on {device}", [row], list(row))
        # After the timing, so that the compiled variant's first compile is the one timed.
        accuracy = {}
        for name, worker in workers.items():
            if not name.startswith("plain"):
                tolerance = FP32_TOLERANCE if worker.precision == "fp32" else HALF_TOLERANCE
                accuracy[name] = parity(worker, reference, probe, tolerance)
    finally:
        for worker in workers.values():
            worker.close()

    at_target = next((r for r in rows if r["batch"] == target_batch), None)
    result = {
        "description": __doc__.strip().splitlines()[0],
        "device": str(device),
        "threads": CPU_THREADS if device.type == "cpu" else None,
        "baseline": "plain network: same weights, fp32, eager, contiguous layout, float inputs,"
                    " default allocator, its own process",
        "shipped": {"precision": accuracy["shipped"]["precision"], "fold_batch_norm": True,
                    "channels_last": True, "keeps_freed_memory": device.type == "cpu"},
        "quick": quick,
        "repeats": repeats,
        "clock": "process CPU time" if clock else "wall clock (CUDA synchronised)",
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
