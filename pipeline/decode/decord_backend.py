"""decord decoding backend (the default).

decord builds a frame table from the whole file when it opens it, so probing
and selection are cheap and frames are fetched ``chunk_size`` at a time with
``get_batch``. Its timestamps are float32 seconds counted from the stream
start; they are put back on the container's tick grid and shifted to the real
first pts (read with PyAV) so both backends report the same times.

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

from hflpipe.pipeline.decode.base import (
    Decoder,
    FrameChunk,
    FrameSelector,
    VideoInfo,
    check_video_path,
    decode_error,
)
from hflpipe.pipeline.decode.pyav_backend import (
    ContainerHeader,
    PyAVDecoder,
    packet_timestamps,
    read_container_header,
    video_info,
)

logger = logging.getLogger(__name__)

# decord reports failures as DECORDError, except when its reader cannot open a file whose
# header PyAV accepted: then a bare RuntimeError ("Error reading <path>...").
_DECORD_ERRORS = (decord.DECORDError, RuntimeError)


def _plausible(relative: np.ndarray) -> bool:
    """Finite, non-negative, strictly increasing times of less than a year."""
    return bool(np.all(np.isfinite(relative)) and relative.min() >= 0
                and relative.max() < 3.2e7 and np.all(np.diff(relative) > 0))


class DecordDecoder(Decoder):
    """Decodes with decord on the CPU. ``threads``: decoding threads (0 lets decord choose)."""

    name = "decord"

    def _open(self, path: str) -> tuple[decord.VideoReader, ContainerHeader, np.ndarray]:
        """Open ``path``; return the reader, the header and the ``(n,)`` float64 timestamps."""
        path = check_video_path(path)
        header = read_container_header(path)
        try:
            reader = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=self.threads)
        except _DECORD_ERRORS as exc:
            # decord indexes every packet on open, so a file cut short fails here.
            raise decode_error(path, f"decord cannot index the video ({exc})") from exc
        count = len(reader)
        if count == 0:
            raise decode_error(path, "video stream has no frames")
        relative = reader.get_frame_timestamp(np.arange(count))[:, 0].astype(np.float64)
        if not _plausible(relative):
            # decord reports FFmpeg's "no timestamp" value (~9.2e15 s) for every frame of
            # some short Matroska files: take the container's own packet times instead.
            _, timestamps = packet_timestamps(path)
            if len(timestamps) != count:
                raise decode_error(path, f"decord lists {count} frames, the container "
                                         f"{len(timestamps)}, and decord has no timestamps")
            return reader, header, timestamps
        time_base = float(header.time_base)
        ticks = np.rint(relative / time_base) + header.start_pts
        return reader, header, ticks * time_base

    def probe(self, path: str) -> VideoInfo:
        """Metadata from decord's frame table and the container header."""
        _, header, timestamps = self._open(path)
        return video_info(str(path), header, timestamps, self.name)

    def _read_selected(
        self, path: str, chunk_size: int, selector: FrameSelector
    ) -> Iterator[FrameChunk]:
        reader, _, timestamps = self._open(path)
        selected = selector.select(timestamps)
        return self._read(str(path), reader, timestamps, selected, chunk_size)

    def _read(
        self,
        path: str,
        reader: decord.VideoReader,
        timestamps: np.ndarray,
        selected: np.ndarray,
        chunk_size: int,
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
                yield from PyAVDecoder(self.threads).read_chunks(
                    path, chunk_size=chunk_size, frame_indices=selected[begin:].tolist()
                )
                return
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
