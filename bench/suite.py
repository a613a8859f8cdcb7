"""Run benchmarks by name: the one entry of ``hflpipe bench`` and ``python -m bench``.

``--quick`` runs each on a tiny input (seconds to a few minutes on 2 cores): a rough first
look, and the smoke tests' mode. Without ``--checkpoint`` the
synthetic checkpoint is written once into the benchmark cache (``HFLPIPE_BENCH_CACHE``).
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Sequence
from pathlib import Path

from hflpipe.bench.common import RESULTS_DIR

BENCHMARKS = ("model", "pipeline", "decode", "memory", "scaling", "simulated", "smoothing",
              "hand_object", "detector")
#: Benchmarks that load the network and accept ``checkpoint``.
_NEEDS_CHECKPOINT = ("model", "pipeline", "memory", "scaling", "simulated", "detector")


def run_benchmarks(names: Sequence[str], *, quick: bool = False, out_dir: Path | None = None,
                   checkpoint: Path | None = None) -> Path:
    """Run the named benchmarks in the order given (``"all"``: every one); each prints its
    tables and writes ``<name>.json`` into ``out_dir`` (default: :data:`RESULTS_DIR`).

    Returns the results folder. Raises ValueError for an unknown name, before running any.
    """
    unknown = sorted(set(names) - {*BENCHMARKS, "all"})
    if unknown or not names:
        raise ValueError(f"benchmarks to run: one or more of {', '.join(BENCHMARKS)} or all; "
                         f"got {', '.join(unknown) or 'none'}")
    selected = BENCHMARKS if "all" in names else tuple(dict.fromkeys(names))
    out_dir = (out_dir or RESULTS_DIR).resolve()
    print(f"benchmarks: {', '.join(selected)}{' (quick)' if quick else ''}; results in {out_dir}")
    for name in selected:
        module = importlib.import_module(f"hflpipe.bench.{name}")
        options: dict[str, object] = {"quick": quick, "out_dir": out_dir}
        if name in _NEEDS_CHECKPOINT:
            options["checkpoint"] = checkpoint
        module.run(**options)
    return out_dir


def main(argv: list[str] | None = None, prog: str = "python -m bench") -> None:
    """The ``python -m bench`` command line."""
    parser = argparse.ArgumentParser(
        prog=prog, description="Run hflpipe's benchmarks: each prints its tables and writes "
                               "NAME.json with the machine's facts.")
    parser.add_argument("names", nargs="+", metavar="NAME", choices=(*BENCHMARKS, "all"),
                        help=f"{', '.join(BENCHMARKS)} or all")
    parser.add_argument("--quick", action="store_true",
                        help="tiny inputs: a rough first look, seconds to minutes each")
    parser.add_argument("--checkpoint", type=Path, help="HFL-Net checkpoint (default: synthetic)")
    parser.add_argument("--out", type=Path, help=f"results folder (default: {RESULTS_DIR})")
    args = parser.parse_args(argv)
    run_benchmarks(args.names, quick=args.quick, out_dir=args.out, checkpoint=args.checkpoint)
