"""A synthetic hand-object video with known ground truth, for ``hflpipe demo`` and tests.

The scene: a textured cuboid with the control-point box of a YCB object (the cracker box
by default) moves and turns smoothly in front of a pinhole camera; a flat, skin-coloured
hand shape (palm polygon and five finger capsules, curling a little) holds its side. The
object is rendered in 3D with known intrinsics; the hand is drawn in 2D, scaled with the
object's depth.

Written into one folder (``<stem>`` is ``demo``, plus ``_lefthand`` / ``_mirrored``):

* ``<stem>.mp4``: the video (OpenCV ``mp4v``).
* ``<stem>_boxes.csv``: per-frame hand and object boxes (``docs/boxes-format.md``).
* ``<stem>_intrinsics.json``: ``{"fx", "fy", "cx", "cy", "width", "height"}``.
* ``<stem>_groundtruth.npz``: ``R (n,3,3)``, ``t (n,3)`` (object to camera, metres),
  ``keypoints2d (n,21,2)`` (the projected control points, px), ``hand_box (n,4)``,
  ``object_box (n,4)`` (xyxy px), ``K (3,3)``, ``object_points (21,3)`` (object frame, m),
  ``timestamps_s (n,)``, ``handedness``, ``object_name``.

Pixel convention: the centre of the top-left pixel is (0, 0), so a horizontal flip maps
x to ``width - 1 - x``; the principal point sits at the image centre, which makes the
flip a plain negation of camera X.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from hflpipe.atomic import atomic_path
from hflpipe.model.control_points import load_control_points
from hflpipe.model.geometry import mirror_boxes, mirror_points2d, project, to_camera
from hflpipe.pipeline.common.errors import ConfigError, OutputError

OBJECT_NAME = "003_cracker_box"
BOXES_COLUMNS = (
    "frame_index",
    "kind",
    "x0",
    "y0",
    "x1",
    "y1",
    "score",
    "handedness",
    "object_name",
)

# Focal length for a 640-pixel-wide frame (~56 degrees horizontal field of view, close to
# the DexYCB cameras); other widths scale it so the scene looks the same at any size.
_FOCAL_PER_WIDTH = 600.0 / 640.0
_MIN_SIZE = 64

# RGB colours. The object's faces are strongly saturated and the background nearly grey,
# so each class of pixel can be told apart by colour alone (the tests rely on it).
SKIN_RGB = (224, 172, 140)
FACE_RGB = (
    (205, 35, 45),
    (35, 70, 215),
    (30, 165, 70),
    (130, 40, 190),
    (25, 170, 190),
    (210, 190, 30),
)
_TEXTURE_SHADE = 0.55
_BACKGROUND_TOP = np.array((104, 108, 116), dtype=np.float32)
_BACKGROUND_BOTTOM = np.array((70, 72, 80), dtype=np.float32)
_BACKGROUND_NOISE = 3.0
# Sub-pixel drawing: OpenCV takes coordinates as integers scaled by 2**_SHIFT.
_SHIFT = 4

# Corner i of the control-point box takes the max x if bit 0 is set, max y if bit 1, max z
# if bit 2. Each face: (axis, which end, its 4 corners in cyclic order).
_FACES = (
    (0, 0, (0, 2, 6, 4)),
    (0, 1, (1, 3, 7, 5)),
    (1, 0, (0, 1, 5, 4)),
    (1, 1, (2, 3, 7, 6)),
    (2, 0, (0, 1, 3, 2)),
    (2, 1, (4, 5, 7, 6)),
)
_TEXTURE_LINES = 4

# The object's large face towards the camera, its longest side (z) upright:
# object x -> camera -z, object y -> camera x, object z -> camera -y.
_BASE_ROTATION = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, -1.0], [-1.0, 0.0, 0.0]])

# Hand shape in centimetres, right hand: the knuckle line at u = 0, fingers pointing to -u,
# the thumb on the -v side. (base (u, v), proximal and distal lengths, radius, spread rad).
_FINGERS = (
    ((0.0, -2.9), 4.2, 3.6, 0.95, -0.12),
    ((-0.2, -0.95), 4.6, 3.9, 1.0, -0.03),
    ((0.0, 1.0), 4.3, 3.6, 0.95, 0.05),
    ((0.5, 2.8), 3.4, 2.9, 0.8, 0.15),
)
_THUMB = ((4.0, -3.8), 3.6, 3.2, 1.05, -0.8)
_PALM = np.array(
    [
        (-0.3, -3.9),
        (-0.2, 3.7),
        (1.5, 4.2),
        (7.5, 3.8),
        (9.0, 2.0),
        (9.0, -2.2),
        (7.0, -4.3),
        (1.2, -4.4),
    ]
)
# The knuckle line sits this far inside the object's box, so the fingers lie over it.
_GRIP_DEPTH_CM = 2.0


@dataclass(frozen=True, eq=False)
class DemoScene:
    """A rendered demo scene: where its files are and its ground truth.

    Attributes:
        video_path, boxes_path, intrinsics_path, groundtruth_path: the written files.
        fps: frames per second of the video.
        size: ``(width, height)`` pixels.
        K: (3, 3) float64 intrinsics, pixels.
        handedness: ``"right"`` or ``"left"``, the hand as it appears in this video.
        object_name: catalogue name of the object.
        object_points: (21, 3) float64 control points of the object in this video, object
            frame, metres (for a mirrored scene: the mirror image of the catalogue points).
        R: (n, 3, 3) float64 object-to-camera rotations.
        t: (n, 3) float64 object-to-camera translations, metres (OpenCV camera frame).
        keypoints2d: (n, 21, 2) float64 projected control points, pixels.
        hand_box, object_box: (n, 4) float64 ``x0, y0, x1, y1`` pixels.
        seed, left_hand, mirrored: how the scene was made (``mirror`` re-renders from them).
    """

    video_path: Path
    boxes_path: Path
    intrinsics_path: Path
    groundtruth_path: Path
    fps: float
    size: tuple[int, int]
    K: np.ndarray
    handedness: str
    object_name: str
    object_points: np.ndarray
    R: np.ndarray
    t: np.ndarray
    keypoints2d: np.ndarray
    hand_box: np.ndarray
    object_box: np.ndarray
    seed: int
    left_hand: bool
    mirrored: bool

    @property
    def num_frames(self) -> int:
        """Number of frames in the video."""
        return len(self.R)


@dataclass(frozen=True)
class _HandShape:
    """One frame's hand in pixels: a palm polygon (k, 2) and capsules ``(p0, p1, radius)``."""

    palm: np.ndarray
    capsules: tuple[tuple[np.ndarray, np.ndarray, float], ...]

    def box(self) -> np.ndarray:
        """Tight (4,) ``xyxy`` box of the shape."""
        lows = [self.palm.min(axis=0)]
        highs = [self.palm.max(axis=0)]
        for p0, p1, radius in self.capsules:
            lows.append(np.minimum(p0, p1) - radius)
            highs.append(np.maximum(p0, p1) + radius)
        return np.concatenate([np.min(lows, axis=0), np.max(highs, axis=0)])


def camera_matrix(width: int, height: int) -> np.ndarray:
    """(3, 3) intrinsics of the demo camera for a ``width`` x ``height`` frame."""
    focal = _FOCAL_PER_WIDTH * width
    return np.array(
        [[focal, 0.0, (width - 1) / 2.0], [0.0, focal, (height - 1) / 2.0], [0.0, 0.0, 1.0]]
    )


def _axis_rotation(axis: int, angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    i, j = [(1, 2), (2, 0), (0, 1)][axis]
    rotation = np.eye(3)
    rotation[i, i], rotation[i, j], rotation[j, i], rotation[j, j] = c, -s, s, c
    return rotation


def _object_trajectory(
    times: np.ndarray, side: float, phases: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Smooth object poses: (n, 3, 3) rotations and (n, 3) translations in metres.

    ``side`` is +1 when a right hand holds the object's image-right side (the object then
    keeps to the left of the frame centre to leave room for the hand), -1 for a left hand.
    """
    wave = [
        np.sin(2.0 * math.pi * freq * times + phase)
        for freq, phase in zip((0.25, 0.33, 0.2, 0.3, 0.4, 0.27), phases, strict=True)
    ]
    t = np.stack(
        [-side * 0.05 + 0.03 * wave[0], 0.01 + 0.02 * wave[1], 0.72 + 0.04 * wave[2]], axis=1
    )
    yaw = side * np.radians(25.0 + 12.0 * wave[3])
    pitch = np.radians(-12.0 + 6.0 * wave[4])
    roll = np.radians(6.0 * wave[5])
    R = np.stack(
        [
            _axis_rotation(1, y) @ _axis_rotation(0, p) @ _axis_rotation(2, r) @ _BASE_ROTATION
            for y, p, r in zip(yaw, pitch, roll, strict=True)
        ]
    )
    return R, t


def _hand_shape(
    knuckles: np.ndarray, cm: float, side: float, curl: np.ndarray, roll: float
) -> _HandShape:
    """The hand in pixels.

    Args:
        knuckles: (2,) pixel position of the local origin (middle of the knuckle line).
        cm: pixels per centimetre at the object's depth.
        side: +1 right hand (fingers point image-left), -1 left hand (mirror image).
        curl: (5,) flexion of index..little and thumb, radians.
        roll: in-plane rotation of the whole hand, radians.
    """
    c, s = math.cos(roll), math.sin(roll)
    to_image = cm * np.array([[c, -s], [s, c]]) @ np.diag([side, 1.0])

    def place(local: np.ndarray) -> np.ndarray:
        return knuckles + local @ to_image.T

    def direction(angle: float) -> np.ndarray:
        # Angle measured from -u (the finger direction) towards +v.
        return np.array([-math.cos(angle), math.sin(angle)])

    capsules = []
    for (base, proximal, distal, radius, spread), bend in zip(
        (*_FINGERS, _THUMB), curl, strict=True
    ):
        joint0 = np.array(base)
        joint1 = joint0 + proximal * direction(spread)
        # A curling distal segment turns and, seen from the front, gets shorter.
        joint2 = joint1 + distal * math.cos(bend) * direction(spread + bend)
        for start, end in ((joint0, joint1), (joint1, joint2)):
            capsules.append((place(start), place(end), radius * cm))
    return _HandShape(place(_PALM), tuple(capsules))


def _fixed(points: np.ndarray) -> np.ndarray:
    return np.round(np.asarray(points) * (1 << _SHIFT)).astype(np.int32)


def _background(width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """(h, w, 3) uint8 RGB: a vertical grey gradient with faint noise."""
    ramp = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None, None]
    image = _BACKGROUND_TOP + ramp * (_BACKGROUND_BOTTOM - _BACKGROUND_TOP)
    image = np.broadcast_to(image, (height, width, 3))
    noise = rng.normal(0.0, _BACKGROUND_NOISE, size=(height, width, 1)).astype(np.float32)
    return np.clip(image + noise, 0, 255).astype(np.uint8)


def _draw_object(
    image: np.ndarray, K: np.ndarray, R: np.ndarray, t: np.ndarray, corners: np.ndarray
) -> None:
    """Draw the faces of the cuboid spanned by ``corners`` (8, 3) that face the camera."""
    for (axis, end, indices), colour in zip(_FACES, FACE_RGB, strict=True):
        quad = corners[list(indices)]
        normal = np.zeros(3)
        normal[axis] = 1.0 if end else -1.0
        # Back-face culling is enough for a single convex body: visible faces never overlap.
        if (R @ normal) @ (R @ quad.mean(axis=0) + t) >= 0.0:
            continue
        quad_pixels = project(to_camera(quad, R, t), K)
        cv2.fillConvexPoly(image, _fixed(quad_pixels), colour, cv2.LINE_AA, _SHIFT)
        shade = tuple(int(_TEXTURE_SHADE * value) for value in colour)
        for k in range(1, _TEXTURE_LINES):
            f = k / _TEXTURE_LINES
            for a, b, c, d in ((0, 1, 3, 2), (0, 3, 1, 2)):
                start = quad[a] + f * (quad[b] - quad[a])
                end = quad[c] + f * (quad[d] - quad[c])
                ends = _fixed(project(to_camera(np.stack([start, end]), R, t), K))
                cv2.line(image, ends[0], ends[1], shade, 2, cv2.LINE_AA, _SHIFT)


def _draw_hand(image: np.ndarray, hand: _HandShape) -> None:
    cv2.fillPoly(image, [_fixed(hand.palm)], SKIN_RGB, cv2.LINE_AA, _SHIFT)
    for p0, p1, radius in hand.capsules:
        thickness = max(1, round(2.0 * radius))
        ends = _fixed(np.stack([p0, p1]))
        cv2.line(image, ends[0], ends[1], SKIN_RGB, thickness, cv2.LINE_AA, _SHIFT)
        # Round caps of exactly the capsule's radius (OpenCV's own line caps are not).
        for centre in ends:
            radius_fixed = round(radius * (1 << _SHIFT))
            cv2.circle(image, centre, radius_fixed, SKIN_RGB, -1, cv2.LINE_AA, _SHIFT)


def _check_settings(num_frames: int, fps: float, size: tuple[int, int]) -> None:
    if num_frames < 1:
        raise ConfigError(f"demo scene: num_frames must be at least 1, got {num_frames}")
    if not (math.isfinite(fps) and fps > 0):
        raise ConfigError(f"demo scene: fps must be a positive number, got {fps}")
    width, height = size
    if width < _MIN_SIZE or height < _MIN_SIZE:
        raise ConfigError(
            f"demo scene: size {width}x{height} is too small (at least {_MIN_SIZE}x{_MIN_SIZE})"
        )


def write_video(
    path: Path, frames: Iterator[np.ndarray], fps: float, size: tuple[int, int]
) -> None:
    """Encode (H, W, 3) uint8 RGB frames of ``size`` (width, height) into ``path`` (MPEG-4
    part 2, what every OpenCV build writes), atomically."""
    with atomic_path(path, OutputError) as temporary:
        writer = cv2.VideoWriter(str(temporary), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
        if not writer.isOpened():
            raise OutputError(f"cannot write demo scene file {path}: OpenCV cannot encode mp4v")
        try:
            for frame in frames:
                writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
        finally:
            writer.release()


def _write_boxes(path: Path, scene: DemoScene) -> None:
    with atomic_path(path, OutputError) as temporary, temporary.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(BOXES_COLUMNS)
        for index in range(scene.num_frames):
            # repr-exact floats: the file holds the ground truth, not a rounded copy.
            hand = [float(v) for v in scene.hand_box[index]]
            box = [float(v) for v in scene.object_box[index]]
            writer.writerow([index, "hand", *hand, 1.0, scene.handedness, ""])
            writer.writerow([index, "object", *box, 1.0, "", scene.object_name])


def _write_intrinsics(path: Path, K: np.ndarray, size: tuple[int, int]) -> None:
    values = {"fx": K[0, 0], "fy": K[1, 1], "cx": K[0, 2], "cy": K[1, 2]}
    document = {key: float(value) for key, value in values.items()}
    document.update(width=size[0], height=size[1])
    with atomic_path(path, OutputError) as temporary:
        temporary.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")


def _write_groundtruth(path: Path, scene: DemoScene) -> None:
    with atomic_path(path, OutputError) as temporary:
        np.savez(
            temporary,
            R=scene.R,
            t=scene.t,
            keypoints2d=scene.keypoints2d,
            hand_box=scene.hand_box,
            object_box=scene.object_box,
            K=scene.K,
            object_points=scene.object_points,
            timestamps_s=np.arange(scene.num_frames) / scene.fps,
            handedness=np.array(scene.handedness),
            object_name=np.array(scene.object_name),
        )


@dataclass(frozen=True, eq=False)
class _Layout:
    """The scene as rendered before any mirroring; shapes as in ``DemoScene``."""

    K: np.ndarray
    R: np.ndarray
    t: np.ndarray
    points: np.ndarray
    keypoints: np.ndarray
    object_box: np.ndarray
    hands: tuple[_HandShape, ...]
    hand_box: np.ndarray


def _layout(
    times: np.ndarray, size: tuple[int, int], left_hand: bool, rng: np.random.Generator
) -> _Layout:
    K = camera_matrix(*size)
    side = -1.0 if left_hand else 1.0
    R, t = _object_trajectory(times, side, rng.uniform(0.0, 2.0 * math.pi, size=6))
    curl_phases = rng.uniform(0.0, 2.0 * math.pi, size=5)
    points = np.asarray(load_control_points(OBJECT_NAME), dtype=np.float64)
    keypoints = project(to_camera(points, R, t), K)
    object_box = np.concatenate([keypoints.min(axis=1), keypoints.max(axis=1)], axis=1)

    hands = []
    for index, time in enumerate(times):
        cm = K[0, 0] * 0.01 / t[index, 2]
        x0, y0, x1, y1 = object_box[index]
        grip_x = x1 - _GRIP_DEPTH_CM * cm if side > 0 else x0 + _GRIP_DEPTH_CM * cm
        knuckles = np.array([grip_x, 0.5 * (y0 + y1)])
        curl = 0.35 + 0.25 * np.sin(2.0 * math.pi * 0.5 * time + curl_phases)
        roll = side * 0.08 * math.sin(2.0 * math.pi * 0.3 * time + curl_phases[0])
        hands.append(_hand_shape(knuckles, cm, side, curl, roll))
    hand_box = np.stack([hand.box() for hand in hands])
    return _Layout(K, R, t, points, keypoints, object_box, tuple(hands), hand_box)


def _frames(layout: _Layout, background: np.ndarray, mirrored: bool) -> Iterator[np.ndarray]:
    """(h, w, 3) uint8 RGB frames, one at a time, so memory does not grow with length."""
    for index, hand in enumerate(layout.hands):
        image = background.copy()
        _draw_object(image, layout.K, layout.R[index], layout.t[index], layout.points[:8])
        _draw_hand(image, hand)
        yield np.ascontiguousarray(image[:, ::-1]) if mirrored else image


def _render(
    out_dir: Path,
    *,
    num_frames: int,
    fps: float,
    size: tuple[int, int],
    seed: int,
    left_hand: bool,
    mirrored: bool,
) -> DemoScene:
    _check_settings(num_frames, fps, size)
    width, height = size
    rng = np.random.default_rng(seed)
    layout = _layout(np.arange(num_frames) / fps, size, left_hand, rng)
    background = _background(width, height, rng)
    boxes = np.concatenate([layout.hand_box, layout.object_box])
    if boxes[:, :2].min() < 0 or np.any(boxes[:, 2:] > (width - 1, height - 1)):
        raise ConfigError(
            f"demo scene: size {width}x{height} cuts off the hand or object; "
            "use a landscape frame about 4:3 (e.g. 640x480)"
        )

    R, t, points, keypoints = layout.R, layout.t, layout.points, layout.keypoints
    hand_box, object_box = layout.hand_box, layout.object_box
    handedness = "left" if left_hand else "right"
    if mirrored:
        flip = np.diag([-1.0, 1.0, 1.0])
        R, t, points = flip @ R @ flip, t @ flip, points @ flip
        keypoints = mirror_points2d(keypoints, width)
        hand_box, object_box = mirror_boxes(hand_box, width), mirror_boxes(object_box, width)
        handedness = "right" if left_hand else "left"

    stem = "demo" + ("_lefthand" if left_hand else "") + ("_mirrored" if mirrored else "")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create demo scene folder {out_dir}: {exc}") from exc
    scene = DemoScene(
        video_path=out_dir / f"{stem}.mp4",
        boxes_path=out_dir / f"{stem}_boxes.csv",
        intrinsics_path=out_dir / f"{stem}_intrinsics.json",
        groundtruth_path=out_dir / f"{stem}_groundtruth.npz",
        fps=float(fps),
        size=size,
        K=layout.K,
        handedness=handedness,
        object_name=OBJECT_NAME,
        object_points=points,
        R=R,
        t=t,
        keypoints2d=keypoints,
        hand_box=hand_box,
        object_box=object_box,
        seed=seed,
        left_hand=left_hand,
        mirrored=mirrored,
    )
    write_video(scene.video_path, _frames(layout, background, mirrored), scene.fps, size)
    _write_boxes(scene.boxes_path, scene)
    _write_intrinsics(scene.intrinsics_path, scene.K, size)
    _write_groundtruth(scene.groundtruth_path, scene)
    return scene


def make_demo_scene(
    out_dir: str | os.PathLike[str],
    *,
    num_frames: int = 90,
    fps: float = 30,
    size: tuple[int, int] = (640, 480),
    seed: int = 0,
    left_hand: bool = False,
) -> DemoScene:
    """Render the demo scene into ``out_dir`` (created if needed) and return it.

    Args:
        out_dir: folder for the video, boxes, intrinsics and ground-truth files.
        num_frames: frames in the video.
        fps: frame rate, frames per second.
        size: ``(width, height)`` in pixels; the camera scales with the width.
        seed: picks the motion phases and the background noise.
        left_hand: a left hand holds the object's image-left side instead of a right hand
            holding its image-right side.

    Raises:
        ConfigError: bad settings, or a frame too narrow or short for the scene.
        OutputError: the folder or a file cannot be written.
    """
    return _render(
        Path(out_dir),
        num_frames=num_frames,
        fps=fps,
        size=(int(size[0]), int(size[1])),
        seed=seed,
        left_hand=left_hand,
        mirrored=False,
    )


def mirror(scene: DemoScene, out_dir: str | os.PathLike[str]) -> DemoScene:
    """The horizontally mirrored version of ``scene``, written into ``out_dir``.

    The video is the same rendering flipped left-right (before encoding, so no second
    generation of codec loss); boxes and projected points map x to ``width - 1 - x``; the
    hand changes side (right <-> left); the object becomes its mirror image, given as
    ``R' = S R S``, ``t' = S t`` and ``object_points' = object_points S`` with
    ``S = diag(-1, 1, 1)``. Mirroring a mirrored scene gives the original back.
    """
    return _render(
        Path(out_dir),
        num_frames=scene.num_frames,
        fps=scene.fps,
        size=scene.size,
        seed=scene.seed,
        left_hand=scene.left_hand,
        mirrored=not scene.mirrored,
    )
