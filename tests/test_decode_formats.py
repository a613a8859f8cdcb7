"""The format matrix: footage as phones, editors and muxers make it, through both decoders.

Each clip is tiny (8 frames of 96x64 at 10 fps) and made here with PyAV. For each, both
backends must give the frames a player shows, as it shows them: the right stream, the
frames an edit list keeps, turned by the display matrix, at presentation times.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import pytest
import videogen

from hflpipe.pipeline.decode.base import DecodeError, get_decoder

BACKENDS = ("decord", "pyav")
FRAMES, WIDTH, HEIGHT, FPS = 8, 96, 64, 10
SOURCE = list(videogen.moving_square_frames(FRAMES + 3, WIDTH, HEIGHT))
# Mean absolute difference (0-255) between a decoded frame and the frame it should be;
# near-lossless encoding stays under 3, any wrong frame or turn is above 20.
SAME_FRAME = 8.0


@dataclass(frozen=True)
class Case:
    """A clip and what a player shows of it."""

    make: Callable[[Path], Path]
    turn: Callable[[np.ndarray], np.ndarray] = lambda frame: frame
    first_source_frame: int = 0
    first_time_s: float = 0.0
    size: tuple[int, int] = (WIDTH, HEIGHT)
    rotation_deg: int = 0
    mirrored: bool = False
    stream_index: int = 0
    #: decord hands these to PyAV (it cannot read them as a player would).
    decord_reads: bool = True


def _clip(**options: object) -> Callable[[Path], Path]:
    return lambda path: videogen.encode_clip(path, SOURCE[:FRAMES], FPS, **options)


def _trimmed(path: Path) -> Path:
    whole = videogen.encode_clip(path.with_suffix(".whole.mp4"), SOURCE, FPS,
                                 options={"crf": "10", "bf": "0", "g": "100"})
    return videogen.hide_leading_frames(whole, path, hidden=3)


def _b_frames(path: Path) -> Path:
    videogen.encode_clip(path, SOURCE[:FRAMES], FPS, options={"crf": "10", "bf": "2"})
    with av.open(str(path)) as container:
        kinds = {av.video.frame.PictureType(frame.pict_type) for frame in
                 container.decode(video=0)}
    assert av.video.frame.PictureType.B in kinds, f"the encoder made no B-frames: {kinds}"
    return path


NEAR_LOSSLESS = {"crf": "10", "bf": "0"}
CASES = {
    "rotated-90.mp4": Case(_clip(rotation=90, options=NEAR_LOSSLESS),
                           lambda f: np.rot90(f, 1), size=(HEIGHT, WIDTH), rotation_deg=270),
    "rotated-180.mp4": Case(_clip(rotation=180, options=NEAR_LOSSLESS),
                            lambda f: np.rot90(f, 2), rotation_deg=180),
    # A phone held upright: stored landscape, shown portrait, with its sound track.
    "rotated-270.mp4": Case(_clip(rotation=-90, audio=True, options=NEAR_LOSSLESS),
                            lambda f: np.rot90(f, -1), size=(HEIGHT, WIDTH), rotation_deg=90),
    "mirrored.mp4": Case(_clip(hflip=True, options=NEAR_LOSSLESS), lambda f: f[:, ::-1],
                         mirrored=True),
    "mirrored-90.mp4": Case(_clip(rotation=90, hflip=True, options=NEAR_LOSSLESS),
                            lambda f: np.rot90(f, 1)[:, ::-1], size=(HEIGHT, WIDTH),
                            rotation_deg=270, mirrored=True),
    "edit-list.mp4": Case(_trimmed, first_source_frame=3, decord_reads=False),
    # The first stream is larger, the second is the one marked default.
    "two-streams.mp4": Case(
        lambda p: videogen.write_two_streams(
            p, list(videogen.moving_square_frames(2, 128, 96)), SOURCE[:FRAMES], FPS),
        stream_index=1, decord_reads=False),
    "cover-art.mkv": Case(lambda p: videogen.write_with_cover_art(p, SOURCE[:FRAMES], FPS),
                          decord_reads=False),
    "10-bit.mp4": Case(_clip(pix_fmt="yuv420p10le", options=NEAR_LOSSLESS)),
    "yuv444p.mp4": Case(_clip(pix_fmt="yuv444p", options=NEAR_LOSSLESS)),
    "hevc.mp4": Case(_clip(codec="libx265", options={
        "crf": "10", "x265-params": "log-level=error:bframes=0"})),
    "vp9.webm": Case(_clip(codec="libvpx-vp9", options={"crf": "10", "b": "0"})),
    "b-frames.mp4": Case(_b_frames),
    "late-start.mp4": Case(_clip(first_frame_s=0.5, options=NEAR_LOSSLESS), first_time_s=0.5),
}


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("format-matrix")
    return {name: case.make(root / name) for name, case in CASES.items()}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", CASES)
def test_frames_as_a_player_shows_them(clips: dict[str, Path], name: str, backend: str) -> None:
    case, path = CASES[name], str(clips[name])
    decoder = get_decoder(backend)
    info = decoder.probe(path)
    width, height = case.size
    assert (info.num_frames, info.width, info.height) == (FRAMES, width, height)
    assert (info.rotation_deg, info.mirrored) == (case.rotation_deg, case.mirrored)
    assert info.stream_index == case.stream_index
    assert info.backend == (backend if case.decord_reads else "pyav")
    chunks = list(decoder.read_chunks(path, chunk_size=3))
    indices = np.concatenate([c.indices for c in chunks])
    times = np.concatenate([c.timestamps_s for c in chunks])
    frames = np.concatenate([c.frames for c in chunks])
    assert frames.shape == (FRAMES, height, width, 3) and frames.flags.c_contiguous
    np.testing.assert_array_equal(indices, np.arange(FRAMES))
    np.testing.assert_allclose(times, case.first_time_s + np.arange(FRAMES) / FPS, atol=1e-6)
    for index, frame in enumerate(frames):
        expected = case.turn(SOURCE[case.first_source_frame + index]).astype(np.float32)
        error = float(np.abs(frame.astype(np.float32) - expected).mean())
        assert error < SAME_FRAME, f"frame {index}: off by {error:.1f} on average"


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_stream_asked_for(clips: dict[str, Path], backend: str) -> None:
    path = str(clips["two-streams.mp4"])
    decoder = get_decoder(backend, stream=0)
    info = decoder.probe(path)
    assert (info.stream_index, info.num_frames, info.width, info.height) == (0, 2, 128, 96)
    frames = np.concatenate([c.frames for c in decoder.read_chunks(path)])
    assert [videogen.read_frame_index(f) for f in frames] == [0, 1]
    with pytest.raises(DecodeError, match=r"stream 5 is not a video stream \(video streams: 0, 1"):
        get_decoder(backend, stream=5).probe(path)


@pytest.mark.parametrize("backend", BACKENDS)
def test_sound_without_pictures_is_no_video(tmp_path: Path, backend: str) -> None:
    path = str(videogen.write_audio_only(tmp_path / "voice-memo.m4a"))
    for call in (lambda d: d.probe(path), lambda d: list(d.read_chunks(path))):
        with pytest.raises(DecodeError, match="no video stream"):
            call(get_decoder(backend))


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_turn_by_other_than_quarter_turns_is_refused(tmp_path: Path, backend: str) -> None:
    # 45 degrees in FFmpeg's 16.16 fixed point.
    c = round(65536 / 2**0.5)
    path = videogen.encode_clip(tmp_path / "tilted.mp4", SOURCE[:2], FPS,
                                display_matrix=[c, -c, 0, c, c, 0, 0, 0, 1 << 30])
    with pytest.raises(DecodeError, match=r"turns frames by -?45\.0 degrees"):
        get_decoder(backend).probe(str(path))
