"""The synthetic demo scene: real video decoded with decord, files checked against pixels."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import decord
import numpy as np
import pytest

from hflpipe.model.geometry import project, to_camera
from hflpipe.pipeline.common.errors import ConfigError, OutputError
from hflpipe.pipeline.demo.scene import (
    BOXES_COLUMNS,
    OBJECT_NAME,
    DemoScene,
    make_demo_scene,
    mirror,
)
from hflpipe.pipeline.detect.boxes import BoxesFile
from hflpipe.pipeline.inputs.camera import parse_intrinsics

# Codec chroma bleed and anti-aliasing reach a pixel or two past a shape's outline.
PIXEL_MARGIN = 3.0


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, DemoScene]:
    folder = tmp_path_factory.mktemp("demo")
    right = make_demo_scene(folder)
    return {
        "right": right,
        "left": make_demo_scene(folder, left_hand=True),
        "mirrored": mirror(right, folder),
    }


@pytest.fixture(params=["right", "left", "mirrored"])
def scene(scenes: dict[str, DemoScene], request: pytest.FixtureRequest) -> DemoScene:
    """Each of the three scenes in turn."""
    return scenes[request.param]


def _frames(scene: DemoScene) -> np.ndarray:
    reader = decord.VideoReader(str(scene.video_path))
    return reader.get_batch(list(range(len(reader)))).asnumpy()


def _read_boxes(scene: DemoScene) -> tuple[list[dict[str, str]], np.ndarray, np.ndarray]:
    """The CSV rows, and the (n, 4) hand and object boxes parsed from them."""
    with scene.boxes_path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        assert tuple(reader.fieldnames or ()) == BOXES_COLUMNS
        rows = list(reader)
    boxes = {
        kind: np.array(
            [[float(r[c]) for c in ("x0", "y0", "x1", "y1")] for r in rows if r["kind"] == kind]
        )
        for kind in ("hand", "object")
    }
    return rows, boxes["hand"], boxes["object"]


def _colour_masks(frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Skin and object (strongly saturated) pixels of an RGB frame, isolated specks removed."""
    hsv = cv2.cvtColor(frame, cv2.COLOR_RGB2HSV).astype(np.int32)
    hue, saturation, value = hsv[..., 0], hsv[..., 1], hsv[..., 2]
    skin = (hue >= 5) & (hue <= 20) & (saturation >= 60) & (saturation <= 150) & (value >= 150)
    objects = (saturation >= 150) & (value >= 60)
    kernel = np.ones((3, 3), np.uint8)
    return tuple(  # type: ignore[return-value]
        cv2.morphologyEx(mask.astype(np.uint8), cv2.MORPH_OPEN, kernel).astype(bool)
        for mask in (skin, objects)
    )


def _mask_box(mask: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    return np.array([xs.min(), ys.min(), xs.max(), ys.max()], dtype=np.float64)


def test_video_decodes_to_the_requested_frames(scene: DemoScene) -> None:
    reader = decord.VideoReader(str(scene.video_path))
    assert len(reader) == 90
    assert reader[0].shape == (480, 640, 3)
    assert reader.get_avg_fps() == pytest.approx(30.0)


def test_other_size_length_and_rate(tmp_path: Path) -> None:
    scene = make_demo_scene(tmp_path, num_frames=12, fps=15, size=(320, 240), seed=3)
    reader = decord.VideoReader(str(scene.video_path))
    assert (len(reader), reader[0].shape) == (12, (240, 320, 3))
    assert reader.get_avg_fps() == pytest.approx(15.0)
    assert scene.num_frames == 12
    assert json.loads(scene.intrinsics_path.read_text())["width"] == 320
    # Written through temporary files that are all renamed into place.
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "demo.mp4",
        "demo_boxes.csv",
        "demo_groundtruth.npz",
        "demo_intrinsics.json",
    ]


def test_unwritable_folder_is_an_output_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(OutputError, match="demo scene folder") as info:
        make_demo_scene(blocker / "scene", num_frames=2)
    assert "\n" not in str(info.value)


def test_object_boxes_bound_the_projected_control_points(scene: DemoScene) -> None:
    _, hand_boxes, object_boxes = _read_boxes(scene)
    K = parse_intrinsics(scene.intrinsics_path).K
    keypoints = project(to_camera(scene.object_points, scene.R, scene.t), K)
    np.testing.assert_allclose(keypoints, scene.keypoints2d, rtol=0, atol=1e-9)
    expected = np.concatenate([keypoints.min(axis=1), keypoints.max(axis=1)], axis=1)
    np.testing.assert_allclose(object_boxes, expected, rtol=0, atol=1e-9)
    np.testing.assert_array_equal(hand_boxes, scene.hand_box)


def test_groundtruth_file_matches_the_scene(scenes: dict[str, DemoScene]) -> None:
    scene = scenes["right"]
    with np.load(scene.groundtruth_path) as truth:
        for key in ("R", "t", "keypoints2d", "hand_box", "object_box", "K", "object_points"):
            np.testing.assert_array_equal(truth[key], getattr(scene, key), err_msg=key)
        assert truth["R"].shape == (90, 3, 3)
        assert truth["keypoints2d"].shape == (90, 21, 2)
        np.testing.assert_allclose(truth["timestamps_s"], np.arange(90) / 30.0)
        assert str(truth["handedness"]) == "right"
        assert str(truth["object_name"]) == OBJECT_NAME


def test_object_is_the_catalogue_cracker_box(
    scenes: dict[str, DemoScene], fixtures_dir: Path
) -> None:
    catalogue = json.loads((fixtures_dir / "ycb_bbox21.json").read_text())
    np.testing.assert_array_equal(
        scenes["right"].object_points, np.array(catalogue["objects"][OBJECT_NAME]["points"])
    )


def test_rotations_are_proper_and_motion_is_smooth(scenes: dict[str, DemoScene]) -> None:
    for scene in scenes.values():
        identity = np.broadcast_to(np.eye(3), scene.R.shape)
        np.testing.assert_allclose(scene.R @ scene.R.transpose(0, 2, 1), identity, atol=1e-12)
        np.testing.assert_allclose(np.linalg.det(scene.R), 1.0, atol=1e-12)
        # A few pixels per frame at most: a trackable, smooth trajectory.
        assert np.abs(np.diff(scene.keypoints2d, axis=0)).max() < 6.0


def test_boxes_file_rows(scene: DemoScene) -> None:
    rows, _, _ = _read_boxes(scene)
    assert [int(r["frame_index"]) for r in rows] == [i // 2 for i in range(180)]
    hands = [r for r in rows if r["kind"] == "hand"]
    objects = [r for r in rows if r["kind"] == "object"]
    assert {(r["handedness"], r["object_name"], r["score"]) for r in hands} == {
        (scene.handedness, "", "1.0")
    }
    assert {(r["handedness"], r["object_name"], r["score"]) for r in objects} == {
        ("", OBJECT_NAME, "1.0")
    }


def test_boxes_file_loads_in_the_pipeline(scenes: dict[str, DemoScene]) -> None:
    scene = scenes["left"]
    detector = BoxesFile.load(scene.boxes_path).for_video(scene.video_path)
    frame = detector.detect(np.array([7]), np.array([7 / 30]), None)[0]
    hand, obj = sorted(frame, key=lambda d: d.kind)
    assert (hand.kind, hand.handedness, obj.kind, obj.object_name) == (
        "hand",
        "left",
        "object",
        OBJECT_NAME,
    )
    np.testing.assert_allclose(obj.box, scene.object_box[7], atol=1e-4)
    np.testing.assert_allclose(hand.box, scene.hand_box[7], atol=1e-4)


def test_hand_and_object_pixels_are_where_the_boxes_say(scene: DemoScene) -> None:
    _, hand_boxes, object_boxes = _read_boxes(scene)
    for index, frame in enumerate(_frames(scene)):
        skin, objects = _colour_masks(frame)
        for mask, box in ((skin, hand_boxes[index]), (objects, object_boxes[index])):
            # The coloured region fills its box: every side within a few pixels.
            np.testing.assert_allclose(_mask_box(mask), box, atol=PIXEL_MARGIN)


def test_hand_holds_the_side_named_by_its_handedness(scenes: dict[str, DemoScene]) -> None:
    for scene in scenes.values():
        hand_x = scene.hand_box[:, [0, 2]].mean(axis=1)
        object_x = scene.object_box[:, [0, 2]].mean(axis=1)
        # A right hand seen in the image holds the object's image-right side.
        expected_sign = 1.0 if scene.handedness == "right" else -1.0
        assert np.all(np.sign(hand_x - object_x) == expected_sign)
        overlap = np.minimum(scene.hand_box[:, 2:], scene.object_box[:, 2:]) - np.maximum(
            scene.hand_box[:, :2], scene.object_box[:, :2]
        )
        assert np.all(overlap > 0)


def test_mirror_mirrors_video_boxes_and_pose(scenes: dict[str, DemoScene]) -> None:
    right, mirrored = scenes["right"], scenes["mirrored"]
    width = right.size[0]
    assert mirrored.video_path != right.video_path
    assert (mirrored.handedness, mirrored.mirrored) == ("left", True)

    difference = np.abs(
        _frames(mirrored).astype(np.int16) - _frames(right)[:, :, ::-1].astype(np.int16)
    )
    assert difference.mean() < 1.5

    _, hand, obj = _read_boxes(right)
    _, mirrored_hand, mirrored_obj = _read_boxes(mirrored)
    for boxes, flipped in ((hand, mirrored_hand), (obj, mirrored_obj)):
        np.testing.assert_allclose(flipped[:, [0, 2]], width - 1 - boxes[:, [2, 0]], atol=1e-9)
        np.testing.assert_array_equal(flipped[:, [1, 3]], boxes[:, [1, 3]])
    np.testing.assert_allclose(
        mirrored.keypoints2d[..., 0], width - 1 - right.keypoints2d[..., 0], atol=1e-9
    )
    np.testing.assert_array_equal(mirrored.keypoints2d[..., 1], right.keypoints2d[..., 1])
    np.testing.assert_array_equal(mirrored.t[:, 0], -right.t[:, 0])
    np.testing.assert_array_equal(mirrored.object_points[:, 0], -right.object_points[:, 0])


def test_mirroring_twice_gives_the_original(scenes: dict[str, DemoScene], tmp_path: Path) -> None:
    right = scenes["right"]
    again = mirror(scenes["mirrored"], tmp_path)
    assert again.video_path.name == right.video_path.name
    assert (again.handedness, again.mirrored) == ("right", False)
    for key in ("R", "t", "keypoints2d", "hand_box", "object_box", "object_points"):
        np.testing.assert_allclose(getattr(again, key), getattr(right, key), atol=1e-12)
    assert again.boxes_path.read_bytes() == right.boxes_path.read_bytes()


def test_seed_picks_the_motion(tmp_path: Path) -> None:
    first = make_demo_scene(tmp_path / "a", num_frames=5, seed=1)
    again = make_demo_scene(tmp_path / "b", num_frames=5, seed=1)
    other = make_demo_scene(tmp_path / "c", num_frames=5, seed=2)
    np.testing.assert_array_equal(first.R, again.R)
    assert first.boxes_path.read_bytes() == again.boxes_path.read_bytes()
    assert np.abs(first.t - other.t).max() > 1e-3


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"num_frames": 0}, "num_frames"),
        ({"fps": 0.0}, "fps"),
        ({"size": (32, 480)}, "too small"),
        ({"size": (640, 150)}, "cuts off"),
    ],
)
def test_bad_settings_are_config_errors(tmp_path: Path, settings: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        make_demo_scene(tmp_path / "out", **settings)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "out").exists()
