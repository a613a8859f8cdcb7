"""Object files and names are checked before any work: one line, never a traceback, and
no object whose pose could only be nonsense (flat, too few vertices, wrong units)."""

from __future__ import annotations

import numpy as np
import pytest

from hflpipe.pipeline.common.errors import InputError
from hflpipe.pipeline.inputs.objects import resolve_object
from hflpipe.pipeline.run.context import load_boxes

BOX = np.array([[x, y, z] for x in (0, 0.1) for y in (0, 0.05) for z in (0, 0.2)])


def _xyz(rows: np.ndarray) -> str:
    return "\n".join(" ".join(f"{v:g}" for v in row) for row in rows)


@pytest.mark.parametrize(("name", "content", "expected"), [
    ("nan.xyz", "0 0 0\nnan 0 0\n0 1 0\n1 1 1", "non-finite"),
    ("empty.obj", "# nothing\n", "no vertices"),
    ("truncated.ply", "ply\nformat binary_little_endian 1.0\nelement vertex 8\n"
     "property float x\nproperty float y\nproperty float z\nend_header\n\x00\x00", "truncated"),
    ("mesh.stl", "solid x\nendsolid x\n", "unsupported object model format '.stl'"),
    ("two.xyz", "0 0 0\n0.1 0.1 0.1", "has 2 vertices"),
    ("flat.xyz", _xyz(BOX * [1, 1, 0]), "is flat"),
    ("millimetres.xyz", _xyz(BOX * 1000), "looks like millimetres"),
])
def test_bad_object_files_are_one_line_input_errors(tmp_path, name, content, expected):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(InputError, match=expected) as info:
        resolve_object(str(path))
    assert str(info.value).startswith(f"object file {path}: ") and "\n" not in str(info.value)


def test_a_plain_box_in_metres_is_accepted(tmp_path):
    path = tmp_path / "box.xyz"
    path.write_text(_xyz(BOX))
    name, points = resolve_object(str(path))
    assert name == "box" and points.shape == (21, 3)


def test_a_misspelt_object_name_in_a_boxes_file_gets_did_you_mean(tmp_path):
    path = tmp_path / "boxes.csv"
    path.write_text("frame_index,kind,x0,y0,x1,y1,object_name\n"
                    "0,object,1,1,20,20,003_cracker_box\n0,object,1,1,20,20,cracker_boxx\n")
    with pytest.raises(InputError, match=r"object_name 'cracker_boxx'.*did you mean"):
        load_boxes(path)
