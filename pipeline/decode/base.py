"""The decoder interface: video metadata, chunks of RGB frames, and backend selection.

Two backends implement :class:`Decoder`: ``"pyav"`` (the default,
:mod:`hflpipe.pipeline.decode.pyav_backend`), which decodes every frame from the start,
and ``"decord"`` (:mod:`hflpipe.pipeline.decode.decord_backend`), which seeks to
keyframes and so is the faster one for selections sparser than the keyframe
interval, but re-decodes from the keyframe to keep its memory bounded. Both
number frames in presentation order from 0, give container presentation times
in seconds (the first frame at its real pts, which need not be 0), and hold at
most ``chunk_size`` frames in memory at once.

Frames are those a player shows, as it shows them: of the video stream a player
picks (cover art skipped, the default stream first, then the largest; or the
stream asked for), frames an edit list hides left out, and turned by the
container's display matrix (rotation and mirror, see
:mod:`hflpipe.pipeline.decode.orientation`). Widths, heights and pixel
coordinates everywhere downstream are those of the displayed frame.

A video whose tail cannot be decoded is read up to the first bad frame; the
chunks then simply end early (a warning is logged), so the frames a caller
receives are the truth, whatever the container's index claims.
"""

from __future__ import annotations

import logging
import os
import re
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow.fs as pafs

from hflpipe.pipeline.common import storage
from hflpipe.pipeline.common.errors import ConfigError, InputError, one_line

logger = logging.getLogger(__name__)

BACKENDS = ("decord", "pyav")
DEFAULT_BACKEND = "pyav"


class DecodeError(InputError):
    """A video cannot be decoded; the message is one line ``"<path>: <cause>"``."""


@dataclass(frozen=True)
class VideoInfo:
    """What a decoder learned about a video.

    ``num_frames`` is the backend's own count (decord: its index; PyAV: the
    packets it could demux); a damaged tail can make it larger than the
    frames that actually decode. ``fps`` is the container's average rate and
    ``duration_s = num_frames / fps``. ``variable_frame_rate`` is true when
    the gaps between presentation times differ by more than timestamp rounding.
    ``width`` and ``height`` are those of the displayed frame; ``rotation_deg``
    (clockwise, 0/90/180/270) and ``mirrored`` (left-right, after the rotation) say how
    stored frames were turned to get it. ``stream_index``: the decoded stream's index
    among all the container's streams.
    """

    path: str
    num_frames: int
    fps: float
    width: int
    height: int
    duration_s: float
    backend: str
    variable_frame_rate: bool
    stream_index: int = 0
    rotation_deg: int = 0
    mirrored: bool = False


@dataclass(frozen=True)
class FrameChunk:
    """Consecutive decoded frames, in presentation order.

    ``indices``: ``(n,)`` int64 frame numbers (0 = first frame of the video).
    ``timestamps_s``: ``(n,)`` float64 presentation times in seconds.
    ``frames``: ``(n, H, W, 3)`` uint8 RGB.
    """

    indices: np.ndarray
    timestamps_s: np.ndarray
    frames: np.ndarray

    def __len__(self) -> int:
        return len(self.indices)


class Decoder(ABC):
    """A video decoding backend. ``threads``: decoding threads (0 lets the library choose);
    ``stream``: the index (among all the container's streams) of the video stream to
    decode, None for the one a player would show.

    Backends implement :meth:`probe` and :meth:`_read_selected`; :meth:`read_chunks` checks
    its arguments here, so that both backends refuse the same ones the same way.
    """

    name: str

    def __init__(self, threads: int = 0, stream: int | None = None) -> None:
        self.threads = threads
        self.stream = stream

    @abstractmethod
    def probe(self, path: str) -> VideoInfo:
        """Read the metadata of ``path``; raise :class:`DecodeError` if it is no usable video."""

    def read_chunks(
        self,
        path: str,
        *,
        chunk_size: int = 64,
        stride: int = 1,
        start_s: float | None = None,
        end_s: float | None = None,
        frame_indices: Sequence[int] | None = None,
    ) -> Iterator[FrameChunk]:
        """Yield the selected frames of ``path`` in chunks of at most ``chunk_size``.

        Selection (see :class:`FrameSelector`): frames with
        ``start_s <= timestamp < end_s``, then every ``stride``-th of those
        starting with the first; or exactly ``frame_indices`` (sorted, unique),
        which excludes the other three.
        """
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        selector = FrameSelector(
            stride=stride, start_s=start_s, end_s=end_s, frame_indices=frame_indices
        )
        return self._read_selected(path, chunk_size, selector)

    @abstractmethod
    def _read_selected(
        self, path: str, chunk_size: int, selector: FrameSelector
    ) -> Iterator[FrameChunk]:
        """The frames ``selector`` takes from ``path``, in chunks of at most ``chunk_size``.

        A file that cannot be opened may raise :class:`DecodeError` here, at the call,
        rather than at the first chunk.
        """


def get_decoder(name: str = DEFAULT_BACKEND, threads: int = 0,
                stream: int | None = None) -> Decoder:
    """Return the backend called ``name`` (``"decord"`` or ``"pyav"``) decoding with
    ``threads`` threads (0 lets the library choose: about one per core of the machine),
    reading video stream ``stream`` (None: the one a player would show)."""
    if name == "decord":
        from hflpipe.pipeline.decode.decord_backend import DecordDecoder

        return DecordDecoder(threads, stream)
    if name == "pyav":
        from hflpipe.pipeline.decode.pyav_backend import PyAVDecoder

        return PyAVDecoder(threads, stream)
    raise ConfigError(f"decoder {name!r}: unknown backend; expected one of {', '.join(BACKENDS)}")


# FFmpeg and decord prefix messages with "[hh:mm:ss] file.cc:123: "; the user
# needs the cause, not where in C++ it surfaced.
_SOURCE_PREFIX = re.compile(r"\[\d\d:\d\d:\d\d\]\s+\S+:\d+:\s*")


def decode_error(path: str, cause: str | BaseException) -> DecodeError:
    """Build a :class:`DecodeError` whose message is the single line ``"<path>: <cause>"``."""
    text = str(cause)
    text = text.split("Stack trace", 1)[0]
    text = _SOURCE_PREFIX.sub("", text)
    return DecodeError(f"{path}: {one_line(text) or type(cause).__name__}")


def check_video_path(path: str | os.PathLike[str]) -> str:
    """Refuse paths no backend could read, before a native library sees them.

    Returns ``path`` as a string. Decord aborts or hangs on some of these, so
    the cheap checks come first.
    """
    path = os.fspath(path)
    if storage.is_url(path):
        return _check_remote_video(path)
    if not os.path.exists(path):
        raise decode_error(path, "no such file")
    if os.path.isdir(path):
        raise decode_error(path, "is a directory, not a video file")
    if not os.path.isfile(path):
        raise decode_error(path, "not a regular file")
    if not os.access(path, os.R_OK):
        raise decode_error(path, "permission denied (file is not readable)")
    if os.path.getsize(path) == 0:
        raise decode_error(path, "empty file (0 bytes)")
    return path


def _check_remote_video(url: str) -> str:
    """:func:`check_video_path` for a store URL: one metadata request."""
    info = storage.file_info(url)
    if info.type == pafs.FileType.NotFound:
        raise decode_error(url, "no such file")
    if info.type != pafs.FileType.File:
        raise decode_error(url, "not a file")
    if not info.size:
        raise decode_error(url, "empty file (0 bytes)")
    return url


class FrameSelector:
    """Decides, frame by frame in presentation order, which frames a read returns.

    Both backends feed it every frame ``(index, timestamp_s)`` in order, so
    they select the same frames. Invalid arguments raise ``ValueError``.
    """

    def __init__(
        self,
        *,
        stride: int = 1,
        start_s: float | None = None,
        end_s: float | None = None,
        frame_indices: Sequence[int] | None = None,
    ) -> None:
        if stride < 1:
            raise ValueError(f"stride must be >= 1, got {stride}")
        if start_s is not None and end_s is not None and end_s <= start_s:
            raise ValueError(f"end_s ({end_s}) must be after start_s ({start_s})")
        self._wanted: np.ndarray | None = None
        if frame_indices is not None:
            if stride != 1 or start_s is not None or end_s is not None:
                raise ValueError("frame_indices cannot be combined with stride, start_s or end_s")
            wanted = np.asarray(frame_indices, dtype=np.int64)
            if wanted.ndim != 1 or (wanted.size and wanted[0] < 0):
                raise ValueError("frame_indices must be a flat sequence of indices >= 0")
            if np.any(np.diff(wanted) <= 0):
                raise ValueError("frame_indices must be sorted and unique")
            self._wanted = wanted
        self._stride = stride
        self._start_s = start_s
        self._end_s = end_s
        self._in_window = 0
        self._next_wanted = 0

    def finished(self, index: int, timestamp_s: float) -> bool:
        """True once no frame at or after this one can be selected (the read may stop)."""
        if self._wanted is not None:
            return self._next_wanted >= len(self._wanted)
        return self._end_s is not None and timestamp_s >= self._end_s

    def take(self, index: int, timestamp_s: float) -> bool:
        """Whether to return this frame; call once per frame, in presentation order."""
        if self._wanted is not None:
            if self._next_wanted < len(self._wanted) and index == self._wanted[self._next_wanted]:
                self._next_wanted += 1
                return True
            return False
        if self._start_s is not None and timestamp_s < self._start_s:
            return False
        if self._end_s is not None and timestamp_s >= self._end_s:
            return False
        selected = self._in_window % self._stride == 0
        self._in_window += 1
        return selected

    @property
    def may_pass_over_leading_frames(self) -> bool:
        """Whether frames at the start can go unselected (a start time, or indices after 0)."""
        if self._wanted is not None:
            return bool(len(self._wanted)) and self._wanted[0] > 0
        return self._start_s is not None and self._start_s > 0

    def first_candidate(self, timestamps_s: np.ndarray) -> int:
        """Position in a sorted timestamp table ``(n,)`` of the first frame that could be
        selected; every frame before it would be passed over."""
        if self._wanted is not None:
            return int(self._wanted[0]) if len(self._wanted) else len(timestamps_s)
        if self._start_s is not None:
            return int(np.searchsorted(timestamps_s, self._start_s, side="left"))
        return 0

    def select(self, timestamps_s: np.ndarray) -> np.ndarray:
        """Indices ``(m,)`` int64 selected from a full timestamp table ``(n,)``."""
        chosen = []
        for index, timestamp in enumerate(timestamps_s.tolist()):
            if self.finished(index, timestamp):
                break
            if self.take(index, timestamp):
                chosen.append(index)
        return np.asarray(chosen, dtype=np.int64)


def is_variable_frame_rate(timestamps_s: np.ndarray, tick_s: float) -> bool:
    """Whether frame gaps vary beyond rounding to the container's time base ``tick_s``.

    ``timestamps_s``: ``(n,)`` presentation times in order. A constant-rate
    video stored in a coarse time base (e.g. 29.97 fps in milliseconds) has
    gaps that differ by one tick; that is not variable frame rate.
    """
    if len(timestamps_s) < 3:
        return False
    gaps = np.diff(timestamps_s)
    tolerance = max(2.0 * tick_s, 0.01 * float(np.median(gaps)))
    return float(np.ptp(gaps)) > tolerance


def log_truncated(path: str, decoded: int, cause: str | BaseException) -> None:
    """Record that ``path`` stopped decoding after ``decoded`` frames (a damaged tail)."""
    logger.warning("%s", decode_error(path, f"decoding stopped after {decoded} frames: {cause}"))
