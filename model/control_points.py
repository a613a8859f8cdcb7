"""The 21 control points of an object: corners, edge midpoints and centre of its 3D box.

HFL-Net votes for these points in the image; PnP against them gives the object's pose.
They come from the axis-aligned bounding box of the object's model points (object frame,
metres). Order, with ``x0/x1`` the min/max x (likewise y, z) and ``xm`` their mean:

* 0-7: corners; corner ``i`` takes ``x1`` if bit 0 of ``i`` is set, ``y1`` if bit 1,
  ``z1`` if bit 2 (else the minimum);
* 8-11 and 12-15: midpoints of the edges of the ``z0`` face, then of the ``z1`` face, each
  in the order ``(x0, ym)``, ``(x1, ym)``, ``(xm, y1)``, ``(xm, y0)``;
* 16-19: midpoints of the edges parallel to z: ``(x0, y1)``, ``(x0, y0)``, ``(x1, y1)``,
  ``(x1, y0)``, at ``zm``;
* 20: the centre.

The YCB objects' points ship with the package (``data/ycb_bbox21.json``); other objects
are computed from a mesh or point file.
"""

from __future__ import annotations

import difflib
import json
import re
from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np

NUM_CONTROL_POINTS = 21
_YCB_FILE = "ycb_bbox21.json"
_PLY_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1",
    "short": "i2", "int16": "i2", "ushort": "u2", "uint16": "u2",
    "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
}
_PLY_FORMATS = {"ascii": None, "binary_little_endian": "<", "binary_big_endian": ">"}


@lru_cache(maxsize=1)
def _ycb_catalogue() -> dict[str, np.ndarray]:
    text = resources.files("hflpipe.model").joinpath("data", _YCB_FILE).read_text("utf-8")
    objects = json.loads(text)["objects"]
    return {name: np.asarray(entry["points"], dtype=np.float64) for name, entry in objects.items()}


def _short_name(folder_name: str) -> str:
    return re.sub(r"^\d+_", "", folder_name)


def load_control_points(name: str) -> np.ndarray:
    """The control points of a YCB object.

    Args:
        name: folder name (``003_cracker_box``) or short name (``cracker_box``).

    Returns:
        ``(21, 3)`` float64, object frame, metres.
    """
    if not isinstance(name, str):
        raise TypeError(f"object name must be a string, got {type(name).__name__}")
    catalogue = _ycb_catalogue()
    by_short = {_short_name(folder): folder for folder in catalogue}
    key = name.strip().lower()
    folder = key if key in catalogue else by_short.get(key)
    if folder is None:
        close = difflib.get_close_matches(key, [*catalogue, *by_short], n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        known = ", ".join(sorted(by_short))
        raise ValueError(f"unknown YCB object {name!r}{hint} (known: {known})")
    return catalogue[folder].copy()


def control_points_from_points(points: np.ndarray) -> np.ndarray:
    """Control points of the axis-aligned bounding box of ``(N, 3)`` points.

    Returns:
        ``(21, 3)`` float64 in the points' frame and units.
    """
    pts = np.asarray(points)
    if pts.ndim != 2 or pts.shape[1] != 3 or pts.shape[0] == 0:
        raise ValueError(f"points must have shape (N, 3) with N >= 1, got {pts.shape}")
    if not np.issubdtype(pts.dtype, np.number):
        raise TypeError(f"points must be numeric, got {pts.dtype}")
    pts = pts.astype(np.float64)
    if not np.isfinite(pts).all():
        raise ValueError("points have non-finite coordinates")
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    corners = np.array([[hi[0] if i & 1 else lo[0], hi[1] if i & 2 else lo[1],
                         hi[2] if i & 4 else lo[2]] for i in range(8)])

    def mid(a: int, b: int) -> np.ndarray:
        return (corners[a] + corners[b]) / 2

    # Corner indices: bit 0 = x1, bit 1 = y1, bit 2 = z1.
    face_edges = [(0, 2), (1, 3), (2, 3), (0, 1)]  # (x0,ym) (x1,ym) (xm,y1) (xm,y0)
    z_edges = [(2, 6), (0, 4), (3, 7), (1, 5)]     # (x0,y1) (x0,y0) (x1,y1) (x1,y0)
    mids = [mid(a, b) for a, b in face_edges]
    mids += [mid(a + 4, b + 4) for a, b in face_edges]
    mids += [mid(a, b) for a, b in z_edges]
    return np.concatenate([corners, np.stack(mids), mid(4, 3)[None]])


def control_points_from_file(path: str | Path) -> np.ndarray:
    """Control points of the bounding box of a mesh or point file's vertices.

    Args:
        path: ``.xyz`` / ``.txt`` (whitespace-separated rows, first 3 columns are x y z),
            ``.ply`` (ascii or binary vertex element) or ``.obj`` (``v`` lines).

    Returns:
        ``(21, 3)`` float64, in the file's units.
    """
    return control_points_from_points(read_object_vertices(path))


def read_object_vertices(path: str | Path) -> np.ndarray:
    """The vertices of a mesh or point file (formats: :func:`control_points_from_file`).

    Returns:
        ``(N, 3)`` float64, N >= 1, finite, in the file's units. Raises ValueError (or
        FileNotFoundError) naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"object model file not found: {path}")
    suffix = path.suffix.lower()
    readers = {".xyz": _read_xyz, ".txt": _read_xyz, ".ply": _read_ply, ".obj": _read_obj}
    if suffix not in readers:
        raise ValueError(f"{path}: unsupported object model format {suffix!r} "
                         f"(expected one of {', '.join(readers)})")
    try:
        points = readers[suffix](path)
    except (ValueError, IndexError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: cannot read vertices: {err}") from None
    if points.shape[0] == 0:
        raise ValueError(f"{path}: no vertices found")
    if not np.isfinite(points).all():
        raise ValueError(f"{path}: vertices have non-finite coordinates")
    return points


def _read_xyz(path: Path) -> np.ndarray:
    rows = []
    for number, line in enumerate(path.read_text("utf-8").splitlines(), start=1):
        fields = line.split("#", 1)[0].split()
        if not fields:
            continue
        if len(fields) < 3:
            raise ValueError(f"line {number} has {len(fields)} columns, expected at least 3")
        rows.append([float(v) for v in fields[:3]])
    return np.asarray(rows, dtype=np.float64).reshape(-1, 3)


def _read_obj(path: Path) -> np.ndarray:
    rows = []
    for number, line in enumerate(path.read_text("utf-8").splitlines(), start=1):
        fields = line.split()
        if fields and fields[0] == "v":
            if len(fields) < 4:
                raise ValueError(f"line {number}: vertex with fewer than 3 coordinates")
            rows.append([float(v) for v in fields[1:4]])
    return np.asarray(rows, dtype=np.float64).reshape(-1, 3)


def _read_ply(path: Path) -> np.ndarray:
    data = path.read_bytes()
    end = data.find(b"end_header")
    if not data.startswith(b"ply") or end < 0:
        raise ValueError("not a PLY file (missing 'ply' magic or 'end_header')")
    body_start = data.index(b"\n", end) + 1
    header = data[:end].decode("ascii").splitlines()
    fmt = None
    elements: list[tuple[str, int, list[tuple[str, str | None]]]] = []
    for line in header[1:]:
        fields = line.split()
        if not fields or fields[0] in ("comment", "obj_info"):
            continue
        if fields[0] == "format":
            if len(fields) < 2 or fields[1] not in _PLY_FORMATS:
                raise ValueError(f"unknown PLY format line {line!r}")
            fmt = fields[1]
        elif fields[0] == "element":
            elements.append((fields[1], int(fields[2]), []))
        elif fields[0] == "property" and elements:
            if fields[1] == "list":
                elements[-1][2].append((fields[4], None))
            else:
                if fields[1] not in _PLY_TYPES:
                    raise ValueError(f"unknown PLY property type {fields[1]!r}")
                elements[-1][2].append((fields[2], _PLY_TYPES[fields[1]]))
    if fmt is None:
        raise ValueError("PLY header has no format line")
    names = [name for name, _, _ in elements]
    if "vertex" not in names:
        raise ValueError("PLY file has no vertex element")
    index = names.index("vertex")
    props = elements[index][2]
    prop_names = [name for name, _ in props]
    if not {"x", "y", "z"} <= set(prop_names) or any(kind is None for _, kind in props):
        raise ValueError("PLY vertex element needs scalar x, y, z properties")
    count = elements[index][1]
    columns = [prop_names.index(axis) for axis in ("x", "y", "z")]
    if fmt == "ascii":
        lines = data[body_start:].decode("ascii").splitlines()
        skip = sum(n for _, n, _ in elements[:index])
        rows = [line.split() for line in lines[skip:skip + count]]
        if len(rows) < count or any(len(row) < len(props) for row in rows):
            raise ValueError(f"PLY vertex data truncated (expected {count} rows)")
        return np.asarray([[float(row[c]) for c in columns] for row in rows], dtype=np.float64)
    if any(kind is None for _, _, eprops in elements[:index] for _, kind in eprops):
        raise ValueError("binary PLY with list properties before the vertex element")
    order = _PLY_FORMATS[fmt]
    offset = body_start + sum(
        n * np.dtype([(p, order + k) for p, k in eprops]).itemsize
        for _, n, eprops in elements[:index]
    )
    vertex_dtype = np.dtype([(name, order + kind) for name, kind in props])
    if len(data) < offset + count * vertex_dtype.itemsize:
        raise ValueError(f"PLY vertex data truncated (expected {count} vertices)")
    table = np.frombuffer(data, dtype=vertex_dtype, count=count, offset=offset)
    return np.stack([table[axis].astype(np.float64) for axis in ("x", "y", "z")], axis=1)
