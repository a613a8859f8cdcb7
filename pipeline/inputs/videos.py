"""Turning the user's video arguments into a list of inputs with stable, safe ids.

Three sources, combined in :func:`collect_inputs`: file names and glob patterns, a
list file (one name or pattern a line) and a manifest (a table of videos, each with
its own object, intrinsics and boxes file).
"""

from __future__ import annotations

import csv
import glob
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

from hflpipe.model.control_points import load_control_points
from hflpipe.pipeline.common import storage
from hflpipe.pipeline.common.errors import ConfigError, InputError, one_line
from hflpipe.pipeline.common.storage import Location
from hflpipe.pipeline.config.run_config import is_object_file, looks_like_values
from hflpipe.pipeline.inputs.camera import intrinsics_from_mapping, parse_intrinsics
from hflpipe.pipeline.inputs.objects import control_points_from_file_checked

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")

#: Manifest columns: ``video`` is required, the others override the run's value per video.
MANIFEST_COLUMNS = ("video", "object", "intrinsics", "boxes")


@dataclass(frozen=True)
class VideoInput:
    """One input: its path, its id in the output, why it cannot be processed (if so), and
    the manifest's per-video overrides of the run's ``object``, ``intrinsics`` and ``boxes``.
    """

    path: Location
    video_id: str
    problem: str | None = None
    object: str | None = None
    intrinsics: str | None = None
    boxes: Location | None = None

    def overrides(self) -> dict[str, str]:
        """The per-video overrides that are set, as strings (for hashing and display)."""
        values = {"object": self.object, "intrinsics": self.intrinsics, "boxes": self.boxes}
        return {k: str(v) for k, v in values.items() if v is not None}


def video_id_for(path: Location) -> str:
    """``<stem>-<8 hex>``: readable, unique per absolute path, and a safe file name.

    The hash keeps ``a/clip.mp4`` and ``b/clip.mp4`` apart; the sanitising keeps a
    name such as ``../../x`` from ever leaving the output directory.
    """
    absolute = storage.identity(path)
    digest = hashlib.sha1(absolute.encode("utf-8", "surrogateescape")).hexdigest()[:8]
    stem = _UNSAFE.sub("_", Path(storage.name_of(path)).stem).strip("._-")[:80] or "video"
    return f"{stem}-{digest}"


def collect_inputs(
    videos: list[str], video_list: Location | None = None, manifest: Location | None = None,
    *, out: Location | None = None,
) -> list[VideoInput]:
    """Every input of a run: manifest rows first, then ``videos`` and the list file's lines.

    A video named twice is kept once; a manifest row wins, since it carries overrides.
    Nothing inside ``out`` (the run's output folder) is ever an input: a broad glob such
    as ``data/**`` would otherwise feed the run its own files, more with every run.
    """
    inputs = read_manifest(manifest) if manifest else []
    patterns = list(videos)
    if video_list:
        patterns += read_video_list(video_list)
    seen = {storage.identity(video.path) for video in inputs}
    for video in expand_videos(patterns, out=out) if patterns else []:
        if storage.identity(video.path) not in seen:
            inputs.append(video)
    if out is not None and any(_inside(video.path, out) for video in inputs):
        inside = next(video.path for video in inputs if _inside(video.path, out))
        raise ConfigError(f"video {inside}: is inside the output folder {out}")
    return inputs


def expand_videos(patterns: list[str], *, out: Location | None = None) -> list[VideoInput]:
    """Expand files and glob patterns, in sorted order, each path once.

    A name that exists is that file, even when it holds glob characters (``take[1].mp4``).
    A pattern that matches nothing is a configuration error (a typo should not produce an
    empty run); matches inside ``out`` are left out. A directory that matches is kept as
    an input with a problem, so that it gets a ``failed`` row rather than vanishing.
    """
    seen: dict[str, VideoInput] = {}
    for pattern in patterns:
        matches = [pattern]
        if glob.has_magic(pattern) and not _exists(pattern):
            found = _matches(pattern)
            matches = [m for m in found if out is None or not _inside(m, out)]
            if not matches:
                where = " outside the output folder" if found else ""
                raise ConfigError(f"videos '{storage.describe(pattern)}': no files match{where}")
        for match in matches:
            path = storage.as_location(match)
            seen.setdefault(storage.identity(path),
                            VideoInput(path, video_id_for(path), _problem(path)))
    return list(seen.values())


def _matches(pattern: str) -> list[str]:
    if storage.is_url(pattern):
        try:
            return storage.glob(pattern)
        except InputError as exc:
            raise ConfigError(f"videos: {exc}") from None
    return sorted(glob.glob(pattern, recursive=True))


def _exists(name: str) -> bool:
    """Whether ``name`` names an existing file (or local folder) as it is spelt."""
    return storage.is_file(name) if storage.is_url(name) else Path(name).exists()


def _inside(location: Location, folder: Location) -> bool:
    if storage.is_url(location) or storage.is_url(folder):
        return storage.identity(location).startswith(storage.identity(folder).rstrip("/") + "/")
    return Path(location).resolve().is_relative_to(Path(folder).resolve())


def read_video_list(path: Location) -> list[str]:
    """Names or glob patterns from a text file, one a line; ``#`` starts a comment line.

    Relative names are relative to the list file's folder, so the list can travel with
    the videos.
    """
    try:
        lines = storage.read_text(path).splitlines()
    except InputError as exc:
        raise ConfigError(f"video list {exc}") from None
    names = [line.strip() for line in lines]
    patterns = [_beside(path, name) for name in names if name and not name.startswith("#")]
    if not patterns:
        raise ConfigError(f"video list {path}: names no videos")
    return patterns


def read_manifest(path: Location) -> list[VideoInput]:
    """Read a manifest (``.csv``, ``.json`` list of objects, or ``.jsonl``); checks every row.

    Columns: ``video`` (required) and optional ``object`` (YCB name or mesh/point file),
    ``intrinsics`` (``"fx,fy,cx,cy"``, a JSON file, or in JSON an object with fx/fy/cx/cy
    or K) and ``boxes`` (a boxes file). Empty cells mean "use the run's value". Relative
    paths are relative to the manifest's folder. Raises ConfigError naming the row.
    """
    path = storage.as_location(path)
    rows = _manifest_rows(path)
    if not rows:
        raise ConfigError(f"manifest {path}: has no rows")
    inputs: list[VideoInput] = []
    seen: set[str] = set()
    known_objects: set[str] = set()
    for number, row in enumerate(rows, start=1):
        where = f"manifest {path}: row {number}"
        unknown = sorted(set(row) - set(MANIFEST_COLUMNS))
        if unknown:
            raise ConfigError(f"{where}: unknown column '{unknown[0]}' "
                              f"(expected {', '.join(MANIFEST_COLUMNS)})")
        values = {k: _cell(row.get(k), f"{where}: {k}") for k in ("video", "object", "boxes")}
        if values["video"] is None:
            raise ConfigError(f"{where}: 'video' is empty")
        video = storage.as_location(_beside(path, values["video"]))
        if storage.identity(video) in seen:
            raise ConfigError(f"{where}: video {video} is listed twice")
        seen.add(storage.identity(video))
        obj = _manifest_object(path, values["object"], where, known_objects)
        intrinsics = _manifest_intrinsics(path, row.get("intrinsics"), where)
        boxes = storage.as_location(_beside(path, values["boxes"])) if values["boxes"] else None
        if boxes is not None and not storage.is_file(boxes):
            raise ConfigError(f"{where}: boxes file not found: {boxes}")
        inputs.append(VideoInput(video, video_id_for(video), _problem(video), obj, intrinsics,
                                 boxes))
    return inputs


def _manifest_rows(path: Location) -> list[dict]:
    suffix = Path(storage.name_of(path)).suffix.lower()
    try:
        text = storage.read_text(path)
        if suffix == ".csv":
            reader = csv.DictReader(text.splitlines())
            if reader.fieldnames is None or "video" not in reader.fieldnames:
                raise ConfigError(f"manifest {path}: needs a header with a 'video' column")
            return [dict(row) for row in reader]
        if suffix == ".json":
            rows = json.loads(text)
        elif suffix in (".jsonl", ".ndjson"):
            rows = [json.loads(line) for line in text.splitlines() if line.strip()]
        else:
            raise ConfigError(f"manifest {path}: unknown format '{suffix}' (use .csv, .json "
                              "or .jsonl)")
    except InputError as exc:
        raise ConfigError(f"manifest {exc}") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"manifest {path}: cannot be read: {_cause(exc)}") from None
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise ConfigError(f"manifest {path}: expected a list of objects, one per video")
    return rows


def _cell(value: object, where: str) -> str | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if not isinstance(value, str):
        raise ConfigError(f"{where}: expected text, got {type(value).__name__}")
    return value.strip()


def _manifest_object(manifest: Location, value: str | None, where: str, known: set[str]
                     ) -> str | None:
    if value is None:
        return None
    if is_object_file(value):
        file = _beside(manifest, value)
        if not storage.is_file(file):
            raise ConfigError(f"{where}: object mesh/point file not found: {file}")
        if str(file) not in known:
            try:
                control_points_from_file_checked(file)
            except InputError as exc:
                raise ConfigError(f"{where}: {exc}") from None
            known.add(str(file))
        return str(file)
    if value not in known:
        try:
            load_control_points(value)
        except ValueError as exc:
            raise ConfigError(f"{where}: object '{value}': {exc}") from None
        known.add(value)
    return value


def _manifest_intrinsics(manifest: Location, value: object, where: str) -> str | None:
    """Check a row's intrinsics now; returns them as 'fx,fy,cx,cy' or a file path."""
    if isinstance(value, dict):
        try:
            K = intrinsics_from_mapping(value, where).K
        except InputError as exc:
            raise ConfigError(str(exc)) from None
        return ",".join(repr(float(K[i, j])) for i, j in ((0, 0), (1, 1), (0, 2), (1, 2)))
    text = _cell(value, f"{where}: intrinsics")
    if text is None:
        return None
    spec = text if looks_like_values(text) else _beside(manifest, text)
    try:
        storage.load_named(spec, parse_intrinsics) if storage.is_url(spec) else parse_intrinsics(
            spec)
    except InputError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    return spec


def _beside(anchor: Location, name: str) -> str:
    """``name`` with ``~`` expanded, relative names joined to ``anchor``'s folder."""
    return str(storage.beside(anchor, name))


def _cause(exc: BaseException) -> str:
    # An OSError's strerror leaves out the path, which the message names already.
    return one_line(getattr(exc, "strerror", None) or exc)


def _problem(path: Location) -> str | None:
    # A remote video is checked by the task that reads it: one request per video here
    # would make planning a 100,000-video archive slow.
    if storage.is_url(path):
        return None
    if not path.exists():
        return "no such file"
    if path.is_dir():
        return "is a directory, not a video file"
    return None
