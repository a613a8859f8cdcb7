"""Camera intrinsics: reading them from the user, and the documented default.

Intrinsics are a 3x3 matrix ``K`` in pixels of the full frame (OpenCV
convention: x right, y down, principal point in pixel coordinates where the
centre of the top-left pixel is (0, 0)).
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hflpipe.pipeline.common.errors import InputError

logger = logging.getLogger(__name__)

#: Horizontal field of view assumed when no intrinsics are given. 60 degrees is
#: close to the DexYCB / HO3D cameras the model was trained on (about 55).
DEFAULT_HFOV_DEG = 60.0


@dataclass(frozen=True)
class Intrinsics:
    """A camera matrix, where it came from (``given`` or ``default_fov``), and the image
    size it was measured for when the file states one (``(width, height)``)."""

    K: np.ndarray  # (3, 3) float64
    source: str
    image_size: tuple[int, int] | None = None


#: Keys that carry lens distortion in common calibration files (OpenCV, ROS, COLMAP).
DISTORTION_KEYS = ("dist", "distortion", "dist_coeffs", "distortion_coefficients", "D",
                   "k1", "k2", "k3", "p1", "p2")


def default_intrinsics(width: int, height: int, hfov_deg: float = DEFAULT_HFOV_DEG) -> Intrinsics:
    """Square pixels, principal point at the image centre, ``hfov_deg`` horizontal FOV."""
    if width <= 0 or height <= 0:
        raise ValueError(f"frame size must be positive, got {width}x{height}")
    f = 0.5 * width / math.tan(math.radians(hfov_deg) / 2.0)
    K = np.array([[f, 0.0, (width - 1) / 2.0], [0.0, f, (height - 1) / 2.0], [0.0, 0.0, 1.0]])
    return Intrinsics(K, "default_fov")


def intrinsics_from_values(fx: float, fy: float, cx: float, cy: float) -> Intrinsics:
    """Build ``K`` from focal lengths and principal point (pixels)."""
    values = np.array([fx, fy, cx, cy], dtype=np.float64)
    if not np.all(np.isfinite(values)) or fx <= 0 or fy <= 0:
        raise ValueError(f"intrinsics need finite values and positive focal lengths, got {values}")
    K = np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])
    return Intrinsics(K, "given")


def parse_intrinsics(spec: str | Path) -> Intrinsics:
    """Read intrinsics from ``"fx,fy,cx,cy"`` or a JSON file.

    The JSON file holds either ``{"fx", "fy", "cx", "cy"}`` or ``{"K": 3x3}``, and may
    state the image size they were measured for (``width``, ``height``). Distortion
    coefficients are refused unless all zero: frames are not undistorted.
    """
    text = str(spec)
    parts = text.split(",")
    if len(parts) == 4 and not Path(text).exists():
        try:
            return intrinsics_from_values(*(float(p) for p in parts))
        except ValueError as exc:
            raise InputError(f"intrinsics '{text}': {exc}") from None
    path = Path(text)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"intrinsics '{text}': no such file (or give 'fx,fy,cx,cy')") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"intrinsics file {path}: not readable JSON ({exc})") from None
    return intrinsics_from_mapping(data, str(path))


def intrinsics_from_mapping(data: object, origin: str) -> Intrinsics:
    """Intrinsics from a mapping with ``fx/fy/cx/cy`` or ``K``; ``origin`` names it in errors."""
    if not isinstance(data, dict):
        raise InputError(f"intrinsics {origin}: expected an object with fx, fy, cx, cy or K")
    try:
        _refuse_distortion(data)
        if "K" in data:
            K = _numbers(data["K"], "K")
            if K.shape != (3, 3):
                raise ValueError(f"K must be 3x3, got shape {K.shape}")
            _check_layout(K)
            given = intrinsics_from_values(K[0, 0], K[1, 1], K[0, 2], K[1, 2])
        else:
            missing = [k for k in ("fx", "fy", "cx", "cy") if k not in data]
            if missing:
                raise ValueError(f"missing {', '.join(missing)}")
            given = intrinsics_from_values(*(float(_numbers(data[k], k))
                                             for k in ("fx", "fy", "cx", "cy")))
        return Intrinsics(given.K, given.source, _image_size(data))
    except (TypeError, ValueError) as exc:
        raise InputError(f"intrinsics {origin}: {exc}") from None


def _numbers(value: object, key: str) -> np.ndarray:
    """``value`` as float64, refusing booleans and text (``"fx": true`` is no focal length)."""
    flat = np.asarray(value, dtype=object).ravel()
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in flat):
        raise ValueError(f"{key} must be numbers, got {value!r}")
    return np.asarray(value, dtype=np.float64)


def _check_layout(K: np.ndarray) -> None:
    if not np.allclose(K[2], [0.0, 0.0, 1.0]):
        hint = (" (it looks transposed: cx, cy belong in the last column)"
                if np.allclose(K[:2, 2], 0.0) and np.any(K[2, :2] != 0) else "")
        raise ValueError(f"K's last row must be [0, 0, 1], got {K[2].tolist()}{hint}")
    if K[1, 0] != 0.0 or K[0, 1] != 0.0:
        raise ValueError(f"K has skew or shear terms (K[0][1] = {K[0, 1]:g}, K[1][0] = "
                         f"{K[1, 0]:g}); only fx, fy, cx, cy are supported")


def _refuse_distortion(data: dict) -> None:
    for key in DISTORTION_KEYS:
        if key in data and np.any(_numbers(data[key], key) != 0):
            raise ValueError(f"distortion coefficients are given ('{key}'), but hflpipe does "
                             "not undistort frames: undistort the video first (e.g. ffmpeg's "
                             "lenscorrection or cv2.undistort), or remove the key if the lens "
                             "distortion is negligible")


def _image_size(data: dict) -> tuple[int, int] | None:
    if "width" not in data or "height" not in data:
        return None
    width, height = (_numbers(data.get(k), k) for k in ("width", "height"))
    if width.shape or height.shape or width <= 0 or height <= 0 or width % 1 or height % 1:
        raise ValueError(f"width and height must be positive whole numbers, got "
                         f"{data.get('width')!r} x {data.get('height')!r}")
    return int(width), int(height)


def intrinsics_for_video(intrinsics: Intrinsics, width: int, height: int) -> Intrinsics:
    """``intrinsics`` checked against a ``width`` x ``height`` video (InputError if wrong).

    Intrinsics stated for another size of the same aspect ratio are scaled to the video
    (with a warning: the video was resized since calibration); another aspect ratio, or a
    principal point outside the frame, means the intrinsics belong to another camera.
    """
    K = intrinsics.K.copy()
    if intrinsics.image_size is not None and intrinsics.image_size != (width, height):
        given_w, given_h = intrinsics.image_size
        if abs(given_w * height - given_h * width) > max(given_w, width):
            raise InputError(f"intrinsics are for {given_w}x{given_h} images, the video is "
                             f"{width}x{height} (another aspect ratio: another camera?)")
        logger.warning("intrinsics are for %dx%d images, the video is %dx%d: scaled to it",
                       given_w, given_h, width, height)
        K[0] *= width / given_w
        K[1] *= height / given_h
    cx, cy = K[0, 2], K[1, 2]
    if not (0 <= cx <= width and 0 <= cy <= height):
        raise InputError(f"intrinsics: principal point ({cx:g}, {cy:g}) is outside the "
                         f"{width}x{height} frame (K of another resolution, or transposed?)")
    return Intrinsics(K, intrinsics.source, (width, height))
