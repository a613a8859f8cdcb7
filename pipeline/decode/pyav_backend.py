"""PyAV (FFmpeg) decoding backend, and the container facts both backends share."""

from __future__ import annotations

import contextlib
import itertools
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np

from hflpipe.pipeline.common import storage
from hflpipe.pipeline.common.remote_file import RemoteFile
from hflpipe.pipeline.decode.base import (
    Decoder,
    FrameChunk,
    FrameSelector,
    VideoInfo,
    check_video_path,
    decode_error,
    is_variable_frame_rate,
    log_truncated,
)
from hflpipe.pipeline.decode.orientation import Orientation, UnsupportedOrientation
from hflpipe.pipeline.decode.read_ahead import iterate_ahead

logger = logging.getLogger(__name__)

#: Frames the decoding thread may queue ahead of the conversion (it holds one more); YUV,
#: about 3 MiB each at 1080p.
DECODE_AHEAD = 4


@dataclass(frozen=True)
class ContainerHeader:
    """What the container says about the video stream a player would show.

    ``stream_index``: that stream's index among all the container's streams.
    ``time_base``: seconds per pts tick. ``start_pts``: presentation time of the first
    frame, in ticks. ``average_fps``: the container's average rate, or None when it does
    not say. ``width``, ``height``: the frame size as stored; ``orientation`` turns stored
    frames for display. ``video_streams``: how many video streams (cover art included)
    the container has. ``format_name``: FFmpeg's name of the container format.
    """

    stream_index: int
    time_base: Fraction
    start_pts: int
    average_fps: float | None
    width: int
    height: int
    orientation: Orientation
    video_streams: int
    format_name: str

    def displayed_size(self) -> tuple[int, int]:
        """``(width, height)`` of the frames as displayed."""
        return self.orientation.displayed_size(self.width, self.height)


@contextlib.contextmanager
def _open(path: str) -> Iterator[av.container.InputContainer]:
    """The container of ``path`` (a local file, or a store URL read through a
    :class:`~hflpipe.pipeline.common.remote_file.RemoteFile`), closed with the block."""
    with contextlib.ExitStack() as stack:
        source = stack.enter_context(RemoteFile(path)) if storage.is_url(path) else path
        try:
            # Damaged or foreign metadata (a handler name, a title) is not UTF-8 often
            # enough; it must not make the frames unreadable.
            container = av.open(source, mode="r", metadata_errors="replace")
        except (av.error.FFmpegError, OSError) as exc:
            # strerror drops FFmpeg's errno and its repeat of the path.
            cause = getattr(exc, "strerror", None) or exc
            raise decode_error(path, f"not a readable video container ({cause})") from exc
        with container:
            if not container.streams.video:
                raise decode_error(path, "no video stream (or a video stream without frames)")
            yield container


def _is_picture(stream: av.video.stream.VideoStream) -> bool:
    """Cover art and other still pictures stored as a one-frame video stream."""
    return bool(stream.disposition & (av.stream.Disposition.attached_pic
                                      | av.stream.Disposition.still_image))


def choose_stream(path: str, container: av.container.InputContainer,
                  wanted: int | None = None) -> av.video.stream.VideoStream:
    """The video stream to decode: ``wanted`` (an index among all streams) when given,
    else the one a player shows: not cover art, the default one first, then the largest,
    then the first."""
    videos = list(container.streams.video)
    if wanted is not None:
        for stream in videos:
            if stream.index == wanted:
                return stream
        listed = ", ".join(str(s.index) for s in videos)
        raise decode_error(path, f"stream {wanted} is not a video stream "
                                 f"(video streams: {listed})")
    moving = [stream for stream in videos if not _is_picture(stream)]
    if not moving:
        raise decode_error(path, "no video stream (only cover art or still pictures)")
    return min(moving, key=lambda s: (not s.disposition & av.stream.Disposition.default,
                                      -_area(s), s.index))


def _area(stream: av.video.stream.VideoStream) -> int:
    # A damaged stream may have no codec context, hence no size: it counts as empty.
    return (getattr(stream, "width", 0) or 0) * (getattr(stream, "height", 0) or 0)


def _orientation(path: str, container: av.container.InputContainer,
                 stream: av.video.stream.VideoStream) -> Orientation:
    """The display orientation, from the side data of the stream's first frame.

    FFmpeg hands the container's display matrix to decoded frames (PyAV has no reader
    for a stream's own side data). A stream whose first frame does not decode reads
    as unturned; the read that follows reports the damage.
    """
    try:
        frame = next(container.decode(stream), None)
    except av.error.FFmpegError:
        return Orientation()
    if frame is None:
        return Orientation()
    for data in frame.side_data:
        if data.type.name == "DISPLAYMATRIX":
            try:
                return Orientation.from_display_matrix(
                    np.frombuffer(bytes(data), dtype=np.int32).tolist())
            except UnsupportedOrientation as exc:
                raise decode_error(path, str(exc)) from None
    return Orientation()


def _header(path: str, container: av.container.InputContainer, wanted: int | None
            ) -> ContainerHeader:
    stream = choose_stream(path, container, wanted)
    # A damaged codec tag leaves the stream without a decoder (and without a frame size).
    if stream.codec_context is None:
        raise decode_error(path, "video stream has an unknown codec (no decoder for it)")
    if stream.time_base is None or not stream.width or not stream.height:
        raise decode_error(path, "video stream has no frame size or time base")
    rate = stream.average_rate or stream.guessed_rate
    return ContainerHeader(
        stream_index=stream.index,
        time_base=Fraction(stream.time_base),
        start_pts=stream.start_time or 0,
        average_fps=float(rate) if rate else None,
        width=stream.width,
        height=stream.height,
        orientation=_orientation(path, container, stream),
        video_streams=len(container.streams.video),
        format_name=container.format.name,
    )


def read_container_header(path: str, wanted: int | None = None) -> ContainerHeader:
    """Read the header of ``path``'s video stream (``wanted``, or the one a player shows);
    :class:`DecodeError` if there is none. Decodes the first frame for its orientation."""
    path = check_video_path(path)
    with _open(path) as container:
        return _header(path, container, wanted)


def video_info(
    path: str, header: ContainerHeader, timestamps_s: np.ndarray, backend: str
) -> VideoInfo:
    """Assemble :class:`VideoInfo` from a header and the ``(n,)`` presentation times of all frames.

    Both backends call this so their metadata agrees whenever their frame
    tables do. A 0-frame table raises :class:`DecodeError`.
    """
    n = len(timestamps_s)
    if n == 0:
        raise decode_error(path, "video stream has no frames")
    fps = header.average_fps
    if not fps:
        span = float(timestamps_s[-1] - timestamps_s[0])
        # A single frame has no rate; 1 fps keeps duration_s = num_frames / fps honest.
        fps = (n - 1) / span if n > 1 and span > 0 else 1.0
    return VideoInfo(
        path=path,
        num_frames=n,
        fps=fps,
        width=header.displayed_size()[0],
        height=header.displayed_size()[1],
        duration_s=n / fps,
        backend=backend,
        variable_frame_rate=is_variable_frame_rate(timestamps_s, float(header.time_base)),
        stream_index=header.stream_index,
        rotation_deg=header.orientation.rotation_deg,
        mirrored=header.orientation.mirrored,
    )


@dataclass(frozen=True)
class PacketTable:
    """Every video packet of a file, from a demux (nothing decoded).

    ``pts``: ``(n,)`` int64 presentation times in ticks, sorted (presentation
    order); ``keyframe_pts``: ``(k,)`` int64 sorted ticks of the keyframe packets.
    """

    header: ContainerHeader
    pts: np.ndarray
    keyframe_pts: np.ndarray

    @property
    def timestamps_s(self) -> np.ndarray:
        return self.pts * float(self.header.time_base)


def packet_table(path: str, header: ContainerHeader) -> PacketTable:
    """Demux the packets of ``header``'s stream (nothing decoded).

    Packets an edit list hides (the container flags them to be decoded and dropped, as
    a trimmed clip keeps the frames before its cut) are left out, so the table lists the
    frames a player shows. A damaged tail ends the table where it starts.
    """
    pts: list[int] = []
    keyframes: list[int] = []
    with _open(path) as container:
        stream = container.streams[header.stream_index]
        try:
            for packet in container.demux(stream):
                # The demuxer's final flush packet carries no data.
                if packet.size == 0 or packet.is_discard:
                    continue
                stamp = packet.pts if packet.pts is not None else packet.dts
                if stamp is None:
                    raise decode_error(path, "packets carry no timestamps")
                pts.append(stamp)
                if packet.is_keyframe:
                    keyframes.append(stamp)
        except av.error.FFmpegError as exc:
            log_truncated(path, len(pts), exc)
    return PacketTable(header, np.sort(np.asarray(pts, dtype=np.int64)),
                       np.sort(np.asarray(keyframes, dtype=np.int64)))


class PyAVDecoder(Decoder):
    """Decodes with PyAV: every frame in order, converting only those selected.

    A read whose first selectable frame lies past a keyframe (a start time, or
    frame indices that begin later) first seeks to the last keyframe before it,
    in a stream that starts on a keyframe. A demux of the whole file tells which
    frame that keyframe is; the first frame decoded after the seek must be it, or
    the read starts again from the beginning, so frame numbers are those of a
    read from the start.

    Frames are decoded on a thread of their own, at most :data:`DECODE_AHEAD`
    frames queued ahead, and converted to RGB on the caller's thread, so the two
    overlap.

    ``threads``: FFmpeg decoding threads (0 lets FFmpeg choose).
    """

    name = "pyav"

    def __init__(self, threads: int = 0, stream: int | None = None) -> None:
        super().__init__(threads, stream)
        self._last_table: tuple[tuple[str, int], PacketTable] | None = None

    def probe(self, path: str) -> VideoInfo:
        """Metadata from the header (and its first frame) plus a demux of every packet."""
        header = read_container_header(path, self.stream)
        return video_info(str(path), header, self._packet_table(str(path), header).timestamps_s,
                          self.name)

    def _packet_table(self, path: str, header: ContainerHeader) -> PacketTable:
        """:func:`packet_table`, kept for the last file: probing and every seek need it, and
        the demux reads the whole file (for a streamed video, a download of it)."""
        key = (path, header.stream_index)
        if self._last_table is None or self._last_table[0] != key:
            self._last_table = (key, packet_table(path, header))
        return self._last_table[1]

    def _read_selected(
        self, path: str, chunk_size: int, selector: FrameSelector
    ) -> Iterator[FrameChunk]:
        return self._read(check_video_path(path), chunk_size, selector)

    def _read(self, path: str, chunk_size: int, selector: FrameSelector) -> Iterator[FrameChunk]:
        header = read_container_header(path, self.stream)
        keyframe = None
        if selector.may_pass_over_leading_frames:
            keyframe = _keyframe_before_selection(self._packet_table(path, header), selector)
        if keyframe is not None:
            logger.debug("%s: seeking to the keyframe at frame %d", path, keyframe.position)
            try:
                yield from self._decode(path, header, chunk_size, selector, keyframe)
                return
            except _MissedKeyframe as exc:
                logger.debug("%s: seeking to frame %d failed (%s); decoding from the start",
                             path, keyframe.position, exc)
        yield from self._decode(path, header, chunk_size, selector, None)

    def _decode(self, path: str, header: ContainerHeader, chunk_size: int,
                selector: FrameSelector, keyframe: _Keyframe | None) -> Iterator[FrameChunk]:
        """Decode from the start or from ``keyframe``; :class:`_MissedKeyframe` if the seek
        to it fails (before any frame is selected)."""
        with _open(path) as container:
            stream = container.streams[header.stream_index]
            stream.thread_type = "AUTO"
            stream.codec_context.thread_count = self.threads
            time_base = float(header.time_base)
            chunk = _ChunkBuffer(chunk_size, header.height, header.width, header.orientation)
            received = 0 if keyframe is None else keyframe.position
            # The thread decodes (FFmpeg releases the GIL) while this one converts to RGB.
            decoded = iterate_ahead(_frames_from(container, stream, keyframe), DECODE_AHEAD,
                                    "hflpipe-decode")
            try:
                with contextlib.closing(decoded):
                    for frame in decoded:
                        index = received
                        received += 1
                        if frame.pts is None:
                            raise decode_error(path, f"frame {index} has no timestamp")
                        timestamp = frame.pts * time_base
                        if selector.finished(index, timestamp):
                            break
                        if selector.take(index, timestamp):
                            chunk.add(index, timestamp, frame)
                            if chunk.full:
                                yield chunk.take()
            except av.error.FFmpegError as exc:
                if received == 0:
                    raise decode_error(path, f"no frame could be decoded ({exc})") from exc
                log_truncated(path, received, exc)
            if received == 0:
                raise decode_error(path, "video stream has no frames")
            if chunk.indices:
                yield chunk.take()


@dataclass(frozen=True)
class _Keyframe:
    """A keyframe to start decoding from: its frame number and presentation time in ticks."""

    position: int
    pts: int


class _MissedKeyframe(Exception):
    """A seek did not land on the keyframe asked for (raised before any frame is used)."""


def _keyframe_before_selection(table: PacketTable, selector: FrameSelector
                               ) -> _Keyframe | None:
    """The last keyframe at or before the first frame ``selector`` could select; None
    when that is the first frame anyway, or when the stream does not start on a keyframe.

    A stream cut in the middle of a keyframe interval starts with frames that cannot
    be decoded; a read from the start drops them and numbers the first frame it can
    decode 0, so the packet table's positions would not match its frame numbers.
    """
    if not len(table.keyframe_pts) or table.keyframe_pts[0] != table.pts[0]:
        return None
    first = min(selector.first_candidate(table.timestamps_s), len(table.pts) - 1)
    earlier = table.keyframe_pts[table.keyframe_pts <= table.pts[first]]
    if not len(earlier) or earlier[-1] <= table.pts[0]:
        return None
    pts = int(earlier[-1])
    return _Keyframe(position=int(np.searchsorted(table.pts, pts)), pts=pts)


def _frames_from(container: av.container.InputContainer, stream: av.video.stream.VideoStream,
                 keyframe: _Keyframe | None) -> Iterator[av.VideoFrame]:
    """Decoded frames of ``stream`` from the start, or from ``keyframe`` after seeking to it."""
    if keyframe is None:
        return container.decode(stream)
    try:
        container.seek(keyframe.pts, stream=stream, backward=True)
        frames = container.decode(stream)
        landed = next(frames, None)
    except av.error.FFmpegError as exc:
        raise _MissedKeyframe(str(exc)) from exc
    if landed is None or landed.pts != keyframe.pts:
        raise _MissedKeyframe(f"landed at pts {None if landed is None else landed.pts}")
    return itertools.chain([landed], frames)


class _ChunkBuffer:
    """Collects one chunk: each frame converted to RGB and copied once, into the chunk's array.

    Frames are scaled to the header's stored size, so a mid-stream size change cannot
    break the ``(n, H, W, 3)`` chunk shape, and turned for display as they are copied.
    """

    def __init__(self, size: int, height: int, width: int, orientation: Orientation) -> None:
        self.size, self.height, self.width = size, height, width
        self.orientation = orientation
        self.shown_width, self.shown_height = orientation.displayed_size(width, height)
        self.indices: list[int] = []
        self.stamps: list[float] = []
        self._frames: np.ndarray | None = None

    @property
    def full(self) -> bool:
        return len(self.indices) == self.size

    def add(self, index: int, timestamp: float, frame: av.VideoFrame) -> None:
        if self._frames is None:
            self._frames = np.empty((self.size, self.shown_height, self.shown_width, 3),
                                    dtype=np.uint8)
        # swscale's own threads (one per core by default) slow the conversion down
        # next to a decoding thread; one is enough.
        rgb = frame.reformat(format="rgb24", width=self.width, height=self.height, threads=1)
        plane = rgb.planes[0]
        # FFmpeg pads each row to line_size bytes; the view drops the padding.
        rows = np.frombuffer(plane, dtype=np.uint8).reshape(self.height, plane.line_size)
        self._frames[len(self.indices)] = self.orientation.apply(
            rows[:, : 3 * self.width].reshape(self.height, self.width, 3))
        self.indices.append(index)
        self.stamps.append(timestamp)

    def take(self) -> FrameChunk:
        """The chunk collected so far; the buffer starts a new one."""
        assert self._frames is not None
        chunk = FrameChunk(
            indices=np.asarray(self.indices, dtype=np.int64),
            timestamps_s=np.asarray(self.stamps, dtype=np.float64),
            frames=self._frames[: len(self.indices)],
        )
        self.indices, self.stamps, self._frames = [], [], None
        return chunk
