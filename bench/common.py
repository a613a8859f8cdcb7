"""What every benchmark shares: machine facts, timing under contention, tables, JSON results.

Figures are ratios against a baseline measured in the same run, so a slower or
busier machine moves both sides. Timings take the best of several repeats, the
variants interleaved, because the machines this runs on are shared: a
neighbour's burst then slows one repeat, not one variant.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hflpipe import __version__
from hflpipe.atomic import atomic_write_text
from hflpipe.jsonable import to_jsonable

_PACKAGE = Path(__file__).resolve().parent
#: The source checkout these benchmarks run from; None in an installed copy
#: (``site-packages/hflpipe/bench``, with no ``pyproject.toml`` above it).
CHECKOUT: Path | None = (
    _PACKAGE.parent if (_PACKAGE.parent / "pyproject.toml").is_file() else None
)


def default_results_dir() -> Path:
    """Where results go without ``--out``: ``bench/results/`` in a writable source checkout,
    beside the committed results; otherwise ``hflpipe-bench-results/`` in the current folder."""
    if CHECKOUT is not None and os.access(_PACKAGE, os.W_OK):
        return _PACKAGE / "results"
    return Path.cwd() / "hflpipe-bench-results"


RESULTS_DIR = default_results_dir()
#: CPU flags that decide which fast paths a CPU has (bf16 and int8 matrix units).
_CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile")


def machine_info() -> dict[str, object]:
    """The facts a reader needs to compare two result files: CPU, GPU, load, library versions."""
    # Imported here: decoding children measure their own memory and must not load torch.
    import scipy
    import torch

    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    cpu = fields.get("model name") or platform.processor() or "unknown"
    flags = set(fields.get("flags", "").split())
    info: dict[str, object] = {
        "cpu": cpu,
        "cpu_flags": sorted(flags.intersection(_CPU_FLAGS)),
        "cpus_available": len(os.sched_getaffinity(0)),
        # Other work on the machine while the benchmark ran; ratios absorb it, absolutes do not.
        "load_average_1m": round(os.getloadavg()[0], 2),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "hflpipe": __version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "platform": platform.platform(),
        "git_commit": _git_commit(),
        "date_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    return info


def _git_commit() -> str | None:
    # Only a checkout's own commit: an installed copy may sit inside an unrelated repository.
    if CHECKOUT is None:
        return None
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=CHECKOUT,
                             capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


@dataclass(frozen=True)
class Timing:
    """Best wall-clock and best process-CPU seconds of one variant."""

    wall_s: float
    cpu_s: float


def best_times(variants: Mapping[str, Callable[[], object]], repeats: int,
               sync: Callable[[], None] | None = None) -> dict[str, Timing]:
    """Best times of each variant over ``repeats`` rounds, variants interleaved.

    Each variant runs once untimed first (warm-up: allocations, cuDNN tuning, lazy
    initialisation). ``sync`` (e.g. ``torch.cuda.synchronize``) runs before each clock read.
    Process CPU time is the steadier figure for single-threaded CPU work on a shared
    machine: a neighbour's load stretches the wall clock, not the CPU seconds spent.
    """
    sync = sync or (lambda: None)
    for fn in variants.values():
        fn()
    wall = dict.fromkeys(variants, float("inf"))
    cpu = dict.fromkeys(variants, float("inf"))
    for _ in range(repeats):
        for name, fn in variants.items():
            sync()
            start, start_cpu = time.perf_counter(), time.process_time()
            fn()
            sync()
            wall[name] = min(wall[name], time.perf_counter() - start)
            cpu[name] = min(cpu[name], time.process_time() - start_cpu)
    return {name: Timing(wall[name], cpu[name]) for name in variants}


def ratio(value: float, baseline: float) -> float:
    """``value / baseline`` rounded to 3 decimals (NaN when the baseline is 0)."""
    return round(value / baseline, 3) if baseline else float("nan")


def print_table(title: str, rows: Sequence[Mapping[str, object]],
                columns: Sequence[str]) -> None:
    """Print rows as an aligned text table (floats with 3 significant decimals)."""
    def cell(value: object) -> str:
        if isinstance(value, float):
            return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
        return "-" if value is None else str(value)

    cells = [[cell(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    print(f"\n{title}")
    print("  ".join(c.rjust(w) for c, w in zip(columns, widths, strict=True)))
    for r in cells:
        print("  ".join(v.rjust(w) for v, w in zip(r, widths, strict=True)))


def write_result(name: str, payload: Mapping[str, object], out_dir: Path = RESULTS_DIR) -> Path:
    """Write ``out_dir/<name>.json`` atomically, with the machine facts added; returns the path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.json"
    document = {"benchmark": name, **payload, "machine": machine_info()}
    atomic_write_text(path, json.dumps(to_jsonable(document), indent=2, allow_nan=False) + "\n")
    print(f"wrote {path}")
    return path


def bench_cache() -> Path:
    """A folder kept between benchmark runs for generated inputs (weights, videos)."""
    default = Path(tempfile.gettempdir()) / "hflpipe-bench"
    path = Path(os.environ.get("HFLPIPE_BENCH_CACHE", default))
    path.mkdir(parents=True, exist_ok=True)
    return path


def synthetic_checkpoint() -> Path:
    """The synthetic HFL-Net checkpoint (official layout), written once into the cache.

    The recipe is deterministic, so a file already there is the same one.
    """
    from hflpipe.model.synthetic_checkpoint import write_synthetic_checkpoint

    path = bench_cache() / "synthetic_hflnet.pth.tar"
    if not path.is_file():
        write_synthetic_checkpoint(path)
    return path


def peak_rss_mib() -> float:
    """This process's peak resident set size so far, MiB (``VmHWM``).

    Not ``ru_maxrss``: Linux carries that across fork and exec, so a freshly spawned
    child would report at least its parent's size at the fork.
    """
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise OSError("/proc/self/status has no VmHWM line")


def rss_mib() -> float:
    """This process's current resident set size, MiB."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def processing_window(out: Path) -> tuple[dt.datetime, dt.datetime]:
    """First ``started_at`` and last ``finished_at`` (UTC) in a run's ``videos`` table:
    the span in which videos were processed, without the run's start-up."""
    from hflpipe.pipeline.output.reader import read_table

    videos = read_table(out, "videos", columns=["started_at", "finished_at"])
    return (min(videos.column("started_at").to_pylist()),
            max(videos.column("finished_at").to_pylist()))
