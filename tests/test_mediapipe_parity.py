"""Our MediaPipe hand solution against MediaPipe's own, frame by frame.

The reference (tests/data/mediapipe_reference/reference.json) is what
``mediapipe==0.10.21``'s ``solutions.hands`` (video mode, 2 hands, full models)
answered on the stored frames; ``make_reference.py`` beside it regenerates it in a
MediaPipe environment. Here the same frames go through ``HandTracker``.

Measured (x, y in frame pixels; z in MediaPipe's units): landmarks within 0.23 px
at 640x480, 0.07 px at 128x96, 0.71 px at 3840x2160; z within 0.0045; label
probabilities within 0.010; same hands, same order, same labels. The regions are
sampled by OpenCV as MediaPipe does, wherever the networks run.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from hflpipe.model.mediapipe_files import load_hand_landmarker, load_palm_detector
from hflpipe.model.mediapipe_hands import HandTracker, TorchHandNetworks

REFERENCE_DIR = Path(__file__).parent / "data" / "mediapipe_reference"
sys.path.insert(0, str(REFERENCE_DIR))
from make_reference import MAX_HANDS, sequences  # noqa: E402

PIXEL_TOLERANCE = 1.0
Z_TOLERANCE = 0.01
SCORE_TOLERANCE = 0.02


@pytest.fixture(scope="module")
def networks() -> tuple[torch.nn.Module, torch.nn.Module]:
    return load_palm_detector(), load_hand_landmarker()


@pytest.fixture(scope="module")
def all_frames() -> dict[str, np.ndarray]:
    return sequences()


@pytest.fixture(scope="module")
def reference() -> dict:
    return json.loads((REFERENCE_DIR / "reference.json").read_text())


@pytest.mark.parametrize(
    "name", ["ordinary", "mirrored", "two_hands", "no_hands", "tiny", "uhd_x4"]
)
def test_hands_match_mediapipe_solution(name: str, networks, reference, all_frames) -> None:
    frames = all_frames[name]
    expected = reference["sequences"][name]
    tracker = HandTracker(TorchHandNetworks(*networks), max_hands=MAX_HANDS)
    found = tracker.process(frames)
    height, width = frames.shape[1:3]
    for index, (ours, theirs) in enumerate(zip(found, expected, strict=True)):
        assert len(ours) == len(theirs), f"frame {index}"
        for hand, want in zip(ours, theirs, strict=True):
            points = np.asarray(want["landmarks"])
            assert hand.label == want["label"], f"frame {index}"
            assert hand.label_score == pytest.approx(want["score"], abs=SCORE_TOLERANCE)
            pixels = np.abs(hand.landmarks[:, :2] - points[:, :2]) * (width, height)
            assert pixels.max() < PIXEL_TOLERANCE, f"frame {index}: {pixels.max():.3f} px"
            assert np.abs(hand.landmarks[:, 2] - points[:, 2]).max() < Z_TOLERANCE


class _CountingNetworks(TorchHandNetworks):
    """Counts the images the palm network is given."""

    palm_images = 0

    def palms(self, images: np.ndarray, min_score: float) -> list:
        self.palm_images += len(images)
        return super().palms(images, min_score)


@pytest.mark.parametrize(("name", "expected"), [("two_hands", 1), ("ordinary", 4)])
def test_palms_are_detected_ahead_only_for_frames_that_need_them(name: str, expected: int,
                                                                 networks, all_frames) -> None:
    # Two hands are tracked from the second frame on: only the first frame needs palms.
    # One hand of two allowed: every frame needs them, and each is detected once.
    counting = _CountingNetworks(*networks)
    HandTracker(counting, max_hands=MAX_HANDS).process(all_frames[name])
    assert counting.palm_images == expected


def test_the_reference_covers_what_it_claims(reference, all_frames) -> None:
    counts = {name: [len(f) for f in frames] for name, frames in reference["sequences"].items()}
    assert counts["no_hands"] == [0, 0]
    assert all(c == 2 for c in counts["two_hands"])
    assert all(c == 1 for c in counts["tiny"] + counts["uhd_x4"] + counts["ordinary"])
    # Mirroring a frame swaps MediaPipe's label.
    labels = [f[0]["label"] for f in reference["sequences"]["ordinary"]]
    mirrored = [f[0]["label"] for f in reference["sequences"]["mirrored"]]
    assert {*labels, *mirrored} == {"Left", "Right"}
    assert all(a != b for a, b in zip(labels, mirrored, strict=True))
    assert all_frames["uhd_x4"].shape[1:3] == (2160, 3840)
