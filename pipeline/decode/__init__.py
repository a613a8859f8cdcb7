"""Videos to chunks of RGB frames in bounded memory: the PyAV and decord backends.
Imports only ``common``.
"""
