"""Codecs, containers and variable frame rate, with both decoders: decoded, then end to end.

Real encoded videos (cv2 mp4v in MP4, cv2 MJPG in AVI, and H.264 through PyAV with
explicit variable-frame-rate timestamps in MP4 and in Matroska). Each is read by both
decoders, frame by frame, against its own container: its frames (by the bar code each
carries) and their presentation times as PyAV reads the pts; both decoders give the same
pixels. Then two of them (AVI at a constant rate, Matroska at a variable one) go through
``runner.run`` on the session's Ray with a boxes file, once per decoder, and the Parquet
output is read back: the rows are those frames, at those times, the same with both.
"""

from __future__ import annotations

import csv
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pandas as pd
import pytest
import videogen

from hflpipe.model.synthetic_checkpoint import synthetic_mano_path
from hflpipe.pipeline.config.run_config import make_config
from hflpipe.pipeline.decode.base import get_decoder
from hflpipe.pipeline.inputs.videos import video_id_for
from hflpipe.pipeline.output.reader import read_table
from hflpipe.pipeline.run.runner import run

pytestmark = pytest.mark.slow

FRAMES = 4
WIDTH, HEIGHT = 160, 120
# Irregular gaps, the first frame at 0.5 s; exact in milliseconds.
VFR_TIMES = [0.5, 0.54, 0.63, 0.8]
DECODERS = ("decord", "pyav")
#: The videos of the end-to-end runs (every one is decoded by both backends).
END_TO_END = ("mjpg.avi", "h264-vfr.mkv")
# The square of videogen.moving_square_frame stands for the hand, the area to its right
# for the object.
SQUARE = max(HEIGHT // 5, 8)


def square_box(index: int) -> list[float]:
    """Box of videogen's moving square on frame ``index`` (its drawing rule, restated)."""
    x = (index * 5) % max(WIDTH - SQUARE, 1)
    y = videogen.BARCODE_HEIGHT + (index * 3) % max(HEIGHT - videogen.BARCODE_HEIGHT - SQUARE, 1)
    return [x, y, x + SQUARE, y + SQUARE]


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("formats")
    frames = list(videogen.moving_square_frames(FRAMES, WIDTH, HEIGHT))
    made = {}
    for name, fourcc, fps in (("mp4v.mp4", "mp4v", 10.0), ("mjpg.avi", "MJPG", 25.0)):
        videogen.write_video(root / name, frames, fps, fourcc)
        made[name] = root / name
    for name in ("h264-vfr.mp4", "h264-vfr.mkv"):
        videogen.write_vfr_video(root / name, frames, VFR_TIMES)
        made[name] = root / name
    return made


@pytest.fixture(scope="module")
def boxes_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One boxes file for every video (no ``video`` column): they share the frame content."""
    path = tmp_path_factory.mktemp("boxes") / "boxes.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["frame_index", "kind", "x0", "y0", "x1", "y1", "handedness"])
        for index in range(FRAMES):
            hand = square_box(index)
            writer.writerow([index, "hand", *hand, "right"])
            writer.writerow([index, "object", hand[2], hand[1], hand[2] + SQUARE, hand[3], ""])
    return path


@pytest.fixture(scope="module")
def outputs(
    tmp_path_factory: pytest.TempPathFactory, synthetic_checkpoint: Path,
    videos: dict[str, Path], boxes_file: Path, local_ray: Path,
) -> dict[str, Path]:
    """Decoder -> output folder of one run over the :data:`END_TO_END` videos."""
    done = {}
    for decoder in DECODERS:
        out = tmp_path_factory.mktemp(f"out-{decoder}")
        config = make_config(
            videos=[str(videos[name]) for name in END_TO_END], out=out,
            checkpoint=synthetic_checkpoint, mano=synthetic_mano_path(), detector="boxes",
            boxes=boxes_file, object="003_cracker_box", decoder=decoder,
        )
        summary = run(config, progress=False)
        assert summary.statuses == {"ok": len(END_TO_END)}, summary.failures
        done[decoder] = out
    return done


def container_times(path: Path) -> list[float]:
    """Presentation times of the video stream's frames, in order, from PyAV's pts."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        pts = sorted(frame.pts for frame in container.decode(stream))
        return [float(Fraction(p) * stream.time_base) for p in pts]


def decoded(path: Path, decoder: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(indices, times, frames) of every frame of ``path``, read in chunks of 3."""
    chunks = list(get_decoder(decoder).read_chunks(str(path), chunk_size=3))
    return (np.concatenate([c.indices for c in chunks]),
            np.concatenate([c.timestamps_s for c in chunks]),
            np.concatenate([c.frames for c in chunks]))


def hands_of(out: Path) -> pd.DataFrame:
    return read_table(out, "hands").to_pandas().sort_values(["video_id", "frame_index"])


@pytest.mark.parametrize("decoder", DECODERS)
@pytest.mark.parametrize("name", ["mp4v.mp4", "mjpg.avi", "h264-vfr.mp4", "h264-vfr.mkv"])
def test_every_frame_is_decoded_at_its_container_time(
    videos: dict[str, Path], name: str, decoder: str
) -> None:
    path = videos[name]
    info = get_decoder(decoder).probe(str(path))
    assert (info.num_frames, info.width, info.height, info.backend) == (
        FRAMES, WIDTH, HEIGHT, decoder)
    indices, times, frames = decoded(path, decoder)
    assert indices.tolist() == list(range(FRAMES))
    assert [videogen.read_frame_index(f) for f in frames] == list(range(FRAMES))
    times_there = container_times(path)
    assert len(times_there) == FRAMES
    np.testing.assert_allclose(times, times_there, rtol=0, atol=1e-9)
    if name.startswith("h264-vfr"):
        np.testing.assert_allclose(times, VFR_TIMES, rtol=0, atol=1e-9)


@pytest.mark.parametrize("name", ["mp4v.mp4", "mjpg.avi", "h264-vfr.mp4", "h264-vfr.mkv"])
def test_both_decoders_give_the_same_pixels(videos: dict[str, Path], name: str) -> None:
    # FFmpeg decodes for both backends: what the network is given does not depend on
    # the choice (test_both_decoders_give_the_same_rows checks it through the network).
    _, _, by_decord = decoded(videos[name], "decord")
    _, _, by_pyav = decoded(videos[name], "pyav")
    np.testing.assert_array_equal(by_decord, by_pyav)


@pytest.mark.parametrize("decoder", DECODERS)
def test_every_frame_of_every_video_is_accounted_for(
    outputs: dict[str, Path], videos: dict[str, Path], decoder: str
) -> None:
    out = outputs[decoder]
    table = read_table(out, "videos").to_pandas().set_index("video_id")
    hands = hands_of(out)
    objects = read_table(out, "objects").to_pandas()
    assert sorted(table.index) == sorted(video_id_for(videos[name]) for name in END_TO_END)
    for name in END_TO_END:
        path = videos[name]
        row = table.loc[video_id_for(path)]
        assert (row["status"], row["decoder"], row["num_frames"]) == ("ok", decoder, FRAMES), name
        assert (row["width"], row["height"]) == (WIDTH, HEIGHT), name
        mine = hands[hands["video_id"] == video_id_for(path)]
        assert mine["frame_index"].tolist() == list(range(FRAMES)), name
        assert not mine["interpolated"].any(), name
        # The boxes are the file's, frame by frame, after track smoothing (which moves
        # them by ~1 px here); a frame shifted by one would be 3-5 px off.
        np.testing.assert_allclose(np.stack(mine["box"].map(np.stack)),
                                   [square_box(i) for i in range(FRAMES)], atol=2.0,
                                   err_msg=name)
        seen = objects[objects["video_id"] == video_id_for(path)]["frame_index"]
        assert sorted(seen) == list(range(FRAMES)), name


@pytest.mark.parametrize("decoder", DECODERS)
def test_timestamps_are_the_containers(
    outputs: dict[str, Path], videos: dict[str, Path], decoder: str
) -> None:
    hands = hands_of(outputs[decoder])
    for name in END_TO_END:
        path = videos[name]
        got = hands[hands["video_id"] == video_id_for(path)]["timestamp_s"].to_numpy()
        np.testing.assert_allclose(got, container_times(path), rtol=0, atol=1e-9, err_msg=name)
    vfr = hands[hands["video_id"] == video_id_for(videos["h264-vfr.mkv"])]["timestamp_s"]
    np.testing.assert_allclose(vfr.to_numpy(), VFR_TIMES, rtol=0, atol=1e-9)


def test_both_decoders_give_the_same_rows(outputs: dict[str, Path]) -> None:
    hands = {decoder: hands_of(outputs[decoder]).reset_index(drop=True) for decoder in DECODERS}
    a, b = hands["decord"], hands["pyav"]
    assert len(a) == FRAMES * len(a["video_id"].unique()) == FRAMES * len(END_TO_END)
    exact = ["video_id", "frame_index", "timestamp_s", "track_id", "handedness", "interpolated"]
    pd.testing.assert_frame_equal(a[exact], b[exact])
    # Both backends hand the network the same pixels (FFmpeg decodes both), so the
    # network's outputs agree to float rounding.
    for column in ("box", "joints2d_raw", "translation_raw", "joints2d", "joints3d"):
        np.testing.assert_allclose(np.stack(a[column].map(np.stack)),
                                   np.stack(b[column].map(np.stack)),
                                   rtol=0, atol=1e-4, err_msg=column)
    rows = {d: read_table(outputs[d], "objects").to_pandas().sort_values(
        ["video_id", "frame_index", "track_id"]).reset_index(drop=True) for d in DECODERS}
    pd.testing.assert_frame_equal(rows["decord"][["video_id", "frame_index", "timestamp_s"]],
                                  rows["pyav"][["video_id", "frame_index", "timestamp_s"]])


def test_decord_times_of_a_short_matroska_video(tmp_path: Path) -> None:
    path = tmp_path / "short.mkv"
    times = [0.5, 0.54, 0.6, 0.63, 0.75, 0.8]
    frames = list(videogen.moving_square_frames(len(times), WIDTH, HEIGHT))
    videogen.write_vfr_video(path, frames, times)
    chunks = list(get_decoder("decord").read_chunks(str(path)))
    np.testing.assert_allclose(np.concatenate([c.timestamps_s for c in chunks]),
                               container_times(path), rtol=0, atol=1e-9)
