"""Crop geometry against the reference's test-time preprocessing."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from hflpipe.model.crop import crop_hand_object, crop_to_frame, frame_to_crop
from hflpipe.model.geometry import mirror_boxes, mirror_points2d


@pytest.fixture(scope="module")
def crop_cases(fixtures_dir):
    return dict(np.load(fixtures_dir / "crop_cases_a.npz"))


def _frame(cases, i):
    width, height = cases["frame_size"][i]
    return cases["frame"][i, :height, :width]


def test_matches_reference_crops(crop_cases):
    for i in range(len(crop_cases["frame"])):
        crop = crop_hand_object(_frame(crop_cases, i), crop_cases["hand_box"][i],
                                crop_cases["object_box"][i])
        np.testing.assert_allclose(crop.affine, crop_cases["affine"][i], atol=1e-3)
        np.testing.assert_allclose(crop.hand_box, crop_cases["crop_hand_box"][i], atol=1e-3)
        np.testing.assert_allclose(crop.object_box, crop_cases["crop_object_box"][i], atol=1e-3)
        # The reference's crop camera is the affine applied after the frame's.
        k_crop = crop.affine @ crop_cases["K"][i]
        np.testing.assert_allclose(k_crop, crop_cases["K_crop"][i], atol=1e-3)
        assert crop.image.shape == (256, 256, 3) and crop.image.dtype == np.uint8
        same = (crop.image == crop_cases["crop"][i]).all(axis=-1).mean()
        assert same >= 0.99, f"case {i}: only {same:.3%} of pixels match"
        assert crop.affine.dtype == np.float32 and crop.hand_box.dtype == np.float32


def _reference_crop(frame, hand_box, object_box, size=256):
    """The reference procedure as the fixture README words it, on the whole frame."""
    height, width = frame.shape[:2]

    def enlarge(box, factor):
        lo, hi = np.asarray(box, np.float32).reshape(2, 2)
        center = np.array([int((lo[0] + hi[0]) / 2), int((lo[1] + hi[1]) / 2)])
        half = (hi - lo) * factor / 2
        return np.concatenate([center - half, center + half]).astype(np.float32)

    both = np.stack([enlarge(hand_box, 1.5), enlarge(object_box, 1.5)]).reshape(4, 2)
    x0, y0 = max(0, both[:, 0].min()), max(0, both[:, 1].min())
    x1, y1 = min(both[:, 0].max(), width), min(both[:, 1].max(), height)
    cx, cy = int((x0 + x1) / 2), int((y0 + y1) / 2)
    side = max(x1 - x0, y1 - y0)
    affine = np.array([[size / side, 0, size * (0.5 - cx / side)],
                       [0, size / side, size * (0.5 - cy / side)], [0, 0, 1]], np.float32)
    inv = np.linalg.inv(affine)
    image = Image.fromarray(frame).transform((size, size), Image.Transform.AFFINE,
                                             tuple(inv[:2].reshape(-1)))
    return affine, np.asarray(image)


EDGE_CASES = {
    "past the right and bottom edges": ([560, 400, 700, 520], [600, 380, 660, 500]),
    "past the top-left corner": ([-40, -30, 50, 60], [10, -5, 80, 40]),
    "tiny boxes": ([300.2, 200.7, 301.1, 201.3], [302, 201, 303.5, 202]),
    "thin boxes": ([100, 50, 100, 300], [90, 60, 400, 60]),
    "whole frame": ([0, 0, 640, 480], [0, 0, 639, 479]),
    "far apart": ([5, 5, 60, 80], [560, 380, 630, 470]),
    "hand box entirely outside": ([-200, 100, -100, 200], [20, 150, 80, 220]),
}


@pytest.mark.parametrize("mirror", [False, True])
@pytest.mark.parametrize("name", list(EDGE_CASES))
def test_edge_cases_match_whole_frame_resampling(name, mirror):
    rng = np.random.default_rng(7)
    frame = rng.integers(0, 256, size=(480, 640, 3), dtype=np.uint8)
    hand, obj = (np.asarray(b, np.float32) for b in EDGE_CASES[name])
    crop = crop_hand_object(frame, hand, obj, mirror=mirror)
    if mirror:
        frame = np.ascontiguousarray(frame[:, ::-1])
        hand, obj = mirror_boxes(hand, 640), mirror_boxes(obj, 640)
    affine, image = _reference_crop(frame, hand, obj)
    np.testing.assert_allclose(crop.affine, affine, atol=1e-3)
    assert (crop.image == image).all(axis=-1).mean() >= 0.99
    # Gathering the probed indices should reproduce whole-frame sampling exactly.
    np.testing.assert_array_equal(crop.image, image)


def test_random_boxes_match_whole_frame_resampling():
    rng = np.random.default_rng(11)
    for _ in range(25):
        height, width = rng.integers(20, 900, size=2)
        frame = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
        boxes = []
        for _ in range(2):
            x0, y0 = rng.uniform(-0.3, 1.1) * width, rng.uniform(-0.3, 1.1) * height
            w, h = rng.uniform(0.5, 0.6 * width), rng.uniform(0.5, 0.6 * height)
            boxes.append(np.array([x0, y0, x0 + w, y0 + h], np.float32))
        affine, image = _reference_crop(frame, *boxes)
        crop = crop_hand_object(frame, *boxes)
        np.testing.assert_array_equal(crop.affine, affine)
        np.testing.assert_array_equal(crop.image, image)


def test_whole_frame_boxes_map_frame_into_crop():
    frame = np.full((480, 640, 3), 200, np.uint8)
    crop = crop_hand_object(frame, [0, 0, 640, 480], [0, 0, 640, 480])
    assert crop.side == 640 and crop.center.tolist() == [320, 240]
    # 480 rows cover 192 of the 256 crop rows; the rest is black.
    assert (crop.image[32:224] == 200).all()
    assert (crop.image[:31] == 0).all() and (crop.image[225:] == 0).all()


def test_points_round_trip_between_frame_and_crop():
    frame = np.zeros((480, 640, 3), np.uint8)
    crop = crop_hand_object(frame, [300, 200, 380, 290], [340, 230, 450, 340])
    points = np.array([[310.0, 210.0], [440.5, 333.25], [0.0, 0.0]])
    back = crop_to_frame(frame_to_crop(points, crop.affine), crop.affine)
    np.testing.assert_allclose(back, points, atol=1e-3)
    # The square region's corners land on the crop's corners.
    corners = frame_to_crop(crop.region.reshape(2, 2), crop.affine)
    np.testing.assert_allclose(corners, [[0, 0], [256, 256]], atol=1e-3)


def test_mirrored_crop_equals_crop_of_mirrored_frame():
    rng = np.random.default_rng(3)
    frame = rng.integers(0, 256, size=(480, 640, 3), dtype=np.uint8)
    hand, obj = np.array([420, 120, 520, 260], np.float32), np.array([380, 200, 470, 330])
    crop = crop_hand_object(frame, hand, obj, mirror=True)
    flipped = np.ascontiguousarray(frame[:, ::-1])
    expected = crop_hand_object(flipped, mirror_boxes(hand, 640), mirror_boxes(obj, 640))
    np.testing.assert_array_equal(crop.image, expected.image)
    np.testing.assert_array_equal(crop.affine, expected.affine)
    np.testing.assert_array_equal(crop.hand_box, expected.hand_box)
    assert crop.mirrored and crop.frame_width == 640
    # A frame pixel seen in the mirrored crop maps back to itself.
    point = np.array([[450.0, 230.0]])
    in_crop = frame_to_crop(mirror_points2d(point, 640), crop.affine)
    np.testing.assert_allclose(mirror_points2d(crop_to_frame(in_crop, crop.affine), 640), point,
                               atol=1e-3)
    # Crop pixel (r, c) samples the mirrored frame at the inverse image of its centre
    # (Pillow's convention), i.e. original column width - 1 - x.
    for row, col in [(10, 20), (128, 128), (200, 31)]:
        x, y = np.floor(crop_to_frame([[col + 0.5, row + 0.5]], crop.affine)[0]).astype(int)
        np.testing.assert_array_equal(crop.image[row, col], frame[y, 640 - 1 - x])


def test_bad_arguments_raise():
    frame = np.zeros((48, 64, 3), np.uint8)
    with pytest.raises(TypeError, match="frame"):
        crop_hand_object(frame.tolist(), [0, 0, 5, 5], [0, 0, 5, 5])
    with pytest.raises(ValueError, match="frame"):
        crop_hand_object(frame.astype(np.float32), [0, 0, 5, 5], [0, 0, 5, 5])
    with pytest.raises(ValueError, match="hand_box"):
        crop_hand_object(frame, [0, 0, 5], [0, 0, 5, 5])
    with pytest.raises(ValueError, match="object_box"):
        crop_hand_object(frame, [0, 0, 5, 5], [6, 0, 5, 5])
    with pytest.raises(ValueError, match="object_box"):
        crop_hand_object(frame, [0, 0, 5, 5], [0, 0, np.nan, 5])
    with pytest.raises(ValueError, match="do not overlap"):
        crop_hand_object(frame, [100, 100, 110, 110], [120, 100, 130, 110])
    with pytest.raises(ValueError, match="size"):
        crop_hand_object(frame, [0, 0, 5, 5], [0, 0, 5, 5], size=0)
