"""decord decoding backend (the alternative to PyAV).

decord builds a frame table from the whole file when it opens it, so selection
is cheap and frames are fetched ``chunk_size`` at a time with ``get_batch``.
Presentation times come from PyAV's demux of the same stream (decord's own are
float32 seconds from the stream start, and missing in some Matroska files), so
both backends report the same times. decord turns frames by the rotation of an
MP4 display matrix but not by its mirror; the rest of the turn is applied here.

decord is unmaintained and can abort the process on some corrupt input; the
container is therefore checked with PyAV first, and the orchestrator runs
decoding in a worker process it can lose. When decord fails part-way through
a video, PyAV finishes the read, so the frames returned end exactly where the
damage starts.

decord's reader also reads ahead without bound: while its decoding thread has
no frame ready, the reader queues packet after packet (up to the whole file),
and the thread decodes every queued packet to RGB whether or not anyone asks
for it. A caller that spends a while on each chunk (ours wait for inference)
would find the rest of the video decoded into memory. So after each chunk the
reader is parked with a seek, which empties decord's queues, on the keyframe
the next chunk decodes from; chunks end before a keyframe where one falls
inside them, so that with keyframes at most a chunk apart no frame is decoded
twice. With longer keyframe intervals the frames from the keyframe to the next
chunk are decoded again (without RGB conversion): the price of bounded memory.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import decord
import numpy as np

from hflpipe.pipeline.common import storage
from hflpipe.pipeline.decode.base import (
    Decoder,
    FrameChunk,
    FrameSelector,
    VideoInfo,
    check_video_path,
    decode_error,
)
from hflpipe.pipeline.decode.orientation import Orientation, rotation_only
from hflpipe.pipeline.decode.pyav_backend import (
    ContainerHeader,
    PyAVDecoder,
    packet_table,
    read_container_header,
    video_info,
)

logger = logging.getLogger(__name__)

# decord reports failures as DECORDError, except when its reader cannot open a file whose
# header PyAV accepted: then a bare RuntimeError ("Error reading <path>...").
_DECORD_ERRORS = (decord.DECORDError, RuntimeError)
# decord's FFmpeg (4.1) turns frames by a display matrix only in these containers.
_TURNED_BY_DECORD = "mov"


def _why_not_decord(header: ContainerHeader) -> str | None:
    """Why decord cannot give the frames a player shows from this file, or None."""
    if header.video_streams > 1:
        return f"decord cannot choose among {header.video_streams} video streams"
    if not header.orientation.is_identity and _TURNED_BY_DECORD not in header.format_name:
        return "decord ignores the display matrix of this container format"
    return None


class DecordDecoder(Decoder):
    """Decodes with decord on the CPU. ``threads``: decoding threads (0 lets decord choose).

    Files decord cannot read as a player shows them (several video streams, an edit list
    that hides frames, a display matrix outside MP4/MOV) are read with PyAV instead; the
    :class:`VideoInfo` of such a file names ``pyav`` as its backend.
    """

    name = "decord"

    def _open(self, path: str) -> tuple[decord.VideoReader | None, ContainerHeader, np.ndarray]:
        """Open ``path``; return the reader, the header and the ``(n,)`` float64 timestamps.

        The reader is None when PyAV must read the file instead (logged with the reason).
        """
        if storage.is_url(path):
            # decord opens files by name; given a URL, its FFmpeg would try to fetch it.
            raise decode_error(path, "decord reads local files only (copy the video first, "
                                     "as hflpipe run does)")
        path = check_video_path(path)
        header = read_container_header(path, self.stream)
        reason = _why_not_decord(header)
        table = packet_table(path, header)
        reader = None
        if reason is None:
            try:
                reader = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=self.threads)
            except _DECORD_ERRORS as exc:
                # decord indexes every packet on open, so a file cut short fails here.
                raise decode_error(path, f"decord cannot index the video ({exc})") from exc
            if len(reader) != len(table.pts):
                # decord counts the frames an edit list hides and then misnumbers the rest.
                reason = (f"decord lists {len(reader)} frames where a player shows "
                          f"{len(table.pts)} (an edit list)")
                reader = None
        if reason is not None:
            logger.info("%s: %s; decoding with PyAV", path, reason)
        elif not len(table.pts):
            raise decode_error(path, "video stream has no frames")
        # The container's own packet times: decord's are float32 seconds from the stream
        # start, and some short Matroska files give FFmpeg's "no timestamp" for every frame.
        return reader, header, table.timestamps_s

    def probe(self, path: str) -> VideoInfo:
        """Metadata from the container header and its packet table."""
        reader, header, timestamps = self._open(path)
        if reader is None:
            return PyAVDecoder(self.threads, self.stream).probe(path)
        return video_info(str(path), header, timestamps, self.name)

    def _read_selected(
        self, path: str, chunk_size: int, selector: FrameSelector
    ) -> Iterator[FrameChunk]:
        reader, header, timestamps = self._open(path)
        if reader is None:
            return PyAVDecoder(self.threads, self.stream)._read_selected(
                path, chunk_size, selector)
        selected = selector.select(timestamps)
        # decord turns frames by the display matrix's rotation but ignores its mirror.
        orientation = header.orientation.after(rotation_only(header.orientation).inverse())
        return self._read(str(path), reader, timestamps, selected, chunk_size, orientation)

    def _read(
        self,
        path: str,
        reader: decord.VideoReader,
        timestamps: np.ndarray,
        selected: np.ndarray,
        chunk_size: int,
        orientation: Orientation,
    ) -> Iterator[FrameChunk]:
        keyframes = np.asarray(reader.get_key_indices(), dtype=np.int64)
        begin = 0
        while begin < len(selected):
            end = _chunk_end(selected, begin, chunk_size, keyframes)
            indices = selected[begin:end]
            try:
                frames = reader.get_batch(indices.tolist()).asnumpy()
                if end < len(selected):
                    _park(reader, _keyframe_before(keyframes, selected[end]), indices[-1] + 1)
            except _DECORD_ERRORS as exc:
                # decord's decoding thread reads ahead, so a damaged packet can
                # surface a few frames early, and how early varies run to run.
                # PyAV stops exactly at the damage: it finishes the read.
                logger.warning(
                    "%s",
                    decode_error(path, f"decord failed at frames {indices[0]}+, using PyAV: {exc}"),
                )
                del reader
                yield from PyAVDecoder(self.threads, self.stream).read_chunks(
                    path, chunk_size=chunk_size, frame_indices=selected[begin:].tolist()
                )
                return
            if not orientation.is_identity:
                frames = np.ascontiguousarray(orientation.apply(frames))
            yield _chunk(indices, timestamps, frames)
            begin = end


def _keyframe_before(keyframes: np.ndarray, frame: int) -> int:
    """The last keyframe at or before ``frame`` (0 when decord lists none)."""
    at = int(np.searchsorted(keyframes, frame, side="right")) - 1
    return int(keyframes[at]) if at >= 0 else 0


def _chunk_end(selected: np.ndarray, begin: int, chunk_size: int, keyframes: np.ndarray) -> int:
    """Where the chunk starting at ``selected[begin]`` ends (exclusive).

    At most ``chunk_size`` frames; shorter when that lets the next chunk start on
    or just after a keyframe instead of in the middle of the keyframe interval
    before it, which would be decoded again after parking.
    """
    end = min(begin + chunk_size, len(selected))
    if end == len(selected):
        return end
    keyframe = _keyframe_before(keyframes, selected[end])
    if keyframe <= selected[begin]:
        return end
    return begin + int(np.searchsorted(selected[begin:end], keyframe))


def _park(reader: decord.VideoReader, keyframe: int, position: int) -> None:
    """Empty decord's read-ahead queues by seeking to ``keyframe``; decodes nothing.

    ``position``: the frame the reader would decode next. decord ignores a seek to
    its own position, so the reader first seeks elsewhere (frame 0, also just a seek).
    A plain seek is exact only on a keyframe, hence the keyframe.
    """
    if keyframe == position:
        reader.seek(0)
    reader.seek(keyframe)


def _chunk(indices: np.ndarray, timestamps: np.ndarray, frames: np.ndarray) -> FrameChunk:
    return FrameChunk(
        indices=indices.astype(np.int64),
        timestamps_s=timestamps[indices],
        frames=frames,
    )
