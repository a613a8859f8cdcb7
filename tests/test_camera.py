import json
import math

import numpy as np
import pytest

from hflpipe.pipeline.common.errors import InputError
from hflpipe.pipeline.inputs.camera import (
    default_intrinsics,
    intrinsics_for_video,
    parse_intrinsics,
)


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


@pytest.mark.parametrize(
    ("content", "match"),
    [({"K": [[600, 0, 0], [0, 600, 0], [320, 240, 1]]}, "looks transposed"),
     ({"K": [[600, 5, 320], [0, 600, 240], [0, 0, 1]]}, "skew"),
     ({"fx": True, "fy": 600, "cx": 320, "cy": 240}, "fx must be numbers"),
     ({"fx": "600", "fy": 600, "cx": 320, "cy": 240}, "fx must be numbers"),
     ({"fx": 600, "fy": 600, "cx": 320, "cy": 240, "dist": [0.1, 0, 0, 0]},
      r"distortion coefficients are given \('dist'\).*undistort the video first"),
     ({"fx": 600, "fy": 600, "cx": 320, "cy": 240, "width": 0, "height": 480},
      "positive whole numbers")],
)
def test_wrong_camera_files_are_refused(tmp_path, content, match):
    path = tmp_path / "k.json"
    path.write_text(json.dumps(content))
    with pytest.raises(InputError, match=match):
        parse_intrinsics(path)


def test_zero_distortion_is_accepted(tmp_path):
    path = tmp_path / "k.json"
    path.write_text(json.dumps({"fx": 600, "fy": 600, "cx": 320, "cy": 240, "k1": 0.0}))
    assert parse_intrinsics(path).K[0, 0] == 600


def test_intrinsics_are_checked_against_the_video(tmp_path, caplog):
    path = tmp_path / "k.json"
    path.write_text(json.dumps({"fx": 1200, "fy": 1200, "cx": 960, "cy": 540,
                                "width": 1920, "height": 1080}))
    camera = parse_intrinsics(path)
    assert intrinsics_for_video(camera, 1920, 1080).K[0, 0] == 1200
    scaled = intrinsics_for_video(camera, 960, 540)
    np.testing.assert_allclose(scaled.K, [[600, 0, 480], [0, 600, 270], [0, 0, 1]])
    assert "scaled to it" in caplog.text
    with pytest.raises(InputError, match="another aspect ratio"):
        intrinsics_for_video(camera, 640, 480)
    with pytest.raises(InputError, match=r"principal point \(960, 540\) is outside the 640x480"):
        intrinsics_for_video(parse_intrinsics("1200,1200,960,540"), 640, 480)
