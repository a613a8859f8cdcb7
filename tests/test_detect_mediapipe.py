"""The isolated MediaPipe hand detector.

Fast tests drive the real worker script and pipe protocol with a stand-in
``mediapipe`` module (so they need no 1 GB environment): boxes, handedness,
mirroring, worker crashes, timeouts and a missing environment. Slow tests
create the real environment (cached under ``$HFLPIPE_HOME`` when set) and
detect a rendered hand.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from hflpipe.pipeline.common.errors import ConfigError
from hflpipe.pipeline.detect.base import Detector, make_detector
from hflpipe.pipeline.detect.mediapipe import (
    MEDIAPIPE_VERSION,
    HandDetectorError,
    MediaPipeHandDetector,
    env_python,
    setup_mediapipe,
)
from hflpipe.pipeline.track.tracker import box_iou

# A stand-in for mediapipe.solutions.hands: one "hand" whose 21 landmarks span the
# non-black pixels, labelled by the image half it lies in (as MediaPipe would label a
# mirrored image); a 13 in the top row makes it crash, a 14 makes it hang.
FAKE_HANDS = '''
import os, sys, time, types
import numpy as np

class Hands:
    def __init__(self, **options):
        self.options = options

    def process(self, image):
        if (image[0, :, 0] == 13).any():
            print("fake mediapipe: crashing as asked", file=sys.stderr, flush=True)
            os._exit(3)
        if (image[0, :, 0] == 14).any():
            time.sleep(60)
        ys, xs = np.nonzero(image.max(axis=2))
        if xs.size == 0:
            return types.SimpleNamespace(multi_hand_landmarks=None, multi_handedness=None)
        h, w = image.shape[:2]
        t = np.linspace(0, 1, 21)
        xn = (xs.min() + t * (xs.max() + 1 - xs.min())) / w
        yn = (ys.min() + t * (ys.max() + 1 - ys.min())) / h
        points = [types.SimpleNamespace(x=float(x), y=float(y), z=0.0) for x, y in zip(xn, yn)]
        label = "Left" if xs.mean() < w / 2 else "Right"
        classification = types.SimpleNamespace(label=label, score=0.9, index=0)
        return types.SimpleNamespace(
            multi_hand_landmarks=[types.SimpleNamespace(landmark=points)],
            multi_handedness=[types.SimpleNamespace(classification=[classification])],
        )

    def close(self):
        pass
'''


def _fake_env(root: Path) -> Path:
    """A directory that looks like the hand detector environment, running the fake."""
    package = root / "site" / "mediapipe"
    (package / "solutions").mkdir(parents=True)
    (package / "__init__.py").write_text("__version__ = 'fake'\nfrom . import solutions\n")
    (package / "solutions" / "__init__.py").write_text("from . import hands\n")
    (package / "solutions" / "hands.py").write_text(FAKE_HANDS)
    env = root / "env"
    python = env_python(env)
    python.parent.mkdir(parents=True)
    python.write_text(
        f'#!/bin/sh\nPYTHONPATH="{root / "site"}" exec "{sys.executable}" "$@"\n'
    )
    python.chmod(0o755)
    (env / "hflpipe-mediapipe.json").write_text(f'{{"mediapipe": "{MEDIAPIPE_VERSION}"}}')
    return env


@pytest.fixture
def fake_env(tmp_path: Path) -> Path:
    if os.name == "nt":
        pytest.skip("the stand-in interpreter is a POSIX shell script")
    return _fake_env(tmp_path)


def test_missing_environment_says_how_to_set_it_up(tmp_path: Path) -> None:
    hint = r"missing or incomplete: run `hflpipe setup-hand-detector`"
    with pytest.raises(ConfigError, match=hint):
        MediaPipeHandDetector(tmp_path / "nothing-here")


def test_boxes_handedness_and_mirroring_over_the_pipe(fake_env: Path) -> None:
    frames = np.zeros((3, 120, 200, 3), np.uint8)
    frames[0, 20:60, 10:50] = 200  # a "hand" on the image's left
    frames[2, 30:90, 150:190] = 200  # one on the right; frame 1 is empty
    detector = MediaPipeHandDetector(fake_env, box_margin=0.0)
    try:
        out = detector.detect(np.arange(3), np.zeros(3), frames)
        # The worker mirrors the frame (ordinary footage), so a hand on the image's
        # left is labelled as MediaPipe labels the mirrored image's right half.
        assert [len(f) for f in out] == [1, 0, 1]
        np.testing.assert_allclose(out[0][0].box, [10, 20, 50, 60], atol=1e-3)
        np.testing.assert_allclose(out[2][0].box, [150, 30, 190, 90], atol=1e-3)
        assert (out[0][0].handedness, out[2][0].handedness) == ("right", "left")
        assert out[0][0].kind == "hand" and out[0][0].score == pytest.approx(0.9)
        assert out[0][0].box.dtype == np.float32
    finally:
        detector.close()

    selfie = MediaPipeHandDetector(fake_env, mirrored_input=True, box_margin=0.5)
    try:
        out = selfie.detect(np.arange(1), np.zeros(1), frames[:1])
        assert out[0][0].handedness == "left"
        # The margin grows the box by half its size per side, clipped at the frame edge.
        np.testing.assert_allclose(out[0][0].box, [0, 0, 70, 80], atol=1e-3)
    finally:
        selfie.close()


def test_worker_crash_is_a_clear_error_and_the_next_call_restarts(fake_env: Path) -> None:
    detector = MediaPipeHandDetector(fake_env)
    frames = np.zeros((1, 32, 32, 3), np.uint8)
    crash = frames.copy()
    crash[0, 0, 0] = 13
    try:
        with pytest.raises(
            HandDetectorError, match=r"stopped on frame 7 \(exit 3\): fake mediapipe: crashing"
        ):
            detector.detect(np.array([7]), np.zeros(1), crash)
        assert detector.detect(np.array([8]), np.zeros(1), frames) == [[]]
    finally:
        detector.close()


def test_hung_worker_times_out(fake_env: Path) -> None:
    detector = MediaPipeHandDetector(fake_env, timeout_s=1.0)
    hang = np.zeros((1, 32, 32, 3), np.uint8)
    hang[0, 0, 0] = 14
    try:
        with pytest.raises(HandDetectorError, match="timed out on frame 5"):
            detector.detect(np.array([5]), np.zeros(1), hang)
    finally:
        detector.close()


def test_interpreter_that_fails_at_start(tmp_path: Path, fake_env: Path) -> None:
    env_python(fake_env).write_text("#!/bin/sh\necho 'no module named mediapipe' >&2\nexit 1\n")
    detector = MediaPipeHandDetector(fake_env)
    with pytest.raises(HandDetectorError, match=r"stopped while starting \(exit 1\): no module"):
        detector.detect(np.arange(1), np.zeros(1), np.zeros((1, 8, 8, 3), np.uint8))


def render_hand(size: int = 256) -> np.ndarray:
    """A flat cartoon of a raised hand (fingers up, thumb to the image's right), RGB.

    MediaPipe 0.10.21 finds it; returns (size, size, 3) uint8 on a white background.
    """
    image = np.full((size, size, 3), 255, np.uint8)
    skin = (205, 150, 120)
    crease = tuple(int(c * 0.75) for c in skin)
    nail = tuple(min(255, int(c * 1.1)) for c in skin)
    s = size / 480

    def at(x: float, y: float) -> tuple[int, int]:
        return int(x * s), int(y * s)

    palm = [at(170, 300), at(310, 300), at(320, 400), at(280, 460), at(190, 460), at(160, 400)]
    cv2.fillPoly(image, [np.array(palm, np.int32)], skin)
    fingers = [((185, 300), (170, 150), 30), ((225, 295), (220, 110), 32),
               ((265, 295), (272, 120), 31), ((300, 305), (320, 170), 27)]
    for base, tip, width in fingers:
        cv2.line(image, at(*base), at(*tip), skin, int(width * s))
        cv2.circle(image, at(*tip), int(width * s / 2), skin, -1)
    cv2.line(image, at(315, 400), at(370, 330), skin, int(34 * s))
    cv2.line(image, at(370, 330), at(400, 280), skin, int(30 * s))
    cv2.circle(image, at(400, 280), int(15 * s), skin, -1)
    for base, tip, width in fingers:
        for f in (0.35, 0.65):
            x, y = base[0] + (tip[0] - base[0]) * f, base[1] + (tip[1] - base[1]) * f
            cv2.line(image, at(x - width / 3, y), at(x + width / 3, y), crease, max(1, int(2 * s)))
        axes = (int(width * s / 4), int(width * s / 3))
        cv2.ellipse(image, at(tip[0], tip[1] + 8), axes, 0, 0, 360, nail, -1)
    return cv2.GaussianBlur(image, (11, 11), 0)


@pytest.fixture(scope="module")
def mediapipe_env(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = os.environ.get("HFLPIPE_HOME")
    root = Path(home) if home else tmp_path_factory.mktemp("hflpipe-home")
    return setup_mediapipe(root / f"mediapipe-{MEDIAPIPE_VERSION}")


@pytest.mark.slow
def test_setup_is_idempotent_and_the_environment_runs_mediapipe(mediapipe_env: Path) -> None:
    assert setup_mediapipe(mediapipe_env) == mediapipe_env
    assert not list(mediapipe_env.parent.glob(f".{mediapipe_env.name}-*"))  # no staging left


@pytest.mark.slow
def test_real_mediapipe_finds_a_rendered_hand(mediapipe_env: Path) -> None:
    image = render_hand()
    ys, xs = np.nonzero((image < 250).any(axis=2))
    drawn = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)
    frames = np.stack([image, np.full_like(image, 255), image[:, ::-1]])

    ordinary = MediaPipeHandDetector(mediapipe_env, min_confidence=0.3)
    selfie = MediaPipeHandDetector(mediapipe_env, min_confidence=0.3, mirrored_input=True)
    try:
        found = ordinary.detect(np.arange(3), np.zeros(3), frames)
        found_selfie = selfie.detect(np.arange(1), np.zeros(1), frames[:1])
    finally:
        ordinary.close()
        selfie.close()

    assert [len(f) for f in found] == [1, 0, 1]
    hand = found[0][0]
    assert box_iou(hand.box, drawn)[0, 0] > 0.6
    mirrored_drawn = np.array([256 - drawn[2], drawn[1], 256 - drawn[0], drawn[3]])
    assert box_iou(found[2][0].box, mirrored_drawn)[0, 0] > 0.6
    # Landmarks come back in the frame's own orientation whether or not it was flipped.
    assert box_iou(found_selfie[0][0].box, hand.box)[0, 0] > 0.7
    # Flipping the frame before MediaPipe (ordinary footage) swaps its label.
    assert {hand.handedness, found_selfie[0][0].handedness} == {"left", "right"}


def test_make_detector_builds_the_hand_detector(fake_env: Path) -> None:
    detector = make_detector("mediapipe", {"env_dir": fake_env, "max_hands": 1})
    assert isinstance(detector, Detector) and detector.name == "mediapipe"
    detector.close()
