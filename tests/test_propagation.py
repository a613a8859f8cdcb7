"""Box propagation on a scene with known motion, driven by a stand-in model that reads pixels.

The stand-in model finds the white square (the "hand") and the green square
(the "object") in each crop it is given and returns points spanning them, in
crop pixels, as HflnetPredictor would return joints and object keypoints. A
propagated box can therefore only follow the target if the crop, the mapping
back to the frame and the batching are all right.
"""

from __future__ import annotations

import numpy as np
import pytest

from hflpipe.pipeline.common.errors import InputError
from hflpipe.pipeline.crop.batch import HandObjectPair
from hflpipe.pipeline.crop.to_frame import crops_to_frame
from hflpipe.pipeline.decode.base import FrameChunk
from hflpipe.pipeline.detect.base import Detection
from hflpipe.pipeline.track.propagation import (
    HAND_MARGIN,
    OBJECT_MARGIN,
    keyframe_mask,
    plan_segments,
    points_box,
    propagate_chunk,
    propagate_video,
)

WIDTH, HEIGHT = 200, 150
HAND_SIDE, OBJECT_SIDE = 30, 24
FRAMES = 12
WHITE, GREEN = (255, 255, 255), (0, 255, 0)


def hand_corner(frame: int) -> tuple[int, int]:
    """Top-left pixel of the hand square: it moves 4 px right and 2 px down per frame."""
    return 20 + 4 * frame, 40 + 2 * frame


def object_corner(frame: int) -> tuple[int, int]:
    x, y = hand_corner(frame)
    return x + HAND_SIDE, y + 5


def tight_box(corner: tuple[int, int], side: int) -> np.ndarray:
    """Box through the centres of the square's extreme pixels (what points on it span)."""
    x, y = corner
    return np.array([x, y, x + side - 1, y + side - 1], dtype=np.float64)


def render(frames: int = FRAMES, *, hand_until: int = FRAMES, object_until: int = FRAMES,
           mirrored: bool = False) -> FrameChunk:
    images = np.zeros((frames, HEIGHT, WIDTH, 3), dtype=np.uint8)
    for f in range(frames):
        if f < hand_until:
            x, y = hand_corner(f)
            images[f, y:y + HAND_SIDE, x:x + HAND_SIDE] = WHITE
        if f < object_until:
            x, y = object_corner(f)
            images[f, y:y + OBJECT_SIDE, x:x + OBJECT_SIDE] = GREEN
    if mirrored:
        images = np.ascontiguousarray(images[:, :, ::-1])
    indices = np.arange(frames, dtype=np.int64)
    # Irregular times: they must come back per frame, not from a frame rate.
    return FrameChunk(indices, 0.5 + 0.04 * indices + 0.01 * (indices % 3), images)


def mirror_box(box: np.ndarray) -> np.ndarray:
    return np.array([WIDTH - 1 - box[2], box[1], WIDTH - 1 - box[0], box[3]])


def spanning_points(mask: np.ndarray) -> np.ndarray:
    """(21, 2) points spanning the pixels of ``mask`` (crop px), NaN when it is empty."""
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return np.full((21, 2), np.nan)
    gx, gy = np.meshgrid(np.linspace(xs.min(), xs.max(), 7), np.linspace(ys.min(), ys.max(), 3))
    return np.stack([gx.ravel(), gy.ravel()], axis=1)


class PixelModel:
    """Stand-in for the inference client: joints span the white pixels, keypoints the green.

    ``events`` records the calls (``submit``/``result`` with the batch size).
    """

    def __init__(self) -> None:
        self.events: list[tuple[str, int]] = []

    @property
    def batch_sizes(self) -> list[int]:
        return [size for call, size in self.events if call == "submit"]

    def result(self, handle: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.events.append(("result", len(handle["joints2d"])))
        return handle

    def submit(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        images = batch["images"]
        assert images.shape[1:] == (256, 256, 3) and images.dtype == np.uint8
        assert set(batch) == {"images", "hand_boxes", "object_boxes"}
        self.events.append(("submit", len(images)))
        white = (images > 200).all(axis=3)
        green = (images[..., 1] > 200) & (images[..., 0] < 60) & (images[..., 2] < 60)
        return {
            "joints2d": np.stack([spanning_points(m) for m in white]).astype(np.float32),
            "obj_keypoints": np.stack([spanning_points(m) for m in green]).astype(np.float32),
            "joint_confidence": np.ones((len(images), 21), np.float32),
        }


def detector_jobs(frames: list[int], *, handedness: str = "right", mirrored: bool = False,
                  with_object: bool = True) -> dict[int, list[HandObjectPair]]:
    """Keyframe jobs with boxes a detector would give: the squares' pixel boxes, + 0.25 px."""
    jobs = {}
    for f in frames:
        hand_box = tight_box(hand_corner(f), HAND_SIDE) + 0.25
        object_box = tight_box(object_corner(f), OBJECT_SIDE) + 0.25
        if mirrored:
            hand_box, object_box = mirror_box(hand_box), mirror_box(object_box)
        hand = Detection("hand", hand_box.astype(np.float32), 0.9, handedness, track_id=3)
        obj = Detection("object", object_box.astype(np.float32), 0.8, None, "box", 7)
        jobs[f] = [HandObjectPair(f, hand, obj if with_object else None)]
    return jobs


def boxes_by_frame(jobs: list[HandObjectPair]) -> tuple[np.ndarray, np.ndarray]:
    return (np.stack([j.hand.box for j in jobs]).astype(np.float64),
            np.stack([j.obj.box for j in jobs]).astype(np.float64))


def test_points_box_margin_and_frame_clipping() -> None:
    points = np.array([[[10.0, 20.0], [30.0, 60.0], [20.0, 40.0]],
                       [[-10.0, 100.0], [50.0, 180.0], [0.0, 120.0]]])
    np.testing.assert_allclose(points_box(points, 0.0, (200, 150))[0], [10, 20, 30, 60])
    np.testing.assert_allclose(points_box(points, 0.1, (200, 150))[0], [8, 16, 32, 64])
    # The second set reaches past the left and bottom edges and is clipped there.
    np.testing.assert_allclose(points_box(points, 0.1, (200, 150))[1], [0, 92, 56, 150])
    assert points_box(points, 0.0, (200, 150)).dtype == np.float32
    with pytest.raises(ValueError, match="margin"):
        points_box(points, -0.1, (200, 150))
    with pytest.raises(ValueError, match="shape"):
        points_box(points[0], 0.1, (200, 150))


def test_keyframe_mask() -> None:
    assert np.flatnonzero(keyframe_mask(0, 10, 4)).tolist() == [0, 4, 8]
    # A chunk that starts at the 6th selected frame: keyframes at positions 8 and 12.
    assert np.flatnonzero(keyframe_mask(6, 8, 4)).tolist() == [2, 6]
    assert keyframe_mask(3, 5, 1).all()
    with pytest.raises(ValueError, match="detect_every"):
        keyframe_mask(0, 5, 0)


def test_plan_segments_start_at_keyframes_and_take_carried_jobs() -> None:
    indices = np.array([10, 12, 14, 16, 18, 20])
    keyframes = detector_jobs([14, 20])
    carried = detector_jobs([8])[8]
    segments = plan_segments(indices, keyframes, carried)
    assert [(s.start, s.stop, s.from_detector) for s in segments] == [
        (0, 2, False), (2, 5, True), (5, 6, True)]
    # Carried jobs move to the chunk's first frame; keyframe seeds are the detector's.
    assert [j.frame_index for j in segments[0].seeds] == [10]
    assert segments[1].seeds == tuple(keyframes[14])
    # A chunk starting on a keyframe ignores what was carried.
    assert [s.start for s in plan_segments(indices[2:], keyframes, carried)] == [0, 3]
    assert plan_segments(indices[2:], keyframes, carried)[0].seeds == tuple(keyframes[14])


@pytest.mark.parametrize("mirrored", [False, True], ids=["right", "left"])
def test_propagated_boxes_follow_the_moving_target(mirrored: bool) -> None:
    chunk = render(mirrored=mirrored)
    keyframes = detector_jobs([0, 4, 8], handedness="left" if mirrored else "right",
                              mirrored=mirrored)
    result = propagate_chunk(chunk, keyframes, PixelModel(), hand_margin=0.0, object_margin=0.0)

    assert [j.frame_index for j in result.jobs] == list(range(FRAMES))
    assert result.from_detector.tolist() == [f % 4 == 0 for f in range(FRAMES)]
    hand, obj = boxes_by_frame(result.jobs)
    for f in range(FRAMES):
        if f % 4 == 0:
            np.testing.assert_array_equal(hand[f], keyframes[f][0].hand.box)
            np.testing.assert_array_equal(obj[f], keyframes[f][0].obj.box)
            continue
        # One frame behind the target: the box comes from the previous frame's prediction.
        want_hand = tight_box(hand_corner(f - 1), HAND_SIDE)
        want_obj = tight_box(object_corner(f - 1), OBJECT_SIDE)
        if mirrored:
            want_hand, want_obj = mirror_box(want_hand), mirror_box(want_obj)
        np.testing.assert_allclose(hand[f], want_hand, atol=1.0)
        np.testing.assert_allclose(obj[f], want_obj, atol=1.0)
    # Track ids, handedness and scores stay those of the keyframe detection.
    assert {j.hand.track_id for j in result.jobs} == {3}
    assert {j.obj.track_id for j in result.jobs} == {7}
    assert {j.hand.handedness for j in result.jobs} == {"left" if mirrored else "right"}
    assert {j.hand.score for j in result.jobs} == {0.9}
    assert result.outputs["mirrored"].tolist() == [mirrored] * FRAMES
    np.testing.assert_array_equal(result.outputs["timestamp_s"], chunk.timestamps_s)
    assert len(result.outputs["joints2d"]) == FRAMES
    # The last segment runs to the chunk's end: its pair is carried with the next box.
    (carried,) = result.carried
    want = tight_box(hand_corner(FRAMES - 1), HAND_SIDE)
    np.testing.assert_allclose(carried.hand.box, mirror_box(want) if mirrored else want, atol=1.0)


def test_default_hand_margin_gives_detector_sized_boxes() -> None:
    result = propagate_chunk(render(4), detector_jobs([0]), PixelModel())
    hand, _ = boxes_by_frame(result.jobs)
    tight = tight_box(hand_corner(0), HAND_SIDE)
    grow = (HAND_SIDE - 1) * HAND_MARGIN
    np.testing.assert_allclose(hand[1], tight + np.array([-grow, -grow, grow, grow]), atol=1.0)


def test_every_segments_step_goes_into_one_batch() -> None:
    model = PixelModel()
    propagate_chunk(render(), detector_jobs([0, 4, 8]), model)
    assert model.batch_sizes == [3, 3, 3, 3]
    model = PixelModel()
    propagate_chunk(render(), detector_jobs([0, 4, 8]), model, batch_size=2)
    # A step's batches are all in flight before the first result is awaited.
    assert model.events == [("submit", 2), ("submit", 1), ("result", 2), ("result", 1)] * 4


def test_detecting_every_frame_is_one_step_per_chunk() -> None:
    model = PixelModel()
    result = propagate_chunk(render(), detector_jobs(list(range(FRAMES))), model, batch_size=5)
    assert model.batch_sizes == [5, 5, 2]
    assert result.from_detector.all() and [j.frame_index for j in result.jobs] == list(
        range(FRAMES))
    hand, _ = boxes_by_frame(result.jobs)
    np.testing.assert_array_equal(hand, [detector_jobs([f])[f][0].hand.box for f in range(FRAMES)])


def test_segments_carry_across_chunk_borders() -> None:
    whole = render()
    keyframes = detector_jobs([0, 4, 8])
    one = propagate_video([whole], keyframes, PixelModel(), video="clip.mp4")
    chunks = [FrameChunk(whole.indices[s], whole.timestamps_s[s], whole.frames[s])
              for s in (slice(0, 5), slice(5, 10), slice(10, 12))]
    done = []
    split = propagate_video(chunks, keyframes, PixelModel(), video="clip.mp4",
                            progress=done.append)
    assert done == [5, 5, 2]
    assert [j.frame_index for j in split.jobs] == list(range(FRAMES))
    np.testing.assert_array_equal(split.from_detector, one.from_detector)
    for a, b in zip(split.jobs, one.jobs, strict=True):
        np.testing.assert_array_equal(a.hand.box, b.hand.box)
        np.testing.assert_array_equal(a.obj.box, b.obj.box)
    np.testing.assert_array_equal(split.outputs["joints2d"], one.outputs["joints2d"])


def test_a_lost_hand_ends_its_pair_and_a_lost_object_is_dropped() -> None:
    # The hand is on frame 0 only: frame 1 still gets frame 0's box, then nothing is found.
    lost_hand = propagate_chunk(render(8, hand_until=1), detector_jobs([0]), PixelModel())
    assert [j.frame_index for j in lost_hand.jobs] == [0, 1]

    lost_object = propagate_chunk(render(8, object_until=2), detector_jobs([0]), PixelModel())
    assert [j.frame_index for j in lost_object.jobs] == list(range(8))
    assert [j.obj is not None for j in lost_object.jobs] == [True] * 3 + [False] * 5


def test_a_keyframe_without_detections_ends_the_pairs() -> None:
    keyframes = detector_jobs([0]) | {4: []}
    result = propagate_chunk(render(8), keyframes, PixelModel())
    assert [j.frame_index for j in result.jobs] == [0, 1, 2, 3]


def test_hand_without_object_is_followed() -> None:
    result = propagate_chunk(render(6), detector_jobs([0], with_object=False), PixelModel(),
                             hand_margin=0.0)
    assert [j.obj for j in result.jobs] == [None] * 6
    np.testing.assert_allclose(result.jobs[5].hand.box, tight_box(hand_corner(4), HAND_SIDE),
                               atol=1.0)


def test_no_pairs_gives_an_empty_result() -> None:
    model = PixelModel()
    result = propagate_video([render(6)], {0: []}, model, video="clip.mp4")
    assert result.jobs == [] and result.outputs == {} and model.batch_sizes == []


def test_a_keyframe_that_was_not_decoded_names_the_video() -> None:
    with pytest.raises(InputError, match=r"clip\.mp4: keyframes \[20\]"):
        propagate_video([render(6)], detector_jobs([0, 20]), PixelModel(), video="clip.mp4")


@pytest.mark.slow
def test_real_predictor_outputs_drive_the_propagation(tmp_path, synthetic_checkpoint) -> None:
    """The seam with HflnetPredictor: its keys and crop-pixel units, on the demo scene."""
    import torch

    from hflpipe.model.synthetic_checkpoint import synthetic_mano_path
    from hflpipe.pipeline.decode.base import get_decoder
    from hflpipe.pipeline.demo.scene import make_demo_scene
    from hflpipe.pipeline.infer.client import LocalInference
    from hflpipe.pipeline.infer.predictor import HflnetPredictor, PredictorSettings

    torch.set_num_threads(1)
    scene = make_demo_scene(tmp_path, num_frames=4, size=(320, 240))
    (chunk,) = get_decoder("pyav").read_chunks(str(scene.video_path))
    keyframes = {
        f: [HandObjectPair(f, Detection("hand", scene.hand_box[f].astype(np.float32), 1.0, "right",
                                 track_id=0),
                    Detection("object", scene.object_box[f].astype(np.float32), 1.0,
                              object_name=scene.object_name, track_id=0))]
        for f in (0, 2)
    }
    predictor = HflnetPredictor(PredictorSettings(synthetic_checkpoint, synthetic_mano_path(),
                                                  device="cpu"))
    result = propagate_video([chunk], keyframes, LocalInference(predictor), video="demo.mp4")

    assert [j.frame_index for j in result.jobs] == [0, 1, 2, 3]
    assert result.from_detector.tolist() == [True, False, True, False]
    for key in ("joints2d", "joint_confidence", "joints3d", "mano_pose", "obj_keypoints",
                "obj_candidates", "affine", "mirrored", "frame_width", "timestamp_s"):
        assert len(result.outputs[key]) == 4, key
    out = result.outputs
    for f in (1, 3):
        # Frame f's boxes are frame f-1's predictions, mapped back to the frame.
        args = (out["affine"][f - 1:f], out["mirrored"][f - 1:f], out["frame_width"][f - 1:f])
        joints = crops_to_frame(out["joints2d"][f - 1:f], *args)
        keypoints = crops_to_frame(out["obj_keypoints"][f - 1:f], *args)
        np.testing.assert_allclose(result.jobs[f].hand.box,
                                   points_box(joints, HAND_MARGIN, scene.size)[0], atol=1e-3)
        np.testing.assert_allclose(result.jobs[f].obj.box,
                                   points_box(keypoints, OBJECT_MARGIN, scene.size)[0], atol=1e-3)
        np.testing.assert_array_equal(result.jobs[f - 1].hand.box, keyframes[f - 1][0].hand.box)


class FailsOnBlue(PixelModel):
    """Raises for any batch holding a crop with a blue mark, as a kernel rejecting a crop."""

    def submit(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        images = batch["images"]
        blue = (images[..., 2] > 200) & (images[..., 0] < 60) & (images[..., 1] < 60)
        if blue.any():
            raise RuntimeError("kernel rejected the crop")
        return super().submit(batch)


def test_a_crop_the_model_fails_on_costs_that_pair_until_the_next_keyframe() -> None:
    chunk = render()
    x, y = hand_corner(5)
    chunk.frames[5, y + 10:y + 14, x + 10:x + 14] = (0, 0, 255)
    model = FailsOnBlue()
    # Three segments: each step's batch holds one crop of each, so frame 5's crop fails
    # together with frames 1 and 9, and the split keeps theirs.
    result = propagate_chunk(chunk, detector_jobs([0, 4, 8]), model)
    assert result.failed == [(5, "RuntimeError: kernel rejected the crop")]
    assert [j.frame_index for j in result.jobs] == [0, 1, 2, 3, 4, 8, 9, 10, 11]
    assert len(result.outputs["joints2d"]) == len(result.jobs)
    assert np.isfinite(result.outputs["joints2d"]).all()
