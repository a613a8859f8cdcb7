"""The output tables: the single source of truth for the Parquet columns hflpipe writes.

Three tables, one file per video in each (``OUT/hands``, ``OUT/objects``, ``OUT/videos``):

- ``hands``: one row per (frame, hand track). Plain pose columns hold the temporally
  smoothed values; ``*_raw`` columns hold the model's per-frame values.
- ``objects``: one row per (frame, object track); 6D pose as a quaternion (w, x, y, z).
- Both end with quality columns (``jitter_mps2``, ``suspect``, ``suspect_reasons``; hands
  also ``handedness_flip``, ``hand_object_distance_m``); :mod:`hflpipe.pipeline.output.quality`
  defines them and the thresholds behind ``suspect``. The builders accept tables without
  them (they are then null: not assessed), so tools that make their own rows need not
  compute them.
- ``videos``: one row per input video, its status and how it was processed.

Conventions (also written into every file's key-value metadata): 2D values are full-frame
pixels (x right, y down, origin at the top-left corner of the top-left pixel); 3D values
are metres in the OpenCV camera frame (x right, y down, z forward); boxes are ``xyxy``.

Arrays use Arrow fixed-size lists (``box`` is ``fixed_size_list<float32, 4>``, ``joints2d``
is ``fixed_size_list<fixed_size_list<float32, 2>, 21>``), which pandas, polars and DuckDB
read back unchanged. Each field carries ``unit``, ``shape`` and ``description`` metadata.

The ``*_table`` builders take plain numpy columns. A nullable column may be given as a
``numpy.ma.MaskedArray`` (a masked row is null); on top of that, the contract nulls below are
applied whatever values the caller passes in those rows:

- hands: ``detector_score``, ``jitter_mps2``, ``handedness_flip`` and every ``*_raw``
  column are null where ``interpolated``.
- objects: ``detector_score``, ``pnp_inliers``, ``reprojection_error_px``, ``jitter_mps2``
  are null where ``interpolated``; ``rotation``/``translation`` are null where not ``pose_valid``;
  ``rotation_raw``/``translation_raw`` are null where ``interpolated`` or not ``pose_valid``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from hflpipe import __version__
from hflpipe.pipeline.common.errors import one_line

# 2: quality columns (jitter_mps2, handedness_flip, hand_object_distance_m, suspect,
# suspect_reasons) appended to hands and objects.
# 3: videos: width/height are the displayed frame's; stream_index, rotation_deg, mirrored,
# boxes_dropped added, and mtime_ns, sample_sha256, inputs_sha256 (what a re-run compares)
# and notes (the warnings a video's processing raised). hands gain detector_side and
# contact_state (the 100DOH hand-object detector's).
SCHEMA_VERSION = "3"
TABLES = ("hands", "objects", "videos")
NUM_JOINTS = 21
NUM_KEYPOINTS = 21
NUM_VERTICES = 778
ROTATION_FORMAT = "quaternion_wxyz"
COORDINATES = (
    "2d: full-frame pixels, x right, y down, origin at the top-left image corner; "
    "3d: metres, OpenCV camera frame, x right, y down, z forward; boxes: xyxy pixels"
)
METADATA_PREFIX = "hflpipe."
VIDEO_STATUSES = ("ok", "failed", "skipped")
INTRINSICS_SOURCES = ("given", "default_fov")
HANDEDNESS = ("left", "right")
#: The 100DOH detector's contact states, in the order of its classifier's outputs.
CONTACT_STATES = ("none", "self", "other", "portable", "stationary")
#: Columns a builder may be given or not; left out, they are null (not assessed, or not
#: given by the detector).
QUALITY_COLUMNS = frozenset({
    "jitter_mps2", "handedness_flip", "hand_object_distance_m", "suspect", "suspect_reasons",
    "detector_side", "contact_state",
})


def _f32(*shape: int) -> pa.DataType:
    """A float32 Arrow type: scalar, or nested fixed-size lists of ``shape`` (outermost first)."""
    typ: pa.DataType = pa.float32()
    for size in reversed(shape):
        typ = pa.list_(typ, size)
    return typ


def _field(
    name: str,
    typ: pa.DataType,
    *,
    unit: str,
    description: str,
    shape: str = "",
    nullable: bool = False,
) -> pa.Field:
    meta = {"unit": unit, "description": description}
    if shape:
        meta["shape"] = shape
    return pa.field(name, typ, nullable=nullable, metadata=meta)


def _key_fields() -> list[pa.Field]:
    return [
        _field("video_id", pa.string(), unit="",
               description="video identifier: <file stem>-<8 hex digits of its path>"),
        _field("frame_index", pa.int64(), unit="frame", description="0-based decoded frame"),
        _field("timestamp_s", pa.float64(), unit="s", description="presentation time"),
        _field("track_id", pa.int32(), unit="", description="track id, unique per video+table"),
    ]


def _jitter_field(what: str) -> pa.Field:
    return _field(
        "jitter_mps2", _f32(), unit="m/s^2", nullable=True,
        description=f"{what}, from the neighbouring observed frames; null if interpolated "
        "or without a raw neighbour on both sides",
    )


def _suspect_fields() -> list[pa.Field]:
    return [
        _field("suspect", pa.bool_(), unit="", nullable=True,
               description="a quality rule fired (thresholds in hflpipe.pipeline.output.quality); "
               "null if not assessed"),
        _field("suspect_reasons", pa.string(), unit="", nullable=True,
               description="comma-separated names of the rules that fired; null if none"),
    ]


def hands_schema(*, with_vertices: bool = False) -> pa.Schema:
    """The ``hands`` table schema; ``vertices`` (778x3 m) is present only ``with_vertices``."""
    j = NUM_JOINTS
    fields = [
        *_key_fields(),
        _field("handedness", pa.string(), unit="", description="'left' or 'right'"),
        _field(
            "interpolated", pa.bool_(), unit="",
            description="true: no observation on this frame, values filled from neighbours",
        ),
        _field("box", _f32(4), unit="px", shape="4", description="hand box xyxy"),
        _field(
            "detector_score", _f32(), unit="", nullable=True,
            description="hand detector score; null if interpolated",
        ),
        _field("confidence", _f32(), unit="", description="per-frame hand confidence, 0..1"),
        _field("joints2d", _f32(j, 2), unit="px", shape="21x2", description="smoothed 2D joints"),
        _field(
            "joints3d", _f32(j, 3), unit="m", shape="21x3",
            description="smoothed 3D joints, camera frame",
        ),
        _field(
            "mano_pose", _f32(48), unit="rad", shape="48",
            description="smoothed MANO axis-angle, 16 joints, global rotation first (camera frame)",
        ),
        _field("mano_shape", _f32(10), unit="", shape="10", description="MANO shape betas"),
        _field(
            "translation", _f32(3), unit="m", shape="3",
            description="smoothed wrist position, camera frame",
        ),
    ]
    if with_vertices:
        fields.append(_field(
            "vertices", _f32(NUM_VERTICES, 3), unit="m", shape="778x3",
            description="MANO vertices, camera frame",
        ))
    fields += [
        _field("joints2d_raw", _f32(j, 2), unit="px", shape="21x2", nullable=True,
               description="per-frame model 2D joints; null if interpolated"),
        _field("joints3d_raw", _f32(j, 3), unit="m", shape="21x3", nullable=True,
               description="per-frame model 3D joints, camera frame; null if interpolated"),
        _field("mano_pose_raw", _f32(48), unit="rad", shape="48", nullable=True,
               description="per-frame model MANO axis-angle; null if interpolated"),
        _field("translation_raw", _f32(3), unit="m", shape="3", nullable=True,
               description="per-frame model wrist position; null if interpolated"),
        _jitter_field("mean acceleration magnitude of the raw 3D joints"),
        _field("handedness_flip", pa.bool_(), unit="", nullable=True,
               description="detector's handedness on this frame differs from the track's; "
               "null if interpolated or not given by the detector"),
        _field("detector_side", pa.string(), unit="", nullable=True,
               description="'left'/'right' as the detector saw this hand on this frame (the "
               "track's vote is 'handedness'); null if interpolated or not given (between "
               "keyframes of --detect-every, the keyframe's)"),
        _field("contact_state", pa.string(), unit="", nullable=True,
               description="hand-object detector's contact state: none, self, other, portable "
               "or stationary; null if interpolated or not given (between keyframes of "
               "--detect-every, the keyframe's)"),
        _field("hand_object_distance_m", _f32(), unit="m", nullable=True,
               description="nearest joint to the nearest posed object's 3D box on this frame; "
               "null if no posed object"),
        *_suspect_fields(),
    ]
    return _with_table_metadata(pa.schema(fields), "hands")


def objects_schema() -> pa.Schema:
    """The ``objects`` table schema (rotation as a unit quaternion w, x, y, z)."""
    k = NUM_KEYPOINTS
    fields = [
        *_key_fields(),
        _field("object_name", pa.string(), unit="", nullable=True,
               description="catalogue name of the object; null if not given"),
        _field("interpolated", pa.bool_(), unit="",
               description="true: no observation on this frame, values filled from neighbours"),
        _field("box", _f32(4), unit="px", shape="4", description="object box xyxy"),
        _field("detector_score", _f32(), unit="", nullable=True,
               description="object detector score; null if interpolated"),
        _field("keypoints2d", _f32(k, 2), unit="px", shape="21x2",
               description="2D control points: 8 box corners, 12 edge midpoints, centre"),
        _field("keypoint_confidence", _f32(k), unit="", shape="21",
               description="per control point vote confidence"),
        _field("rotation", _f32(4), unit="", shape="4", nullable=True,
               description="smoothed object-to-camera rotation, quaternion wxyz; null if no pose"),
        _field("translation", _f32(3), unit="m", shape="3", nullable=True,
               description="smoothed object origin in the camera frame; null if no pose"),
        _field("rotation_raw", _f32(4), unit="", shape="4", nullable=True,
               description="per-frame PnP rotation, wxyz; null if interpolated or no pose"),
        _field("translation_raw", _f32(3), unit="m", shape="3", nullable=True,
               description="per-frame PnP translation; null if interpolated or no pose"),
        _field("pnp_inliers", pa.int32(), unit="", nullable=True,
               description="PnP RANSAC inlier count; null if interpolated or PnP not run"),
        _field("reprojection_error_px", _f32(), unit="px", nullable=True,
               description="mean inlier reprojection error; null if interpolated or PnP not run"),
        _field("pose_valid", pa.bool_(), unit="",
               description="false: no 6D pose (no control points, PnP failed, too few inliers)"),
        _jitter_field("acceleration magnitude of the raw translation"),
        *_suspect_fields(),
    ]
    return _with_table_metadata(pa.schema(fields), "objects")


def videos_schema() -> pa.Schema:
    """The ``videos`` table schema: one row per input video; its file commits the video."""
    utc = pa.timestamp("us", tz="UTC")
    fields = [
        _field("video_id", pa.string(), unit="",
               description="video identifier: <file stem>-<8 hex digits of its path>"),
        _field("path", pa.string(), unit="", description="input path as given in the job"),
        _field("content_sha256", pa.string(), unit="", nullable=True,
               description="SHA-256 of the file bytes, hex"),
        _field("size_bytes", pa.int64(), unit="byte", nullable=True, description="file size"),
        _field("mtime_ns", pa.int64(), unit="ns", nullable=True,
               description="file modification time (Unix epoch); a re-run compares it"),
        _field("sample_sha256", pa.string(), unit="", nullable=True,
               description="SHA-256 of the size and 64 KiB at the file's start, middle and "
               "end: a re-run hashes the whole file only when this, size or mtime differ"),
        _field("inputs_sha256", pa.string(), unit="", nullable=True,
               description="hash of what else shaped the rows: the video's boxes file rows, "
               "intrinsics, object control points; a re-run redoes the video when it differs"),
        _field("num_frames", pa.int64(), unit="frame", nullable=True,
               description="frames that decoded"),
        _field("frames_processed", pa.int64(), unit="frame", nullable=True,
               description="frames run through the model"),
        _field("fps", pa.float64(), unit="1/s", nullable=True, description="average frame rate"),
        _field("width", pa.int32(), unit="px", nullable=True,
               description="frame width as displayed (after rotation_deg)"),
        _field("height", pa.int32(), unit="px", nullable=True,
               description="frame height as displayed (after rotation_deg)"),
        _field("stream_index", pa.int32(), unit="", nullable=True,
               description="index of the decoded video stream among the file's streams"),
        _field("rotation_deg", pa.int32(), unit="deg", nullable=True,
               description="clockwise rotation applied to stored frames for display "
                           "(0, 90, 180, 270), from the container's display matrix"),
        _field("mirrored", pa.bool_(), unit="", nullable=True,
               description="frames were mirrored left-right for display, after the rotation"),
        _field("duration_s", pa.float64(), unit="s", nullable=True, description="duration"),
        _field("status", pa.string(), unit="", description="'ok', 'failed' or 'skipped'"),
        _field("error", pa.string(), unit="", nullable=True,
               description="one-line cause when status is not 'ok'"),
        _field("config_hash", pa.string(), unit="", description="hash of the job config used"),
        _field("hand_tracks", pa.int32(), unit="", nullable=True, description="hand tracks"),
        _field("object_tracks", pa.int32(), unit="", nullable=True, description="object tracks"),
        _field("failed_crops", pa.int32(), unit="", nullable=True,
               description="hand-object crops the model could not process (no row for them)"),
        _field("boxes_dropped", pa.int32(), unit="", nullable=True,
               description="detector or boxes-file boxes outside the frame, or under 2 px "
                           "once clipped to it; dropped before the model"),
        _field("intrinsics", pa.list_(pa.float64(), 9), unit="px", shape="3x3", nullable=True,
               description="camera matrix K, row-major"),
        _field("intrinsics_source", pa.string(), unit="", nullable=True,
               description="'given' or 'default_fov' (assumed field of view)"),
        _field("decoder", pa.string(), unit="", nullable=True, description="decoder used"),
        _field("notes", pa.list_(pa.string()), unit="", nullable=True,
               description="warnings about this video's results (rows dropped, nothing "
               "selected, boxes matching no frame); null or empty when there were none"),
        _field("started_at", utc, unit="", description="processing start, UTC"),
        _field("finished_at", utc, unit="", description="processing end, UTC"),
    ]
    return _with_table_metadata(pa.schema(fields), "videos")


def table_schema(table: str, *, with_vertices: bool = False) -> pa.Schema:
    """The schema of ``table`` (one of ``TABLES``)."""
    if table == "hands":
        return hands_schema(with_vertices=with_vertices)
    if table == "objects":
        return objects_schema()
    if table == "videos":
        return videos_schema()
    raise ValueError(f"unknown table {table!r}: expected one of {', '.join(TABLES)}")


def _with_table_metadata(schema: pa.Schema, table: str) -> pa.Schema:
    return schema.with_metadata({
        f"{METADATA_PREFIX}schema_version": SCHEMA_VERSION,
        f"{METADATA_PREFIX}table": table,
    })


@dataclass(frozen=True)
class OutputMetadata:
    """What produced a file; written as ``hflpipe.*`` key-value metadata on every file.

    Hashes are lowercase hex SHA-256 strings; ``config_hash`` is the job config's hash.
    """

    checkpoint_sha256: str
    mano_sha256: str
    config_hash: str
    version: str = __version__

    def key_values(self, table: str) -> dict[str, str]:
        """The ``hflpipe.*`` key-value pairs for a file of ``table``."""
        return {
            f"{METADATA_PREFIX}schema_version": SCHEMA_VERSION,
            f"{METADATA_PREFIX}version": self.version,
            f"{METADATA_PREFIX}checkpoint_sha256": self.checkpoint_sha256,
            f"{METADATA_PREFIX}mano_sha256": self.mano_sha256,
            f"{METADATA_PREFIX}config_hash": self.config_hash,
            f"{METADATA_PREFIX}rotation_format": ROTATION_FORMAT,
            f"{METADATA_PREFIX}coordinates": COORDINATES,
            f"{METADATA_PREFIX}table": table,
        }


def read_file_metadata(path: str | Path) -> dict[str, str]:
    """The ``hflpipe.*`` key-value metadata of a Parquet file, keys without the prefix."""
    meta = pq.read_schema(path).metadata or {}
    out = {}
    for key, value in meta.items():
        name = key.decode()
        if name.startswith(METADATA_PREFIX):
            out[name[len(METADATA_PREFIX):]] = value.decode()
    return out


# Nullable columns whose nulls the contract fixes: column -> flags that make it null.
# "interpolated" nulls where the flag is true, "!pose_valid" where pose_valid is false.
_CONTRACT_NULLS = {
    "hands": {
        "detector_score": ("interpolated",),
        "joints2d_raw": ("interpolated",),
        "joints3d_raw": ("interpolated",),
        "mano_pose_raw": ("interpolated",),
        "translation_raw": ("interpolated",),
        "jitter_mps2": ("interpolated",),
        "handedness_flip": ("interpolated",),
    },
    "objects": {
        "detector_score": ("interpolated",),
        "pnp_inliers": ("interpolated",),
        "reprojection_error_px": ("interpolated",),
        "rotation": ("!pose_valid",),
        "translation": ("!pose_valid",),
        "rotation_raw": ("interpolated", "!pose_valid"),
        "translation_raw": ("interpolated", "!pose_valid"),
        "jitter_mps2": ("interpolated",),
    },
}


def hands_table(columns: Mapping[str, object], metadata: OutputMetadata) -> pa.Table:
    """Build a ``hands`` table from numpy columns of n rows.

    Shapes: ``box`` (n, 4), ``joints2d``/``joints2d_raw`` (n, 21, 2) px, ``joints3d``/
    ``joints3d_raw`` (n, 21, 3) m, ``mano_pose``/``mano_pose_raw`` (n, 48) rad,
    ``mano_shape`` (n, 10), ``translation``/``translation_raw`` (n, 3) m, optional
    ``vertices`` (n, 778, 3) m (its presence selects the schema), scalars (n,).
    ``handedness`` holds 'left'/'right' strings. Raises ValueError/TypeError naming the column.
    """
    schema = hands_schema(with_vertices="vertices" in columns)
    table = _build("hands", schema, columns, metadata)
    _check_values("hands", "handedness", table, HANDEDNESS)
    _check_values("hands", "detector_side", table, HANDEDNESS)
    _check_values("hands", "contact_state", table, CONTACT_STATES)
    return table


def objects_table(columns: Mapping[str, object], metadata: OutputMetadata) -> pa.Table:
    """Build an ``objects`` table from numpy columns of n rows.

    Shapes: ``box`` (n, 4) px, ``keypoints2d`` (n, 21, 2) px, ``keypoint_confidence`` (n, 21),
    ``rotation``/``rotation_raw`` (n, 4) unit quaternions wxyz, ``translation``/
    ``translation_raw`` (n, 3) m, scalars (n,); ``object_name`` strings or None.
    """
    return _build("objects", objects_schema(), columns, metadata)


def videos_table(rows: Sequence[Mapping[str, object]], metadata: OutputMetadata) -> pa.Table:
    """Build a ``videos`` table from row dicts keyed by column name.

    Missing nullable keys become null; ``intrinsics`` is a 3x3 matrix or 9 numbers; times
    are timezone-aware ``datetime``s; a multi-line ``error`` is folded onto one line.
    A ``failed`` row needs an ``error``.
    """
    schema = videos_schema()
    names = set(schema.names)
    clean_rows = []
    for i, row in enumerate(rows):
        unknown = set(row) - names
        if unknown:
            raise ValueError(f"videos row {i}: unknown columns {sorted(unknown)}")
        clean = {name: row.get(name) for name in schema.names}
        for field in schema:
            if clean[field.name] is None and not field.nullable:
                raise ValueError(f"videos row {i}: column {field.name!r} is required")
        if clean["intrinsics"] is not None:
            k = np.asarray(clean["intrinsics"], dtype=np.float64)
            if k.size != 9 or not np.all(np.isfinite(k)):
                raise ValueError(f"videos row {i}: 'intrinsics' must be 9 finite numbers")
            clean["intrinsics"] = k.reshape(9).tolist()
        for name in ("started_at", "finished_at"):
            stamp = clean[name]
            if not isinstance(stamp, dt.datetime) or stamp.tzinfo is None:
                raise ValueError(f"videos row {i}: {name!r} must be a timezone-aware datetime")
        if clean["error"] is not None:
            clean["error"] = one_line(str(clean["error"]))
        if clean["status"] == "failed" and not clean["error"]:
            raise ValueError(f"videos row {i}: a 'failed' row needs an 'error'")
        clean_rows.append(clean)
    try:
        table = pa.Table.from_pylist(clean_rows, schema=schema)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError) as exc:
        raise ValueError(f"videos rows do not fit the schema: {one_line(exc)}") from exc
    _check_values("videos", "status", table, VIDEO_STATUSES)
    _check_values("videos", "intrinsics_source", table, INTRINSICS_SOURCES)
    return table.replace_schema_metadata(metadata.key_values("videos"))


def empty_hands(metadata: OutputMetadata, *, with_vertices: bool = False) -> pa.Table:
    """A zero-row ``hands`` table (a video without hands still gets a file)."""
    schema = hands_schema(with_vertices=with_vertices)
    return schema.empty_table().replace_schema_metadata(metadata.key_values("hands"))


def empty_objects(metadata: OutputMetadata) -> pa.Table:
    """A zero-row ``objects`` table."""
    return objects_schema().empty_table().replace_schema_metadata(metadata.key_values("objects"))


def column_numpy(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """A numeric or boolean column, as written by the builders, back to numpy.

    Returns float64 ``(n, *shape)`` for fixed-size-list columns (e.g. ``joints2d`` gives
    (n, 21, 2)) and ``(n,)`` for scalars; null rows hold NaN (booleans become 0.0/1.0).
    """
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks() if column.num_chunks else pa.array(
            [], column.type)
    nulls = column.is_null().to_numpy(zero_copy_only=False)
    _, shape = _leaf_dtype(column.type)
    flat = column
    # flatten() drops null rows (only the outer level has nulls), so fill the valid rows.
    while pa.types.is_fixed_size_list(flat.type):
        flat = flat.flatten()
    if not shape:
        flat = flat.drop_null()
    out = np.full((len(column), *shape), np.nan)
    values = flat.cast(pa.float64()).to_numpy(zero_copy_only=False)
    out[~nulls] = values.reshape(-1, *shape)
    return out


def rows_by_value(column: pa.ChunkedArray | pa.Array) -> dict[object, np.ndarray]:
    """Value -> indices of the rows holding it (ascending), for grouping a table by a key
    column (``video_id``) in one pass instead of one filter per key."""
    values = np.asarray(column.to_pylist(), dtype=object)
    if len(values) == 0:
        return {}
    names, codes = np.unique(values.astype(str), return_inverse=True)
    order = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[order], np.arange(len(names) + 1))
    return {values[order[bounds[k]]]: order[bounds[k]:bounds[k + 1]]
            for k in range(len(names))}


def _leaf_dtype(typ: pa.DataType) -> tuple[pa.DataType, tuple[int, ...]]:
    """The scalar type and per-row shape of a (possibly nested) fixed-size-list type."""
    shape: list[int] = []
    while pa.types.is_fixed_size_list(typ):
        shape.append(typ.list_size)
        typ = typ.value_type
    return typ, tuple(shape)


def _build(
    table: str, schema: pa.Schema, columns: Mapping[str, object], metadata: OutputMetadata
) -> pa.Table:
    names = set(schema.names)
    missing = [n for n in schema.names if n not in columns and n not in QUALITY_COLUMNS]
    unknown = sorted(set(columns) - names)
    if missing:
        raise ValueError(f"{table} table: missing columns {missing}")
    if unknown:
        raise ValueError(f"{table} table: unknown columns {unknown}")
    num_rows = len(np.asarray(columns["frame_index"]))
    # Quality columns left out are unknown, not "fine": all null.
    unassessed = np.ma.masked_all(num_rows, dtype=np.float32)
    columns = {
        **{n: np.ma.masked_all(num_rows, dtype=bool) if schema.field(n).type == pa.bool_()
           else np.full(num_rows, None, dtype=object) if schema.field(n).type == pa.string()
           else unassessed
           for n in schema.names if n in QUALITY_COLUMNS and n not in columns},
        **columns,
    }
    flags = {
        name: np.asarray(columns[name], dtype=bool)
        for name in ("interpolated", "pose_valid")
        if name in columns
    }
    arrays = []
    for field in schema:
        null_mask = np.zeros(num_rows, dtype=bool)
        for flag in _CONTRACT_NULLS.get(table, {}).get(field.name, ()):
            null_mask |= ~flags[flag[1:]] if flag.startswith("!") else flags[flag]
        arrays.append(_column(table, field, columns[field.name], num_rows, null_mask))
    return pa.Table.from_arrays(arrays, schema=schema).replace_schema_metadata(
        metadata.key_values(table)
    )


def _column(
    table: str, field: pa.Field, value: object, num_rows: int, null_mask: np.ndarray
) -> pa.Array:
    where = f"{table} column {field.name!r}"
    leaf, shape = _leaf_dtype(field.type)
    if pa.types.is_string(leaf):
        items = list(np.asarray(value, dtype=object).reshape(-1))
        if len(items) != num_rows:
            raise ValueError(f"{where}: expected {num_rows} rows, got {len(items)}")
        bad = [x for x in items if not (isinstance(x, str) or (x is None and field.nullable))]
        if bad:
            raise TypeError(f"{where}: expected strings, got {bad[0]!r}")
        return pa.array(items, type=field.type)
    if isinstance(value, np.ma.MaskedArray):
        mask = np.ma.getmaskarray(value)
        # reshape(0, -1) is ambiguous, and zero rows have no masked row anyway.
        row_mask = mask.reshape(len(value), -1).any(axis=1) if len(value) else mask.astype(bool)
        data = np.ma.getdata(value)
    else:
        data = np.asarray(value)
        row_mask = np.zeros(len(data) if data.ndim else 0, dtype=bool)
    if data.shape != (num_rows, *shape):
        raise ValueError(
            f"{where}: expected shape {(num_rows, *shape)}, got {data.shape}"
        )
    if row_mask.any() and not field.nullable:
        raise ValueError(f"{where}: is not nullable but has masked rows")
    nulls = null_mask | row_mask
    kind = data.dtype.kind
    if pa.types.is_boolean(leaf):
        if kind != "b":
            raise TypeError(f"{where}: expected bool, got {data.dtype}")
    elif pa.types.is_integer(leaf):
        if kind not in "iu":
            raise TypeError(f"{where}: expected integers, got {data.dtype}")
        info = np.iinfo(leaf.to_pandas_dtype())
        valid = data[~nulls]
        if valid.size and (valid.min() < info.min or valid.max() > info.max):
            raise ValueError(f"{where}: values out of range for {leaf}")
    else:
        if kind not in "fiu":
            raise TypeError(f"{where}: expected numbers, got {data.dtype}")
        if not np.all(np.isfinite(data[~nulls])):
            raise ValueError(f"{where}: non-finite values in non-null rows")
    values = data.reshape(-1).astype(leaf.to_pandas_dtype(), copy=False)
    validity = pa.array(nulls) if nulls.any() else None
    if not shape:
        return pa.array(values, type=leaf, mask=nulls if nulls.any() else None)
    inner = pa.array(values, type=leaf)
    for size in reversed(shape[1:]):
        inner = pa.FixedSizeListArray.from_arrays(inner, size)
    # Only the outer level carries nulls; a null row keeps placeholder values underneath.
    return pa.FixedSizeListArray.from_arrays(inner, shape[0], mask=validity)


def _check_values(table_name: str, column: str, table: pa.Table, allowed: tuple[str, ...]) -> None:
    values = set(table.column(column).drop_null().to_pylist())
    bad = values - set(allowed)
    if bad:
        raise ValueError(
            f"{table_name} column {column!r}: invalid value {sorted(bad)[0]!r}, "
            f"expected one of {', '.join(allowed)}"
        )


__all__ = [
    "CONTACT_STATES",
    "COORDINATES",
    "QUALITY_COLUMNS",
    "ROTATION_FORMAT",
    "SCHEMA_VERSION",
    "TABLES",
    "OutputMetadata",
    "column_numpy",
    "empty_hands",
    "empty_objects",
    "hands_schema",
    "hands_table",
    "objects_schema",
    "objects_table",
    "read_file_metadata",
    "rows_by_value",
    "table_schema",
    "videos_schema",
    "videos_table",
]
