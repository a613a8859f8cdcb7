"""Safe MANO file loading: official pickle layouts, .npz conversion, and refusals."""

from __future__ import annotations

import builtins
import copyreg
import hashlib
import io
import os
import pickle
import struct
import subprocess
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse

from hflpipe.model.errors import ModelFileError
from hflpipe.model.mano_file import ManoModel, convert_mano, load_mano_model, save_mano_npz

ARRAY_FIELDS = [f.name for f in fields(ManoModel) if f.name != "sha256"]


@pytest.fixture(scope="module")
def pkl_path(fixtures_dir: Path) -> Path:
    return fixtures_dir / "mano_synthetic_right.pkl"


@pytest.fixture(scope="module")
def npz_arrays(fixtures_dir: Path) -> dict[str, np.ndarray]:
    with np.load(fixtures_dir / "mano_synthetic_right.npz") as archive:
        return {key: archive[key] for key in archive.files}


def assert_same_arrays(a: ManoModel, b: ManoModel) -> None:
    for name in ARRAY_FIELDS:
        left, right = getattr(a, name), getattr(b, name)
        assert left.dtype == right.dtype, name
        assert np.array_equal(left, right), name


class _FakeChumpy:
    """Pickles like a ``chumpy.ch.Ch`` (renamed by :class:`_Python2StylePickler`)."""

    def __init__(self, x: np.ndarray) -> None:
        self.x = x
        self._dirty_vars = {"x"}


# Globals as the official (Python 2) MANO pickles name them.
PYTHON2_NAMES = {
    np._core.multiarray._reconstruct: ("numpy.core.multiarray", "_reconstruct"),
    scipy.sparse.csc_matrix: ("scipy.sparse.csc", "csc_matrix"),
    _FakeChumpy: ("chumpy.ch", "Ch"),
}


class _Python2StylePickler(pickle._Pickler):  # type: ignore[name-defined]
    """Writes what Python 2 wrote for MANO: old module names, raw byte strings."""

    def save_global(self, obj: object, name: str | None = None) -> None:
        if obj not in PYTHON2_NAMES:
            super().save_global(obj, name)
            return
        module, qualname = PYTHON2_NAMES[obj]
        self.write(pickle.GLOBAL + f"{module}\n{qualname}\n".encode())
        self.memoize(obj)

    def save_python2_str(self, obj: bytes) -> None:
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<I", len(obj)) + obj)
        self.memoize(obj)

    dispatch = pickle._Pickler.dispatch.copy()  # type: ignore[attr-defined]
    dispatch[bytes] = save_python2_str


def python2_style_pickle(arrays: dict[str, np.ndarray]) -> bytes:
    """A MANO dict laid out like the official file, pickled the Python-2 way."""
    content: dict[str, object] = dict(arrays)
    for key in ("v_template", "shapedirs", "posedirs", "weights"):
        content[key] = _FakeChumpy(arrays[key])
    content["J_regressor"] = scipy.sparse.csc_matrix(arrays["J_regressor"])
    buffer = io.BytesIO()
    _Python2StylePickler(buffer, protocol=2).dump(content)
    return buffer.getvalue()


def test_pickle_and_npz_fixtures_give_the_same_model(fixtures_dir: Path, pkl_path: Path) -> None:
    from_pkl = load_mano_model(pkl_path)
    from_npz = load_mano_model(fixtures_dir / "mano_synthetic_right.npz")
    assert_same_arrays(from_pkl, from_npz)
    assert from_pkl.sha256 == hashlib.sha256(pkl_path.read_bytes()).hexdigest()
    assert from_pkl.v_template.dtype == np.float64
    assert from_pkl.faces.dtype == np.int64
    assert from_pkl.J_regressor.shape == (16, 778)


def test_python2_layout_with_old_module_names_loads(
    tmp_path: Path, pkl_path: Path, npz_arrays: dict[str, np.ndarray]
) -> None:
    data = python2_style_pickle(npz_arrays)
    assert b"cnumpy.core.multiarray\n_reconstruct\n" in data
    assert b"cscipy.sparse.csc\ncsc_matrix\n" in data
    assert b"c__builtin__\nset\n" in data
    assert b"_codecs" not in data
    path = tmp_path / "MANO_RIGHT.pkl"
    path.write_bytes(data)
    assert_same_arrays(load_mano_model(path), load_mano_model(pkl_path))


def test_convert_writes_an_npz_that_loads_identically(tmp_path: Path, pkl_path: Path) -> None:
    destination = tmp_path / "mano_right.npz"
    converted = convert_mano(pkl_path, destination)
    reloaded = load_mano_model(destination)
    assert_same_arrays(converted, reloaded)
    assert converted.sha256 == hashlib.sha256(pkl_path.read_bytes()).hexdigest()
    assert reloaded.sha256 == hashlib.sha256(destination.read_bytes()).hexdigest()
    assert sorted(os.listdir(tmp_path)) == ["mano_right.npz"]


def test_save_replaces_an_existing_file(tmp_path: Path, pkl_path: Path) -> None:
    destination = tmp_path / "mano_right.npz"
    destination.write_bytes(b"old content")
    # A private umask must not make the shared model file private.
    umask = os.umask(0o077)
    try:
        save_mano_npz(load_mano_model(pkl_path), destination)
    finally:
        os.umask(umask)
    assert_same_arrays(load_mano_model(destination), load_mano_model(pkl_path))
    assert sorted(os.listdir(tmp_path)) == ["mano_right.npz"]
    assert destination.stat().st_mode & 0o777 == 0o644


def test_save_into_a_missing_folder_is_a_clear_error(tmp_path: Path, pkl_path: Path) -> None:
    with pytest.raises(ModelFileError, match=r"^cannot write .*mano\.npz: No such file"):
        save_mano_npz(load_mano_model(pkl_path), tmp_path / "absent" / "mano.npz")


class _Payload:
    """Unpickling this calls ``func(*args)``: what a tampered model file would do."""

    def __init__(self, func: object, args: tuple[object, ...]) -> None:
        self.func, self.args = func, args

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return self.func, self.args


def _payloads(marker: Path) -> dict[str, _Payload]:
    return {
        "system": _Payload(os.system, (f"touch '{marker}'",)),
        "Popen": _Payload(subprocess.Popen, (["touch", str(marker)],)),
        "exec": _Payload(builtins.exec, (f"open({str(marker)!r}, 'w').close()",)),
        "open": _Payload(builtins.open, (str(marker), "w")),
    }


@pytest.mark.parametrize("protocol", [2, 4])
@pytest.mark.parametrize("name", ["system", "Popen", "exec", "open"])
def test_code_in_a_pickle_is_refused_and_never_runs(
    tmp_path: Path, npz_arrays: dict[str, np.ndarray], protocol: int, name: str
) -> None:
    marker = tmp_path / "marker"
    content = dict(npz_arrays, v_template=_payloads(marker)[name])
    path = tmp_path / "MANO_RIGHT.pkl"
    path.write_bytes(pickle.dumps(content, protocol=protocol))
    with pytest.raises(ModelFileError) as error:
        load_mano_model(path)
    message = str(error.value)
    assert str(path) in message
    assert f".{name}" in message and "refused" in message
    assert "\n" not in message
    assert not marker.exists()


def test_the_payload_would_run_under_plain_pickle(tmp_path: Path) -> None:
    # Guards the refusal test above: its payloads do act when unpickled normally.
    marker = tmp_path / "marker"
    pickle.loads(pickle.dumps(_payloads(marker)["open"], protocol=2)).close()
    assert marker.exists()


@pytest.mark.parametrize(
    ("data", "cause"),
    [
        # BUILD with slot state {"__setstate__": None} on the chumpy placeholder class itself.
        (b"\x80\x02cchumpy.ch\nCh\nN}X\x0c\x00\x00\x00__setstate__Ns\x86b.", "malformed"),
        # BUILD with state {"a": 1} on an allowlisted function.
        (b"\x80\x02cnumpy\ndtype\n}X\x01\x00\x00\x00aK\x01sb.", "refused to modify"),
    ],
)
def test_allowlisted_globals_cannot_be_modified(
    tmp_path: Path, fixtures_dir: Path, pkl_path: Path, data: bytes, cause: str
) -> None:
    path = tmp_path / "tampered.pkl"
    path.write_bytes(data)
    with pytest.raises(ModelFileError, match=cause):
        load_mano_model(path)
    # The loader still reads a good file exactly as before.
    assert_same_arrays(
        load_mano_model(pkl_path), load_mano_model(fixtures_dir / "mano_synthetic_right.npz")
    )


def test_missing_keys_and_wrong_shapes_are_listed_on_one_line(
    tmp_path: Path, npz_arrays: dict[str, np.ndarray]
) -> None:
    content = dict(npz_arrays)
    del content["hands_mean"], content["weights"]
    content["shapedirs"] = content["shapedirs"][..., :9]
    content["posedirs"] = np.full_like(content["posedirs"], np.nan)
    content["kintree_table"] = content["kintree_table"][:, ::-1].copy()
    path = tmp_path / "bad.pkl"
    path.write_bytes(pickle.dumps(content, protocol=2))
    with pytest.raises(ModelFileError) as error:
        load_mano_model(path)
    message = str(error.value)
    assert "\n" not in message
    assert str(path) in message
    assert "missing keys weights, hands_mean" in message
    assert "shapedirs has shape (778, 3, 9), expected (778, 3, 10)" in message
    assert "posedirs has non-finite values" in message
    assert "kintree_table is not the MANO hand skeleton" in message


def test_a_pickle_of_something_else_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "list.pkl"
    path.write_bytes(pickle.dumps([1, 2, 3], protocol=2))
    with pytest.raises(ModelFileError, match="pickled list, not a MANO dict"):
        load_mano_model(path)


def test_a_corrupt_sparse_regressor_is_refused(
    tmp_path: Path, npz_arrays: dict[str, np.ndarray]
) -> None:
    regressor = scipy.sparse.csc_matrix(npz_arrays["J_regressor"])
    regressor.indices[0] = 5000
    path = tmp_path / "bad_sparse.pkl"
    path.write_bytes(pickle.dumps(dict(npz_arrays, J_regressor=regressor), protocol=2))
    with pytest.raises(ModelFileError, match="J_regressor"):
        load_mano_model(path)


@pytest.mark.parametrize("source", ["mano_synthetic_right.pkl", "mano_synthetic_right.npz"])
def test_a_truncated_file_is_refused(tmp_path: Path, fixtures_dir: Path, source: str) -> None:
    data = (fixtures_dir / source).read_bytes()
    path = tmp_path / source
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError, match="truncated") as error:
        load_mano_model(path)
    assert str(path) in str(error.value)


@pytest.mark.parametrize(
    ("content", "cause"),
    [
        (None, "does not exist"),
        (b"", r"is empty \(0 bytes\)"),
        (b"just some text", "neither a MANO pickle nor an .npz archive"),
    ],
)
def test_unusable_files_are_named_with_the_cause(
    tmp_path: Path, content: bytes | None, cause: str
) -> None:
    path = tmp_path / "MANO_RIGHT.pkl"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ModelFileError, match=cause) as error:
        load_mano_model(path)
    assert str(path) in str(error.value)


def test_a_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match="is a directory"):
        load_mano_model(tmp_path)


def test_copyreg_extension_codes_are_refused(tmp_path: Path) -> None:
    # EXT1 looks a global up in copyreg's registry; nothing registered means an error, not a call.
    copyreg.add_extension("os", "system", 0x7A)
    try:
        path = tmp_path / "ext.pkl"
        path.write_bytes(b"\x80\x02\x82\x7a.")
        with pytest.raises(ModelFileError, match=r"os\.system"):
            load_mano_model(path)
    finally:
        copyreg.remove_extension("os", "system", 0x7A)
