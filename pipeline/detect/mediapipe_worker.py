"""MediaPipe hand detection worker: runs inside the isolated mediapipe environment.

This file is executed by that environment's Python as a script, not imported
by hflpipe: it may use only the standard library, numpy and mediapipe.

Protocol on stdin/stdout (all integers unsigned 32-bit big-endian):

- worker -> driver, once at start: a message ``{"ready": true, "mediapipe": version}``.
- driver -> worker, per frame: height, width, channels (3), then
  height * width * 3 bytes of RGB pixels, row-major.
- worker -> driver, per frame: a message ``{"hands": [...]}``, one entry per hand:
  ``{"label": "Left" | "Right", "score": float, "landmarks": [[x, y], ...]}``
  with 21 landmarks normalised to [0, 1] by the width and height of the frame as
  sent; or ``{"error": text}`` when the frame could not be processed.
- a message is a length, then that many bytes of UTF-8 JSON.

With ``--flip`` the frame is mirrored before detection and the landmarks are
mirrored back: MediaPipe's handedness assumes a mirrored (selfie) image, so an
ordinary camera's frame must be flipped for the labels to name the person's
own hand. The worker exits when stdin closes.
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import sys
from typing import BinaryIO

import numpy as np

_HEADER = struct.Struct(">III")
_LENGTH = struct.Struct(">I")


def _read_exact(stream: BinaryIO, size: int) -> bytes | None:
    """``size`` bytes, or None at a clean end of stream before the first byte."""
    chunks = []
    remaining = size
    while remaining:
        chunk = stream.read(remaining)
        if not chunk:
            if remaining == size:
                return None
            raise EOFError(f"stream ended {remaining} bytes short of a {size}-byte read")
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def _send(stream: BinaryIO, message: dict) -> None:
    payload = json.dumps(message).encode("utf-8")
    stream.write(_LENGTH.pack(len(payload)) + payload)
    stream.flush()


def _hands(result: object, flip: bool) -> list[dict]:
    found = []
    landmarks_per_hand = getattr(result, "multi_hand_landmarks", None) or []
    handedness_per_hand = getattr(result, "multi_handedness", None) or []
    for landmarks, handedness in zip(landmarks_per_hand, handedness_per_hand, strict=True):
        best = handedness.classification[0]
        points = [[1.0 - p.x if flip else p.x, p.y] for p in landmarks.landmark]
        found.append({"label": best.label, "score": float(best.score), "landmarks": points})
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-hands", type=int, default=2)
    parser.add_argument("--min-confidence", type=float, default=0.5)
    parser.add_argument("--model-complexity", type=int, choices=(0, 1), default=1)
    parser.add_argument("--flip", action=argparse.BooleanOptionalAction, default=True)
    args = parser.parse_args()

    # Native libraries inside mediapipe may print to file descriptor 1; keep the
    # protocol on a private copy of it and send everything else to stderr.
    protocol_fd = os.dup(1)
    os.dup2(2, 1)
    stdout = os.fdopen(protocol_fd, "wb")

    import mediapipe

    hands = mediapipe.solutions.hands.Hands(
        static_image_mode=True,
        max_num_hands=args.max_hands,
        model_complexity=args.model_complexity,
        min_detection_confidence=args.min_confidence,
    )
    stdin = sys.stdin.buffer
    _send(stdout, {"ready": True, "mediapipe": mediapipe.__version__})
    while True:
        header = _read_exact(stdin, _HEADER.size)
        if header is None:
            return 0
        height, width, channels = _HEADER.unpack(header)
        pixels = _read_exact(stdin, height * width * channels)
        if pixels is None:
            raise EOFError("stream ended before the frame's pixels")
        if channels != 3:
            _send(stdout, {"error": f"expected 3 channels, got {channels}"})
            continue
        frame = np.frombuffer(pixels, dtype=np.uint8).reshape(height, width, 3)
        if args.flip:
            frame = frame[:, ::-1]
        try:
            result = hands.process(np.ascontiguousarray(frame))
        except (RuntimeError, ValueError) as err:
            _send(stdout, {"error": f"{type(err).__name__}: {err}"})
            continue
        _send(stdout, {"hands": _hands(result, args.flip)})


if __name__ == "__main__":
    sys.exit(main())
