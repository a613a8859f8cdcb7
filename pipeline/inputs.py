"""Turning the user's video arguments into a list of inputs with stable, safe ids."""

from __future__ import annotations

import glob
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from hflpipe.pipeline.errors import ConfigError

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class VideoInput:
    """One input: its path, its id in the output, and why it cannot be processed (if so)."""

    path: Path
    video_id: str
    problem: str | None = None


def video_id_for(path: Path) -> str:
    """``<stem>-<8 hex>``: readable, unique per absolute path, and a safe file name.

    The hash keeps ``a/clip.mp4`` and ``b/clip.mp4`` apart; the sanitising keeps a
    name such as ``../../x`` from ever leaving the output directory.
    """
    absolute = str(Path(path).absolute())
    digest = hashlib.sha1(absolute.encode("utf-8", "surrogateescape")).hexdigest()[:8]
    stem = _UNSAFE.sub("_", Path(path).stem).strip("._-")[:80] or "video"
    return f"{stem}-{digest}"


def expand_videos(patterns: list[str]) -> list[VideoInput]:
    """Expand files and glob patterns, in sorted order, each path once.

    A pattern that matches nothing is a configuration error (a typo should not
    produce an empty run); a directory that matches is kept as an input with a
    problem, so that it gets a ``failed`` row rather than vanishing.
    """
    seen: dict[Path, VideoInput] = {}
    for pattern in patterns:
        matches = [pattern]
        if glob.has_magic(pattern):
            matches = sorted(glob.glob(pattern, recursive=True))
            if not matches:
                raise ConfigError(f"videos '{pattern}': no files match")
        for match in matches:
            path = Path(match)
            seen.setdefault(path.absolute(), VideoInput(path, video_id_for(path), _problem(path)))
    return list(seen.values())


def _problem(path: Path) -> str | None:
    if not path.exists():
        return "no such file"
    if path.is_dir():
        return "is a directory, not a video file"
    return None
