"""Drawn hands that MediaPipe's hand detector recognises: a flat cartoon on a soft background.

The frames of the hand detector's parity reference
(tests/data/mediapipe_reference/make_reference.py) and of the detector benchmark
(``hflpipe bench detector``). Only numpy and OpenCV.
"""

from __future__ import annotations

import cv2
import numpy as np


def render_hand(size: int = 256) -> np.ndarray:
    """A raised hand (fingers up, thumb to the image's right) on white: (size, size, 3) RGB."""
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


def hand_scene(width: int, height: int, hands: list[tuple[float, float, float, float, bool]],
               seed: int = 0) -> np.ndarray:
    """Cartoon hands on a soft, noisy background: (height, width, 3) uint8 RGB.

    Args:
        hands: per hand ``(cx, cy, size, angle_deg, mirrored)``: centre and side of the
            cartoon's square in pixels, in-plane rotation (counter-clockwise), and whether
            it is drawn mirrored (the other hand).
    """
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0.0, 1.0, width)[None, :, None]
    # Coarse grey noise (8-pixel cells): texture for the networks, yet small PNG files.
    noise = rng.integers(-8, 9, (height // 8 + 1, width // 8 + 1, 1)).repeat(8, 0).repeat(8, 1)
    base = np.array([90.0, 110.0, 100.0]) + np.round(60.0 * ramp) + noise[:height, :width]
    image = np.clip(base, 0, 255).astype(np.uint8)
    for cx, cy, size, angle, mirrored in hands:
        side = int(size)
        hand = render_hand(side)
        if mirrored:
            hand = hand[:, ::-1]
        matrix = cv2.getRotationMatrix2D((side / 2, side / 2), angle, 1.0)
        matrix[:, 2] += (cx - side / 2, cy - side / 2)
        warped = cv2.warpAffine(np.ascontiguousarray(hand), matrix, (width, height),
                                borderValue=(255, 255, 255))
        mask = cv2.warpAffine(np.full((side, side), 255, np.uint8), matrix, (width, height))
        alpha = ((mask > 0) & (warped.min(axis=2) < 250))[..., None]
        image = np.where(alpha, warped, image)
    return image
