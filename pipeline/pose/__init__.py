"""Per-crop network outputs to poses: hand translation in the camera frame, object PnP.
Imports ``common``, ``crop``, ``detect`` and ``hflpipe.model``.
"""
