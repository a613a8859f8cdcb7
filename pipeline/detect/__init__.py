"""Hands and objects per frame: boxes files, MediaPipe, torchvision models.
Imports ``common`` and ``hflpipe.model``; detectors take explicit options.
"""
