"""Videos to chunks of RGB frames, bounded in memory: the PyAV and decord backends.

Imports only ``common``.
"""
