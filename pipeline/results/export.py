"""``hflpipe export``: the Parquet output as JSON, NPZ or CSV, for tools that do not read Parquet.

Layouts (one file per video for JSON/NPZ, one file per table for CSV; ``DEST`` is created):

- ``json``: ``DEST/<video_id>.json``::

      {"format": "hflpipe-export", "schema_version": "3", "coordinates": "...",
       "rotation_format": "quaternion_wxyz", "mano_note": "...",
       "video": {videos row},
       "hands":   [{"track_id", "handedness", "frame_index": [n], "timestamp_s": [n],
                    "interpolated": [n], "suspect": [n], "confidence": [n],
                    "joints2d": [n][21][2], "joints3d": [n][21][3],
                    "wrist_position": [n][3],
                    "mano": {"side", "global_orient": [n][3], "hand_pose": [n][45],
                             "betas": [n][10], "transl": [n][3] (with --mano only)}}],
       "objects": [{"track_id", "object_name", "frame_index", "timestamp_s",
                    "interpolated", "suspect", "pose_valid", "keypoints2d": [n][21][2],
                    "rotation_wxyz": [n][4], "rotation_matrix": [n][3][3],
                    "translation": [n][3]}]}

  Track-major: every per-frame list of a track has the same length n. Poses of objects
  without a pose on a frame are null there.
- ``npz``: ``DEST/<video_id>.npz`` with arrays named ``hand<ID>_<field>`` and
  ``object<ID>_<field>`` (the fields above; ``hand<ID>_mano_global_orient`` etc.; poses
  of frames without one are NaN), and ``tracks`` (a JSON string listing the tracks).
- ``csv``: ``DEST/hands.csv``, ``DEST/objects.csv``, ``DEST/videos.csv``: one row per
  table row, arrays spread over columns (``joints3d_4_y``: joint 4's y; ``mano_pose_12``;
  ``rotation_w``, ``translation_x``, ``box_x0``), plus ``mano_transl_x/y/z`` in hands with
  ``--mano``; empty cells are nulls.

MANO parameters per frame are given the way MANO tools (manopth with
``use_pca=False, flat_hand_mean=True``; smplx ``MANO`` with ``use_pca=False,
flat_hand_mean=True``) take them: ``global_orient`` (3, axis-angle) and ``hand_pose``
(45, axis-angle, 15 finger joints in MANO order), ``betas`` (10) and ``transl`` (3, m) such
that the model's output plus ``transl`` is the hand in our camera frame. Left hands are
in the left-hand model's convention (use ``MANO_LEFT.pkl``; smplx users should apply its
usual ``shapedirs`` fix for the left model). ``transl`` depends on the hand model's rest
wrist, so it needs ``--mano``; ``wrist_position`` (the wrist in the camera frame) is always
written.

Coordinates: the OpenCV camera frame (x right, y down, z forward), metres, as in the
Parquet files. For OpenGL-style tools (y up, z backward) negate y and z.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pyarrow as pa

from hflpipe.atomic import atomic_write
from hflpipe.jsonable import to_jsonable
from hflpipe.model.geometry import quaternion_to_matrix
from hflpipe.model.mano_file import load_mano_model
from hflpipe.pipeline.common.errors import InputError, OutputError
from hflpipe.pipeline.output.reader import read_table
from hflpipe.pipeline.output.schema import (
    COORDINATES,
    ROTATION_FORMAT,
    SCHEMA_VERSION,
    column_numpy,
    rows_by_value,
)

FORMATS = ("json", "npz", "csv")
MANO_NOTE = (
    "global_orient (3) + hand_pose (45) axis-angle, flat hand mean, no PCA; betas (10); "
    "model output + transl = camera frame (OpenCV, metres); left hands: MANO_LEFT convention"
)


def rest_wrist(mano: str | Path, betas: np.ndarray) -> np.ndarray:
    """(n, 3) rest-pose wrist (MANO joint 0) of the right-hand model for (n, 10) betas, m."""
    model = load_mano_model(mano)
    regressor = np.asarray(model.J_regressor[0], dtype=np.float64)
    shaped = np.asarray(model.v_template) + np.einsum("vcs,ns->nvc", model.shapedirs, betas)
    return np.einsum("v,nvc->nc", regressor, shaped)


def mano_parameters(hands: pa.Table, mano: str | Path | None) -> dict[str, np.ndarray]:
    """MANO-tool parameters of hands rows: ``global_orient`` (n, 3), ``hand_pose`` (n, 45),
    ``betas`` (n, 10), ``wrist_position`` (n, 3) and, with a MANO file, ``transl`` (n, 3)."""
    pose = column_numpy(hands.column("mano_pose"))
    betas = column_numpy(hands.column("mano_shape"))
    wrist = column_numpy(hands.column("translation"))
    out = {"global_orient": pose[:, :3], "hand_pose": pose[:, 3:], "betas": betas,
           "wrist_position": wrist}
    if mano is not None:
        root = rest_wrist(mano, betas)
        left = np.array([h == "left" for h in hands.column("handedness").to_pylist()], bool)
        # The left model is the right one mirrored in x, its rest wrist too.
        root[left, 0] *= -1.0
        out["transl"] = wrist - root
    return out


def export_output(
    out_dir: str | Path, dest: str | Path, fmt: str, *, mano: str | Path | None = None
) -> list[Path]:
    """Write the export of every finished video of ``out_dir`` into ``dest``; returns files.

    Raises:
        InputError: ``out_dir`` holds no finished video, or an unknown format.
        OutputError: ``dest`` cannot be written.
    """
    if fmt not in FORMATS:
        raise InputError(f"export format {fmt!r}: expected one of {', '.join(FORMATS)}")
    videos = read_table(out_dir, "videos")
    if videos.num_rows == 0:
        raise InputError(f"output directory {out_dir}: no finished videos to export")
    hands = read_table(out_dir, "hands")
    objects = read_table(out_dir, "objects")
    dest = Path(dest)
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create export folder {dest}: {exc.strerror}") from exc
    if fmt == "csv":
        return [
            _write_csv(dest / f"{name}.csv", table, mano if name == "hands" else None)
            for name, table in (("hands", hands), ("objects", objects), ("videos", videos))
        ]
    written = []
    hand_rows, object_rows = rows_by_value(hands["video_id"]), rows_by_value(objects["video_id"])
    none = np.zeros(0, np.int64)
    for video in videos.to_pylist():
        vid = video["video_id"]
        document = {
            "hands": list(_hand_tracks(hands.take(hand_rows.get(vid, none)), mano)),
            "objects": list(_object_tracks(objects.take(object_rows.get(vid, none)))),
        }
        if fmt == "json":
            body = {
                "format": "hflpipe-export", "schema_version": SCHEMA_VERSION,
                "coordinates": COORDINATES, "rotation_format": ROTATION_FORMAT,
                "mano_note": MANO_NOTE, "video": video, **document,
            }
            text = json.dumps(to_jsonable(body), separators=(",", ":"), allow_nan=False)
            written.append(atomic_write(dest / f"{vid}.json",
                                        lambda f, text=text: f.write(text.encode()), OutputError))
        else:
            arrays = _npz_arrays(document)
            arrays["video"] = np.array(json.dumps(to_jsonable(video), allow_nan=False))
            written.append(atomic_write(dest / f"{vid}.npz",
                                        lambda f, arrays=arrays: np.savez_compressed(f, **arrays),
                                        OutputError))
    return written


def _track_parts(table: pa.Table) -> Iterator[tuple[int, pa.Table]]:
    tracks = table.column("track_id").to_numpy()
    frames = table.column("frame_index").to_numpy()
    for track_id in np.unique(tracks):
        rows = np.flatnonzero(tracks == track_id)
        yield int(track_id), table.take(rows[np.argsort(frames[rows], kind="stable")])


def _common(part: pa.Table) -> dict:
    return {
        "frame_index": part.column("frame_index").to_numpy(),
        "timestamp_s": part.column("timestamp_s").to_numpy(),
        "interpolated": part.column("interpolated").to_numpy(zero_copy_only=False),
        "suspect": column_numpy(part.column("suspect")) == 1.0,
    }


def _hand_tracks(hands: pa.Table, mano: str | Path | None) -> Iterator[dict]:
    for track_id, part in _track_parts(hands):
        params = mano_parameters(part, mano)
        handedness = part.column("handedness")[0].as_py()
        mano_block = {"side": handedness, **{k: v for k, v in params.items()
                                             if k != "wrist_position"}}
        yield {
            "track_id": track_id, "handedness": handedness, **_common(part),
            "confidence": column_numpy(part.column("confidence")),
            "joints2d": column_numpy(part.column("joints2d")),
            "joints3d": column_numpy(part.column("joints3d")),
            "wrist_position": params["wrist_position"], "mano": mano_block,
        }


def _object_tracks(objects: pa.Table) -> Iterator[dict]:
    for track_id, part in _track_parts(objects):
        quat = column_numpy(part.column("rotation"))
        matrix = np.full((len(quat), 3, 3), np.nan)
        posed = np.isfinite(quat).all(axis=1)
        matrix[posed] = quaternion_to_matrix(quat[posed])
        yield {
            "track_id": track_id, "object_name": part.column("object_name")[0].as_py(),
            **_common(part),
            "pose_valid": part.column("pose_valid").to_numpy(zero_copy_only=False),
            "keypoints2d": column_numpy(part.column("keypoints2d")),
            "rotation_wxyz": quat, "rotation_matrix": matrix,
            "translation": column_numpy(part.column("translation")),
        }


def _npz_arrays(document: dict) -> dict[str, np.ndarray]:
    arrays: dict[str, np.ndarray] = {}
    index = []
    for kind, key in (("hand", "hands"), ("object", "objects")):
        for track in document[key]:
            prefix = f"{kind}{track['track_id']}_"
            flat = {k: v for k, v in track.items() if isinstance(v, np.ndarray)}
            flat |= {f"mano_{k}": v for k, v in track.get("mano", {}).items()
                     if isinstance(v, np.ndarray)}
            arrays |= {prefix + k: v for k, v in flat.items()}
            index.append({"kind": kind, "track_id": track["track_id"],
                          "label": track.get("handedness") or track.get("object_name"),
                          "frames": len(track["frame_index"])})
    arrays["tracks"] = np.array(json.dumps(index))
    return arrays


def _csv_columns(table: pa.Table, mano: str | Path | None) -> dict[str, list]:
    """Flat CSV columns: fixed-size lists spread out, plus ``mano_transl_*`` for hands."""
    arrays: dict[str, object] = {name: table.column(name) for name in table.column_names}
    if mano is not None and table.num_rows:
        arrays["mano_transl"] = mano_parameters(table, mano)["transl"]
    columns: dict[str, list] = {}
    for name, column in arrays.items():
        if isinstance(column, pa.ChunkedArray) and not pa.types.is_fixed_size_list(column.type):
            columns[name] = [to_jsonable(v) for v in column.to_pylist()]
            continue
        values = column if isinstance(column, np.ndarray) else column_numpy(column)
        for suffix, flat in _spread(name, values):
            columns[name + suffix] = [to_jsonable(v) for v in flat]
    return columns


_NAMED_ENTRIES = {"rotation": "wxyz", "rotation_raw": "wxyz", "box": ("x0", "y0", "x1", "y1"),
                  "translation": "xyz", "translation_raw": "xyz", "mano_transl": "xyz"}


def _spread(name: str, values: np.ndarray) -> Iterator[tuple[str, np.ndarray]]:
    """(column suffix, (n,) values) for every entry of an (n, k) or (n, j, c) array:
    ``_x``/``_w``/``_x0`` for named entries, ``_<k>``, or ``_<j>_<axis>`` for points."""
    shape = values.shape[1:]
    for index in np.ndindex(*shape):
        if len(shape) == 2:
            suffix = f"_{index[0]}_{'xyz'[index[1]]}"
        elif name in _NAMED_ENTRIES:
            suffix = f"_{_NAMED_ENTRIES[name][index[0]]}"
        else:
            suffix = f"_{index[0]}"
        yield suffix, values[(slice(None), *index)]


def _write_csv(path: Path, table: pa.Table, mano: str | Path | None) -> Path:
    columns = _csv_columns(table, mano)
    names = list(columns)

    def write(sink: BinaryIO) -> None:
        text = io.TextIOWrapper(sink, encoding="utf-8", newline="")
        writer = csv.writer(text)
        writer.writerow(names)
        for i in range(table.num_rows):
            writer.writerow(["" if columns[n][i] is None else columns[n][i] for n in names])
        text.flush()
        text.detach()

    return atomic_write(path, write, OutputError)
