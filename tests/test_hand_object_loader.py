"""Loading the 100DOH detector's checkpoint: the official layout, and one clear line (and
nothing executed) for every kind of wrong file."""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch

from hflpipe.model import load_hand_object_detector
from hflpipe.model.errors import ModelFileError


@pytest.fixture(scope="module")
def official(hand_object_checkpoint: Path) -> dict:
    return torch.load(hand_object_checkpoint, map_location="cpu", weights_only=True, mmap=True)


def _save(tmp_path: Path, payload: object, name: str = "bad.pth") -> Path:
    path = tmp_path / name
    torch.save(payload, path)
    return path


def _one_line_error(path: Path, match: str) -> str:
    with pytest.raises(ModelFileError, match=match) as caught:
        load_hand_object_detector(path)
    message = str(caught.value)
    assert "\n" not in message and str(path) in message
    return message


def test_official_layout_loads_every_tensor(hand_object_checkpoint: Path, official: dict) -> None:
    net = load_hand_object_detector(hand_object_checkpoint)
    assert not net.training
    ours = net.state_dict()
    assert len(ours) == len(official["model"]) == 642
    assert torch.equal(ours["backbone.6.22.conv3.weight"],
                       official["model"]["RCNN_base.6.22.conv3.weight"])
    assert torch.equal(ours["contact_head.3.bias"],
                       official["model"]["extension_layer.hand_contact_state_layer.3.bias"])
    assert torch.equal(ours["roi_stage.2.bn3.running_var"],
                       official["model"]["RCNN_top.0.2.bn3.running_var"])


def test_missing_and_misshaped_keys_are_named_as_the_file_spells_them(
    official: dict, tmp_path: Path
) -> None:
    state = OrderedDict(official["model"])
    del state["RCNN_rpn.RPN_Conv.bias"]
    state["extension_layer.hand_lr_layer.weight"] = torch.zeros(2, 2048)
    state["RCNN_extra.weight"] = torch.zeros(1)
    message = _one_line_error(_save(tmp_path, {**official, "model": state}),
                              "not a 100DOH hand-object detector checkpoint")
    assert "missing keys 1 (RCNN_rpn.RPN_Conv.bias)" in message
    assert "unexpected keys 1 (RCNN_extra.weight)" in message
    assert "extension_layer.hand_lr_layer.weight (2, 2048) vs (1, 2048)" in message


def test_truncated_and_empty_files(hand_object_checkpoint: Path, tmp_path: Path) -> None:
    truncated = tmp_path / "truncated.pth"
    with open(hand_object_checkpoint, "rb") as source:
        truncated.write_bytes(source.read(50_000_000))
    _one_line_error(truncated, "truncated or corrupted")
    empty = tmp_path / "empty.pth"
    empty.touch()
    _one_line_error(empty, "empty")
    _one_line_error(tmp_path / "absent.pth", "does not exist")


class _Payload:
    """Unpickling this would create a file: proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_malicious_pickle_is_refused_without_running_it(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"model": _Payload(marker)}, path)
    _one_line_error(path, "refused")
    assert not marker.exists()


def test_an_hflnet_checkpoint_is_recognised(tmp_path: Path) -> None:
    # The HFL-Net release layout: {"epoch", "network", "state_dict"} with honet.module. keys.
    hflnet = {"epoch": 1, "network": "HONet",
              "state_dict": {"honet.module.base_net.layer0_h.0.weight": torch.zeros(64, 3, 7, 7)}}
    _one_line_error(_save(tmp_path, hflnet), "an HFL-Net checkpoint, not the 100DOH")


@pytest.mark.parametrize(("payload", "match"), [
    ({"model": {"x": torch.zeros(1)}, "pooling_mode": "crop"}, "pooling mode 'crop'"),
    ({"model": {"x": torch.zeros(1)}, "class_agnostic": True}, "class-agnostic"),
    ({"model": {"x": np.zeros(1).tolist()}}, "not named tensors"),
    ([torch.zeros(1)], "holds a list"),
    ({"weights": {}}, "no 'model' entry"),
])
def test_other_layouts_are_refused(payload: object, match: str, tmp_path: Path) -> None:
    _one_line_error(_save(tmp_path, payload), match)
