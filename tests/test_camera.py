import json
import math

import numpy as np
import pytest

from hflpipe.pipeline.common.errors import InputError
from hflpipe.pipeline.inputs.camera import default_intrinsics, parse_intrinsics


def test_default_intrinsics_have_the_documented_field_of_view():
    cam = default_intrinsics(640, 480, hfov_deg=60.0)
    assert cam.source == "default_fov"
    hfov = 2 * math.degrees(math.atan((640 / 2) / cam.K[0, 0]))
    assert hfov == pytest.approx(60.0)
    assert cam.K[0, 2] == pytest.approx(319.5) and cam.K[1, 2] == pytest.approx(239.5)


def test_parse_values_and_json_forms(tmp_path):
    cam = parse_intrinsics("600,610,320,240")
    np.testing.assert_allclose(cam.K, [[600, 0, 320], [0, 610, 240], [0, 0, 1]])
    (tmp_path / "a.json").write_text(json.dumps({"fx": 1, "fy": 2, "cx": 3, "cy": 4, "width": 9}))
    assert parse_intrinsics(tmp_path / "a.json").K[1, 1] == 2
    (tmp_path / "b.json").write_text(json.dumps({"K": cam.K.tolist()}))
    np.testing.assert_allclose(parse_intrinsics(str(tmp_path / "b.json")).K, cam.K)


@pytest.mark.parametrize(
    ("content", "match"),
    [("{", "not readable JSON"), ('{"fx": 1}', "missing fy, cx, cy"), ('{"K": [1, 2]}', "3x3"),
     ('{"fx": -1, "fy": 1, "cx": 0, "cy": 0}', "positive focal")],
)
def test_bad_intrinsics_files_give_one_line_errors(tmp_path, content, match):
    path = tmp_path / "k.json"
    path.write_text(content)
    with pytest.raises(InputError, match=match) as info:
        parse_intrinsics(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_missing_file_is_named():
    with pytest.raises(InputError, match="no such file"):
        parse_intrinsics("/nonexistent/k.json")
