"""Camera intrinsics: reading them from the user, and the documented default.

Intrinsics are a 3x3 matrix ``K`` in pixels of the full frame (OpenCV
convention: x right, y down, principal point in pixel coordinates where the
centre of the top-left pixel is (0, 0)).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hflpipe.pipeline.common.errors import InputError

#: Horizontal field of view assumed when no intrinsics are given. 60 degrees is
#: close to the DexYCB / HO3D cameras the model was trained on (about 55).
DEFAULT_HFOV_DEG = 60.0


@dataclass(frozen=True)
class Intrinsics:
    """A camera matrix and where it came from (``given`` or ``default_fov``)."""

    K: np.ndarray  # (3, 3) float64
    source: str


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

    The JSON file holds either ``{"fx", "fy", "cx", "cy"}`` or ``{"K": 3x3}``
    (extra keys such as ``width``/``height`` are allowed and ignored).
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
        if "K" in data:
            K = np.asarray(data["K"], dtype=np.float64)
            if K.shape != (3, 3):
                raise ValueError(f"K must be 3x3, got shape {K.shape}")
            return intrinsics_from_values(K[0, 0], K[1, 1], K[0, 2], K[1, 2])
        missing = [k for k in ("fx", "fy", "cx", "cy") if k not in data]
        if missing:
            raise ValueError(f"missing {', '.join(missing)}")
        return intrinsics_from_values(*(float(data[k]) for k in ("fx", "fy", "cx", "cy")))
    except (TypeError, ValueError) as exc:
        raise InputError(f"intrinsics {origin}: {exc}") from None
