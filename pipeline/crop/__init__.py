"""The 256x256 hand-object crops the network takes, and mapping results back to frames.

Imports ``common`` and ``hflpipe.model``.
"""
