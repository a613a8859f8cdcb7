"""``python -m bench`` from the repository root (or ``python -m hflpipe.bench`` anywhere)."""

from hflpipe.bench.suite import main

main(prog=f"python -m {__package__}")
