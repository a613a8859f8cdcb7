"""Tools over finished output: inspect, render, plots, evaluate, export.
Read only the output tables: import ``common``, ``output``, ``decode`` and ``hflpipe.model``.
"""
