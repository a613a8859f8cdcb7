"""MediaPipe's own hand solution on stored frames, timed; a script the detector benchmark runs.

It runs in whichever Python has ``mediapipe`` installed (MediaPipe 0.10.21 needs
numpy < 2, hflpipe numpy >= 2, so usually another environment): it imports
nothing of hflpipe. Usage::

    python mediapipe_solution.py FRAMES.npz REPEATS CPUS

``FRAMES.npz`` holds (N, H, W, 3) uint8 RGB sequences by name; ``CPUS`` is a
comma-separated CPU list the process is pinned to (the benchmark's own). Each
sequence goes through ``solutions.hands`` in video mode (2 hands, the full models),
a fresh solution per repeat, once untimed then ``REPEATS`` times. Prints one JSON
object: the version and, per sequence, the best wall and CPU seconds and the hands
found on each frame.
"""

from __future__ import annotations

import json
import os
import sys
import time

import numpy as np


def _timed_pass(solutions, frames: np.ndarray) -> tuple[float, float, list[int]]:
    with solutions.hands.Hands(static_image_mode=False, max_num_hands=2,
                               model_complexity=1) as hands:
        start, start_cpu = time.perf_counter(), time.process_time()
        found = [len(hands.process(frame).multi_hand_landmarks or []) for frame in frames]
        return time.perf_counter() - start, time.process_time() - start_cpu, found


def main() -> None:
    path, repeats, cpus = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    os.sched_setaffinity(0, {int(c) for c in cpus.split(",")})
    import mediapipe

    sequences = {}
    with np.load(path) as stored:
        for name in stored.files:
            frames = stored[name]
            _, _, found = _timed_pass(mediapipe.solutions, frames)
            timings = [_timed_pass(mediapipe.solutions, frames)[:2] for _ in range(repeats)]
            sequences[name] = {"wall_s": min(t[0] for t in timings),
                               "cpu_s": min(t[1] for t in timings), "hands": found}
    print(json.dumps({"mediapipe": mediapipe.__version__, "sequences": sequences}))


if __name__ == "__main__":
    main()
