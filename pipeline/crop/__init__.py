"""The 256x256 hand-object crops the network takes, and results mapped back to frames.
Imports ``common``, ``detect`` (its ``Detection``) and ``hflpipe.model``.
"""
