"""MediaPipe's hand networks on the inference actors (``--mediapipe-on actors``), real Ray.

Two videos of drawn hands that MediaPipe recognises go through a run whose video tasks
keep the tracking and send 8-bit regions to the actor, and through a run that runs the
networks in the video tasks: the same hands come out. (On a GPU node ``auto`` picks the
actors; here, without one, the test asks for them.)
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import ray

from hflpipe.model.mediapipe_files import load_hand_landmarker, load_palm_detector
from hflpipe.model.mediapipe_hands import HandTracker, TorchHandNetworks
from hflpipe.model.synthetic_checkpoint import synthetic_mano_path
from hflpipe.pipeline.config.run_config import make_config
from hflpipe.pipeline.demo.drawn_hands import hand_scene
from hflpipe.pipeline.demo.scene import write_video
from hflpipe.pipeline.infer import actor_pool
from hflpipe.pipeline.output.reader import read_table
from hflpipe.pipeline.run.runner import run

sys.path.insert(0, str(Path(__file__).parent / "data" / "mediapipe_reference"))

pytestmark = pytest.mark.slow
FRAMES = 6
WIDTH, HEIGHT = 320, 240


@pytest.fixture(scope="module")
def hand_videos(tmp_path_factory) -> list:
    """A right hand moving right, and a left hand moving down."""
    root = tmp_path_factory.mktemp("drawn")
    paths = []
    for name, hand in (
        ("right.mp4", lambda i: (120 + 6 * i, 130, 150, 5.0, False)),
        ("left.mp4", lambda i: (170, 110 + 5 * i, 140, -8.0, True)),
    ):
        frames = [hand_scene(WIDTH, HEIGHT, [hand(i)], seed=i) for i in range(FRAMES)]
        write_video(root / name, iter(frames), 10.0, (WIDTH, HEIGHT))
        paths.append(root / name)
    return paths


def _run(videos, out, checkpoint, where: str):
    config = make_config(videos=[str(v) for v in videos], out=out, checkpoint=checkpoint,
                         mano=synthetic_mano_path(), detector="mediapipe", mediapipe_on=where,
                         device="cpu", cpus_per_actor=1.0)
    return run(config, progress=False)


def _hands(out) -> dict[str, np.ndarray]:
    table = read_table(out, "hands").to_pandas().sort_values(["video_id", "frame_index"])
    return {"frames": table[["video_id", "frame_index"]].to_numpy(),
            "handedness": table["handedness"].to_numpy(),
            "boxes": np.stack(table["box"]).astype(np.float64),
            "scores": table["detector_score"].to_numpy(np.float64)}


def test_the_actors_find_the_hands_the_video_tasks_find(
        tmp_path, hand_videos, synthetic_checkpoint, local_ray) -> None:
    on_actors = _run(hand_videos, tmp_path / "actors", synthetic_checkpoint, "actors")
    assert on_actors.statuses == {"ok": 2}
    pool = actor_pool._kept_pool[1]
    batching = ray.get([actor.mediapipe_batching.remote() for actor in pool])
    in_tasks = _run(hand_videos, tmp_path / "tasks", synthetic_checkpoint, "tasks")
    assert in_tasks.statuses == {"ok": 2}

    theirs, ours = _hands(tmp_path / "tasks"), _hands(tmp_path / "actors")
    assert len(theirs["frames"]) == 2 * FRAMES  # one hand on every frame of both videos
    np.testing.assert_array_equal(ours["frames"], theirs["frames"])
    np.testing.assert_array_equal(ours["handedness"], theirs["handedness"])
    assert set(ours["handedness"]) == {"left", "right"}
    np.testing.assert_allclose(ours["boxes"], theirs["boxes"], atol=0.05)
    assert not np.isnan(ours["scores"]).any()
    np.testing.assert_allclose(ours["scores"], theirs["scores"], atol=1e-4)
    # Every frame's landmarks came from the actor (one hand per frame), and palms too.
    assert sum(b["landmark_regions"] for b in batching) == 2 * FRAMES
    assert sum(b["palm_images"] for b in batching) >= 2 * FRAMES


def test_auto_keeps_the_networks_in_the_video_tasks_without_a_gpu(synthetic_checkpoint,
                                                                  tmp_path) -> None:
    from hflpipe.pipeline.run.context import prepare_context

    config = make_config(videos=["a.mp4"], out=tmp_path / "out",
                         checkpoint=synthetic_checkpoint, mano=synthetic_mano_path())
    assert not prepare_context(config, device="cpu").predictor_settings.mediapipe_hands
    assert prepare_context(config, device="cuda").predictor_settings.mediapipe_hands
    forced = make_config(videos=["a.mp4"], out=tmp_path / "out", mediapipe_on="tasks",
                         checkpoint=synthetic_checkpoint, mano=synthetic_mano_path())
    assert not prepare_context(forced, device="cuda").predictor_settings.mediapipe_hands
    boxes = make_config(videos=["a.mp4"], out=tmp_path / "out", mediapipe_on="actors",
                        detector="torchvision", torchvision_model="m",
                        torchvision_weights=tmp_path / "w.pth",
                        checkpoint=synthetic_checkpoint, mano=synthetic_mano_path())
    assert not prepare_context(boxes, device="cuda").predictor_settings.mediapipe_hands


@pytest.mark.needs_cuda
def test_the_networks_on_a_gpu_find_the_cpu_hands() -> None:
    """What the actors compute on a GPU: the same hands, landmarks within half a pixel
    (the regions are the same 8-bit pixels; only the arithmetic differs)."""
    from make_reference import load_sequence

    frames = load_sequence("two_hands")
    found = {}
    for device in ("cpu", "cuda"):
        networks = TorchHandNetworks(load_palm_detector(), load_hand_landmarker(), device)
        found[device] = HandTracker(networks, max_hands=2).process(frames)
    height, width = frames.shape[1:3]
    for cpu_hands, gpu_hands in zip(found["cpu"], found["cuda"], strict=True):
        assert [h.label for h in gpu_hands] == [h.label for h in cpu_hands]
        for cpu_hand, gpu_hand in zip(cpu_hands, gpu_hands, strict=True):
            pixels = np.abs(gpu_hand.landmarks[:, :2] - cpu_hand.landmarks[:, :2]) * (width,
                                                                                      height)
            assert pixels.max() < 0.5
