"""hflpipe.atomic: the old file or the new one, never half, and no temporaries left."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from hflpipe.atomic import (
    atomic_path,
    atomic_write,
    atomic_write_text,
    is_temporary,
    temporary_name,
)


class _WriteError(Exception):
    pass


def _disk_full(sink) -> None:
    sink.write(b"half of the new")
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_result_replaces_an_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "result.txt"
    path.write_text("old")
    assert atomic_write_text(path, "new\n") == path
    assert path.read_text() == "new\n"
    assert os.listdir(tmp_path) == ["result.txt"]


def test_old_file_survives_a_failing_writer_and_no_temporary_is_left(tmp_path: Path) -> None:
    path = tmp_path / "result.bin"
    path.write_bytes(b"old")
    with pytest.raises(OSError, match="No space left"):
        atomic_write(path, _disk_full)
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["result.bin"]


def test_any_exception_in_the_block_discards_the_temporary(tmp_path: Path) -> None:
    path = tmp_path / "plot.png"
    with pytest.raises(KeyboardInterrupt), atomic_path(path) as temp:
        temp.write_bytes(b"partial")
        raise KeyboardInterrupt
    assert os.listdir(tmp_path) == []


def test_os_errors_become_the_given_type_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "result.bin"
    with pytest.raises(_WriteError) as info:
        atomic_write(path, _disk_full, _WriteError)
    assert str(info.value) == f"cannot write {path}: No space left on device"
    assert isinstance(info.value.__cause__, OSError)

    def multi_line(sink) -> None:
        raise RuntimeError("PytorchStreamWriter failed\n  writing file data/0")

    with pytest.raises(_WriteError, match=r"^cannot write .*: PytorchStreamWriter failed "
                       r"writing file data/0$"):
        atomic_write(path, multi_line, _WriteError)
    assert os.listdir(tmp_path) == []


def test_other_errors_pass_through_unmapped(tmp_path: Path) -> None:
    def bad_value(sink) -> None:
        raise ValueError("not a table")

    with pytest.raises(ValueError, match="not a table"):
        atomic_write(tmp_path / "x.parquet", bad_value, _WriteError)


def test_a_block_that_writes_nothing_is_an_error(tmp_path: Path) -> None:
    # OpenCV reports some failures only by not creating the file.
    with pytest.raises(_WriteError, match="did not create"), atomic_path(
        tmp_path / "still.png", _WriteError
    ):
        pass
    assert os.listdir(tmp_path) == []


def test_a_missing_folder_is_the_given_error(tmp_path: Path) -> None:
    with pytest.raises(_WriteError, match=r"^cannot write .*absent/x\.txt: No such file"):
        atomic_write_text(tmp_path / "absent" / "x.txt", "x", _WriteError)


def test_temporary_names_keep_the_suffix_and_are_recognised(tmp_path: Path) -> None:
    temp = temporary_name(tmp_path / "demo.mp4")
    assert temp.parent == tmp_path and temp.suffix == ".mp4" and temp.name.startswith(".")
    assert temp != temporary_name(tmp_path / "demo.mp4")
    assert is_temporary(temp)
    assert is_temporary(Path(".a.parquet.0123abcd.tmp"))  # what earlier versions left
    for name in ("demo.mp4", ".hidden", "a.tmp", ".tmp", "tmp.parquet"):
        assert not is_temporary(Path(name)), name
