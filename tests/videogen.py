"""Real test videos: writers, self-identifying frame content and corruption helpers.

Tests import it as ``import videogen`` (pytest puts ``tests/`` on ``sys.path``).

Frames everywhere are ``(H, W, 3)`` uint8 **RGB**. Every frame made by
:func:`moving_square_frames` carries its own index as a bar code in its top
rows, so a test can tell which frame a decoder returned even through lossy
codecs (:func:`read_frame_index`).
"""

from __future__ import annotations

import itertools
import os
import struct
from collections.abc import Iterable, Iterator, Sequence
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

BARCODE_BITS = 10
BARCODE_HEIGHT = 16
# Bar-code cells are black or white; a decoded cell is "on" above mid-grey,
# which leaves a wide margin for codec error.
_BIT_THRESHOLD = 128

# cv2 writes these through its bundled FFmpeg; "h264" goes through PyAV/libx264
# because the cv2 wheel has no H.264 encoder.
_CV2_FOURCCS = ("mp4v", "MJPG", "XVID")


def _barcode_cells(width: int) -> list[tuple[int, int]]:
    """Column ranges ``[x0, x1)`` of the bar-code cells, most significant bit first."""
    cell = width // BARCODE_BITS
    if cell < 4:
        raise ValueError(f"width {width} too small for a {BARCODE_BITS}-bit bar code")
    return [(b * cell, (b + 1) * cell) for b in range(BARCODE_BITS)]


def draw_index(frame: np.ndarray, index: int) -> None:
    """Paint ``index`` as a bar code into the top ``BARCODE_HEIGHT`` rows of ``frame`` in place."""
    if not 0 <= index < 2**BARCODE_BITS:
        raise ValueError(f"frame index {index} does not fit in {BARCODE_BITS} bits")
    frame[:BARCODE_HEIGHT] = 0
    for bit, (x0, x1) in enumerate(_barcode_cells(frame.shape[1])):
        if (index >> (BARCODE_BITS - 1 - bit)) & 1:
            frame[:BARCODE_HEIGHT, x0:x1] = 255


def read_frame_index(frame: np.ndarray) -> int:
    """Recover the index painted by :func:`draw_index` from an ``(H, W, 3)`` decoded frame."""
    index = 0
    # Sample the cell centres only: block edges bleed under lossy codecs.
    pad_y = BARCODE_HEIGHT // 4
    for x0, x1 in _barcode_cells(frame.shape[1]):
        pad_x = (x1 - x0) // 4
        cell = frame[pad_y : BARCODE_HEIGHT - pad_y, x0 + pad_x : x1 - pad_x]
        index = (index << 1) | int(cell.mean() > _BIT_THRESHOLD)
    return index


def moving_square_frame(index: int, width: int = 160, height: int = 120) -> np.ndarray:
    """One deterministic ``(height, width, 3)`` RGB frame: bar code of ``index`` over a scene.

    The scene is a smooth colour gradient with a red square that moves a few
    pixels per frame, so consecutive frames differ like real footage.
    """
    # One row and one column broadcast over the frame (a 4K index grid is 130 MB).
    xs, ys = np.arange(width), np.arange(height)[:, None]
    frame = np.empty((height, width, 3), dtype=np.uint8)
    frame[..., 0] = (xs * 255 // max(width - 1, 1)).astype(np.uint8)
    frame[..., 1] = (ys * 255 // max(height - 1, 1)).astype(np.uint8)
    frame[..., 2] = 96
    side = max(height // 5, 8)
    span_x = max(width - side, 1)
    span_y = max(height - BARCODE_HEIGHT - side, 1)
    x = (index * 5) % span_x
    y = BARCODE_HEIGHT + (index * 3) % span_y
    frame[y : y + side, x : x + side] = (220, 30, 30)
    draw_index(frame, index)
    return frame


def moving_square_frames(n: int, width: int = 160, height: int = 120) -> Iterator[np.ndarray]:
    """Yield frames ``0 .. n-1`` of :func:`moving_square_frame` (lazily: memory stays flat)."""
    for index in range(n):
        yield moving_square_frame(index, width, height)


def write_video(
    path: str | os.PathLike[str],
    frames: Iterable[np.ndarray],
    fps: float,
    fourcc: str = "mp4v",
) -> int:
    """Encode RGB ``frames`` to ``path`` at a constant ``fps``; return the number written.

    ``fourcc``: ``"mp4v"`` (use ``.mp4``), ``"MJPG"`` or ``"XVID"`` (use ``.avi``)
    through ``cv2.VideoWriter``, or ``"h264"`` (``.mp4`` or ``.mkv``) through PyAV
    and libx264. Width and height must be even for ``"h264"``.
    """
    if fourcc == "h264":
        frame_list = list(frames)
        fps_fraction = Fraction(fps).limit_denominator(1001)
        timestamps = [i / fps_fraction for i in range(len(frame_list))]
        return write_vfr_video(
            path, frame_list, timestamps, codec="libx264", time_base=1 / fps_fraction
        )
    if fourcc not in _CV2_FOURCCS:
        raise ValueError(f"unsupported fourcc {fourcc!r}; expected one of {_CV2_FOURCCS} or 'h264'")
    writer: cv2.VideoWriter | None = None
    count = 0
    try:
        for frame in frames:
            if writer is None:
                height, width = frame.shape[:2]
                writer = cv2.VideoWriter(
                    os.fspath(path), cv2.VideoWriter_fourcc(*fourcc), fps, (width, height)
                )
                if not writer.isOpened():
                    raise RuntimeError(f"{path}: cv2 cannot open a {fourcc} writer")
            writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
            count += 1
    finally:
        if writer is not None:
            writer.release()
    if writer is None:
        # cv2 needs a frame to learn the size; an empty file stands for "no video".
        Path(path).write_bytes(b"")
    return count


def write_vfr_video(
    path: str | os.PathLike[str],
    frames: Sequence[np.ndarray],
    timestamps_s: Sequence[float | Fraction],
    *,
    codec: str = "libx264",
    time_base: Fraction = Fraction(1, 1000),
    faststart: bool = False,
) -> int:
    """Encode RGB ``frames`` with explicit presentation times (variable frame rate) via PyAV.

    ``timestamps_s`` are strictly increasing seconds (the first need not be 0);
    each is rounded to ``time_base``. ``faststart`` puts the MP4 index (moov)
    before the data, as streaming tools do. Returns the number of frames written.
    """
    if len(frames) != len(timestamps_s):
        raise ValueError(f"{len(frames)} frames but {len(timestamps_s)} timestamps")
    if not frames:
        raise ValueError("write_vfr_video needs at least one frame")
    import av

    pts = [round(Fraction(t) / time_base) for t in timestamps_s]
    if any(b <= a for a, b in itertools.pairwise(pts)):
        raise ValueError("timestamps must be strictly increasing after rounding to time_base")
    height, width = frames[0].shape[:2]
    options = {"movflags": "faststart"} if faststart else {}
    with av.open(os.fspath(path), mode="w", options=options) as container:
        # The nominal rate only sizes encoder buffers; real times come from pts.
        span = pts[-1] - pts[0]
        nominal = Fraction(len(pts) - 1, 1) / (span * time_base) if span else Fraction(25)
        stream = container.add_stream(codec, rate=nominal.limit_denominator(1001))
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv420p"
        stream.time_base = time_base
        stream.codec_context.time_base = time_base
        if codec == "libx264":
            # Near-lossless and without B-frames so decoders agree to the pixel.
            stream.codec_context.options = {"crf": "10", "bf": "0"}
        for frame, frame_pts in zip(frames, pts, strict=True):
            av_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            av_frame.pts = frame_pts
            av_frame.time_base = time_base
            container.mux(stream.encode(av_frame))
        container.mux(stream.encode(None))
    return len(frames)


def write_empty_video(path: str | os.PathLike[str], width: int = 160, height: int = 120) -> Path:
    """Write a well-formed MP4 whose video track holds no frames (a 0-frame video)."""
    import av

    with av.open(os.fspath(path), mode="w") as container:
        stream = container.add_stream("mpeg4", rate=25)
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv420p"
        container.start_encoding()
    return Path(path)


# --- corruption helpers ----------------------------------------------------------


def make_zero_byte(path: str | os.PathLike[str]) -> Path:
    """Create (or empty) ``path`` as a zero-byte file."""
    Path(path).write_bytes(b"")
    return Path(path)


def make_text_file(path: str | os.PathLike[str]) -> Path:
    """Write plain text to ``path`` (e.g. ``notes.mp4``): a file that only looks like a video."""
    Path(path).write_text("this is not a video\n" * 20)
    return Path(path)


def truncate(path: str | os.PathLike[str], keep_fraction: float) -> Path:
    """Cut ``path`` in place to the first ``keep_fraction`` of its bytes."""
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[: int(len(data) * keep_fraction)])
    return Path(path)


def mp4_atoms(path: str | os.PathLike[str]) -> list[tuple[str, int, int]]:
    """Top-level MP4 boxes of ``path`` as ``(type, offset, size)`` in file order."""
    data = Path(path).read_bytes()
    return [(kind, offset, size) for kind, offset, size in _boxes(data, 0, len(data))]


def _boxes(data: bytes, start: int, end: int) -> Iterator[tuple[str, int, int]]:
    offset = start
    while offset + 8 <= end:
        size, kind = struct.unpack(">I4s", data[offset : offset + 8])
        if size == 1:
            size = struct.unpack(">Q", data[offset + 8 : offset + 16])[0]
        elif size == 0:
            size = end - offset
        if size < 8:
            raise ValueError(f"malformed MP4 box at offset {offset}")
        yield kind.decode("latin-1"), offset, size
        offset += size


def remove_moov(path: str | os.PathLike[str]) -> Path:
    """Drop the MP4 index box (moov): the data stays, nothing can find it."""
    data = Path(path).read_bytes()
    kept = b"".join(data[o : o + s] for kind, o, s in _boxes(data, 0, len(data)) if kind != "moov")
    Path(path).write_bytes(kept)
    return Path(path)


# Containers on the path from moov down to the chunk-offset tables.
_CONTAINER_BOXES = {"moov", "trak", "mdia", "minf", "stbl"}


def _shift_chunk_offsets(moov: bytearray, start: int, end: int, delta: int) -> None:
    """Add ``delta`` to every stco/co64 entry inside ``moov[start:end]`` in place."""
    for kind, offset, size in _boxes(bytes(moov), start, end):
        header = 8
        if kind in _CONTAINER_BOXES:
            _shift_chunk_offsets(moov, offset + header, offset + size, delta)
        elif kind in ("stco", "co64"):
            count = struct.unpack(">I", moov[offset + 12 : offset + 16])[0]
            fmt, width = (">I", 4) if kind == "stco" else (">Q", 8)
            for i in range(count):
                at = offset + 16 + i * width
                (value,) = struct.unpack(fmt, moov[at : at + width])
                moov[at : at + width] = struct.pack(fmt, value + delta)


def cut_mdat(path: str | os.PathLike[str], keep_fraction: float) -> Path:
    """Keep the MP4 index intact but cut the media data to ``keep_fraction`` of its bytes.

    The result reports every frame in its index while only the first part of
    them can be decoded (a download that stopped half-way, with the index
    up front). When moov follows the data, it is moved to the front first
    (patching the chunk offsets) so the cut cannot remove it.
    """
    data = Path(path).read_bytes()
    boxes = list(_boxes(data, 0, len(data)))
    kinds = [kind for kind, _, _ in boxes]
    if "moov" not in kinds or "mdat" not in kinds:
        raise ValueError(f"{path}: not an MP4 with moov and mdat boxes")
    _, moov_at, moov_size = boxes[kinds.index("moov")]
    _, mdat_at, mdat_size = boxes[kinds.index("mdat")]
    moov = bytearray(data[moov_at : moov_at + moov_size])
    head = b"".join(data[o : o + s] for kind, o, s in boxes if kind not in ("moov", "mdat"))
    if moov_at > mdat_at:
        # mdat's payload moves by the size of the boxes now placed before it.
        _shift_chunk_offsets(moov, 0, len(moov), len(head) + moov_size - mdat_at)
    else:
        head = data[:mdat_at]
        moov = bytearray()
    tail = data[mdat_at : mdat_at + 8 + int((mdat_size - 8) * keep_fraction)]
    Path(path).write_bytes(head + bytes(moov) + tail)
    return Path(path)


# --- the format matrix: what phones, editors and muxers make ------------------------


def encode_clip(
    path: str | os.PathLike[str],
    frames: Sequence[np.ndarray],
    fps: int = 10,
    *,
    codec: str = "libx264",
    pix_fmt: str = "yuv420p",
    options: dict[str, str] | None = None,
    rotation: int = 0,
    hflip: bool = False,
    display_matrix: Sequence[int] | None = None,
    first_frame_s: float = 0.0,
    audio: bool = False,
) -> Path:
    """Encode RGB ``frames`` at ``fps`` with PyAV, as one video stream.

    ``rotation``: counter-clockwise degrees of the display matrix (FFmpeg's sign, as
    ``ffprobe`` prints it and ``VideoFrame.rotation`` reads it back); ``hflip`` mirrors
    it; ``display_matrix``: FFmpeg's 9 values instead. ``first_frame_s``: presentation
    time of the first frame (an MP4 starts it with an empty edit). ``audio``: a short
    silent AAC track beside the video.
    """
    import av

    height, width = frames[0].shape[:2]
    with av.open(os.fspath(path), mode="w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        stream.time_base = Fraction(1, fps)
        if options:
            stream.codec_context.options = options
        if rotation or hflip:
            stream.set_display_rotation(rotation, hflip=hflip)
        if display_matrix is not None:
            stream.set_display_matrix(display_matrix)
        sound = container.add_stream("aac", rate=8000) if audio else None
        _mux_frames(container, stream, frames, first_pts=round(first_frame_s * fps))
        if sound is not None:
            samples = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp",
                                                 layout="mono")
            samples.sample_rate, samples.pts = 8000, 0
            container.mux(sound.encode(samples))
            container.mux(sound.encode(None))
    return Path(path)


def _mux_frames(container, stream, frames: Sequence[np.ndarray], first_pts: int = 0) -> None:
    """Encode RGB ``frames`` into ``stream`` one tick apart from ``first_pts``, then flush."""
    import av

    for index, frame in enumerate(frames):
        picture = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
        picture.pts = first_pts + index
        container.mux(stream.encode(picture))
    container.mux(stream.encode(None))


def hide_leading_frames(source: str | os.PathLike[str], path: str | os.PathLike[str],
                        hidden: int) -> Path:
    """Remux ``source`` (constant rate, one video stream) into an MP4 whose edit list
    starts playback ``hidden`` frames in, as ``ffmpeg -ss ... -c copy`` and phone editors
    trim: the packets before the cut stay in the file, players skip them."""
    import av

    with av.open(os.fspath(source)) as reader, av.open(os.fspath(path), mode="w") as writer:
        video = reader.streams.video[0]
        out = writer.add_stream_from_template(video)
        step = round(1 / (video.average_rate * video.time_base))
        for packet in reader.demux(video):
            if packet.dts is None:
                continue
            packet.pts -= hidden * step
            packet.dts -= hidden * step
            packet.stream = out
            writer.mux(packet)
    return Path(path)


def write_two_streams(path: str | os.PathLike[str], decoy: Sequence[np.ndarray],
                      main: Sequence[np.ndarray], fps: int = 10) -> Path:
    """Two video streams: ``decoy`` first, ``main`` second and marked default."""
    import av

    with av.open(os.fspath(path), mode="w") as container:
        streams = []
        for frames, disposition in ((decoy, av.stream.Disposition(0)),
                                    (main, av.stream.Disposition.default)):
            stream = container.add_stream("libx264", rate=fps)
            stream.height, stream.width = frames[0].shape[:2]
            stream.pix_fmt, stream.disposition = "yuv420p", disposition
            streams.append((stream, frames))
        for stream, frames in streams:
            _mux_frames(container, stream, frames)
    return Path(path)


def write_with_cover_art(path: str | os.PathLike[str], frames: Sequence[np.ndarray],
                         fps: int = 10, cover_side: int = 256) -> Path:
    """A Matroska file (use ``.mkv``) with ``frames`` as its video stream and a JPEG cover
    attached, which FFmpeg reads as a second video stream, larger than the first and,
    like it, not marked default."""
    import av

    ok, jpeg = cv2.imencode(".jpg", np.full((cover_side, cover_side, 3), 200, np.uint8))
    if not ok:
        raise RuntimeError("cv2 cannot encode a JPEG cover")
    with av.open(os.fspath(path), mode="w") as container:
        container.add_attachment("cover.jpg", "image/jpeg", jpeg.tobytes())
        video = container.add_stream("libx264", rate=fps)
        video.height, video.width = frames[0].shape[:2]
        video.pix_fmt = "yuv420p"
        _mux_frames(container, video, frames)
    return Path(path)


def write_audio_only(path: str | os.PathLike[str]) -> Path:
    """An M4A-style MP4 with one short silent AAC track and no video."""
    import av

    with av.open(os.fspath(path), mode="w", format="mp4") as container:
        sound = container.add_stream("aac", rate=8000)
        for block in range(4):
            samples = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp",
                                                 layout="mono")
            samples.sample_rate, samples.pts = 8000, block * 1024
            container.mux(sound.encode(samples))
        container.mux(sound.encode(None))
    return Path(path)
