"""``python -m bench NAME [--quick] [--checkpoint PATH] [--out DIR]``: run benchmarks.

``--quick`` runs each on a tiny input (seconds, not minutes): the smoke test's
mode, whose figures mean nothing. Without ``--checkpoint`` the synthetic
checkpoint is written once into the benchmark cache (``HFLPIPE_BENCH_CACHE``).
"""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path

from bench.common import RESULTS_DIR

BENCHMARKS = ("model", "pipeline", "decode", "memory", "scaling", "smoothing")
#: Benchmarks that load the network and accept ``checkpoint``.
_NEEDS_CHECKPOINT = ("model", "pipeline", "memory", "scaling")


def run_smoothing(*, quick: bool, out_dir: Path) -> None:
    """The smoothing benchmark (``bench/smoothing.py``, its own fixed settings and output)."""
    from bench import smoothing

    if quick:
        # Fewer frames, seeds and cutoffs: the same code paths in seconds.
        smoothing.FRAMES, smoothing.TUNE_SEEDS, smoothing.EVAL_SEEDS = 120, (0,), (10,)
        smoothing.CUTOFFS_HZ, smoothing.ONE_EURO_BETAS = (4.0,), (0.05,)
    smoothing.RESULTS = out_dir / "smoothing.json"
    smoothing.main()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("name", choices=(*BENCHMARKS, "all"))
    parser.add_argument("--quick", action="store_true", help="tiny inputs (smoke test)")
    parser.add_argument("--checkpoint", type=Path, help="HFL-Net checkpoint (default: synthetic)")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="results folder")
    args = parser.parse_args(argv)
    for name in BENCHMARKS if args.name == "all" else (args.name,):
        if name == "smoothing":
            run_smoothing(quick=args.quick, out_dir=args.out)
            continue
        module = importlib.import_module(f"bench.{name}")
        options: dict[str, object] = {"quick": args.quick, "out_dir": args.out}
        if name in _NEEDS_CHECKPOINT:
            options["checkpoint"] = args.checkpoint
        module.run(**options)


if __name__ == "__main__":
    main()
