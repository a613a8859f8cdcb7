"""Per-track temporal smoothing and gap filling; the per-video hands/objects tables.
Imports ``common``, ``output`` (schema, quality), ``pose`` and ``hflpipe.model``.
"""
