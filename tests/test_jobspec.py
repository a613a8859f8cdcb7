"""Job specs and manifests: every kind of bad input is one line naming the key, before work."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml

from hflpipe.pipeline.cli.main import main
from hflpipe.pipeline.common.errors import ConfigError
from hflpipe.pipeline.config.jobspec import COMMAND_LINE_ONLY, SECTIONS, build_config, load_spec
from hflpipe.pipeline.config.run_config import RunConfig, result_options
from hflpipe.pipeline.inputs.videos import collect_inputs, read_manifest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def files(tmp_path: Path) -> Path:
    """A folder with a fake checkpoint, boxes file, intrinsics and two 'videos'."""
    for name in ("ckpt.pth.tar", "clip_a.mp4", "clip_b.mp4"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "boxes.csv").write_text("frame_index,kind,x0,y0,x1,y1\n0,hand,1,1,9,9\n")
    (tmp_path / "cam.json").write_text(json.dumps({"fx": 500, "fy": 500, "cx": 320, "cy": 240}))
    return tmp_path


def _spec(folder: Path, **sections: dict) -> Path:
    base = {
        "inputs": {"videos": ["*.mp4"]},
        "output": {"out": "results"},
        "model": {"checkpoint": "ckpt.pth.tar"},
    }
    for name, content in sections.items():
        merge = isinstance(content, dict)
        base[name] = {**base.get(name, {}), **content} if merge else content
    path = folder / "job.yaml"
    path.write_text(yaml.safe_dump(base))
    return path


def _error(path: Path, **overrides: object) -> str:
    with pytest.raises(ConfigError) as info:
        build_config(load_spec(path), overrides)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_every_run_option_has_exactly_one_home():
    placed = [name for names in SECTIONS.values() for name in names] + list(COMMAND_LINE_ONLY)
    assert sorted(placed) == sorted(RunConfig.model_fields)


def test_a_spec_becomes_the_config_with_paths_beside_the_spec(files, monkeypatch):
    monkeypatch.chdir("/")
    path = _spec(files, detection={"boxes": "boxes.csv"}, scene={"intrinsics": "cam.json"},
                 resources={"batch_size": 8})
    config = build_config(load_spec(path))
    assert config.out == files / "results"
    assert config.checkpoint == files / "ckpt.pth.tar"
    assert config.intrinsics == str(files / "cam.json")
    assert config.videos == [str(files / "*.mp4")]
    assert config.detector == "boxes"  # implied by the boxes file, as with --boxes
    assert config.batch_size == 8
    inputs = collect_inputs(config.videos, config.video_list, config.manifest)
    assert [v.path.name for v in inputs] == ["clip_a.mp4", "clip_b.mp4"]


def test_flags_override_spec_values(files, tmp_path):
    path = _spec(files, resources={"batch_size": 8}, decoding={"stride": 3})
    config = build_config(load_spec(path), {"batch_size": 2, "out": Path("elsewhere")})
    assert (config.batch_size, config.stride, config.out) == (2, 3, Path("elsewhere"))
    assert "option 'batch_size'" in _error(path, batch_size=0)


def test_the_same_options_hash_the_same_from_a_spec_and_from_flags(files):
    spec = build_config(load_spec(_spec(files, decoding={"stride": 2})))
    flags = RunConfig(videos=[str(files / "*.mp4")], out=files / "results",
                      checkpoint=files / "ckpt.pth.tar", stride=2)
    assert result_options(spec) == result_options(flags)


@pytest.mark.parametrize(
    ("sections", "expected"),
    [
        ({"resources": {"batch_sise": 8}}, "key 'resources.batch_sise': unknown key"),
        ({"resources": {"stride": 2}}, "key 'resources.stride': belongs in section 'decoding'"),
        ({"gpu": {"count": 1}}, "unknown section 'gpu'"),
        ({"resources": {"retry_failed": True}}, "is a command-line option (--retry-failed)"),
        ({"resources": {"batch_size": "many"}}, "key 'resources.batch_size': Input should be"),
        ({"resources": {"batch_size": 0}}, "key 'resources.batch_size': Input should be greater"),
        ({"decoding": {"start_s": 5.0, "end_s": 2.0}}, "end_s (2.0) must be after start_s"),
        ({"model": {"device": "tpu"}}, "key 'model.device': Input should be 'auto'"),
        ({"model": {"checkpoint": "nope.pth.tar"}}, "key 'model.checkpoint': file not found"),
        ({"detection": {"detector": "boxes"}}, "detector 'boxes' needs a boxes file"),
        ({"scene": {"intrinsics": "missing.json"}}, "key 'scene.intrinsics': file not found"),
        ({"scene": {"object": "mug.ply"}}, "key 'scene.object': mesh/point file not found"),
        ({"inputs": {"manifest": "videos.csv"}}, "key 'inputs.manifest': file not found"),
        ({"resources": ["batch_size", 8]}, "key 'resources': expected a mapping"),
        ({"output": {"out": None}}, "key 'output.out'"),
    ],
)
def test_each_bad_spec_gives_one_line_naming_the_key(files, sections, expected):
    message = _error(_spec(files, **sections))
    assert expected in message
    assert str(files / "job.yaml") in message or "option" in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "is empty"),
        ("- a\n- b\n", "expected sections"),
        ("output: {out: a}\noutput: {out: b}\n", "key 'output' given twice"),
        ("output: {out: [\n", "not valid YAML: line"),
        ("out: results\n", "key 'out' belongs in section 'output'"),
        ("model: !!python/object/apply:os.system ['true']\n", "not valid YAML"),
    ],
)
def test_malformed_spec_files(tmp_path, text, expected):
    path = tmp_path / "job.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=None) as info:
        build_config(load_spec(path))
    assert expected in str(info.value) and "\n" not in str(info.value)


def test_a_missing_required_key_is_named(files):
    path = files / "job.yaml"
    path.write_text(yaml.safe_dump({"inputs": {"videos": ["*.mp4"]}}))
    assert "key 'output.out' is required" in _error(path)


def test_the_cli_prints_one_line_and_exits_1(files, monkeypatch, capsys):
    path = _spec(files, resources={"actors": 2})
    monkeypatch.setattr(sys, "argv", ["hflpipe", "run", str(path)])
    with pytest.raises(SystemExit) as info:
        main()
    assert info.value.code == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("hflpipe: error:") and "resources.actors" in err
    assert len(err.splitlines()) == 1


@pytest.mark.parametrize("name", sorted(p.name for p in (REPO / "jobs").glob("*.yaml")))
def test_example_specs_are_valid(name):
    config = build_config(load_spec(REPO / "jobs" / name), check_files=False)
    assert config.out.is_absolute()


def test_docs_describe_every_spec_key():
    text = (REPO / "docs" / "jobs.md").read_text()
    for section, names in SECTIONS.items():
        for name in names:
            assert f"`{section}.{name}`" in text, f"docs/jobs.md lacks {section}.{name}"


def _manifest(folder: Path, rows: list[dict], name: str = "videos.json") -> Path:
    path = folder / name
    path.write_text(json.dumps(rows))
    return path


def test_a_manifest_gives_each_video_its_overrides(files):
    path = _manifest(files, [
        {"video": "clip_a.mp4", "object": "cracker_box", "boxes": "boxes.csv",
         "intrinsics": {"fx": 600, "fy": 600, "cx": 300, "cy": 200}},
        {"video": "clip_b.mp4", "intrinsics": "cam.json"},
        {"video": "gone.mp4"},
    ])
    a, b, gone = read_manifest(path)
    assert (a.object, a.boxes, a.intrinsics) == ("cracker_box", files / "boxes.csv",
                                                 "600.0,600.0,300.0,200.0")
    assert b.intrinsics == str(files / "cam.json") and b.object is None and not b.overrides().get(
        "boxes")
    assert gone.problem == "no such file"
    csv_path = files / "videos.csv"
    csv_path.write_text("video,object,intrinsics,boxes\nclip_a.mp4,,\"1,1,0,0\",\n")
    (row,) = read_manifest(csv_path)
    assert row.overrides() == {"intrinsics": "1,1,0,0"}


def test_manifest_rows_win_over_globs_and_each_video_appears_once(files):
    manifest = _manifest(files, [{"video": "clip_b.mp4", "object": "cracker_box"}])
    config = RunConfig(videos=[str(files / "*.mp4")], manifest=manifest, out=files / "o")
    inputs = collect_inputs(config.videos, config.video_list, config.manifest)
    assert sorted(v.path.name for v in inputs) == ["clip_a.mp4", "clip_b.mp4"]
    assert {v.path.name: v.object for v in inputs}["clip_b.mp4"] == "cracker_box"


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        ([{"video": "clip_a.mp4", "objekt": "x"}], "row 1: unknown column 'objekt'"),
        ([{"object": "cracker_box"}], "row 1: 'video' is empty"),
        ([{"video": "clip_a.mp4"}, {"video": "clip_a.mp4"}], "row 2: video"),
        ([{"video": "clip_a.mp4", "boxes": "none.csv"}], "row 1: boxes file not found"),
        ([{"video": "clip_a.mp4", "object": "no_such_thing"}], "row 1: object 'no_such_thing'"),
        ([{"video": "clip_a.mp4", "intrinsics": "1,2,3"}], "row 1: intrinsics"),
        ([{"video": "clip_a.mp4", "intrinsics": {"fx": -1, "fy": 1, "cx": 0, "cy": 0}}],
         "row 1"),
        ([{"video": 7}], "row 1: video: expected text"),
        ([], "has no rows"),
    ],
)
def test_bad_manifests_name_the_row(files, rows, expected):
    with pytest.raises(ConfigError) as info:
        read_manifest(_manifest(files, rows))
    assert expected in str(info.value) and "\n" not in str(info.value)


def test_a_video_list_is_read_beside_itself(files):
    listing = files / "list.txt"
    listing.write_text("# archive\nclip_a.mp4\n\nclip_*.mp4\n")
    config = RunConfig(video_list=listing, out=files / "o")
    inputs = collect_inputs(config.videos, config.video_list, config.manifest)
    assert [v.path.name for v in inputs] == ["clip_a.mp4", "clip_b.mp4"]
    listing.write_text("# nothing\n")
    with pytest.raises(ConfigError, match="names no videos"):
        collect_inputs(config.videos, config.video_list, config.manifest)
