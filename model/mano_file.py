"""Reading MANO hand-model files safely, and converting them to plain ``.npz``.

The official ``MANO_RIGHT.pkl`` is a Python-2 pickle holding chumpy objects, a
scipy sparse matrix and numpy arrays. Unpickling it normally would import
chumpy (unmaintained, broken on current numpy) and would run whatever code a
tampered file names. Here it is read by an unpickler that resolves only an
explicit allowlist of globals; chumpy and scipy objects become inert
placeholders whose arrays are taken out afterwards. Every other global is
refused with :class:`ModelFileError` before anything is called.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse

from hflpipe.atomic import atomic_path
from hflpipe.model.errors import ModelFileError
from hflpipe.model.mano import MANO_PARENTS, NUM_BETAS, NUM_FACES, NUM_JOINTS, NUM_VERTS

_NUM_POSE_BASIS = 9 * (NUM_JOINTS - 1)
_NUM_FINGER_POSE = 3 * (NUM_JOINTS - 1)

# File key -> (ManoModel field, expected shape). "f" is MANO's name for the faces.
_ARRAYS: dict[str, tuple[str, tuple[int, ...]]] = {
    "v_template": ("v_template", (NUM_VERTS, 3)),
    "shapedirs": ("shapedirs", (NUM_VERTS, 3, NUM_BETAS)),
    "posedirs": ("posedirs", (NUM_VERTS, 3, _NUM_POSE_BASIS)),
    "weights": ("weights", (NUM_VERTS, NUM_JOINTS)),
    "J_regressor": ("J_regressor", (NUM_JOINTS, NUM_VERTS)),
    "f": ("faces", (NUM_FACES, 3)),
    "kintree_table": ("kintree_table", (2, NUM_JOINTS)),
    "hands_components": ("hands_components", (_NUM_FINGER_POSE, _NUM_FINGER_POSE)),
    "hands_mean": ("hands_mean", (_NUM_FINGER_POSE,)),
}
_INTEGER_FIELDS = frozenset({"faces", "kintree_table"})

_PICKLE_PROTO_MAGIC = b"\x80"
_ZIP_MAGIC = b"PK\x03\x04"


@dataclass(frozen=True)
class ManoModel:
    """A right-hand MANO model as plain arrays (float64 unless noted; lengths in metres).

    Attributes:
        v_template: ``(778, 3)`` rest-pose template vertices.
        shapedirs: ``(778, 3, 10)`` shape blend shapes.
        posedirs: ``(778, 3, 135)`` pose blend shapes (15 joints x 9 rotation entries).
        weights: ``(778, 16)`` skinning weights.
        J_regressor: ``(16, 778)`` dense joint regressor.
        faces: ``(1538, 3)`` int64 triangle vertex indices.
        kintree_table: ``(2, 16)`` int64; row 0 the parent of each joint, row 1 its id.
        hands_components: ``(45, 45)`` finger-pose PCA basis (one component per row).
        hands_mean: ``(45,)`` mean finger pose (axis-angle).
        sha256: hex digest of the file the model was read from.
    """

    v_template: np.ndarray
    shapedirs: np.ndarray
    posedirs: np.ndarray
    weights: np.ndarray
    J_regressor: np.ndarray
    faces: np.ndarray
    kintree_table: np.ndarray
    hands_components: np.ndarray
    hands_mean: np.ndarray
    sha256: str


class _Inert:
    """Stand-in for a class of the file that is never imported: it only keeps its state dict.

    A tampered pickle cannot rewrite the class itself: BUILD on the class calls
    the unbound ``__setstate__`` with one argument, which fails.
    """

    state: dict[str, Any]

    def __setstate__(self, state: object) -> None:
        if not isinstance(state, dict):
            raise pickle.UnpicklingError(
                f"{type(self).__name__} state is a {type(state).__name__}, not a dict"
            )
        self.state = state


class _ChumpyArray(_Inert):
    """A ``chumpy.ch.Ch``: its value is the array under ``x``."""


class _CscMatrix(_Inert):
    """A pickled ``scipy.sparse`` CSC matrix, rebuilt by :func:`_sparse_to_dense`."""


class _CsrMatrix(_Inert):
    """A pickled ``scipy.sparse`` CSR matrix, rebuilt by :func:`_sparse_to_dense`."""


class _Sealed:
    """An allowlisted function the pickle may call but not modify (BUILD on it is refused)."""

    __slots__ = ("_func",)

    def __init__(self, func: Callable[..., object]) -> None:
        self._func = func

    def __call__(self, *args: object) -> object:
        return self._func(*args)

    def __setstate__(self, state: object) -> None:
        raise pickle.UnpicklingError("refused to modify an allowlisted global")


_SAFE_DTYPE_KINDS = frozenset("biufcSU")


def _empty_array(subtype: object, shape: object, typecode: object) -> np.ndarray:
    # numpy pickles an empty array and fills it from the state in BUILD.
    if subtype is not np.ndarray or not isinstance(shape, tuple):
        raise pickle.UnpicklingError("array reconstruction with unexpected arguments")
    return np.ndarray((0,), dtype=np.uint8)


def _dtype(spec: object, align: object = False, copy: object = False) -> np.dtype:
    if not isinstance(spec, str):
        raise pickle.UnpicklingError(f"dtype from a {type(spec).__name__}")
    dtype = np.dtype(spec, align=bool(align), copy=bool(copy))
    if dtype.kind not in _SAFE_DTYPE_KINDS:
        raise pickle.UnpicklingError(f"dtype {spec!r} is not a plain numeric or string type")
    return dtype


def _scalar(dtype: object, data: object = None) -> object:
    if not isinstance(dtype, np.dtype) or dtype.kind not in _SAFE_DTYPE_KINDS:
        raise pickle.UnpicklingError("numpy scalar of an unsupported type")
    if isinstance(data, str):
        data = data.encode("latin1")
    if not isinstance(data, bytes) or len(data) != dtype.itemsize:
        raise pickle.UnpicklingError("numpy scalar with malformed data")
    return np.frombuffer(data, dtype=dtype)[0].copy()


def _latin1_bytes(text: object, encoding: object = "utf-8") -> bytes:
    # Protocol 2 stores bytes as latin-1 text plus a call to _codecs.encode.
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError("_codecs.encode used for something other than bytes")
    return text.encode("latin1")


# Every global a MANO pickle may name, under both the Python-2-era and the
# current module names. np.ndarray and set are built-in types, which a pickle
# cannot modify either.
_ALLOWED_GLOBALS: dict[tuple[str, str], object] = {
    ("numpy.core.multiarray", "_reconstruct"): _Sealed(_empty_array),
    ("numpy._core.multiarray", "_reconstruct"): _Sealed(_empty_array),
    ("numpy.core.multiarray", "scalar"): _Sealed(_scalar),
    ("numpy._core.multiarray", "scalar"): _Sealed(_scalar),
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): _Sealed(_dtype),
    ("_codecs", "encode"): _Sealed(_latin1_bytes),
    ("__builtin__", "set"): set,
    ("builtins", "set"): set,
    ("chumpy.ch", "Ch"): _ChumpyArray,
    ("scipy.sparse.csc", "csc_matrix"): _CscMatrix,
    ("scipy.sparse._csc", "csc_matrix"): _CscMatrix,
    ("scipy.sparse.csr", "csr_matrix"): _CsrMatrix,
    ("scipy.sparse._csr", "csr_matrix"): _CsrMatrix,
}


class _RefusedGlobal(pickle.UnpicklingError):
    """The pickle names a global outside the allowlist; the message is its dotted name."""


class _MANOUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the globals a MANO file needs."""

    def __init__(self, data: bytes) -> None:
        super().__init__(io.BytesIO(data), encoding="latin1")

    def find_class(self, module: str, name: str) -> object:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise _RefusedGlobal(f"{module}.{name}") from None


def _file_error(path: Path, cause: str) -> ModelFileError:
    return ModelFileError(f"MANO file {path}: {cause}")


def _read(path: Path) -> bytes:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise _file_error(path, "does not exist") from None
    except IsADirectoryError:
        raise _file_error(path, "is a directory, expected a .pkl or .npz file") from None
    except OSError as exc:
        raise _file_error(path, f"cannot be read ({exc.strerror or exc})") from None
    if not data:
        raise _file_error(path, "is empty (0 bytes)")
    return data


def _unpickle(path: Path, data: bytes) -> object:
    try:
        return _MANOUnpickler(data).load()
    except _RefusedGlobal as exc:
        raise _file_error(
            path,
            f"refused to load: the pickle names the global {exc}, which a MANO file never needs",
        ) from None
    except (EOFError, pickle.UnpicklingError) as exc:
        raise _file_error(
            path, f"is truncated or not a valid pickle ({exc or 'unexpected end'})"
        ) from None
    except (ValueError, TypeError, AttributeError, IndexError, KeyError, MemoryError) as exc:
        raise _file_error(
            path, f"holds malformed pickle data ({type(exc).__name__}: {exc})"
        ) from None


def _sparse_to_dense(matrix: _CscMatrix | _CsrMatrix) -> np.ndarray:
    """Rebuild a pickled sparse matrix from its index arrays, checking them."""
    state = matrix.state
    shape = state.get("_shape", state.get("shape"))
    parts = [state.get(key) for key in ("data", "indices", "indptr")]
    if not isinstance(shape, tuple) or not all(isinstance(part, np.ndarray) for part in parts):
        raise ValueError("sparse matrix without shape, data, indices and indptr arrays")
    kind = scipy.sparse.csc_matrix if isinstance(matrix, _CscMatrix) else scipy.sparse.csr_matrix
    rebuilt = kind(tuple(parts), shape=shape)
    rebuilt.check_format(full_check=True)
    return rebuilt.toarray()


def _as_array(value: object) -> np.ndarray:
    """The array inside a file value: a numpy array, a chumpy object or a sparse matrix."""
    if isinstance(value, _ChumpyArray):
        value = value.state.get("x")
    if isinstance(value, _CscMatrix | _CsrMatrix):
        return _sparse_to_dense(value)
    if not isinstance(value, np.ndarray):
        raise ValueError(f"is a {type(value).__name__}, not an array")
    return value


def _build_model(path: Path, entries: dict[str, object], sha256: str) -> ManoModel:
    """Check every required array and collect all problems into one message."""
    missing = [key for key in _ARRAYS if key not in entries]
    problems = [f"missing keys {', '.join(missing)}"] if missing else []
    arrays: dict[str, np.ndarray] = {}
    for key, (field, shape) in _ARRAYS.items():
        if key not in entries:
            continue
        try:
            array = _as_array(entries[key])
        except (ValueError, TypeError) as exc:
            problems.append(f"{key} {exc}")
            continue
        if array.shape != shape:
            problems.append(f"{key} has shape {array.shape}, expected {shape}")
        elif array.dtype.kind not in "biuf":
            problems.append(f"{key} has dtype {array.dtype}, expected numbers")
        elif field in _INTEGER_FIELDS:
            arrays[field] = array.astype(np.int64)
        elif not np.all(np.isfinite(array)):
            problems.append(f"{key} has non-finite values")
        else:
            arrays[field] = np.array(array, dtype=np.float64)
    faces = arrays.get("faces")
    if faces is not None and (faces.min() < 0 or faces.max() >= NUM_VERTS):
        problems.append(f"f has vertex indices outside 0..{NUM_VERTS - 1}")
    tree = arrays.get("kintree_table")
    if tree is not None and (
        tuple(tree[0, 1:]) != MANO_PARENTS[1:] or tuple(tree[1]) != tuple(range(NUM_JOINTS))
    ):
        problems.append("kintree_table is not the MANO hand skeleton")
    if problems:
        raise _file_error(path, f"is not a usable MANO model: {'; '.join(problems)}")
    for array in arrays.values():
        array.flags.writeable = False
    return ManoModel(**arrays, sha256=sha256)


def _npz_entries(path: Path, data: bytes) -> dict[str, object]:
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as archive:
            return {key: archive[key] for key in archive.files if key in _ARRAYS}
    except (zipfile.BadZipFile, EOFError, OSError) as exc:
        raise _file_error(path, f"is a truncated or corrupted .npz archive ({exc})") from None
    except ValueError as exc:
        raise _file_error(path, f"holds an array that is not plain data ({exc})") from None


def load_mano_model(path: str | os.PathLike[str]) -> ManoModel:
    """Read a right-hand MANO model without running code from the file.

    Args:
        path: the official ``MANO_RIGHT.pkl`` (Python-2 pickle, chumpy objects
            welcome, chumpy not needed) or an ``.npz`` with the same keys
            (``J_regressor`` dense), as written by :func:`save_mano_npz`. The
            format is recognised from the file's first bytes.

    Returns:
        The model, with ``sha256`` of this file.

    Raises:
        ModelFileError: the file is missing, empty, truncated, unsafe (names a
            global outside the allowlist) or not a MANO model; one line naming
            the file and the cause.
    """
    path = Path(path)
    data = _read(path)
    sha256 = hashlib.sha256(data).hexdigest()
    if data.startswith(_ZIP_MAGIC):
        entries = _npz_entries(path, data)
    elif data.startswith(_PICKLE_PROTO_MAGIC):
        loaded = _unpickle(path, data)
        if not isinstance(loaded, dict):
            raise _file_error(path, f"holds a pickled {type(loaded).__name__}, not a MANO dict")
        entries = loaded
    else:
        raise _file_error(path, "is neither a MANO pickle nor an .npz archive")
    return _build_model(path, entries, sha256)


def save_mano_npz(model: ManoModel, path: str | os.PathLike[str]) -> None:
    """Write ``model`` as an uncompressed ``.npz`` that :func:`load_mano_model` reads.

    The keys are MANO's own names (``f`` for the faces); the file appears
    atomically, so a crash leaves either the old file or the new one.
    """
    path = Path(path)
    field_to_key = {field: key for key, (field, _) in _ARRAYS.items()}
    arrays = {
        field_to_key[f.name]: getattr(model, f.name) for f in fields(model) if f.name != "sha256"
    }
    with atomic_path(path, ModelFileError) as temp:
        # Through a file object: numpy would add ".npz" to a name without it.
        with open(temp, "xb") as handle:
            np.savez(handle, **arrays)
        # A model file is shared data: readable by all whatever the writer's umask.
        os.chmod(temp, 0o644)


def convert_mano(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> ManoModel:
    """Convert a MANO file (usually the official ``.pkl``) to our ``.npz`` layout.

    Returns:
        The model as read from ``src`` (its ``sha256`` is that of ``src``).

    Raises:
        ModelFileError: ``src`` cannot be read as a MANO model or ``dst`` cannot be written.
    """
    model = load_mano_model(src)
    save_mano_npz(model, dst)
    return model
