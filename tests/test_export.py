"""Exports: documented layouts, values unchanged, MANO parameters usable by MANO tools."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from test_evaluate import groundtruth_file, prediction_columns, scene, write_output
from test_schema import sample_hand_columns, sample_object_columns

from hflpipe.model.control_points import load_control_points
from hflpipe.model.mano import ManoLayer
from hflpipe.model.mano_file import load_mano_model
from hflpipe.model.synthetic_checkpoint import synthetic_mano_path
from hflpipe.pipeline.cli.results import eval_command, export_command
from hflpipe.pipeline.common.errors import InputError
from hflpipe.pipeline.output.reader import read_table
from hflpipe.pipeline.output.schema import SCHEMA_VERSION
from hflpipe.pipeline.results.export import export_output

N = 5


@pytest.fixture(scope="module")
def layer() -> ManoLayer:
    return ManoLayer(load_mano_model(synthetic_mano_path())).eval()


@pytest.fixture
def output(tmp_path, layer):
    """One video: a right hand whose joints are the MANO layer's at its stored parameters
    (as the pipeline writes them), and an object without a pose on its last two frames."""
    rng = np.random.default_rng(7)
    hands = sample_hand_columns("clip", N)
    pose = rng.normal(0, 0.3, (N, 48)).astype(np.float32)
    shape = rng.normal(0, 1, (N, 10)).astype(np.float32)
    with torch.inference_mode():
        _, joints = layer(torch.from_numpy(pose), torch.from_numpy(shape), center_idx=0)
    hands |= {"mano_pose": pose, "mano_shape": shape,
              "joints3d": (joints.numpy() + hands["translation"][:, None]).astype(np.float32)}
    objects = sample_object_columns("clip", N)
    write_output(tmp_path / "out", "clip", hands, objects)
    return tmp_path / "out", hands, objects


def test_json_layout_and_mano_parameters_reproduce_the_joints(output, tmp_path, layer) -> None:
    out, hands, _ = output
    [path] = export_output(out, tmp_path / "json", "json", mano=synthetic_mano_path())
    doc = json.loads(path.read_text())
    assert doc["format"] == "hflpipe-export" and doc["schema_version"] == SCHEMA_VERSION
    assert doc["video"]["video_id"] == "clip" and "OpenCV" in doc["coordinates"]
    [hand] = doc["hands"]
    assert hand["frame_index"] == list(range(N)) and hand["handedness"] == "right"
    mano = hand["mano"]
    np.testing.assert_allclose(np.hstack([mano["global_orient"], mano["hand_pose"]]),
                               hands["mano_pose"], rtol=1e-6)
    np.testing.assert_allclose(mano["betas"], hands["mano_shape"], rtol=1e-6)
    # What a MANO tool does: pose in the model's own frame, then add transl.
    with torch.inference_mode():
        _, model_joints = layer(torch.tensor(np.hstack([mano["global_orient"],
                                                        mano["hand_pose"]]),
                                             dtype=torch.float32),
                                torch.tensor(mano["betas"], dtype=torch.float32),
                                center_idx=None)
    placed = model_joints.numpy() + np.asarray(mano["transl"])[:, None]
    np.testing.assert_allclose(placed, hands["joints3d"], atol=2e-6)
    np.testing.assert_allclose(hand["wrist_position"], hands["translation"], rtol=1e-6)
    [obj] = doc["objects"]
    assert obj["pose_valid"] == [True, True, True, True, False]
    assert obj["translation"][-1] is None and obj["rotation_matrix"][-1] is None
    R = np.asarray(obj["rotation_matrix"][0])
    np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-5)


def test_npz_and_csv_hold_the_table_values(output, tmp_path) -> None:
    out, hands, objects = output
    [npz] = export_output(out, tmp_path / "npz", "npz")
    with np.load(npz) as data:
        assert json.loads(str(data["tracks"])) == [
            {"kind": "hand", "track_id": 0, "label": "right", "frames": N},
            {"kind": "object", "track_id": 3, "label": "003_cracker_box", "frames": N}]
        np.testing.assert_array_equal(data["hand0_joints3d"], hands["joints3d"])
        assert data["hand0_mano_hand_pose"].shape == (N, 45)
        assert "hand0_mano_transl" not in data.files  # needs --mano
        assert np.isnan(data["object3_translation"][-1]).all()
    files = export_output(out, tmp_path / "csv", "csv", mano=synthetic_mano_path())
    assert [p.name for p in files] == ["hands.csv", "objects.csv", "videos.csv"]
    with open(files[0], newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == N
    table = read_table(out, "hands")
    assert float(rows[1]["joints3d_4_y"]) == pytest.approx(hands["joints3d"][1, 4, 1])
    assert float(rows[0]["mano_pose_47"]) == pytest.approx(hands["mano_pose"][0, 47])
    assert float(rows[0]["box_x1"]) == pytest.approx(hands["box"][0, 2])
    assert {"mano_transl_x", "mano_transl_z", "translation_y"} <= set(rows[0])
    interpolated = table.column("interpolated").to_pylist()
    assert [r["joints2d_raw_0_x"] == "" for r in rows] == interpolated
    with open(files[1], newline="") as handle:
        objs = list(csv.DictReader(handle))
    assert objs[-1]["rotation_w"] == "" and float(objs[0]["rotation_w"]) == pytest.approx(
        objects["rotation"][0, 0])


def test_cli_export_and_eval(output, tmp_path) -> None:
    out, _, _ = output
    runner = CliRunner()
    result = runner.invoke(export_command, [str(out), "--format", "json", "-o",
                                            str(tmp_path / "e")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "e" / "clip.json").is_file()
    empty = runner.invoke(export_command, [str(tmp_path), "--format", "csv", "-o",
                                           str(tmp_path / "x")])
    assert isinstance(empty.exception, InputError)

    truth = scene()
    write_output(tmp_path / "scored", "shift", *prediction_columns(
        "shift", truth["joints"] + [0.005, 0, 0], truth["verts"], truth["R"], truth["t"]))
    gt = tmp_path / "gt.npz"
    groundtruth_file(gt, "shift", truth, load_control_points("003_cracker_box"))
    result = runner.invoke(eval_command, [str(tmp_path / "scored"), str(gt), "--format",
                                          "json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)["shift"]
    assert summary["mpjpe_mm"] == pytest.approx(5.0, abs=1e-3)
    assert summary["add_mm"] == pytest.approx(0.0, abs=1e-3)
    text = runner.invoke(eval_command, [str(tmp_path / "scored"), str(gt)])
    assert "pa_mpjpe_mm" in text.output and "5.000" in text.output
