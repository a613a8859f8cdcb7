import pytest

from hflpipe.pipeline.common.errors import ConfigError
from hflpipe.pipeline.inputs.videos import collect_inputs, expand_videos, video_id_for


def test_ids_are_safe_unique_and_stable(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    ids = {video_id_for(tmp_path / d / "clip.mp4") for d in "ab"}
    assert len(ids) == 2
    assert video_id_for(tmp_path / "a/clip.mp4") == video_id_for(tmp_path / "a/clip.mp4")
    for evil in ["../../x.mp4", "..", "a/../../.hidden.mp4", "we ird\nname.mp4"]:
        vid = video_id_for(tmp_path / evil)
        assert "/" not in vid and not vid.startswith(".") and "\n" not in vid and ".." not in vid


def test_globs_expand_sorted_once_and_directories_are_kept_as_problems(tmp_path):
    for name in ["b.mp4", "a.mp4"]:
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "dir.mp4").mkdir()
    inputs = expand_videos([str(tmp_path / "*.mp4"), str(tmp_path / "a.mp4")])
    assert [i.path.name for i in inputs] == ["a.mp4", "b.mp4", "dir.mp4"]
    assert inputs[2].problem and "directory" in inputs[2].problem
    assert inputs[0].problem is None


def test_a_glob_matching_nothing_is_an_error_and_a_missing_file_a_problem(tmp_path):
    with pytest.raises(ConfigError, match="no files match"):
        expand_videos([str(tmp_path / "*.mkv")])
    (missing,) = expand_videos([str(tmp_path / "gone.mp4")])
    assert missing.problem == "no such file"


def test_an_existing_name_with_glob_characters_is_that_file(tmp_path):
    take = tmp_path / "take[1].mp4"
    take.write_bytes(b"x")
    (other := tmp_path / "take1.mp4").write_bytes(b"x")
    assert [i.path for i in expand_videos([str(take)])] == [take]
    assert [i.path for i in expand_videos([str(tmp_path / "take[1].m*")])] == [other]


def test_the_output_folder_is_never_an_input(tmp_path):
    (tmp_path / "clip.mp4").write_bytes(b"x")
    out = tmp_path / "out"
    (out / "videos").mkdir(parents=True)
    (out / "videos" / "clip-1234abcd.parquet").write_bytes(b"x")
    (out / "old.mp4").write_bytes(b"x")
    inputs = collect_inputs([str(tmp_path / "**" / "*")], out=out)
    assert [i.path.name for i in inputs] == ["clip.mp4"]
    with pytest.raises(ConfigError, match="no files match outside the output folder"):
        collect_inputs([str(out / "*.mp4")], out=out)
    with pytest.raises(ConfigError, match="is inside the output folder"):
        collect_inputs([str(out / "old.mp4")], out=out)


def test_a_video_given_where_the_job_spec_goes_gets_the_quoting_hint(tmp_path, hflpipe_cli):
    clips = [tmp_path / "a.mp4", tmp_path / "b.mp4"]
    for clip in clips:
        clip.write_bytes(bytes(range(256)) * 8)
    for args in ([clips[1]], clips):
        result = hflpipe_cli("run", "--videos", tmp_path / "z.mp4", *args, "--out", tmp_path)
        assert result.returncode == 1
        assert "is this a video? quote your glob" in result.stderr
        assert result.stderr.count("\n") == 1
