"""The hand-object detector in the pipeline: frames prepared on the CPU side, rows turned
into detections, links used for pairing; and runs that name it end to end."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pytest
import test_faults_common as common

from hflpipe.model.hand_object import CONTACT_STATES
from hflpipe.model.hand_object.transforms import PIXEL_MEANS_BGR
from hflpipe.pipeline.config.run_config import make_config
from hflpipe.pipeline.detect.base import Detection
from hflpipe.pipeline.detect.hand_object import HandObjectFrameDetector
from hflpipe.pipeline.inputs.videos import video_id_for
from hflpipe.pipeline.output.reader import read_table
from hflpipe.pipeline.output.schema import CONTACT_STATES as SCHEMA_CONTACT_STATES
from hflpipe.pipeline.run.runner import run
from hflpipe.pipeline.track.tracker import pair_hands_with_objects


def _row(box, score, state=0, side=1.0) -> list[float]:
    return [*box, score, state, 0.1, 0.1, 0.0, side]


class _FakeDevice:
    """Stands in for the actors: records what travelled, answers fixed rows."""

    def __init__(self) -> None:
        self.calls: list[tuple[np.ndarray, np.ndarray]] = []

    def __call__(self, images: np.ndarray, scales: np.ndarray):
        self.calls.append((images, scales))
        hands = np.float32([_row((10, 10, 50, 50), 0.9, state=3, side=0.0),
                            _row((60, 10, 90, 40), 0.8, state=0)])
        objects = np.float32([_row((40, 40, 80, 80), 0.7)])
        return [(hands, objects, np.int64([0, -1]))] * len(images)


@pytest.mark.parametrize(("height", "width", "resized"), [
    (2160, 3840, (562, 1000)),   # 4K: the long side capped at 1000
    (1280, 720, (1000, 562)),    # portrait phone video
    (24, 32, (600, 800)),        # tiny
])
def test_frames_travel_resized_in_half_precision(height: int, width: int,
                                                 resized: tuple[int, int]) -> None:
    device = _FakeDevice()
    frames = np.full((3, height, width, 3), 128, np.uint8)
    found = HandObjectFrameDetector(device, batch_size=2).detect(
        np.arange(3), np.zeros(3), frames)
    assert [len(images) for images, _ in device.calls] == [2, 1]
    images, scales = device.calls[0]
    assert images.dtype == np.float16 and images.shape[1:] == (*resized, 3)
    # BGR minus the means, the network's own input.
    np.testing.assert_allclose(images[0, 0, 0], 128 - PIXEL_MEANS_BGR, atol=0.05)
    assert scales[0] == pytest.approx(resized[1] / width, rel=1e-3)
    assert len(found) == 3


def test_rows_become_hands_with_side_state_and_link() -> None:
    found = HandObjectFrameDetector(_FakeDevice()).detect(
        np.arange(1), np.zeros(1), np.zeros((1, 48, 64, 3), np.uint8))[0]
    hand, other, obj = found
    assert (hand.kind, hand.handedness, hand.contact_state) == ("hand", "left", "portable")
    assert found[hand.linked_object] is obj and obj.kind == "object"
    assert (other.handedness, other.contact_state, other.linked_object) == ("right", "none",
                                                                            None)
    assert SCHEMA_CONTACT_STATES == CONTACT_STATES


def test_links_replace_the_overlap_guess_for_chosen_states() -> None:
    box = np.float32([0, 0, 10, 10])
    far = np.float32([100, 100, 110, 110])
    frame = [
        Detection("hand", box, 0.9, contact_state="portable", linked_object=3),
        Detection("hand", box, 0.9, contact_state="stationary", linked_object=2),
        Detection("object", box, 0.9),   # overlaps both hands: the guess would pick it
        Detection("object", far, 0.9),
    ]
    assert pair_hands_with_objects(frame) == [(0, 3), (1, None)]
    assert pair_hands_with_objects(frame, contact_states=("portable", "stationary")) == [
        (0, 3), (1, 2)]
    # Detections without a contact state keep the overlap rule.
    plain = [Detection("hand", box, 0.9), Detection("object", far, 0.9),
             Detection("object", box, 0.9)]
    assert pair_hands_with_objects(plain) == [(0, 2)]


@pytest.mark.slow
@pytest.mark.nightly
def test_a_run_with_the_hand_object_detector(tmp_path: Path, synthetic_checkpoint: Path,
                                             hand_object_checkpoint: Path, local_ray) -> None:
    # Nightly: one keyframe of the ResNet-101 on a CPU actor and the HFL-Net crops of the
    # ~19 hands the synthetic weights find take minutes a video. Two frames of each video
    # are propagated from its keyframe. A manifest names each video's object.
    clips = {common.write_clip(tmp_path / f"{name}.mp4", 3): obj
             for name, obj in (("a", "003_cracker_box"), ("b", "006_mustard_bottle"))}
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("video,object\n" + "".join(f"{clip.name},{obj}\n"
                                                   for clip, obj in clips.items()))
    out = tmp_path / "out"
    config = make_config(
        manifest=manifest, out=out, checkpoint=synthetic_checkpoint,
        mano=common.synthetic_mano_path(), detector="hand-object",
        hand_object_weights=hand_object_checkpoint, detect_every=3, device="cpu",
    )
    summary = run(config, progress=False)
    assert summary.statuses == {"ok": 2}
    hands = read_table(out, "hands")
    assert set(pc.unique(hands["frame_index"]).to_pylist()) == {0, 1, 2}
    states = hands["contact_state"].to_pylist()
    assert None not in states and set(states) <= set(CONTACT_STATES)
    assert set(hands["detector_side"].to_pylist()) <= {"left", "right"}
    # Hands holding a portable object gave HFL-Net their linked object's box: objects
    # (named by the manifest, so posed by PnP) came out; the other hands went hand-only.
    assert "portable" in states and len(set(states)) > 1
    objects = read_table(out, "objects").to_pandas()
    assert len(objects) > 0 and objects["rotation"].notna().any()
    names = {video_id_for(clip): obj for clip, obj in clips.items()}
    assert objects.groupby("video_id")["object_name"].agg(set).to_dict() == {
        video_id: {obj} for video_id, obj in names.items()}


@pytest.mark.parametrize("problem", ["missing", "hflnet"])
def test_missing_or_wrong_detector_weights_stop_the_run(problem: str, tmp_path: Path,
                                                       synthetic_checkpoint: Path,
                                                       hflpipe_cli) -> None:
    clip = common.write_clip(tmp_path / "clip.mp4", 3)
    weights = tmp_path / "absent.pth" if problem == "missing" else synthetic_checkpoint
    out = tmp_path / "out"
    result = hflpipe_cli("run", "--videos", clip, "--out", out, "--checkpoint",
                         synthetic_checkpoint, "--mano", common.synthetic_mano_path(),
                         "--detector", "hand-object", "--hand-object-weights", weights,
                         "--device", "cpu", "-q")
    assert result.returncode == 1, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and weights.name in lines[0], result.stderr[-2000:]
    assert not out.exists()


def test_other_detector_weights_change_the_config_hash(tmp_path: Path) -> None:
    from hflpipe.pipeline.run.context import config_hash

    config = make_config(videos=["a.mp4"], out=tmp_path, detector="hand-object",
                         hand_object_weights=tmp_path / "w.pth")
    hashes = {config_hash(config, "c", "m", "cpu", "fp32", sha) for sha in ("a", "b")}
    assert len(hashes) == 2
