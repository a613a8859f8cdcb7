"""Videos streamed from a real S3 server into PyAV: the same frames as the local file,
fewer bytes than the file for a short range, and a video that vanishes is one failed line."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from s3_server import S3Server
from videogen import encode_clip, moving_square_frames

from hflpipe.model.synthetic_checkpoint import synthetic_mano_path
from hflpipe.pipeline.common import remote_file
from hflpipe.pipeline.common.errors import InputError
from hflpipe.pipeline.config.run_config import RunConfig
from hflpipe.pipeline.decode.base import DecodeError, get_decoder
from hflpipe.pipeline.demo.scene import make_demo_scene
from hflpipe.pipeline.inputs.videos import VideoInput, video_id_for
from hflpipe.pipeline.run.context import InputCache, context_for_video, prepare_context
from hflpipe.pipeline.run.video import decoder_input, process_video

FPS = 10
FRAMES = 120
#: Small blocks, so that a 12 s test video spans dozens of them as a film spans 4 MB ones.
BLOCK = 16 * 1024


@pytest.fixture(scope="module")
def clip(s3: S3Server, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A 12 s turned clip with a keyframe every second (noise keeps it ~20 blocks long),
    as a local file and as an s3:// URL."""
    rng = np.random.default_rng(0)
    frames = [np.clip(frame + rng.integers(0, 40, frame.shape), 0, 255).astype(np.uint8)
              for frame in moving_square_frames(FRAMES, 96, 64)]
    path = encode_clip(tmp_path_factory.mktemp("remote") / "clip.mp4", frames, fps=FPS,
                       options={"g": str(FPS), "crf": "18"}, rotation=90)
    return path, s3.put_file(s3.new_bucket(), "videos/clip.mp4", path)


@pytest.fixture
def small_blocks(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Blocks of :data:`BLOCK` bytes; counts the requests and bytes fetched from the store."""
    monkeypatch.setattr(remote_file, "BLOCK_BYTES", BLOCK)
    fetched = {"requests": 0, "bytes": 0}
    fetch = remote_file.RemoteFile._fetch

    def counted(self: remote_file.RemoteFile, offset: int, count: int) -> bytes:
        block = fetch(self, offset, count)
        fetched["requests"] += 1
        fetched["bytes"] += len(block)
        return block

    monkeypatch.setattr(remote_file.RemoteFile, "_fetch", counted)
    return fetched


def _frames(decoder, path, **selection) -> tuple[list[int], list[float], np.ndarray]:
    chunks = list(decoder.read_chunks(path, chunk_size=16, **selection))
    return (np.concatenate([c.indices for c in chunks]).tolist(),
            np.concatenate([c.timestamps_s for c in chunks]).tolist(),
            np.concatenate([c.frames for c in chunks]))


def test_streamed_frames_and_metadata_are_those_of_the_local_file(clip, small_blocks):
    path, url = clip
    local, remote = get_decoder("pyav"), get_decoder("pyav")
    info = remote.probe(url)
    assert info == replace(local.probe(str(path)), path=url)
    assert info.rotation_deg == 270 and (info.width, info.height) == (64, 96)
    for selection in ({}, {"start_s": 4.25, "end_s": 6.05, "stride": 2},
                      {"frame_indices": [3, 57, 58, 119]}):
        streamed, copied = _frames(remote, url, **selection), _frames(local, str(path),
                                                                       **selection)
        assert streamed[:2] == copied[:2], selection
        assert np.array_equal(streamed[2], copied[2]), selection


def test_a_short_range_of_a_long_video_reads_a_fraction_of_it(clip, small_blocks):
    path, url = clip
    size = path.stat().st_size
    decoder = get_decoder("pyav")
    decoder.probe(url)
    assert small_blocks["bytes"] >= size
    small_blocks.update(requests=0, bytes=0)
    indices, _, _ = _frames(decoder, url, start_s=8.0, end_s=8.5)
    assert indices == [80, 81, 82, 83, 84]
    # Each open reads the first block and the index at the end (twice: the header, then
    # the decode), then the blocks from the keyframe at 8 s to 8.5 s; 1/24 of the video.
    assert small_blocks["bytes"] < size / 2, (small_blocks, size)
    # A request per block (the file's tail block, short, once per open), not per 32 KB read.
    assert small_blocks["requests"] <= small_blocks["bytes"] // BLOCK + 2


def test_a_video_deleted_while_it_is_decoded_fails_with_one_line(s3: S3Server, clip,
                                                                  small_blocks):
    path, _ = clip
    bucket = s3.new_bucket()
    url = s3.put_file(bucket, "gone.mp4", path)
    chunks = get_decoder("pyav").read_chunks(url, chunk_size=4)
    next(chunks)
    s3.client.delete_object(Bucket=bucket, Key="gone.mp4")
    with pytest.raises(InputError) as gone:
        list(chunks)
    message = str(gone.value)
    assert message.startswith(f"{url}: cannot be read at byte ") and "\n" not in message
    with pytest.raises(DecodeError, match=f"^{url}: no such file$"):
        get_decoder("pyav").probe(url)


def test_decord_and_copy_read_a_scratch_copy(clip, tmp_path):
    path, url = clip
    config = RunConfig(videos=[url], out=tmp_path / "out")
    with decoder_input(url, config) as streamed:
        assert streamed == url
    for changed in ({"decoder": "decord"}, {"remote_videos": "copy"}):
        with decoder_input(url, config.model_copy(update=changed)) as local:
            assert Path(local).read_bytes() == path.read_bytes(), changed
    with pytest.raises(DecodeError, match="decord reads local files only"):
        get_decoder("decord").probe(url)


def test_a_video_that_vanishes_mid_run_is_a_failed_row(
    s3: S3Server, tmp_path, monkeypatch, synthetic_checkpoint
):
    # Blocks of 1 KB: the decoding thread, a few frames ahead, still has blocks to fetch.
    monkeypatch.setattr(remote_file, "BLOCK_BYTES", 1024)
    scene = make_demo_scene(tmp_path / "scene", num_frames=12, size=(160, 120))
    bucket = s3.new_bucket()
    url = s3.put_file(bucket, "scene.mp4", scene.video_path)
    config = RunConfig(videos=[url], out=tmp_path / "out", detector="boxes",
                       boxes=scene.boxes_path, checkpoint=synthetic_checkpoint,
                       mano=synthetic_mano_path(), device="cpu", chunk_size=1, batch_size=64)
    video = VideoInput(url, video_id_for(url))
    context = context_for_video(prepare_context(config), video, InputCache())

    def delete_once_cropping_starts(done: int, total: int) -> None:
        if done:
            s3.client.delete_object(Bucket=bucket, Key="scene.mp4")

    row = process_video(video, config, context, None, delete_once_cropping_starts).video_row
    assert row["status"] == "failed" and row["content_sha256"] is not None
    assert row["error"].startswith(f"{url}: cannot be read at byte ") and "\n" not in row["error"]
    assert process_video(video, config, context, None).video_row["error"] == \
        f"{url}: no such file"
