"""Checkpoint loading: accepted layouts, strict key matching, unsafe and damaged files,
MANO agreement, hashing."""

from __future__ import annotations

import hashlib
import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from hflpipe.model.checkpoint import file_sha256, load_hflnet, read_state_dict
from hflpipe.model.errors import ModelFileError

PREFIX = "honet.module."


@pytest.fixture(scope="module")
def official(reference_checkpoint: Path) -> Path:
    return reference_checkpoint


@pytest.fixture(scope="module")
def official_state(official: Path) -> dict[str, torch.Tensor]:
    return torch.load(official, weights_only=True)["state_dict"]


@pytest.fixture(scope="module")
def official_net(official: Path) -> torch.nn.Module:
    return load_hflnet(official)


def test_official_layout_loads_in_eval_mode(official_net: torch.nn.Module,
                                            official_state: dict[str, torch.Tensor]) -> None:
    net = official_net
    assert not net.training
    own = net.state_dict()
    # Every checkpoint tensor landed, bit for bit (coord_change_mat is the one unused constant).
    for key, value in official_state.items():
        name = key[len(PREFIX):]
        if name != "mano_branch.coord_change_mat":
            assert torch.equal(own[name], value), name


def test_bare_unprefixed_state_dict_gives_the_same_network(
    official_net: torch.nn.Module, official_state: dict[str, torch.Tensor], tmp_path: Path
) -> None:
    bare = tmp_path / "bare.pth"
    torch.save({k[len(PREFIX):]: v for k, v in official_state.items()}, bare)
    net = load_hflnet(bare)
    bare.unlink()
    reference = official_net.state_dict()
    own = net.state_dict()
    assert own.keys() == reference.keys()
    assert all(torch.equal(own[k], reference[k]) for k in own)


def test_half_precision_checkpoint_gives_a_float32_network(
    official_state: dict[str, torch.Tensor], tmp_path: Path
) -> None:
    path = tmp_path / "half.pth"
    torch.save({k: v.half() if v.is_floating_point() else v for k, v in official_state.items()},
               path)
    net = load_hflnet(path)
    path.unlink()
    key = "obj_head.out_conv.weight"
    assert net.state_dict()[key].dtype == torch.float32
    assert torch.equal(net.state_dict()[key], official_state[PREFIX + key].half().float())
    assert net.mano_branch.mano_layer.th_faces.dtype == torch.int64


def test_key_mismatch_names_missing_unexpected_and_misshaped_keys(
    official_state: dict[str, torch.Tensor], tmp_path: Path
) -> None:
    keys = list(official_state)
    state = {k: official_state[k] for k in keys[:3]}
    state[keys[1]] = torch.zeros(7)
    state[PREFIX + "hand_head.extra.weight"] = torch.zeros(2)
    path = tmp_path / "partial.pth.tar"
    torch.save({"epoch": 1, "network": "honet_transformer", "state_dict": state}, path)
    with pytest.raises(ModelFileError) as info:
        load_hflnet(path)
    message = str(info.value)
    assert "\n" not in message
    assert str(path) in message
    # The model has every checkpoint key but the unused coord_change_mat constant.
    n_missing = len(keys) - 1 - 3
    assert f"missing keys {n_missing} (base_net.layer0_h.0.weight, " in message
    assert f", ... ({n_missing - 5} more)" in message
    assert "unexpected keys 1 (hand_head.extra.weight)" in message
    assert f"{keys[1][len(PREFIX):]} (7,) vs (256,)" in message


def test_non_finite_weights_are_refused(official_state: dict[str, torch.Tensor],
                                        tmp_path: Path) -> None:
    state = dict(official_state)
    key = PREFIX + "obj_head.out_conv.bias"
    state[key] = state[key].clone()
    state[key][3] = float("nan")
    path = tmp_path / "nan.pth.tar"
    torch.save({"state_dict": state}, path)
    with pytest.raises(ModelFileError, match=r"non-finite values in 1 \(obj_head.out_conv.bias\)"):
        load_hflnet(path)
    path.unlink()


class _Payload:
    """Pickles as a call that creates ``marker``: what a tampered checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("writer", ["torch_save", "plain_pickle"])
def test_pickle_payload_is_refused_and_never_runs(writer: str, tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    path = tmp_path / "evil.pth.tar"
    payload = {"epoch": 0, "hook": _Payload(marker)}
    if writer == "torch_save":
        torch.save({**payload, "state_dict": {"x": torch.zeros(1)}}, path)
    else:
        path.write_bytes(pickle.dumps(payload, protocol=2))
    pattern = r"refused.*weights-only load will not call \(Unsupported global: GLOBAL .*open\)"
    with pytest.raises(ModelFileError, match=pattern) as info:
        load_hflnet(path)
    assert str(path) in str(info.value)
    assert "weights_only=False" not in str(info.value)
    assert not marker.exists()


def test_truncated_checkpoint(official: Path, tmp_path: Path) -> None:
    path = tmp_path / "truncated.pth.tar"
    with open(official, "rb") as f:
        path.write_bytes(f.read(official.stat().st_size // 2))
    with pytest.raises(ModelFileError, match="truncated or corrupted"):
        load_hflnet(path)


@pytest.mark.parametrize(
    ("content", "cause"),
    [
        (b"", "empty"),
        (b"epoch: 3\nthis is a text file\n", "not a"),
        (pickle.dumps([1, 2, 3]), "not a PyTorch checkpoint"),
        ([1, 2, 3], "holds a list, not a checkpoint"),
        ({"state_dict": {"w": [1.0, 2.0]}}, "1 entries that are not named tensors"),
        ({"state_dict": {}}, "not a checkpoint with a state_dict"),
    ],
)
def test_not_a_checkpoint(content: object, cause: str, tmp_path: Path) -> None:
    path = tmp_path / "bad.pth.tar"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        torch.save(content, path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(ModelFileError, match=cause) as info:
            read_state_dict(path)
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)
    assert [str(w.message) for w in caught] == []  # the one line is all the user gets


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match="does not exist"):
        load_hflnet(tmp_path / "nope.pth.tar")
    with pytest.raises(ModelFileError, match="is a directory"):
        load_hflnet(tmp_path)


@pytest.mark.parametrize("name", ["mano_synthetic_right.pkl", "mano_synthetic_right.npz"])
def test_matching_mano_file_is_accepted(name: str, official: Path, fixtures_dir: Path) -> None:
    net = load_hflnet(official, mano=fixtures_dir / name)
    assert net.mano_branch.mano_layer.th_v_template.abs().max() > 0


def test_different_mano_file_is_refused(official: Path, fixtures_dir: Path,
                                        tmp_path: Path) -> None:
    arrays = dict(np.load(fixtures_dir / "mano_synthetic_right.npz"))
    arrays["v_template"] = arrays["v_template"] * 1.01
    other = tmp_path / "other_mano.npz"
    np.savez(other, **arrays)
    with pytest.raises(ModelFileError, match=r"disagree with MANO file .*: th_v_template \("):
        load_hflnet(official, mano=other)


def test_file_sha256(tmp_path: Path) -> None:
    path = tmp_path / "blob"
    data = bytes(range(256)) * 5000
    path.write_bytes(data)
    assert file_sha256(path) == hashlib.sha256(data).hexdigest()
    with pytest.raises(ModelFileError, match="cannot be read"):
        file_sha256(tmp_path / "absent")
