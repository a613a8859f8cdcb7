"""Object control points: the YCB catalogue and computation from mesh / point files."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hflpipe.model.control_points import (
    control_points_from_file,
    control_points_from_points,
    load_control_points,
)


@pytest.fixture(scope="module")
def ycb_json(fixtures_dir):
    return json.loads((fixtures_dir / "ycb_bbox21.json").read_text())


def _expected_from_order(order, lo, hi):
    """Spell the fixture's ``order`` codes (e.g. ``x0ymz1``) out into points."""
    values = {"0": lo, "1": hi, "m": (lo + hi) / 2}
    return np.array([[values[code[2 * a + 1]][a] for a in range(3)] for code in order])


def test_catalogue_matches_fixture(ycb_json):
    for name, entry in ycb_json["objects"].items():
        np.testing.assert_array_equal(load_control_points(name), entry["points"])


def test_catalogue_entries_follow_the_rule(ycb_json):
    for name in ycb_json["objects"]:
        points = load_control_points(name)
        lo, hi = points[:8].min(0), points[:8].max(0)
        np.testing.assert_array_equal(points, _expected_from_order(ycb_json["order"], lo, hi))
        # The box of the 21 points is the object's box, so recomputing is the identity.
        np.testing.assert_array_equal(control_points_from_points(points), points)
        diameter = ycb_json["objects"][name]["diameter_m"]
        assert np.linalg.norm(points[7] - points[0]) == pytest.approx(diameter, abs=1e-12)


def test_synthetic_cloud_gives_bit_rule_order(ycb_json):
    rng = np.random.default_rng(0)
    lo, hi = np.array([-0.03, -0.05, -0.11]), np.array([0.04, 0.02, 0.09])
    cloud = rng.uniform(lo, hi, size=(500, 3))
    cloud[:3] = [lo, hi, [lo[0], hi[1], lo[2]]]  # make the extents exact
    points = control_points_from_points(cloud)
    np.testing.assert_array_equal(points, _expected_from_order(ycb_json["order"], lo, hi))
    for i in range(8):
        expected = [hi[a] if i >> a & 1 else lo[a] for a in range(3)]
        np.testing.assert_array_equal(points[i], expected)
    np.testing.assert_allclose(points[20], (lo + hi) / 2)


def test_names_short_and_case_insensitive():
    full = load_control_points("003_cracker_box")
    np.testing.assert_array_equal(load_control_points("cracker_box"), full)
    np.testing.assert_array_equal(load_control_points(" Cracker_Box "), full)
    # Returned arrays are copies: callers may modify them.
    full[:] = 0
    assert load_control_points("003_cracker_box").any()


def test_unknown_name_lists_close_matches():
    with pytest.raises(ValueError, match="cracker_box"):
        load_control_points("craker_box")
    with pytest.raises(ValueError, match=r"unknown YCB object 'teapot' \(known: .*mustard"):
        load_control_points("teapot")
    with pytest.raises(TypeError):
        load_control_points(2)


@pytest.fixture
def cloud():
    rng = np.random.default_rng(1)
    return rng.normal(size=(40, 3)).astype(np.float32).astype(np.float64)


def _write_ply(path, points, fmt):
    faces = [(0, 1, 2), (1, 2, 3)]
    header = [
        "ply", f"format {fmt} 1.0", "comment made by a test",
        f"element vertex {len(points)}",
        "property float x", "property float y", "property float z", "property uchar red",
        f"element face {len(faces)}", "property list uchar int vertex_indices", "end_header",
    ]
    with open(path, "wb") as f:
        f.write(("\n".join(header) + "\n").encode("ascii"))
        if fmt == "ascii":
            for p in points:
                f.write(f"{p[0]:.17g} {p[1]:.17g} {p[2]:.17g} 7\n".encode())
            for face in faces:
                f.write(("3 " + " ".join(map(str, face)) + "\n").encode())
            return
        order = "<" if fmt == "binary_little_endian" else ">"
        table = np.zeros(len(points), dtype=[("x", order + "f4"), ("y", order + "f4"),
                                             ("z", order + "f4"), ("red", "u1")])
        table["x"], table["y"], table["z"] = points.T
        f.write(table.tobytes())
        for face in faces:
            f.write(np.array([3], "u1").tobytes() + np.array(face, order + "i4").tobytes())


@pytest.mark.parametrize("fmt", ["ascii", "binary_little_endian", "binary_big_endian"])
def test_ply_vertices(tmp_path, cloud, fmt):
    path = tmp_path / "model.ply"
    _write_ply(path, cloud, fmt)
    np.testing.assert_array_equal(control_points_from_file(path),
                                  control_points_from_points(cloud))


def test_xyz_txt_and_obj(tmp_path, cloud):
    expected = control_points_from_points(cloud)
    xyz = tmp_path / "points.xyz"
    xyz.write_text("".join(f"{x:.17g} {y:.17g} {z:.17g} 0 0 1\n" for x, y, z in cloud))
    np.testing.assert_array_equal(control_points_from_file(xyz), expected)
    txt = tmp_path / "points.txt"
    txt.write_text("# x y z\n\n" + "".join(f"{x:.17g}\t{y:.17g}  {z:.17g}\n" for x, y, z in cloud))
    np.testing.assert_array_equal(control_points_from_file(str(txt)), expected)
    obj = tmp_path / "mesh.obj"
    lines = ["# mesh", "o thing"] + [f"v {x:.17g} {y:.17g} {z:.17g}" for x, y, z in cloud]
    lines += ["vn 0 0 1", "vt 0.5 0.5", "f 1 2 3"]
    obj.write_text("\n".join(lines) + "\n")
    np.testing.assert_array_equal(control_points_from_file(obj), expected)


def test_bad_files_raise(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"missing\.ply"):
        control_points_from_file(tmp_path / "missing.ply")
    stl = tmp_path / "mesh.stl"
    stl.write_bytes(b"solid")
    with pytest.raises(ValueError, match="unsupported"):
        control_points_from_file(stl)
    empty = tmp_path / "empty.obj"
    empty.write_text("# nothing\n")
    with pytest.raises(ValueError, match="no vertices"):
        control_points_from_file(empty)
    short = tmp_path / "short.xyz"
    short.write_text("1 2\n")
    with pytest.raises(ValueError, match=r"short\.xyz"):
        control_points_from_file(short)
    not_ply = tmp_path / "fake.ply"
    not_ply.write_bytes(b"\x00\x01garbage")
    with pytest.raises(ValueError, match="not a PLY"):
        control_points_from_file(not_ply)
    truncated = tmp_path / "truncated.ply"
    _write_ply(truncated, np.ones((10, 3)), "binary_little_endian")
    truncated.write_bytes(truncated.read_bytes()[:150])
    with pytest.raises(ValueError, match="truncated"):
        control_points_from_file(truncated)
    with pytest.raises(ValueError, match="shape"):
        control_points_from_points(np.zeros((0, 3)))
    with pytest.raises(ValueError, match="non-finite"):
        control_points_from_points(np.array([[0.0, np.inf, 0.0]]))
