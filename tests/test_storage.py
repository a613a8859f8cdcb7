"""The storage layer against a real S3 server: globs, reads, copies, and one-line errors."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import s3_server
from s3_proxy import FillingProxy
from s3_server import S3Server

from hflpipe.pipeline.common import input_cache, storage
from hflpipe.pipeline.common.errors import ConfigError, InputError


@pytest.fixture(scope="module")
def archive(s3: S3Server, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A bucket with videos in nested folders and a list file beside them."""
    bucket = s3.new_bucket()
    for key in ("a/one.mp4", "a/b/two.mp4", "a/b/c/three.mp4", "a/notes.txt", "z/four.mp4"):
        s3.client.put_object(Bucket=bucket, Key=key, Body=key.encode())
    s3.client.put_object(Bucket=bucket, Key="lists/videos.txt", Body=b"../a/one.mp4\n#x\n")
    return bucket


def test_globs_match_within_and_across_folders(archive: str) -> None:
    assert storage.glob(f"s3://{archive}/a/*.mp4") == [f"s3://{archive}/a/one.mp4"]
    assert storage.glob(f"s3://{archive}/a/**/*.mp4") == [
        f"s3://{archive}/a/b/c/three.mp4", f"s3://{archive}/a/b/two.mp4",
        f"s3://{archive}/a/one.mp4"]
    assert storage.glob(f"s3://{archive}/*/t?o.mp4") == []
    assert storage.glob(f"s3://{archive}/a/b/[st]*.mp4") == [f"s3://{archive}/a/b/two.mp4"]
    assert storage.glob(f"s3://{archive}/missing/**") == []


def test_a_prefix_is_listed_once_not_folder_by_folder(
    s3: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 120 videos in 60 folders: one listing request (S3 pages hold 1000 keys), where a
    # walk folder by folder would send 60 and, for an archive of 100,000 files in
    # thousands of folders, take minutes.
    bucket = s3.new_bucket()
    for folder in range(60):
        for take in range(2):
            s3.client.put_object(Bucket=bucket, Key=f"day/{folder:02d}/cam/{take}.mp4", Body=b"v")
    proxy = FillingProxy(s3_server.ENDPOINT)
    try:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.endpoint)
        monkeypatch.setattr(storage, "_filesystem", storage._filesystem.__wrapped__)
        found = storage.glob(f"s3://{bucket}/day/**/*.mp4")
    finally:
        proxy.stop()
    assert len(found) == 120 and found[0] == f"s3://{bucket}/day/00/cam/0.mp4"
    listings = [path for method, path in proxy.requests if method == "GET" and "list-type" in path]
    assert len(listings) == 1, listings


def test_relative_names_in_a_list_are_beside_it(archive: str) -> None:
    listed = f"s3://{archive}/lists/videos.txt"
    assert storage.read_text(listed).startswith("../a/one.mp4")
    assert storage.beside(listed, "x.mp4") == f"s3://{archive}/lists/x.mp4"
    assert storage.beside(listed, "/top.mp4") == f"s3://{archive}/top.mp4"
    assert storage.beside(listed, "gs://other/y.mp4") == "gs://other/y.mp4"


def test_cached_copy_is_fetched_once_and_refreshed_when_the_object_changes(
    s3: S3Server, archive: str
) -> None:
    url = f"s3://{archive}/a/notes.txt"
    first = storage.cached_copy(url)
    assert first.read_bytes() == b"a/notes.txt"
    assert storage.cached_copy(url) == first
    s3.client.put_object(Bucket=archive, Key="a/notes.txt", Body=b"changed!")
    assert storage.cached_copy(url).read_bytes() == b"changed!"


def test_scratch_copy_is_removed_afterwards_and_refuses_big_files(archive: str) -> None:
    url = f"s3://{archive}/a/one.mp4"
    with storage.scratch_copy(url, limit_bytes=1000) as local:
        assert local.read_bytes() == b"a/one.mp4"
    assert not local.exists() and not local.parent.exists()
    with pytest.raises(InputError, match="over the scratch space limit of 4 bytes"), \
            storage.scratch_copy(url, limit_bytes=4):
        pass
    with pytest.raises(InputError, match="no such file"), \
            storage.scratch_copy(f"s3://{archive}/gone.mp4", limit_bytes=1000):
        pass


def test_local_paths_pass_through(tmp_path: Path) -> None:
    path = tmp_path / "x.txt"
    path.write_text("hi")
    assert storage.cached_copy(path) == path
    assert storage.read_text(str(path)) == "hi"
    assert storage.join(tmp_path, "a", "b") == tmp_path / "a" / "b"
    assert storage.join("s3://bkt/out/", "videos") == "s3://bkt/out/videos"


def test_missing_bucket_and_wrong_credentials_are_one_line(
    s3: S3Server, archive: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(InputError) as missing:
        storage.read_text("s3://no-such-bucket-hflpipe/list.txt")
    assert "\n" not in str(missing.value) and "no-such-bucket-hflpipe" in str(missing.value)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret")
    monkeypatch.setattr(storage, "_filesystem", storage._filesystem.__wrapped__)
    with pytest.raises(InputError) as refused:
        storage.glob(f"s3://{archive}/a/*.mp4")
    message = str(refused.value)
    assert "\n" not in message and archive in message and "wrong-secret" not in message
    assert "signature" in message.lower() or "denied" in message.lower()


def test_the_input_cache_evicts_least_recently_used_entries_beyond_its_cap(
    s3: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "cache"
    monkeypatch.setenv(input_cache.ROOT_VARIABLE, str(root))
    monkeypatch.setenv(input_cache.CAP_VARIABLE, str(1500 / 1e9))
    monkeypatch.setattr(input_cache, "_handed_out", set())
    bucket = s3.new_bucket()
    urls = []
    for index in range(5):
        s3.client.put_object(Bucket=bucket, Key=f"in{index}.bin", Body=bytes([index]) * 1000)
        urls.append(f"s3://{bucket}/in{index}.bin")

    def age(paths: list[Path]) -> None:
        long_ago = time.time() - 2 * input_cache.IN_USE_S
        for order, path in enumerate(paths):
            os.utime(path.parent, (long_ago + order, long_ago + order))

    copies = [storage.cached_copy(url) for url in urls[:3]]
    # Over the cap, but every entry was used just now.
    assert all(copy.is_file() for copy in copies)
    age(copies)
    copies.append(storage.cached_copy(urls[3]))
    # Long unused, but handed out by this process.
    assert all(copy.is_file() for copy in copies)

    # A new process, where another one has just taken in1 from the cache.
    monkeypatch.setattr(input_cache, "_handed_out", set())
    age(copies)
    os.utime(copies[1].parent)
    (root / f"gone{input_cache._EVICTED}1234").mkdir()
    with copies[0].open("rb") as reader:
        newest = storage.cached_copy(urls[4])
        # Oldest first, towards the cap; the entry in use elsewhere stays.
        assert [copy.is_file() for copy in copies] == [False, True, False, False]
        assert reader.read() == bytes([0]) * 1000
    assert sorted(root.iterdir()) == sorted([copies[1].parent, newest.parent])
    monkeypatch.setenv(input_cache.CAP_VARIABLE, "lots")
    with pytest.raises(ConfigError, match=r"^HFLPIPE_INPUT_CACHE_GB='lots': expected a size"):
        storage.cached_copy(urls[2])
