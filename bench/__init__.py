"""hflpipe benchmarks: each prints a table and writes ``<name>.json`` with the machine's facts.

Run ``hflpipe bench NAME... [--quick] [--out DIR]`` (NAME: model, pipeline, decode, memory,
scaling, smoothing or all), or ``python -m bench NAME...`` from the repository root. Results
go to ``bench/results/`` in a source checkout, else to ``./hflpipe-bench-results/``
(:mod:`hflpipe.bench.suite`). Every figure is a ratio against a baseline measured in the
same run, with the machine's facts beside it (:mod:`hflpipe.bench.common`).
"""
