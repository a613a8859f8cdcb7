"""Bad model files through ``hflpipe run``: exit status 1, one line on stderr, nothing written.

The loaders' own checks are tested in ``test_checkpoint.py`` and ``test_mano_file.py``; this
is the end-to-end view a user gets, including pickles that would run code if unpickled.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import test_faults_common as common
import torch

pytestmark = pytest.mark.slow


class _Payload:
    """Unpickles as a call that creates ``marker``: what a tampered model file would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def _bad_checkpoint(kind: str, path: Path, marker: Path) -> Path:
    if kind == "corrupted":
        path.write_bytes(b"PK\x03\x04" + bytes(range(256)) * 40)
    elif kind == "mis_keyed":
        state = {"backbone.conv1.weight": torch.zeros(64, 3, 7, 7), "extra.bias": torch.zeros(3)}
        torch.save({"epoch": 1, "network": "HFL-Net", "state_dict": state}, path)
    elif kind == "code_payload":
        torch.save({"epoch": 1, "state_dict": {}, "hook": _Payload(marker)}, path)
    return path


def _bad_mano(kind: str, path: Path, marker: Path) -> Path:
    content: object = {"hello": "not a hand model"} if kind == "not_mano" else _Payload(marker)
    path.write_bytes(pickle.dumps(content, protocol=2))
    return path


CASES = [
    ("checkpoint", "corrupted"),
    ("checkpoint", "mis_keyed"),
    ("checkpoint", "code_payload"),
    ("mano", "not_mano"),
    ("mano", "code_payload"),
]


@pytest.mark.parametrize(("which", "kind"), CASES)
def test_a_bad_model_file_stops_the_run_with_one_line(tmp_path, synthetic_checkpoint, which,
                                                      kind, hflpipe_cli):
    marker = tmp_path / "payload-ran"
    clip = common.write_clip(tmp_path / "clip.mp4", 3)
    boxes = common.write_boxes(tmp_path / "boxes.csv", 3)
    checkpoint, mano = synthetic_checkpoint, common.synthetic_mano_path()
    if which == "checkpoint":
        checkpoint = _bad_checkpoint(kind, tmp_path / "bad.pth.tar", marker)
        bad = checkpoint
    else:
        mano = _bad_mano(kind, tmp_path / "MANO_RIGHT.pkl", marker)
        bad = mano
    out = tmp_path / "out"
    result = hflpipe_cli("run", "--videos", clip, "--out", out, "--checkpoint", checkpoint,
                         "--mano", mano, "--boxes", boxes, "--device", "cpu", "-q")
    assert result.returncode == 1, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hflpipe: error: "), result.stderr[-2000:]
    assert bad.name in lines[0]
    assert not out.exists()
    assert not marker.exists(), "the pickle payload ran"


def test_a_checkpoint_replaced_after_a_check_is_checked_again(tmp_path, synthetic_checkpoint):
    # The driver remembers checked files by identity; a file swapped under the same name
    # (a new inode, another size) must not pass on the old file's check.
    import shutil

    from hflpipe.model.checkpoint import ModelFileError
    from hflpipe.pipeline.run.context import checked_weights

    path = tmp_path / "model.pth.tar"
    shutil.copy(synthetic_checkpoint, path)
    first = checked_weights(path, None)
    assert checked_weights(path, None) == first
    replacement = _bad_checkpoint("corrupted", tmp_path / "incoming.pth.tar", tmp_path / "m")
    replacement.replace(path)
    with pytest.raises(ModelFileError, match=r"model\.pth\.tar"):
        checked_weights(path, None)
