"""``hflpipe demo``: a synthetic hand-object scene run through the whole pipeline.

Imports ``run``, ``config``, ``inputs``, ``results`` and ``hflpipe.model``.
"""
