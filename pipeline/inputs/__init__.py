"""What the user points at: video lists, globs and manifests; camera intrinsics.

Imports ``common``, ``config`` and ``hflpipe.model``.
"""
