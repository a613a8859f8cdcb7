"""The run's object: a YCB catalogue name or a mesh / point file, checked before any work.

Object files are in metres, in the object's own frame. PnP needs a real 3D extent, so
files that cannot give one (too few vertices, all on a plane or a line) are refused, and
so is a scale no hand-held object has (a mesh exported in millimetres is 1000x too big).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hflpipe.model.control_points import (
    control_points_from_points,
    load_control_points,
    read_object_vertices,
)
from hflpipe.pipeline.common import storage
from hflpipe.pipeline.common.errors import InputError

#: Largest extent (m) of an object a hand holds; a bigger one is in other units.
MAX_EXTENT_M = 2.0
#: Smallest extent (m) along the object's longest side that PnP can use.
MIN_EXTENT_M = 0.005
#: Thinnest a solid may be relative to its largest extent before it counts as flat.
MIN_THICKNESS_RATIO = 1e-3


def resolve_object(spec: str | None) -> tuple[str | None, np.ndarray | None]:
    """A YCB catalogue name or a mesh / point file -> (name, (21, 3) control points, m)."""
    if spec is None:
        return None, None
    if storage.is_url(spec):
        return (Path(storage.name_of(spec)).stem,
                storage.load_named(spec, control_points_from_file_checked))
    path = Path(spec)
    if path.suffix and path.exists():
        return path.stem, control_points_from_file_checked(path)
    try:
        return spec, load_control_points(spec)
    except ValueError as exc:
        raise InputError(f"object '{spec}': {exc}") from None


def control_points_from_file_checked(path: Path) -> np.ndarray:
    """The control points of an object file whose vertices make a plausible solid."""
    try:
        points = read_object_vertices(path)
    except (OSError, ValueError) as exc:
        raise InputError(f"object file {path}: {str(exc).removeprefix(f'{path}: ')}") from None
    problem = _shape_problem(points)
    if problem is not None:
        raise InputError(f"object file {path}: {problem}")
    return control_points_from_points(points)


def _shape_problem(points: np.ndarray) -> str | None:
    if len(points) < 4:
        return f"has {len(points)} vertices; a 3D pose needs at least 4 not on one plane"
    extent = points.max(axis=0) - points.min(axis=0)
    largest = float(extent.max())
    if largest > MAX_EXTENT_M:
        return (f"is {largest:g} units across; object files are in metres, and this looks "
                f"like millimetres or centimetres (scale it by 0.001 or 0.01)")
    if largest < MIN_EXTENT_M:
        return f"is {largest:g} m across; object files are in metres (too small for PnP)"
    spread = np.linalg.svd(points - points.mean(axis=0), compute_uv=False)
    if spread[-1] < MIN_THICKNESS_RATIO * spread[0]:
        return "is flat (all vertices on one plane or line); PnP needs a 3D extent"
    return None


def check_object_names(names: list[str], origin: str) -> None:
    """Raise InputError for the first name that is not in the YCB catalogue (with its
    "did you mean"); ``origin`` says where the names come from."""
    for name in sorted(set(names)):
        try:
            load_control_points(name)
        except ValueError as exc:
            raise InputError(f"{origin}: object_name '{name}': {exc}") from None
