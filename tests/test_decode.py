"""Decoding: both backends on real encoded videos, frame selection, and bad input."""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import videogen

from hflpipe.pipeline.common.errors import ConfigError, InputError
from hflpipe.pipeline.decode.base import (
    DecodeError,
    FrameChunk,
    FrameSelector,
    decode_error,
    get_decoder,
)

BACKENDS = ("decord", "pyav")
WIDTH, HEIGHT = 160, 120
N_FRAMES = 40
# Irregular gaps and a first frame at 0.5 s: a variable-frame-rate video whose
# times are exact in milliseconds.
VFR_TIMES = [
    0.5 + 0.04 * i + (0.06 if i > 20 else 0.0) + (0.1 if i > 30 else 0.0) for i in range(N_FRAMES)
]


def _cfr_times(fps: float) -> list[float]:
    return [i / fps for i in range(N_FRAMES)]


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, list[float]]]:
    """Name -> (path, expected presentation times) for several codecs and containers."""
    root = tmp_path_factory.mktemp("videos")
    frames = list(videogen.moving_square_frames(N_FRAMES, WIDTH, HEIGHT))
    made: dict[str, tuple[Path, list[float]]] = {}
    for name, fourcc, fps in (
        ("mp4v.mp4", "mp4v", 10.0),
        ("mjpg.avi", "MJPG", 25.0),
        ("h264.mp4", "h264", 30.0),
    ):
        videogen.write_video(root / name, frames, fps, fourcc)
        made[name] = (root / name, _cfr_times(fps))
    for name in ("vfr.mp4", "vfr.mkv"):
        videogen.write_vfr_video(root / name, frames, VFR_TIMES)
        made[name] = (root / name, VFR_TIMES)
    return made


def _joined(chunks: list[FrameChunk]) -> FrameChunk:
    assert chunks, "no chunks"
    return FrameChunk(
        indices=np.concatenate([c.indices for c in chunks]),
        timestamps_s=np.concatenate([c.timestamps_s for c in chunks]),
        frames=np.concatenate([c.frames for c in chunks]),
    )


def _read_all(backend: str, path: Path, threads: int = 0, **kwargs: object) -> FrameChunk:
    return _joined(list(get_decoder(backend, threads).read_chunks(str(path), **kwargs)))


def _barcodes(frames: np.ndarray) -> list[int]:
    return [videogen.read_frame_index(frame) for frame in frames]


VIDEO_NAMES = ("mp4v.mp4", "mjpg.avi", "h264.mp4", "vfr.mp4", "vfr.mkv")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", VIDEO_NAMES)
def test_reads_every_frame_in_order_with_container_times(
    videos: dict[str, tuple[Path, list[float]]], backend: str, name: str
) -> None:
    path, times = videos[name]
    got = _read_all(backend, path)
    assert got.indices.dtype == np.int64 and got.timestamps_s.dtype == np.float64
    assert got.frames.dtype == np.uint8 and got.frames.shape == (N_FRAMES, HEIGHT, WIDTH, 3)
    np.testing.assert_array_equal(got.indices, np.arange(N_FRAMES))
    assert _barcodes(got.frames) == list(range(N_FRAMES))
    np.testing.assert_allclose(got.timestamps_s, times, rtol=0, atol=1e-9)
    # RGB order and content: lossy codecs and 4:2:0 chroma leave a mean error of
    # about 2 levels; swapped channels give about 40.
    source = np.stack(list(videogen.moving_square_frames(N_FRAMES, WIDTH, HEIGHT)))
    assert np.abs(got.frames.astype(np.int16) - source).mean() < 4


@pytest.mark.parametrize("name", VIDEO_NAMES)
def test_backends_give_the_same_frames_and_times(
    videos: dict[str, tuple[Path, list[float]]], name: str
) -> None:
    path, _ = videos[name]
    decord_read = _read_all("decord", path)
    pyav_read = _read_all("pyav", path)
    np.testing.assert_array_equal(decord_read.indices, pyav_read.indices)
    np.testing.assert_array_equal(decord_read.timestamps_s, pyav_read.timestamps_s)
    # Both use FFmpeg's decoders; only the YUV->RGB conversion could round differently.
    diff = np.abs(decord_read.frames.astype(np.int16) - pyav_read.frames.astype(np.int16))
    assert diff.max() <= 2


@pytest.mark.parametrize("name", VIDEO_NAMES)
def test_decord_chunks_parked_between_keyframes_give_the_same_frames(
    videos: dict[str, tuple[Path, list[float]]], name: str
) -> None:
    # Chunks of 7 start in the middle of H.264's single keyframe interval, on or after
    # mp4v's keyframes, and on MJPEG's every frame: each way of parking the reader.
    path, _ = videos[name]
    chunks = list(get_decoder("decord").read_chunks(str(path), chunk_size=7))
    assert all(1 <= len(chunk) <= 7 for chunk in chunks)
    decord_read = _joined(chunks)
    pyav_read = _read_all("pyav", path, chunk_size=7)
    np.testing.assert_array_equal(decord_read.indices, np.arange(N_FRAMES))
    np.testing.assert_array_equal(decord_read.timestamps_s, pyav_read.timestamps_s)
    assert _barcodes(decord_read.frames) == list(range(N_FRAMES))
    diff = np.abs(decord_read.frames.astype(np.int16) - pyav_read.frames.astype(np.int16))
    assert diff.max() <= 2


def _resident_mib() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _h264_with_keyframes_every(path: Path, frames: int, keyint: int) -> Path:
    """Barcoded frames as H.264 with B-frames and a keyframe every ``keyint`` frames."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        stream.codec_context.options = {
            "crf": "10", "x264-params": f"keyint={keyint}:min-keyint={keyint}:scenecut=0"}
        for frame in videogen.moving_square_frames(frames, WIDTH, HEIGHT):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode(None))
    return path


@pytest.mark.parametrize(
    ("selection", "expected"),
    [({"start_s": 1.3}, list(range(33, 60))),
     ({"start_s": 1.3, "end_s": 2.0, "stride": 3}, [33, 36, 39, 42, 45, 48]),
     ({"frame_indices": [27, 28, 41, 59]}, [27, 28, 41, 59])],
)
def test_pyav_seeks_to_the_keyframe_before_a_late_selection(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, selection: dict[str, object],
    expected: list[int],
) -> None:
    path = _h264_with_keyframes_every(tmp_path / "gop10.mp4", 60, 10)
    with caplog.at_level(logging.DEBUG, logger="hflpipe.pipeline.decode.pyav_backend"):
        got = _read_all("pyav", path, chunk_size=4, **selection)
    assert "seeking to the keyframe at frame 20" in caplog.text or \
        "seeking to the keyframe at frame 30" in caplog.text
    assert "decoding from the start" not in caplog.text
    assert got.indices.tolist() == expected
    assert _barcodes(got.frames) == expected
    np.testing.assert_allclose(got.timestamps_s, np.asarray(expected) / 25, rtol=0, atol=1e-9)


def test_pyav_numbers_frames_alike_with_and_without_seeking_in_a_cut_stream(
    tmp_path: Path,
) -> None:
    # A stream cut in the middle of a keyframe interval: its first frames cannot be
    # decoded, so a read from the start numbers the first decodable frame 0.
    import av

    whole = _h264_with_keyframes_every(tmp_path / "gop10.mp4", 60, 10)
    cut = tmp_path / "cut.mp4"
    with av.open(str(whole)) as source, av.open(str(cut), "w") as target:
        stream = target.add_stream_from_template(source.streams.video[0])
        for number, packet in enumerate(source.demux(source.streams.video[0])):
            if packet.size and number >= 5:
                packet.stream = stream
                target.mux(packet)
    everything = _read_all("pyav", cut)
    barcode_of = dict(zip(everything.indices.tolist(), _barcodes(everything.frames), strict=True))
    later = _read_all("pyav", cut, frame_indices=[22, 40, 41])
    assert _barcodes(later.frames) == [barcode_of[i] for i in (22, 40, 41)]
    late_start = _read_all("pyav", cut, start_s=float(everything.timestamps_s[30]))
    assert late_start.indices.tolist() == everything.indices[30:].tolist()
    assert _barcodes(late_start.frames) == _barcodes(everything.frames[30:])


def test_pyav_decodes_from_the_start_when_a_seek_misses_its_keyframe(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hflpipe.pipeline.decode import pyav_backend as decode_pyav

    path = _h264_with_keyframes_every(tmp_path / "gop10.mp4", 60, 10)
    # Frame 35 is no keyframe: the seek lands on frame 30 instead, which must be noticed.
    tick = 1 / float(decode_pyav.read_container_header(str(path)).time_base)
    wrong = decode_pyav._Keyframe(position=35, pts=round(35 / 25 * tick))
    monkeypatch.setattr(decode_pyav, "_keyframe_before_selection", lambda *_: wrong)
    with caplog.at_level(logging.DEBUG, logger="hflpipe.pipeline.decode.pyav_backend"):
        got = _read_all("pyav", path, frame_indices=[36, 50])
    assert "decoding from the start" in caplog.text
    assert got.indices.tolist() == [36, 50] and _barcodes(got.frames) == [36, 50]


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="needs /proc")
@pytest.mark.parametrize("backend", BACKENDS)
def test_a_waiting_caller_does_not_make_the_decoder_read_ahead(
    tmp_path: Path, backend: str
) -> None:
    # decord's reader, left alone after a chunk, decodes the rest of the file into
    # memory (here 300 frames, 66 MiB of RGB) within a fraction of a second.
    path = tmp_path / "long.mp4"
    videogen.write_video(path, videogen.moving_square_frames(300, 320, 240), 30.0, "h264")
    chunks = get_decoder(backend).read_chunks(str(path), chunk_size=8)
    first = next(chunks)
    before = _resident_mib()
    time.sleep(1.5)
    grown = _resident_mib() - before
    assert grown < 20, f"{grown:.0f} MiB decoded ahead while the caller waited"
    assert sum(len(chunk) for chunk in chunks) + len(first) == 300


def _decoding_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "hflpipe-decode"]


def test_pyav_stops_its_decoding_thread_when_a_read_ends_early(
    videos: dict[str, tuple[Path, list[float]]],
) -> None:
    path, times = videos["h264.mp4"]
    decoder = get_decoder("pyav")
    chunks = decoder.read_chunks(str(path), chunk_size=4)
    first = next(chunks)
    assert len(_decoding_threads()) == 1
    chunks.close()
    assert first.indices.tolist() == [0, 1, 2, 3] and not _decoding_threads()
    # An end time stops the read while the thread still has frames to decode.
    ended = list(decoder.read_chunks(str(path), chunk_size=4, end_s=times[10]))
    assert _joined(ended).indices.tolist() == list(range(10)) and not _decoding_threads()


def _ffmpeg_threads() -> int:
    """Threads FFmpeg started in this process (it names them "av:<codec>:...")."""
    names = []
    for task in Path("/proc/self/task").iterdir():
        # A thread that ends between the listing and the read is not counted.
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            names.append((task / "comm").read_text())
    return sum(name.startswith("av:") for name in names)


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs /proc")
@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="FFmpeg picks one thread on one core")
def test_pyav_decodes_with_the_threads_it_is_given(
    videos: dict[str, tuple[Path, list[float]]],
) -> None:
    path, _ = videos["h264.mp4"]
    # Counted from here: a decoder another test left open may still hold its threads
    # (collected first, so that none of them ends while this test counts).
    gc.collect()
    before = _ffmpeg_threads()
    one = get_decoder("pyav", threads=1).read_chunks(str(path), chunk_size=4)
    next(one)
    assert _ffmpeg_threads() == before
    one.close()
    chosen = get_decoder("pyav", threads=0).read_chunks(str(path), chunk_size=4)
    next(chosen)
    assert _ffmpeg_threads() > before
    chosen.close()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    ("name", "fps", "vfr"),
    [
        ("mp4v.mp4", 10.0, False),
        ("mjpg.avi", 25.0, False),
        ("h264.mp4", 30.0, False),
        ("vfr.mp4", None, True),
        ("vfr.mkv", None, True),
    ],
)
def test_probe(
    videos: dict[str, tuple[Path, list[float]]],
    backend: str,
    name: str,
    fps: float | None,
    vfr: bool,
) -> None:
    path, _ = videos[name]
    info = get_decoder(backend).probe(str(path))
    assert info.path == str(path) and info.backend == backend
    assert (info.num_frames, info.width, info.height) == (N_FRAMES, WIDTH, HEIGHT)
    assert info.variable_frame_rate is vfr
    if fps is not None:
        assert info.fps == pytest.approx(fps, rel=1e-3)
    assert info.duration_s == pytest.approx(info.num_frames / info.fps)


def test_probes_agree(videos: dict[str, tuple[Path, list[float]]]) -> None:
    for path, _ in videos.values():
        decord_info = get_decoder("decord").probe(str(path))
        pyav_info = get_decoder("pyav").probe(str(path))
        assert decord_info.num_frames == pyav_info.num_frames
        assert decord_info.fps == pytest.approx(pyav_info.fps, rel=1e-9)
        assert decord_info.variable_frame_rate == pyav_info.variable_frame_rate


@pytest.mark.parametrize("backend", BACKENDS)
def test_chunks_are_bounded_and_contiguous(
    videos: dict[str, tuple[Path, list[float]]], backend: str
) -> None:
    path, _ = videos["h264.mp4"]
    chunks = list(get_decoder(backend).read_chunks(str(path), chunk_size=7))
    assert [len(c) for c in chunks] == [7] * 5 + [5]
    for chunk in chunks:
        assert chunk.frames.shape[0] == len(chunk.indices) == len(chunk.timestamps_s)
    np.testing.assert_array_equal(np.concatenate([c.indices for c in chunks]), np.arange(40))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", ["h264.mp4", "vfr.mp4"])
@pytest.mark.parametrize(
    ("stride", "start_s", "end_s"),
    [(3, None, None), (1, 0.6, None), (2, None, 1.0), (4, 0.55, 1.5)],
)
def test_stride_and_time_window(
    videos: dict[str, tuple[Path, list[float]]],
    backend: str,
    name: str,
    stride: int,
    start_s: float | None,
    end_s: float | None,
) -> None:
    path, times = videos[name]
    stamps = np.asarray(times)
    in_window = np.ones(N_FRAMES, dtype=bool)
    if start_s is not None:
        in_window &= stamps >= start_s
    if end_s is not None:
        in_window &= stamps < end_s
    expected = np.flatnonzero(in_window)[::stride]
    got = _read_all(backend, path, chunk_size=4, stride=stride, start_s=start_s, end_s=end_s)
    np.testing.assert_array_equal(got.indices, expected)
    assert _barcodes(got.frames) == expected.tolist()
    np.testing.assert_allclose(got.timestamps_s, stamps[expected], rtol=0, atol=1e-9)


@pytest.mark.parametrize("backend", BACKENDS)
def test_frame_indices_reread_exactly_those_frames(
    videos: dict[str, tuple[Path, list[float]]], backend: str
) -> None:
    path, times = videos["vfr.mp4"]
    wanted = [0, 3, 17, 18, 19, 33, 39]
    got = _read_all(backend, path, chunk_size=3, frame_indices=wanted)
    assert got.indices.tolist() == wanted
    assert _barcodes(got.frames) == wanted
    np.testing.assert_allclose(got.timestamps_s, np.asarray(times)[wanted], rtol=0, atol=1e-9)


@pytest.mark.parametrize("backend", BACKENDS)
def test_selection_past_the_end_yields_nothing(
    videos: dict[str, tuple[Path, list[float]]], backend: str
) -> None:
    path, _ = videos["h264.mp4"]
    decoder = get_decoder(backend)
    assert list(decoder.read_chunks(str(path), start_s=100.0)) == []
    assert list(decoder.read_chunks(str(path), frame_indices=[])) == []


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "kwargs",
    [
        {"chunk_size": 0},
        {"stride": 0},
        {"start_s": 2.0, "end_s": 1.0},
        {"frame_indices": [3, 1]},
        {"frame_indices": [1, 1]},
        {"frame_indices": [-1, 2]},
        {"frame_indices": [1, 2], "stride": 2},
        {"frame_indices": [1, 2], "start_s": 0.0},
    ],
)
def test_invalid_arguments_raise_value_error(
    videos: dict[str, tuple[Path, list[float]]], backend: str, kwargs: dict[str, object]
) -> None:
    path, _ = videos["h264.mp4"]
    with pytest.raises(ValueError):
        list(get_decoder(backend).read_chunks(str(path), **kwargs))


def test_get_decoder() -> None:
    assert get_decoder().name == "pyav"
    assert get_decoder("decord").name == "decord"
    assert get_decoder("pyav").name == "pyav"
    assert get_decoder("pyav", threads=3).threads == get_decoder("decord", threads=3).threads == 3
    with pytest.raises(ConfigError, match="'opencv'"):
        get_decoder("opencv")


# --- bad input -------------------------------------------------------------------


def _damage(kind: str, root: Path) -> Path:
    """A broken input of the given kind under ``root``."""
    path = root / f"{kind}.mp4"
    if kind == "missing":
        return path
    if kind == "directory":
        path.mkdir()
        return path
    if kind == "zero_byte":
        return videogen.make_zero_byte(path)
    if kind == "text":
        return videogen.make_text_file(path)
    if kind == "zero_frames":
        return videogen.write_empty_video(path)
    videogen.write_video(path, videogen.moving_square_frames(30), 10.0)
    # cv2 writes the index (moov) after the data, so cutting the file loses it.
    if kind == "truncated":
        return videogen.truncate(path, 0.5)
    if kind == "no_moov":
        return videogen.remove_moov(path)
    if kind == "header_only":
        return videogen.truncate(path, 0.01)
    raise AssertionError(kind)


BAD_INPUTS = (
    "missing",
    "directory",
    "zero_byte",
    "text",
    "zero_frames",
    "truncated",
    "no_moov",
    "header_only",
)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", BAD_INPUTS)
@pytest.mark.parametrize("call", ["probe", "read_chunks"])
def test_bad_input_raises_one_line_decode_error(
    tmp_path: Path, backend: str, kind: str, call: str
) -> None:
    path = str(_damage(kind, tmp_path))
    decoder = get_decoder(backend)
    with pytest.raises(DecodeError) as caught:
        if call == "probe":
            decoder.probe(path)
        else:
            list(decoder.read_chunks(path))
    message = str(caught.value)
    assert message.startswith(f"{path}: ")
    assert "\n" not in message and len(message) < 300
    assert isinstance(caught.value, InputError)


@pytest.mark.parametrize("backend", BACKENDS)
def test_unreadable_file(
    videos: dict[str, tuple[Path, list[float]]], backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, _ = videos["mp4v.mp4"]
    # Tests run as root, for whom chmod 000 still reads: fake the permission check.
    real_access = os.access
    monkeypatch.setattr(
        os, "access", lambda p, mode, **kw: False if str(p) == str(path) else real_access(p, mode)
    )
    with pytest.raises(DecodeError, match="permission denied"):
        get_decoder(backend).probe(str(path))


def _tail_zeroed(path: Path, keep_fraction: float) -> Path:
    """Overwrite the media data after ``keep_fraction`` with zeros; the index stays intact."""
    ((_, offset, size),) = [box for box in videogen.mp4_atoms(path) if box[0] == "mdat"]
    data = bytearray(path.read_bytes())
    cut = offset + int(size * keep_fraction)
    data[cut : offset + size] = bytes(offset + size - cut)
    path.write_bytes(bytes(data))
    return path


@pytest.mark.timeout(60)
@pytest.mark.parametrize("threads", [0, 1])
@pytest.mark.parametrize("backend", BACKENDS)
def test_undecodable_tail_stops_at_last_good_frame(
    tmp_path: Path, backend: str, threads: int, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "tail.mp4"
    videogen.write_video(path, videogen.moving_square_frames(60), 10.0, "h264")
    _tail_zeroed(path, 0.5)
    decoder = get_decoder(backend, threads)
    assert decoder.probe(str(path)).num_frames == 60  # the container still claims all
    with caplog.at_level(logging.WARNING, logger="hflpipe.pipeline.decode.base"):
        got = _read_all(backend, path, threads, chunk_size=8)
    assert 5 < len(got.indices) < 60
    np.testing.assert_array_equal(got.indices, np.arange(len(got.indices)))
    assert _barcodes(got.frames) == got.indices.tolist()
    messages = [r.getMessage() for r in caplog.records]
    assert any("decoding stopped after" in m for m in messages)
    if backend == "decord":
        assert any("using PyAV" in m for m in messages)


def test_undecodable_tail_backends_agree(tmp_path: Path) -> None:
    path = tmp_path / "tail.mp4"
    videogen.write_video(path, videogen.moving_square_frames(60), 10.0, "h264")
    _tail_zeroed(path, 0.5)
    counts = {b: len(_read_all(b, path, chunk_size=64).indices) for b in BACKENDS}
    assert counts["decord"] == counts["pyav"]


@pytest.mark.timeout(60)
def test_data_cut_with_index_in_front(tmp_path: Path) -> None:
    """A download that stopped half-way: PyAV returns the frames present, decord refuses."""
    path = tmp_path / "cut.mp4"
    videogen.write_video(path, videogen.moving_square_frames(60), 10.0, "h264")
    videogen.cut_mdat(path, 0.5)
    got = _read_all("pyav", path)
    assert 5 < len(got.indices) < 60
    assert _barcodes(got.frames) == got.indices.tolist()
    with pytest.raises(DecodeError, match="decord cannot index the video"):
        list(get_decoder("decord").read_chunks(str(path)))


def test_decode_error_message_is_one_clean_line() -> None:
    cause = (
        "[20:40:07] /src/video/threaded_decoder.cc:292: [20:40:07] /src/threaded_decoder.cc:218:"
        " Check failed: send packet\n\nStack trace returned 10 entries:\n[bt] (0) libdecord.so"
    )
    error = decode_error("clip.mp4", cause)
    assert str(error) == "clip.mp4: Check failed: send packet"


def test_frame_selector_stride_counts_within_window() -> None:
    selector = FrameSelector(stride=2, start_s=0.25)
    stamps = np.arange(10) * 0.1
    assert selector.select(stamps).tolist() == [3, 5, 7, 9]
