"""Writes the frames and MediaPipe's own answers that tests/test_mediapipe_parity.py checks.

Two steps, two interpreters (MediaPipe 0.10.21 needs numpy < 2, the project numpy >= 2):

    python tests/data/mediapipe_reference/make_reference.py frames
        (hflpipe's environment) renders the frame sequences as PNG files;
    /path/to/mediapipe-env/bin/python tests/data/mediapipe_reference/make_reference.py reference
        (an environment with `pip install mediapipe==0.10.21`) runs MediaPipe's
        ``solutions.hands`` in video mode on each sequence and writes reference.json.

A sequence named ``*_x4`` is stored at a quarter of its size; its frames are the PNG
repeated 4 times along each axis (the 4K frames), in both steps and in the test.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import cv2
import numpy as np

HERE = Path(__file__).resolve().parent
MAX_HANDS = 2

# name -> (width, height, per frame: hands as drawn_hands.hand_scene takes them)
SEQUENCES = {
    "ordinary": (640, 480, [[(320 + 12 * i, 250 - 6 * i, 300, 8 * i - 10, False)]
                            for i in range(4)]),
    "two_hands": (640, 360, [[(170 + 4 * i, 190, 250, 5, False),
                              (470 - 4 * i, 190, 250, -5, True)] for i in range(3)]),
    "no_hands": (320, 240, [[], []]),
    "tiny": (128, 96, [[(64, 48, 96, 0, False)], [(65, 48, 96, 3, False)]]),
    "uhd_x4": (960, 540, [[(480, 280, 380, -20, False)], [(470, 285, 380, -15, False)]]),
}


def load_sequence(name: str) -> np.ndarray:
    """(N, H, W, 3) uint8 RGB frames of a stored sequence (``*_x4`` enlarged 4 times)."""
    files = sorted(HERE.glob(f"{name}_*.png"))
    frames = np.stack([cv2.imread(str(f), cv2.IMREAD_COLOR)[:, :, ::-1] for f in files])
    if name.endswith("_x4"):
        frames = frames.repeat(4, axis=1).repeat(4, axis=2)
    return np.ascontiguousarray(frames)


def sequences() -> dict[str, np.ndarray]:
    """Every stored sequence, plus ``mirrored``: the ordinary frames flipped left-right."""
    found = {name: load_sequence(name) for name in SEQUENCES}
    found["mirrored"] = np.ascontiguousarray(found["ordinary"][:, :, ::-1])
    return found


def write_frames() -> None:
    from hflpipe.pipeline.demo.drawn_hands import hand_scene

    for name, (width, height, per_frame) in SEQUENCES.items():
        for index, hands in enumerate(per_frame):
            image = hand_scene(width, height, hands, seed=index)
            cv2.imwrite(str(HERE / f"{name}_{index}.png"), image[:, :, ::-1])


def write_reference() -> None:
    import mediapipe

    reference = {"mediapipe": mediapipe.__version__, "max_hands": MAX_HANDS, "sequences": {}}
    for name, frames in sequences().items():
        per_frame = []
        with mediapipe.solutions.hands.Hands(static_image_mode=False, max_num_hands=MAX_HANDS,
                                             model_complexity=1) as hands:
            for frame in frames:
                result = hands.process(frame)
                found = []
                for points, handedness in zip(result.multi_hand_landmarks or [],
                                              result.multi_handedness or [], strict=True):
                    best = handedness.classification[0]
                    found.append({
                        "label": best.label,
                        "score": best.score,
                        "landmarks": [[p.x, p.y, p.z] for p in points.landmark],
                    })
                per_frame.append(found)
        reference["sequences"][name] = per_frame
        print(name, [len(f) for f in per_frame])
    (HERE / "reference.json").write_text(json.dumps(reference, indent=1) + "\n")


if __name__ == "__main__":
    {"frames": write_frames, "reference": write_reference}[sys.argv[1]]()
