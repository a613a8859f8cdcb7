"""MediaPipe's hand networks on the inference actors (``--mediapipe-on actors``), real Ray.

Two videos of drawn hands that MediaPipe recognises go through a run whose video tasks
keep the tracking and send 8-bit regions to the actor: the hands it writes are those the
detector finds with its networks in this process. (On a GPU node ``auto`` picks the
actors; here, without one, the test asks for them.)
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import ray
import torch

from hflpipe.bench.detector import detect_whole_video
from hflpipe.model.mediapipe_files import load_hand_landmarker, load_palm_detector
from hflpipe.model.mediapipe_hands import HandTracker, TorchHandNetworks
from hflpipe.model.synthetic_checkpoint import synthetic_mano_path
from hflpipe.pipeline.config.run_config import make_config
from hflpipe.pipeline.demo.drawn_hands import hand_scene
from hflpipe.pipeline.demo.scene import write_video
from hflpipe.pipeline.infer import actor_pool
from hflpipe.pipeline.inputs.videos import video_id_for
from hflpipe.pipeline.output.reader import read_table
from hflpipe.pipeline.run.runner import run

sys.path.insert(0, str(Path(__file__).parent / "data" / "mediapipe_reference"))

pytestmark = pytest.mark.slow
FRAMES = 3
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


def _local_hands(video) -> list[tuple[int, str, float]]:
    """(frame, own side, presence) per hand of the detector run in this process on the
    video's decoded frames, by networks built and run with the actor's one thread: the
    fused CPU graph splits its sums by the thread count it was built with, so other
    counts move landmarks by ~1e-4 px, and the next frame's region with them."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        networks = TorchHandNetworks(load_palm_detector(), load_hand_landmarker())
        return [(index, hand.handedness, hand.score)
                for index, hands in enumerate(detect_whole_video(video, networks))
                for hand in hands]
    finally:
        torch.set_num_threads(threads)


def test_the_actors_find_the_hands_the_video_tasks_find(
        tmp_path, hand_videos, synthetic_checkpoint, local_ray) -> None:
    config = make_config(videos=[str(v) for v in hand_videos], out=tmp_path / "out",
                         checkpoint=synthetic_checkpoint, mano=synthetic_mano_path(),
                         detector="mediapipe", mediapipe_on="actors", device="cpu",
                         cpus_per_actor=1.0)
    assert run(config, progress=False).statuses == {"ok": 2}
    batching = ray.get([a.mediapipe_batching.remote() for a in actor_pool._kept_pool[1]])

    hands = read_table(config.out, "hands").to_pandas()
    assert set(hands["handedness"]) == {"left", "right"}
    for video in hand_videos:
        rows = hands[hands["video_id"] == video_id_for(video)].sort_values("frame_index")
        expected = _local_hands(video)
        assert len(expected) == FRAMES  # one hand on every frame
        assert rows["frame_index"].tolist() == [frame for frame, _, _ in expected]
        assert rows["detector_side"].tolist() == [side for _, side, _ in expected]
        # The hand presence probability: the same network on the same 8-bit region.
        np.testing.assert_allclose(rows["detector_score"].to_numpy(np.float64),
                                   [score for _, _, score in expected], atol=1e-5)
    # Every frame's landmarks came from the actor (one hand per frame), and palms too.
    assert sum(b["landmark_regions"] for b in batching) == 2 * FRAMES
    assert sum(b["palm_images"] for b in batching) >= 2 * FRAMES


def test_auto_keeps_the_networks_in_the_video_tasks_without_a_gpu(synthetic_checkpoint,
                                                                  tmp_path) -> None:
    from hflpipe.pipeline.run.context import mediapipe_on_actors, prepare_context

    config = make_config(videos=["a.mp4"], out=tmp_path / "out",
                         checkpoint=synthetic_checkpoint, mano=synthetic_mano_path())
    assert not prepare_context(config, device="cpu").predictor_settings.mediapipe_hands
    assert prepare_context(config, device="cuda").predictor_settings.mediapipe_hands
    forced = make_config(videos=["a.mp4"], out=tmp_path / "out", mediapipe_on="tasks",
                         checkpoint=synthetic_checkpoint, mano=synthetic_mano_path())
    assert not mediapipe_on_actors(forced, "cuda")
    boxes = make_config(videos=["a.mp4"], out=tmp_path / "out", mediapipe_on="actors",
                        detector="torchvision", torchvision_model="m",
                        torchvision_weights=tmp_path / "w.pth",
                        checkpoint=synthetic_checkpoint, mano=synthetic_mano_path())
    assert not mediapipe_on_actors(boxes, "cuda")
    asked = make_config(videos=["a.mp4"], out=tmp_path / "out", mediapipe_on="actors",
                        checkpoint=synthetic_checkpoint, mano=synthetic_mano_path())
    assert mediapipe_on_actors(asked, "cpu")


@pytest.mark.needs_cuda
@pytest.mark.parametrize(("sequence", "max_px"), [("two_hands", 0.15), ("uhd_x4", 1.0)])
def test_the_networks_on_a_gpu_find_the_cpu_hands(sequence: str, max_px: float) -> None:
    """What the actors compute on a GPU: the same hands, landmarks as close as another
    order of the same float32 arithmetic puts them (the regions are the same 8-bit
    pixels). On the CPU, the fused graph against plain ``nn.Conv2d`` differ by 0.026 px
    (two hands) and 0.37 px (4K: tracking carries a small change on to the next
    frame's region); cuDNN's default TF32 would move them by 0.30 px and 1.95 px (TF32
    rounding emulated on the CPU)."""
    from make_reference import load_sequence

    frames = load_sequence(sequence)
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
            assert pixels.max() < max_px
