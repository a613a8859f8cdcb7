"""Bad input files through a whole job on real Ray: each fails alone, the rest completes.

One job holds healthy videos next to every kind of broken file the issue lists; every
broken one must end as a ``failed`` videos row whose one-line error names the file and the
cause, with no hands/objects rows, while the healthy ones (a variable-frame-rate clip and a
4K clip among them) finish with every frame.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
import test_faults_common as common
import videogen

from hflpipe.pipeline.decode.base import get_decoder
from hflpipe.pipeline.inputs.videos import video_id_for
from hflpipe.pipeline.output.reader import read_table
from hflpipe.pipeline.run.runner import run
from hflpipe.pipeline.run.video import MAX_CHUNK_BYTES, frames_per_chunk

FRAMES = 4
VFR_TIMES = [0.25, 0.35, 0.45, 0.62]
SIZE_4K = (3840, 2160)
#: Resident memory that decoding a 4K video the way the pipeline does may add (README).
DECODE_4K_CAP_MIB = 1024


def _broken_inputs(root: Path) -> dict[str, tuple[Path, str]]:
    """Name -> (path, text the error must contain) for each kind of bad file."""
    made: dict[str, tuple[Path, str]] = {}

    def clip(name: str) -> Path:
        return common.write_clip(root / name, FRAMES)

    made["zero_byte"] = (videogen.make_zero_byte(root / "zero_byte.mp4"), "empty file")
    made["text"] = (videogen.make_text_file(root / "text.mp4"), "not a readable video")
    made["no_moov"] = (videogen.remove_moov(clip("no_moov.mp4")), "not a readable video")
    # The index survives, the data stops half-way: the container lists frames that are gone.
    cut = root / "cut.mp4"
    videogen.write_video(cut, videogen.moving_square_frames(FRAMES * 4), common.FPS, "h264")
    made["cut_mid_data"] = (videogen.cut_mdat(cut, 0.5), "cut")
    made["unreadable"] = (clip("unreadable.mp4"), "permission denied")
    (root / "folder.mp4").mkdir()
    made["directory"] = (root / "folder.mp4", "is a directory")
    made["zero_frames"] = (videogen.write_empty_video(root / "zero_frames.mp4"), "without frames")
    dangling = root / "dangling.mp4"
    dangling.symlink_to(root / "gone.mp4")
    made["dangling_link"] = (dangling, "no such file")
    return made


@pytest.fixture(scope="module")
def job(tmp_path_factory, synthetic_checkpoint, local_ray):
    """Run the mixed job once; returns (inputs, healthy paths, out, summary)."""
    root = tmp_path_factory.mktemp("inputs")
    videos = root / "videos"
    videos.mkdir()
    broken = _broken_inputs(videos)
    healthy = {
        # A name that is all dots (the glob skips it: passed on its own) must land inside OUT.
        "dots": common.write_clip(videos / "..mp4", FRAMES),
        "big_4k": common.write_clip(videos / "big_4k.mp4", FRAMES, size=SIZE_4K),
    }
    frames = list(videogen.moving_square_frames(FRAMES, common.WIDTH, common.HEIGHT))
    videogen.write_vfr_video(videos / "vfr.mp4", frames, VFR_TIMES)
    healthy["vfr"] = videos / "vfr.mp4"
    boxes = common.write_boxes(root / "boxes.csv", FRAMES)
    out = root / "out"
    config = common.run_config([videos / "*.mp4", healthy["dots"]], out, synthetic_checkpoint,
                               boxes, max_retries=0)
    before = {p for p in root.parent.rglob("*") if out not in p.parents}
    summary = run(config, progress=False)
    after = {p for p in root.parent.rglob("*") if out not in p.parents and p != out}
    assert after <= before | {out}, f"files written outside OUT: {after - before}"
    return broken, healthy, out, summary


def _videos(out: Path):
    return read_table(out, "videos").to_pandas().set_index("path")


@pytest.mark.slow
@pytest.mark.parametrize("kind", [
    "zero_byte", "text", "no_moov", "cut_mid_data", "unreadable", "directory", "zero_frames",
    "dangling_link",
])
def test_a_broken_file_gets_one_failed_row_naming_it(job, kind):
    broken, _, out, _ = job
    path, cause = broken[kind]
    row = _videos(out).loc[str(path)]
    assert row["status"] == "failed"
    error = row["error"]
    assert "\n" not in error and len(error) < 300
    assert str(path) in error and cause in error, error
    video_id = video_id_for(path)
    assert not (out / "hands" / f"{video_id}.parquet").exists()
    assert not (out / "objects" / f"{video_id}.parquet").exists()


@pytest.mark.slow
def test_the_rest_of_the_job_completes_with_every_frame(job):
    broken, healthy, out, summary = job
    assert summary.statuses == {"ok": len(healthy), "failed": len(broken)}
    assert len(summary.failures) == len(broken)
    videos = _videos(out)
    for path in healthy.values():
        assert videos.loc[str(path), "status"] == "ok"
    expected = {(video_id_for(p), f) for p in healthy.values() for f in range(FRAMES)}
    assert common.frame_rows(out, "hands") == expected
    assert common.frame_rows(out, "objects") == expected
    common.check_output_is_clean(out)


@pytest.mark.slow
def test_output_ids_stay_inside_out(job):
    _, healthy, out, _ = job
    video_id = video_id_for(healthy["dots"])
    assert not video_id.startswith(".") and "/" not in video_id
    assert (out / "hands" / f"{video_id}.parquet").is_file()


@pytest.mark.slow
def test_variable_frame_rate_times_are_the_container_times(job):
    _, healthy, out, _ = job
    with av.open(str(healthy["vfr"])) as container:
        stream = container.streams.video[0]
        # What ffprobe -show_frames reports: each decoded frame's pts in the stream time base.
        container_times = [float(f.pts * stream.time_base) for f in container.decode(stream)]
    np.testing.assert_allclose(container_times, VFR_TIMES, atol=1e-3)
    hands = read_table(out, "hands").to_pandas()
    hands = hands[hands["video_id"] == video_id_for(healthy["vfr"])].sort_values("frame_index")
    np.testing.assert_allclose(hands["timestamp_s"], container_times, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_variable_frame_rate_random_access_matches_sequential(job, backend):
    _, healthy, _, _ = job
    decoder = get_decoder(backend)
    path = str(healthy["vfr"])
    sequential = list(decoder.read_chunks(path, chunk_size=3))
    indices = np.concatenate([c.indices for c in sequential])
    times = np.concatenate([c.timestamps_s for c in sequential])
    frames = np.concatenate([c.frames for c in sequential])
    wanted = [1, 3]
    (picked,) = list(decoder.read_chunks(path, frame_indices=wanted))
    np.testing.assert_array_equal(picked.indices, wanted)
    np.testing.assert_array_equal(picked.timestamps_s, times[wanted])
    np.testing.assert_array_equal(picked.frames, frames[wanted])
    assert [videogen.read_frame_index(f) for f in picked.frames] == wanted
    assert indices.tolist() == list(range(FRAMES))


# The chunk size comes from the test (frames_per_chunk of the probed size, as the pipeline
# computes it): importing the pipeline's video stage would cost seconds here.
_DECODE_STAGE = """
import resource, sys
from hflpipe.pipeline.decode.base import get_decoder
decoder = get_decoder("decord")
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
info = decoder.probe(sys.argv[1])
count = sum(len(c) for c in decoder.read_chunks(sys.argv[1], chunk_size=int(sys.argv[2])))
print(info.width, info.height, count,
      (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) // 1024)
"""


@pytest.mark.slow
def test_a_4k_video_decodes_under_the_memory_cap(tmp_path):
    path = common.write_clip(tmp_path / "big.mp4", 24, size=SIZE_4K)
    chunk = frames_per_chunk(64, *SIZE_4K)
    assert chunk * SIZE_4K[0] * SIZE_4K[1] * 3 <= MAX_CHUNK_BYTES
    result = subprocess.run([sys.executable, "-c", _DECODE_STAGE, str(path), str(chunk)],
                            capture_output=True, text=True, timeout=120, check=True,
                            env=os.environ | {"OMP_NUM_THREADS": "1"})
    width, height, count, added_mib = map(int, result.stdout.split())
    assert (width, height, count) == (*SIZE_4K, 24)
    assert added_mib < DECODE_4K_CAP_MIB, f"decoding added {added_mib} MiB"
