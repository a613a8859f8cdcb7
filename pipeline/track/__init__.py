"""Detections to tracks across frames and hand-object pairs; boxes between keyframes.
Imports ``common``, ``detect``, ``decode``, ``crop`` and ``infer`` (propagation runs the model).
"""
