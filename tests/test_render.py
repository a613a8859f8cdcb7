"""Rendering: drawn pixels land where the camera model projects the stored poses."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import videogen
from scipy.spatial.transform import Rotation
from test_evaluate import META
from test_schema import sample_hand_columns, sample_object_columns, sample_video_row

from hflpipe.model.control_points import load_control_points
from hflpipe.model.geometry import project
from hflpipe.model.synthetic_checkpoint import synthetic_mano_path
from hflpipe.pipeline.common.errors import InputError
from hflpipe.pipeline.output.reader import read_table
from hflpipe.pipeline.output.schema import hands_table, objects_table
from hflpipe.pipeline.output.writer import write_video_output
from hflpipe.pipeline.results.render import (
    BOX_EDGES,
    OBJECT_COLOUR,
    RIGHT_COLOUR,
    FrameDrawer,
    load_hand_mesh,
    parse_frames,
    render,
    render_overlay,
)

W, H, N = 320, 240, 4
K = np.array([[300.0, 0.0, 160.0], [0.0, 300.0, 120.0], [0.0, 0.0, 1.0]])
CRACKER = load_control_points("003_cracker_box")


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    """A black video and an output whose poses are known: an object turning in front of
    the camera, a right hand with a fixed 2D skeleton and a MANO pose (no vertices)."""
    root = tmp_path_factory.mktemp("render")
    video = root / "black.mp4"
    videogen.write_video(video, [np.zeros((H, W, 3), np.uint8)] * N, fps=10)
    R = Rotation.from_euler("xyz", [[20, 30 + 10 * i, 5] for i in range(N)],
                            degrees=True)
    t = np.array([[0.02 * i, 0.0, 0.9] for i in range(N)])
    objects = sample_object_columns("clip", N)
    objects |= {"interpolated": np.zeros(N, bool), "pose_valid": np.ones(N, bool),
                "rotation": R.as_quat(scalar_first=True).astype(np.float32),
                "translation": t.astype(np.float32),
                "box": np.tile(np.float32([100, 60, 220, 180]), (N, 1))}
    hands = sample_hand_columns("clip", N)
    joints2d = np.stack([np.linspace(10, 100, 21), np.linspace(230, 140, 21)], axis=1)
    hands |= {"joints2d": np.tile(joints2d.astype(np.float32), (N, 1, 1)),
              "mano_pose": np.zeros((N, 48), np.float32),
              "mano_shape": np.zeros((N, 10), np.float32),
              "translation": np.tile(np.float32([0.05, 0.02, 0.5]), (N, 1)),
              "box": np.tile(np.float32([30, 140, 100, 210]), (N, 1))}
    row = sample_video_row("clip") | {"path": str(video), "intrinsics": K,
                                      "width": W, "height": H, "num_frames": N}
    out = root / "out"
    write_video_output(out, "clip", hands_table(hands, META), objects_table(objects, META),
                       row, META)
    return {"video": video, "out": out, "R": R.as_matrix(), "t": t, "hands": hands,
            "root": root}


def _edge_samples(corners: np.ndarray) -> np.ndarray:
    """Points a third and two thirds along every box edge (clear of crossings)."""
    return np.array([corners[a] + f * (corners[b] - corners[a])
                     for a, b in BOX_EDGES for f in (1 / 3, 2 / 3)])


def _colour_near(image: np.ndarray, points: np.ndarray, colour, radius: int = 1) -> np.ndarray:
    """Per point: some pixel within ``radius`` has exactly ``colour`` (BGR)."""
    hits = []
    for x, y in np.round(points).astype(int):
        patch = image[max(y - radius, 0):y + radius + 1, max(x - radius, 0):x + radius + 1]
        hits.append(bool((patch == colour).all(axis=-1).any()))
    return np.array(hits)


def test_object_box_and_skeleton_land_on_the_projection(scene, tmp_path) -> None:
    written = render(scene["video"], scene["out"], tmp_path / "frame.png", frames=(2, 3))
    assert written == [tmp_path / "frame.png"]
    image = cv2.imread(str(written[0]))
    corners = project(CRACKER[:8] @ scene["R"][2].T + scene["t"][2], K)
    on_edges = _colour_near(image, _edge_samples(corners), OBJECT_COLOUR)
    assert on_edges.all(), f"{(~on_edges).sum()} box edge samples off the projection"
    # The same samples from another frame's pose are not drawn: the pose is per frame.
    elsewhere = project(CRACKER[:8] @ scene["R"][0].T + scene["t"][0] + [0.1, 0, 0], K)
    assert _colour_near(image, _edge_samples(elsewhere), OBJECT_COLOUR, 0).mean() < 0.2
    joints = scene["hands"]["joints2d"][2]
    assert _colour_near(image, joints, RIGHT_COLOUR).all()
    # Frame 2 is interpolated in the sample hands, frame 1 is not: same skeleton, thinner.
    assert scene["hands"]["interpolated"][2] and not scene["hands"]["interpolated"][1]
    observed = cv2.imread(str(render(scene["video"], scene["out"], tmp_path / "f1.png",
                                     frames=(1, 2))[0]))
    hand_pixels = [(img[130:, :105] == RIGHT_COLOUR).all(axis=-1).sum()
                   for img in (image, observed)]
    assert hand_pixels[0] < 0.8 * hand_pixels[1]


def test_mesh_is_drawn_where_the_mano_vertices_project(scene, tmp_path) -> None:
    plain = cv2.imread(str(render(scene["video"], scene["out"], tmp_path / "a.png",
                                  frames=(1, 2))[0])).astype(int)
    meshed = cv2.imread(str(render(scene["video"], scene["out"], tmp_path / "b.png",
                                   frames=(1, 2), mano=synthetic_mano_path())[0])).astype(int)
    changed = np.abs(meshed - plain).sum(axis=-1) > 0
    drawer = FrameDrawer(read_table(scene["out"], "hands"), read_table(scene["out"], "objects"),
                         K, load_hand_mesh(synthetic_mano_path()), None)
    row = next(i for i, r in enumerate(drawer.hands) if r["frame_index"] == 1)
    verts = drawer.vertices(row)
    # A zero pose puts the wrist (joint 0) exactly at the stored translation.
    assert np.abs(verts - scene["hands"]["translation"][1]).max() < 0.3
    pixels = project(verts, K)
    assert ((pixels >= 0) & (pixels < [W, H])).all()
    # Every changed pixel lies within the projected mesh's extent ...
    lo, hi = np.floor(pixels.min(axis=0)) - 1, np.ceil(pixels.max(axis=0)) + 1
    ys, xs = np.nonzero(changed)
    assert changed.sum() > 100
    assert ((xs >= lo[0]) & (xs <= hi[0]) & (ys >= lo[1]) & (ys <= hi[1])).all()
    # ... and nearly every vertex has a changed pixel next to it.
    near = [changed[max(y - 1, 0):y + 2, max(x - 1, 0):x + 2].any()
            for x, y in np.round(pixels).astype(int)]
    assert np.mean(near) > 0.95


def test_video_mode_frame_range_and_errors(scene, tmp_path) -> None:
    out = render_overlay(scene["video"], scene["out"], "clip", tmp_path / "all.mp4")
    assert cv2.VideoCapture(str(out)).get(cv2.CAP_PROP_FRAME_COUNT) == N
    part = render(scene["video"], scene["out"], tmp_path / "part.mp4", frames=(1, 3))[0]
    assert cv2.VideoCapture(str(part)).get(cv2.CAP_PROP_FRAME_COUNT) == 2
    stills = render(scene["video"], scene["out"], tmp_path / "s.png", frames=(0, 2))
    assert [p.name for p in stills] == ["s_000000.png", "s_000001.png"]
    assert parse_frames("5") == (5, 6) and parse_frames(":3") == (0, 3)
    with pytest.raises(InputError, match="expected 'A:B'"):
        parse_frames("a-b")
    with pytest.raises(InputError, match="range is empty"):
        parse_frames("4:2")
    with pytest.raises(InputError, match="no video id 'nope'"):
        render(scene["video"], scene["out"], tmp_path / "x.png", video_id="nope")
    with pytest.raises(InputError, match="no frames in the range"):
        render(scene["video"], scene["out"], tmp_path / "x.png", frames=(50, 60))


def test_object_without_a_usable_pose_falls_back_to_its_2d_corners() -> None:
    objects = sample_object_columns("clip", 2)
    corners = project(CRACKER[:8] + np.array([0.0, 0.0, 0.8]), K)
    objects |= {"interpolated": np.zeros(2, bool), "pose_valid": np.array([True, False]),
                "keypoints2d": np.tile(np.vstack([corners, np.zeros((13, 2))]),
                                       (2, 1, 1)).astype(np.float32),
                "translation": np.float32([[0.0, 0.0, -0.8], [0.0, 0.0, 0.8]])}
    drawer = FrameDrawer(hands_table(sample_hand_columns("clip", 0), META).slice(0, 0),
                         objects_table(objects, META), K, None, None)
    for frame in (0, 1):  # behind the camera; no pose at all
        image = np.zeros((H, W, 3), np.uint8)
        drawer.draw(image, frame)
        assert _colour_near(image, _edge_samples(corners), OBJECT_COLOUR).all()


def test_render_command(scene, tmp_path) -> None:
    from click.testing import CliRunner

    from hflpipe.pipeline.cli.results import render_command

    runner = CliRunner()
    result = runner.invoke(render_command, [str(scene["video"]), str(scene["out"]), "-o",
                                            str(tmp_path / "c.png"), "--frames", "1:3",
                                            "--mano", str(synthetic_mano_path())])
    assert result.exit_code == 0, result.output
    assert result.output.split() == [str(tmp_path / "c_000001.png"),
                                     str(tmp_path / "c_000002.png")]
    bad = runner.invoke(render_command, [str(scene["video"]), str(scene["out"]), "-o",
                                         str(tmp_path / "c.png"), "--frames", "x"])
    assert isinstance(bad.exception, InputError)
