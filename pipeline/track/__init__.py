"""Detections to tracks across frames, hand-object pairs, boxes between keyframes.

Imports ``common``, ``detect``, ``decode``, ``crop`` and ``infer``'s client protocol.
"""
