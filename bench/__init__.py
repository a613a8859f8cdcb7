"""hflpipe benchmarks: each prints a table and writes ``bench/results/<name>.json``.

Run ``python -m bench model|pipeline|decode|memory|scaling|smoothing|all [--quick]``
from the repository root. Every figure is a ratio against a baseline measured in
the same run, with the machine's facts beside it (:mod:`bench.common`).
"""
