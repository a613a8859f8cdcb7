"""Per-track temporal smoothing and gap filling, and the per-video hands/objects tables.

Imports ``common``, ``output`` (schema, quality) and ``hflpipe.model``.
"""
