"""The shipped synthetic checkpoint writer against the parity fixtures' recipe script."""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch

from hflpipe.model.checkpoint import load_hflnet
from hflpipe.model.errors import ModelFileError
from hflpipe.model.mano_file import load_mano_model
from hflpipe.model.synthetic_checkpoint import (
    MANIFEST_FILE,
    MANO_FILE,
    synthetic_mano_path,
    write_synthetic_checkpoint,
)

PACKAGE_DATA = Path(__file__).resolve().parents[1] / "model" / "data"


def _load(path: Path) -> dict:
    # mmap keeps two 187 MB checkpoints from sitting in memory at once.
    return torch.load(path, map_location="cpu", mmap=True, weights_only=True)


def test_checkpoint_is_bit_identical_to_the_fixture_recipe(
    synthetic_checkpoint: Path, reference_checkpoint: Path
) -> None:
    # synthetic_checkpoint is write_synthetic_checkpoint's file, the other the recipe's.
    _assert_same_checkpoint(synthetic_checkpoint, reference_checkpoint)


def _assert_same_checkpoint(ours_path: Path, reference_path: Path) -> None:
    reference, ours = _load(reference_path), _load(ours_path)
    assert list(ours) == list(reference) == ["epoch", "network", "state_dict"]
    assert ours["epoch"] == reference["epoch"] == 0
    assert ours["network"] == reference["network"] == "honet_transformer"
    assert type(ours["state_dict"]) is OrderedDict
    assert list(ours["state_dict"]) == list(reference["state_dict"])
    for name, expected in reference["state_dict"].items():
        actual = ours["state_dict"][name]
        assert actual.dtype == expected.dtype, name
        assert actual.shape == expected.shape, name
        # Bytes, not values: catches -0.0 vs 0.0 and NaN payloads too.
        assert actual.numpy().tobytes() == expected.numpy().tobytes(), name


@pytest.mark.parametrize("name", [MANIFEST_FILE, MANO_FILE])
def test_shipped_data_equals_the_fixtures(fixtures_dir: Path, name: str) -> None:
    assert (PACKAGE_DATA / name).read_bytes() == (fixtures_dir / name).read_bytes()


def test_synthetic_mano_path_is_the_shipped_hand_model() -> None:
    path = synthetic_mano_path()
    assert path.resolve() == (PACKAGE_DATA / MANO_FILE).resolve()
    with np.load(path) as mano:
        assert mano["v_template"].shape == (778, 3)
        assert mano["J_regressor"].shape == (16, 778)


def test_synthetic_mano_file_loads_as_a_mano_model(fixtures_dir: Path) -> None:
    model = load_mano_model(synthetic_mano_path())
    with np.load(fixtures_dir / MANO_FILE) as reference:
        np.testing.assert_array_equal(model.v_template, reference["v_template"])
        np.testing.assert_array_equal(model.faces, reference["f"].astype(np.int64))


@pytest.mark.slow
def test_write_replaces_an_old_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "nested" / "synthetic.pth.tar"
    target.parent.mkdir()
    target.write_bytes(b"stale")
    assert write_synthetic_checkpoint(target) == target
    try:
        assert [p.name for p in target.parent.iterdir()] == [target.name]
        # The demo's pair: the checkpoint's hand-layer buffers must agree with the MANO file.
        network = load_hflnet(target, mano=synthetic_mano_path())
        assert not network.training
        del network
    finally:
        target.unlink()


def test_unwritable_folder_is_a_one_line_model_file_error(tmp_path: Path) -> None:
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("")
    with pytest.raises(ModelFileError, match=r"not_a_folder") as info:
        write_synthetic_checkpoint(blocker / "synthetic.pth.tar")
    assert "\n" not in str(info.value)
    assert list(tmp_path.iterdir()) == [blocker]
