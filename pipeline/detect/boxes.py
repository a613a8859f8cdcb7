"""Detections read from a boxes file (JSON, JSON Lines, CSV or Parquet).

The format is documented in ``docs/boxes-format.md``. The whole file is read
and checked once, column by column; a detector for one video then answers
frame queries with a binary search over the rows sorted by frame index.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, fields
from functools import cached_property
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.json as pa_json
import pyarrow.parquet as pq

from hflpipe.pipeline.common.errors import InputError
from hflpipe.pipeline.detect.base import Detection

logger = logging.getLogger(__name__)

REQUIRED_COLUMNS = ("frame_index", "kind", "x0", "y0", "x1", "y1")
OPTIONAL_COLUMNS = ("score", "handedness", "object_name", "track_id", "video")
_STRING_COLUMNS = ("kind", "handedness", "object_name", "video")
_KINDS = ("hand", "object")
_HANDEDNESS = ("left", "right")
_NO_TRACK = -1
#: Largest frame index or track id taken: beyond 2**53 a float64 (CSV, JSON numbers)
#: no longer holds every integer, and int64 wraps a little further.
_MAX_INTEGER = 2**53


def _read_table(path: Path) -> pa.Table:
    suffix = path.suffix.lower()
    try:
        if suffix == ".json":
            return _read_json_array(path)
        if suffix in (".jsonl", ".ndjson"):
            return pa_json.read_json(path)
        if suffix == ".csv":
            # Names such as "001" must stay strings, not become the integer 1; an
            # empty cell is a missing value, not the empty string.
            types = {name: pa.string() for name in _STRING_COLUMNS}
            options = pa_csv.ConvertOptions(column_types=types, strings_can_be_null=True)
            return pa_csv.read_csv(path, convert_options=options)
        if suffix in (".parquet", ".pq"):
            return pq.read_table(path)
    except FileNotFoundError:
        raise InputError(f"boxes file {path}: not found") from None
    except (pa.ArrowException, OSError, UnicodeDecodeError) as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise InputError(f"boxes file {path}: cannot be read: {first_line}") from err
    raise InputError(
        f"boxes file {path}: unknown format {suffix!r} "
        "(use .json, .jsonl, .ndjson, .csv, .parquet or .pq)"
    )


def _read_json_array(path: Path) -> pa.Table:
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise InputError(f"boxes file {path}: not valid JSON: {err}") from None
    if not isinstance(rows, list):
        raise InputError(f"boxes file {path}: expected a JSON list of row objects")
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise InputError(f"boxes file {path}: row {i + 1}: expected an object, got {row!r}")
    names = dict.fromkeys(key for row in rows for key in row)
    columns = {}
    for name in names:
        values = [row.get(name) for row in rows]
        try:
            columns[name] = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
            columns[name] = pa.array([None if v is None else str(v) for v in values])
    return pa.table(columns) if columns else pa.table({name: [] for name in REQUIRED_COLUMNS})


def _first_bad(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


def _row_error(path: Path, row: int, problem: str) -> InputError:
    return InputError(f"boxes file {path}: row {row + 1}: {problem}")


def _numeric(table: pa.Table, name: str, path: Path) -> np.ndarray:
    """The column as float64; nulls become NaN. Text that is not a number is an error."""
    column = table.column(name)
    if pa.types.is_null(column.type):
        return np.full(len(column), np.nan)
    if pa.types.is_integer(column.type) or pa.types.is_floating(column.type):
        return column.cast(pa.float64()).to_numpy(zero_copy_only=False)
    if pa.types.is_boolean(column.type) or not (
        pa.types.is_string(column.type) or pa.types.is_large_string(column.type)
    ):
        raise InputError(f"boxes file {path}: column {name!r} must be numeric, not {column.type}")
    values = column.to_pylist()
    out = np.full(len(values), np.nan)
    for i, text in enumerate(values):
        if text is None:
            continue
        try:
            out[i] = float(text)
        except ValueError:
            raise _row_error(path, i, f"{name} {text!r} is not a number") from None
    return out


def _strings(table: pa.Table, name: str, path: Path) -> np.ndarray:
    """The column as an object array of str or None."""
    column = table.column(name)
    if not (
        pa.types.is_string(column.type)
        or pa.types.is_large_string(column.type)
        or pa.types.is_null(column.type)
    ):
        column = column.cast(pa.string())
    return np.array(column.to_pylist(), dtype=object)


def _text_codes(column: np.ndarray) -> np.ndarray:
    """(M,) int64: equal texts get equal codes, None gets -1 (Arrow's encoding is fast)."""
    encoded = pa.array(column, pa.string()).dictionary_encode().indices
    return pc.fill_null(encoded, -1).to_numpy(zero_copy_only=False).astype(np.int64)


def _integers(table: pa.Table, name: str, path: Path, *, required: bool) -> np.ndarray:
    """The column as int64 (>= 0); a missing value is -1, or an error when required."""
    values = _numeric(table, name, path)
    missing = np.isnan(values)
    if required and missing.any():
        raise _row_error(path, _first_bad(missing), f"{name} is missing")
    bad = ~missing & ((values != np.round(values)) | (values < 0) | ~np.isfinite(values))
    if bad.any():
        i = _first_bad(bad)
        raise _row_error(path, i, f"{name} {values[i]:g} is not a non-negative integer")
    huge = ~missing & (values > _MAX_INTEGER)
    if huge.any():
        i = _first_bad(huge)
        raise _row_error(path, i, f"{name} {values[i]:g} is too large (at most 2**53)")
    return np.where(missing, _NO_TRACK, values).astype(np.int64)


@dataclass(frozen=True)
class BoxesFile:
    """The checked rows of a boxes file, one entry per box, sorted by frame index.

    Attributes:
        path: the file the rows came from.
        frame_index: (M,) int64.
        is_hand: (M,) bool, False for objects.
        boxes: (M, 4) float32 xyxy in frame pixels.
        score: (M,) float32 in [0, 1].
        handedness: (M,) object array of "left"/"right"/None.
        object_name: (M,) object array of str/None.
        track_id: (M,) int64, -1 where the file gives none.
        video: (M,) object array of str/None, or None when the file has no video column.
    """

    path: Path
    frame_index: np.ndarray
    is_hand: np.ndarray
    boxes: np.ndarray
    score: np.ndarray
    handedness: np.ndarray
    object_name: np.ndarray
    track_id: np.ndarray
    video: np.ndarray | None

    @classmethod
    def load(cls, path: str | Path) -> BoxesFile:
        """Read and check a boxes file; raises ``InputError`` naming the first bad row."""
        path = Path(path)
        table = _read_table(path)
        repeated = [n for i, n in enumerate(table.column_names) if n in table.column_names[:i]]
        if repeated:
            raise InputError(f"boxes file {path}: column '{repeated[0]}' appears twice")
        missing = [name for name in REQUIRED_COLUMNS if name not in table.column_names]
        if missing:
            raise InputError(f"boxes file {path}: missing column(s) {', '.join(missing)}")
        unknown = sorted(set(table.column_names) - set(REQUIRED_COLUMNS) - set(OPTIONAL_COLUMNS))
        if unknown:
            logger.warning("boxes file %s: ignoring unknown column(s) %s", path, ", ".join(unknown))
        rows = table.num_rows

        frame_index = _integers(table, "frame_index", path, required=True)
        kinds = _strings(table, "kind", path)
        known_kind = np.isin(kinds, _KINDS)
        if not known_kind.all():
            i = _first_bad(~known_kind)
            raise _row_error(path, i, f"unknown kind {kinds[i]!r} (expected 'hand' or 'object')")
        is_hand = kinds == "hand"

        boxes = np.stack([_numeric(table, n, path) for n in ("x0", "y0", "x1", "y1")], axis=1)
        if rows:
            not_finite = ~np.isfinite(boxes).all(axis=1)
            if not_finite.any():
                i = _first_bad(not_finite)
                box = boxes[i].tolist()
                raise _row_error(path, i, f"box {box} has a missing or infinite value")
            for lo, hi, axis in ((0, 2, "x"), (1, 3, "y")):
                empty = boxes[:, hi] <= boxes[:, lo]
                if empty.any():
                    i = _first_bad(empty)
                    raise _row_error(
                        path, i, f"{axis}1 ({boxes[i, hi]:g}) must be greater than {axis}0 "
                        f"({boxes[i, lo]:g})"
                    )

        score = np.ones(rows)
        if "score" in table.column_names:
            given = _numeric(table, "score", path)
            score = np.where(np.isnan(given), 1.0, given)
            out_of_range = (score < 0) | (score > 1) | ~np.isfinite(score)
            if out_of_range.any():
                i = _first_bad(out_of_range)
                raise _row_error(path, i, f"score {score[i]:g} is outside [0, 1]")

        handedness = np.full(rows, None, dtype=object)
        if "handedness" in table.column_names:
            handedness = _strings(table, "handedness", path)
            given = handedness != None  # noqa: E711 -- elementwise test on an object array
            bad = given & ~np.isin(handedness, _HANDEDNESS)
            if bad.any():
                i = _first_bad(bad)
                raise _row_error(path, i, f"handedness {handedness[i]!r} is not 'left' or 'right'")
            on_object = given & ~is_hand
            if on_object.any():
                raise _row_error(path, _first_bad(on_object), "handedness given on an object row")

        object_name = np.full(rows, None, dtype=object)
        if "object_name" in table.column_names:
            object_name = _strings(table, "object_name", path)
            on_hand = (object_name != None) & is_hand  # noqa: E711 -- elementwise on objects
            if on_hand.any():
                raise _row_error(path, _first_bad(on_hand), "object_name given on a hand row")

        track_id = np.full(rows, _NO_TRACK, dtype=np.int64)
        if "track_id" in table.column_names:
            track_id = _integers(table, "track_id", path, required=False)

        video = _strings(table, "video", path) if "video" in table.column_names else None

        order = np.argsort(frame_index, kind="stable")
        loaded = cls(
            path=path,
            frame_index=frame_index[order],
            is_hand=is_hand[order],
            boxes=boxes[order].astype(np.float32),
            score=score[order].astype(np.float32),
            handedness=handedness[order],
            object_name=object_name[order],
            track_id=track_id[order],
            video=None if video is None else video[order],
        )
        first = loaded._first_of_each_row()
        if len(first) < rows:
            # A row written twice is one box, not two: the tracker would make a phantom track.
            logger.warning("boxes file %s: %d rows repeat an earlier row exactly and are "
                           "ignored", path, rows - len(first))
            order, loaded = order[first], loaded._take(first)
        loaded._check_unique_tracks(order)
        return loaded

    def _first_of_each_row(self) -> np.ndarray:
        """Positions of the rows that do not repeat an earlier row exactly, ascending."""
        texts = [self.handedness, self.object_name]
        if self.video is not None:
            texts.append(self.video)
        codes = [_text_codes(column) for column in texts]
        keys = np.column_stack([
            self.frame_index, self.is_hand, self.track_id, *codes,
            self.boxes.view(np.int32), self.score.view(np.int32),
        ])
        # A stable sort on every column puts equal rows next to each other, first one first.
        order = np.lexsort(keys.T[::-1])
        ordered = keys[order]
        repeats = np.zeros(len(order), dtype=bool)
        repeats[1:] = (ordered[1:] == ordered[:-1]).all(axis=1)
        return np.sort(order[~repeats])

    def _take(self, rows: np.ndarray) -> BoxesFile:
        """These rows (positions, ascending, so still frame-sorted) as a boxes file."""
        columns = {f.name: getattr(self, f.name) for f in fields(self)[1:]}
        return BoxesFile(self.path, **{name: None if values is None else values[rows]
                                       for name, values in columns.items()})

    def scored_at_least(self, threshold: float) -> BoxesFile:
        """The rows whose score is at least ``threshold``."""
        keep = self.score >= np.float32(threshold)
        return self if keep.all() else self._take(np.flatnonzero(keep))

    def _check_unique_tracks(self, order: np.ndarray) -> None:
        """A track id names one box per frame and kind (per video)."""
        has_id = self.track_id != _NO_TRACK
        if not has_id.any():
            return
        video = self.video if self.video is not None else np.full(len(self.track_id), "")
        video_codes = np.unique(video.astype(str), return_inverse=True)[1]
        keys = np.stack(
            [video_codes, self.frame_index, self.is_hand.astype(np.int64), self.track_id], axis=1
        )[has_id]
        _, first, counts = np.unique(keys, axis=0, return_index=True, return_counts=True)
        if (counts > 1).any():
            duplicate = keys[first[np.argmax(counts > 1)]]
            rows = np.flatnonzero(has_id)[np.flatnonzero((keys == duplicate).all(axis=1))]
            original = np.sort(order[rows])
            raise _row_error(
                self.path,
                int(original[1]),
                f"track_id {duplicate[3]} already used on frame {duplicate[1]} "
                f"(row {original[0] + 1})",
            )

    @cached_property
    def _rows_by_name(self) -> dict[str, np.ndarray]:
        """``video`` value -> its row indices, ascending; grouped once for all videos."""
        if self.video is None:
            return {}
        names = self.video.astype(str)
        order = np.argsort(names, kind="stable")
        unique, starts = np.unique(names[order], return_index=True)
        groups = np.split(order, starts[1:])
        return {str(name): np.sort(rows) for name, rows in zip(unique, groups, strict=True)}

    def rows_for(self, video: str | Path) -> BoxesFile:
        """The rows of ``video`` alone (matched by file name or stem), as a boxes file.

        A file without a ``video`` column is returned whole: its rows belong to every
        video. What a video task gets, so that it never receives the other videos' rows.
        """
        if self.video is None:
            return self
        video = Path(video)
        keys = dict.fromkeys([video.name, video.stem])
        parts = [self._rows_by_name.get(key, np.zeros(0, np.int64)) for key in keys]
        return self._take(np.unique(np.concatenate(parts)))

    def unmatched_names(self, videos: list[str | Path]) -> list[str]:
        """The ``video`` values that name none of ``videos`` (paths or URLs; by file name or
        stem), sorted."""
        known = {name for video in map(Path, videos) for name in (video.name, video.stem)}
        return sorted(set(self._rows_by_name) - known)

    def digest(self) -> str:
        """SHA-256 of the checked rows: equal for files whose boxes are the same."""
        return self._digest

    @cached_property
    def _digest(self) -> str:
        # Once per file: every video of a file without a 'video' column shares it whole.
        digest = hashlib.sha256()
        for name in ("frame_index", "is_hand", "boxes", "score", "track_id"):
            digest.update(np.ascontiguousarray(getattr(self, name)).tobytes())
        texts = [self.handedness.tolist(), self.object_name.tolist()]
        digest.update(json.dumps(texts).encode())
        return digest.hexdigest()

    def for_video(self, video: str | Path | None) -> BoxesFileDetector:
        """A detector over the rows of one video.

        Rows match when their ``video`` equals the video's file name or stem. When
        the file has no ``video`` column, every row belongs to every video.
        """
        if self.video is None:
            return BoxesFileDetector(self, np.arange(len(self.frame_index)))
        if video is None:
            raise InputError(
                f"boxes file {self.path}: has a 'video' column, so the video must be named"
            )
        video = Path(video)
        rows = np.flatnonzero(np.isin(self.video, [video.name, video.stem]))
        if rows.size == 0:
            logger.warning("boxes file %s: no rows for video %s", self.path, video.name)
        return BoxesFileDetector(self, rows)


class BoxesFileDetector:
    """The boxes of one video from a boxes file; does not look at frames."""

    name = "boxes"
    needs_frames = False

    def __init__(self, boxes: BoxesFile, rows: np.ndarray) -> None:
        """``rows``: indices into ``boxes`` of this video's rows, ascending (so frame-sorted)."""
        self._boxes = boxes
        self._rows = rows
        self._frames = boxes.frame_index[rows]

    def detect(
        self, indices: np.ndarray, timestamps_s: np.ndarray, frames: np.ndarray | None
    ) -> list[list[Detection]]:
        """The file's boxes on frames ``indices`` (N,); timestamps and frames are unused."""
        indices = np.asarray(indices, dtype=np.int64)
        starts = np.searchsorted(self._frames, indices, side="left")
        stops = np.searchsorted(self._frames, indices, side="right")
        return [
            [self._detection(int(row)) for row in self._rows[start:stop]]
            for start, stop in zip(starts, stops, strict=True)
        ]

    def _detection(self, row: int) -> Detection:
        b = self._boxes
        track = int(b.track_id[row])
        return Detection(
            kind="hand" if b.is_hand[row] else "object",
            box=b.boxes[row].copy(),
            score=float(b.score[row]),
            handedness=b.handedness[row],
            object_name=b.object_name[row],
            track_id=None if track == _NO_TRACK else track,
        )

    def close(self) -> None:
        """Nothing to release."""
