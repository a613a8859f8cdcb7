"""Footage as people have it, end to end: a phone clip with a display rotation, a trimmed
clip (edit list), a file with two video streams, tiny frames and boxes off the frame.

One run (PyAV, a boxes file with a ``video`` column, boxes in displayed coordinates) over
all of them on the session's Ray; the ``videos`` rows and the tables are read back.
"""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import videogen

from hflpipe.model.synthetic_checkpoint import synthetic_mano_path
from hflpipe.pipeline.config.run_config import make_config
from hflpipe.pipeline.inputs.videos import video_id_for
from hflpipe.pipeline.output.reader import read_table
from hflpipe.pipeline.results.render import render
from hflpipe.pipeline.run.runner import run

pytestmark = pytest.mark.slow

FRAMES, FPS = 2, 10
WIDTH, HEIGHT = 160, 120
SQUARE = max(HEIGHT // 5, 8)
HIDDEN = 3
SOURCE = list(videogen.moving_square_frames(FRAMES + HIDDEN, WIDTH, HEIGHT))
# Lossless and per-pixel (no chroma subsampling), so a clip turned by its display matrix
# and one stored turned decode to the same pixels.
LOSSLESS = {"pix_fmt": "yuv444p", "options": {"qp": "0", "bf": "0"}}


def square_box(index: int) -> list[float]:
    """Box of videogen's moving square on source frame ``index`` (stored coordinates)."""
    x = (index * 5) % max(WIDTH - SQUARE, 1)
    y = videogen.BARCODE_HEIGHT + (index * 3) % max(HEIGHT - videogen.BARCODE_HEIGHT - SQUARE, 1)
    return [x, y, x + SQUARE, y + SQUARE]


def turned_clockwise(box: list[float]) -> list[float]:
    """A stored box as shown after a quarter turn clockwise (a phone held upright)."""
    x0, y0, x1, y1 = box
    return [HEIGHT - y1, x0, HEIGHT - y0, x1]


def _pair(hand: list[float]) -> list[list[float]]:
    return [hand, [hand[2], hand[1], hand[2] + (hand[2] - hand[0]), hand[3]]]


def _boxes_rows() -> dict[str, list[list[list[float]]]]:
    """Video file name -> per frame, the (hand, object) boxes in displayed coordinates."""
    plain = [_pair(square_box(i)) for i in range(FRAMES)]
    return {
        "phone.mp4": [_pair(turned_clockwise(square_box(i))) for i in range(FRAMES)],
        "phone-stored-upright.mp4": [_pair(turned_clockwise(square_box(i)))
                                     for i in range(FRAMES)],
        "trimmed.mp4": [_pair(square_box(i + HIDDEN)) for i in range(FRAMES)],
        "two-streams.mp4": plain,
        "tiny-8.mp4": [[[2, 2, 18, 18], [4, 4, 30, 30]] for _ in range(FRAMES)],
        "tiny-1.mkv": [[[0, 0, 20, 20], [0, 0, 20, 20]] for _ in range(FRAMES)],
        "off-frame.mp4": [[[400, 300, 440, 340], [450, 300, 480, 340]] for _ in range(FRAMES)],
    }


@pytest.fixture(scope="module")
def footage(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("footage")
    clips = {
        # Stored landscape, shown portrait: FFmpeg's rotation -90 (ffprobe's sign).
        "phone.mp4": videogen.encode_clip(root / "phone.mp4", SOURCE[:FRAMES], FPS,
                                          rotation=-90, audio=True, **LOSSLESS),
        "phone-stored-upright.mp4": videogen.encode_clip(
            root / "phone-stored-upright.mp4",
            [np.ascontiguousarray(np.rot90(f, -1)) for f in SOURCE[:FRAMES]], FPS, **LOSSLESS),
        "trimmed.mp4": videogen.hide_leading_frames(
            videogen.encode_clip(root / "whole.mp4", SOURCE, FPS, options={"g": "100"}),
            root / "trimmed.mp4", HIDDEN),
        "two-streams.mp4": videogen.write_two_streams(
            root / "two-streams.mp4", list(videogen.moving_square_frames(2, 64, 48)),
            SOURCE[:FRAMES], FPS),
        "tiny-8.mp4": videogen.encode_clip(root / "tiny-8.mp4",
                                           [f[:8, :8] for f in SOURCE[:FRAMES]], FPS),
        "tiny-1.mkv": videogen.encode_clip(root / "tiny-1.mkv",
                                           [f[:1, :1] for f in SOURCE[:FRAMES]], FPS,
                                           codec="ffv1", pix_fmt="yuv444p"),
        "off-frame.mp4": videogen.encode_clip(root / "off-frame.mp4", SOURCE[:FRAMES], FPS),
    }
    return clips


@pytest.fixture(scope="module")
def out(tmp_path_factory: pytest.TempPathFactory, footage: dict[str, Path],
        synthetic_checkpoint: Path, local_ray: object) -> Path:
    root = tmp_path_factory.mktemp("footage-out")
    boxes = root / "boxes.csv"
    with boxes.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["video", "frame_index", "kind", "x0", "y0", "x1", "y1", "handedness"])
        for name, frames in _boxes_rows().items():
            for index, (hand, obj) in enumerate(frames):
                writer.writerow([name, index, "hand", *hand, "right"])
                writer.writerow([name, index, "object", *obj, ""])
    config = make_config(
        videos=[str(p) for p in footage.values()], out=root / "out",
        checkpoint=synthetic_checkpoint, mano=synthetic_mano_path(), detector="boxes",
        boxes=boxes, object="003_cracker_box", decoder="pyav",
    )
    summary = run(config, progress=False)
    assert summary.statuses == {"ok": len(footage)}, summary.failures
    return root / "out"


def _videos(out: Path, footage: dict[str, Path]) -> dict[str, pd.Series]:
    table = read_table(out, "videos").to_pandas().set_index("video_id")
    return {name: table.loc[video_id_for(path)] for name, path in footage.items()}


def _hands(out: Path, path: Path) -> pd.DataFrame:
    hands = read_table(out, "hands").to_pandas()
    return hands[hands["video_id"] == video_id_for(path)].sort_values("frame_index")


def test_a_phone_clip_is_processed_as_displayed(out: Path, footage: dict[str, Path]) -> None:
    rows = _videos(out, footage)
    phone, upright = rows["phone.mp4"], rows["phone-stored-upright.mp4"]
    assert (phone["width"], phone["height"]) == (HEIGHT, WIDTH)
    assert (phone["rotation_deg"], phone["mirrored"], phone["stream_index"]) == (90, False, 0)
    assert (upright["width"], upright["height"], upright["rotation_deg"]) == (HEIGHT, WIDTH, 0)
    # Portrait intrinsics, those of the clip stored upright.
    np.testing.assert_array_equal(phone["intrinsics"], upright["intrinsics"])
    k = np.asarray(phone["intrinsics"]).reshape(3, 3)
    assert k[0, 2] < k[1, 2]
    # The model saw the same pixels in the same coordinates as for a clip stored upright.
    turned, stored = _hands(out, footage["phone.mp4"]), _hands(out, footage[
        "phone-stored-upright.mp4"])
    assert turned["frame_index"].tolist() == list(range(FRAMES))
    for column in ("box", "joints2d_raw", "translation_raw"):
        np.testing.assert_allclose(np.stack(turned[column].map(np.stack)),
                                   np.stack(stored[column].map(np.stack)), atol=1e-3,
                                   err_msg=column)


def test_render_draws_on_the_displayed_frame(out: Path, footage: dict[str, Path],
                                             tmp_path: Path) -> None:
    (still,) = render(footage["phone.mp4"], out, tmp_path / "phone.png", frames=(1, 2))
    assert cv2.imread(str(still)).shape == (WIDTH, HEIGHT, 3)


def test_a_trimmed_clip_is_whole_on_its_presentation_timeline(
    out: Path, footage: dict[str, Path]
) -> None:
    row = _videos(out, footage)["trimmed.mp4"]
    assert (row["num_frames"], row["frames_processed"]) == (FRAMES, FRAMES)
    hands = _hands(out, footage["trimmed.mp4"])
    assert hands["frame_index"].tolist() == list(range(FRAMES))
    np.testing.assert_allclose(hands["timestamp_s"], np.arange(FRAMES) / FPS, atol=1e-6)


def test_the_stream_a_player_shows(out: Path, footage: dict[str, Path]) -> None:
    row = _videos(out, footage)["two-streams.mp4"]
    assert (row["stream_index"], row["num_frames"], row["width"], row["height"]) == (
        1, FRAMES, WIDTH, HEIGHT)
    assert len(_hands(out, footage["two-streams.mp4"])) == FRAMES


def test_boxes_are_clipped_to_the_frame_or_dropped_and_counted(
    out: Path, footage: dict[str, Path]
) -> None:
    rows = _videos(out, footage)
    assert rows["tiny-8.mp4"]["boxes_dropped"] == 0
    assert len(_hands(out, footage["tiny-8.mp4"])) == FRAMES
    for name in ("tiny-1.mkv", "off-frame.mp4"):
        assert rows[name]["status"] == "ok", rows[name]["error"]
        assert rows[name]["boxes_dropped"] == 2 * FRAMES, name
        assert len(_hands(out, footage[name])) == 0, name
    for name in ("phone.mp4", "trimmed.mp4", "two-streams.mp4"):
        assert rows[name]["boxes_dropped"] == 0, name
