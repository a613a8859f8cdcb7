"""``hflpipe demo``: a synthetic hand-object scene run through the whole pipeline.
Imports ``config``, ``inputs``, ``run``, ``results`` and ``hflpipe.model``.
"""
