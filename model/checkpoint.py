"""Loading HFL-Net checkpoints: safe reading, key mapping, strict matching, hashing.

The official checkpoint is a ``torch.save``d dict ``{"epoch", "network", "state_dict"}``
whose keys carry the training wrapper's ``honet.module.`` prefix. It is read with
``torch.load(weights_only=True)``, which refuses pickled Python objects other than
tensors and plain containers, so a tampered file cannot run code.
"""

from __future__ import annotations

import io
import os
import pickle
import warnings
from collections.abc import Mapping
from pathlib import Path

import torch

from hflpipe.hashing import sha256_file
from hflpipe.model.errors import ModelFileError
from hflpipe.model.hflnet import HFLNet
from hflpipe.model.mano import ManoLayer
from hflpipe.model.mano_file import load_mano_model

# Prefixes the training code's wrappers add (HOModel.honet, then DataParallel.module).
_WRAPPER_PREFIXES = ("honet.module.", "module.")
_MANO_PREFIX = "mano_branch.mano_layer."
# Stored by the official code but only used when ground-truth root joints are given,
# a path inference never takes; it is checked and then dropped.
_UNUSED_CONSTANTS = {
    "mano_branch.coord_change_mat": torch.diag(torch.tensor([1.0, -1.0, -1.0])),
}
# How many key names an error message lists before summarising the rest as a count.
_LISTED = 5
# Relative tolerance for the checkpoint's MANO buffers against those built from a MANO file
# (both are float32 roundings of the same float64 arrays).
_MANO_RTOL = 1e-6


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file's bytes (for recording which checkpoint produced a result)."""
    try:
        return sha256_file(path)
    except OSError as exc:
        raise ModelFileError(f"{path}: cannot be read ({exc.strerror or exc})") from None


def load_weights_only(source: str | os.PathLike[str] | io.BytesIO, *,
                      mmap: bool = False) -> object:
    """``torch.load`` onto the CPU with ``weights_only=True``, without torch's warning
    about pickles written with a protocol other than ``torch.save``'s.

    Such a file is either refused by the load, and the caller's one-line error says so,
    or loads; a warning line printed before either tells the user nothing more.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Detected pickle protocol",
                                category=UserWarning)
        return torch.load(source, map_location="cpu", weights_only=True, mmap=mmap)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _weights_only_reason(message: str) -> str:
    """The specific cause inside torch's multi-paragraph weights-only error message.

    The rest of that message suggests ``weights_only=False``, advice we must not pass on.
    """
    _, found, tail = message.partition("WeightsUnpickler error:")
    if not found:
        return message.strip().splitlines()[0] if message.strip() else "unreadable pickle"
    reason = next((line.strip() for line in tail.splitlines() if line.strip()), "unknown")
    return reason.split(" was not an allowed global")[0].split(". Please use")[0]


def _read_bytes(path: Path) -> bytes:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ModelFileError(f"{path}: checkpoint does not exist") from None
    except IsADirectoryError:
        raise ModelFileError(f"{path}: is a directory, expected a checkpoint file") from None
    except OSError as exc:
        raise ModelFileError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if not data:
        raise ModelFileError(f"{path}: checkpoint is empty (0 bytes)")
    return data


def read_payload(path: str | os.PathLike[str]) -> object:
    """What a checkpoint file holds, read with a weights-only load onto the CPU.

    Raises:
        ModelFileError: the file is missing, empty, truncated, corrupted, not a PyTorch
            checkpoint, or holds pickled objects a weights-only load refuses.
    """
    path = Path(path)
    data = _read_bytes(path)
    try:
        return load_weights_only(io.BytesIO(data))
    except pickle.UnpicklingError as exc:
        reason = _weights_only_reason(str(exc))
        if "Unsupported global" in reason:
            raise ModelFileError(
                f"{path}: refused, the file names Python objects a weights-only load will not "
                f"call ({reason}); nothing in it was run"
            ) from None
        raise ModelFileError(f"{path}: not a PyTorch checkpoint ({reason})") from None
    except Exception as exc:
        # torch.load signals truncated or damaged archives with several exception types
        # (RuntimeError, EOFError, ValueError, ...); each means the same to the user.
        raise ModelFileError(
            f"{path}: not a readable PyTorch checkpoint, truncated or corrupted "
            f"({type(exc).__name__}: {_first_line(exc)})"
        ) from None


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """The raw state dict of a checkpoint file, on the CPU, keys as stored.

    Accepts the official ``{"state_dict": ...}`` layout or a bare state dict.

    Raises:
        ModelFileError: as :func:`read_payload`, or the file holds no tensor state dict.
    """
    path = Path(path)
    payload = read_payload(path)
    state = payload.get("state_dict", payload) if isinstance(payload, Mapping) else None
    if not isinstance(state, Mapping) or not state:
        raise ModelFileError(
            f"{path}: holds a {type(payload).__name__}, not a checkpoint with a state_dict"
        )
    bad = [str(k) for k, v in state.items() if not isinstance(k, str) or not torch.is_tensor(v)]
    if bad:
        raise ModelFileError(
            f"{path}: state_dict has {len(bad)} entries that are not named tensors "
            f"({', '.join(bad[:_LISTED])})"
        )
    return dict(state)


def to_network_keys(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Strip the training wrappers' prefixes (``honet.module.``, ``module.``) from keys."""
    out = {}
    for key, value in state_dict.items():
        for prefix in _WRAPPER_PREFIXES:
            if key.startswith(prefix):
                key = key[len(prefix):]
                break
        out[key] = value
    return out


def _listing(names: list[str]) -> str:
    shown = ", ".join(names[:_LISTED])
    more = f", ... ({len(names) - _LISTED} more)" if len(names) > _LISTED else ""
    return f"{len(names)} ({shown}{more})"


def _drop_unused_constants(path: Path, state: dict[str, torch.Tensor]) -> None:
    for key, expected in _UNUSED_CONSTANTS.items():
        value = state.pop(key, None)
        if value is not None and (
            value.shape != expected.shape or not torch.equal(value.to(expected.dtype), expected)
        ):
            raise ModelFileError(f"{path}: {key} is not the expected constant {expected.tolist()}")


def check_state_keys(path: Path, state: Mapping[str, torch.Tensor],
                     expected: Mapping[str, torch.Tensor], network: str) -> None:
    """Require ``state`` to hold exactly ``expected``'s keys and shapes, all values finite.

    Raises:
        ModelFileError: one line naming the missing, unexpected and mis-shaped keys
            ("not a ``network`` checkpoint: ..."), or the non-finite ones.
    """
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    misshaped = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items() if k in state and state[k].shape != v.shape
    ]
    problems = [
        f"{label} {_listing(names)}"
        for label, names in (("missing keys", missing), ("unexpected keys", unexpected),
                             ("mis-shaped keys (file vs model)", misshaped))
        if names
    ]
    if problems:
        raise ModelFileError(f"{path}: not {network} checkpoint: {'; '.join(problems)}")
    non_finite = [k for k, v in state.items() if v.is_floating_point() and not v.isfinite().all()]
    if non_finite:
        raise ModelFileError(f"{path}: non-finite values in {_listing(non_finite)}")


def _check_mano(path: Path, state: Mapping[str, torch.Tensor],
                mano: str | os.PathLike[str]) -> None:
    """Require the checkpoint's hand-layer buffers to agree with those built from ``mano``."""
    built = ManoLayer(load_mano_model(mano)).state_dict()
    differ = []
    for name, reference in built.items():
        stored = state[_MANO_PREFIX + name]
        if reference.is_floating_point():
            scale = float(reference.abs().max()) if reference.numel() else 0.0
            same = torch.allclose(stored.to(reference.dtype), reference, rtol=_MANO_RTOL,
                                  atol=_MANO_RTOL * scale)
        else:
            same = torch.equal(stored, reference)
        if not same:
            differ.append(name)
    if differ:
        raise ModelFileError(
            f"{path}: hand-layer buffers disagree with MANO file {mano}: {', '.join(differ)} "
            "(the checkpoint was built with a different MANO model)"
        )


def load_hand_layer(path: str | os.PathLike[str]) -> ManoLayer:
    """The hand layer stored in a checkpoint, without building the rest of the network.

    The same buffers :func:`load_hflnet` gives the network, so meshes re-posed from
    smoothed parameters match the network's own. The file is memory-mapped, so only
    the hand layer's ~2 MB are read.

    Raises:
        ModelFileError: unreadable file, or no complete hand layer in it.
    """
    path = Path(path)
    try:
        payload = load_weights_only(path, mmap=True)
    except Exception as exc:
        raise ModelFileError(
            f"{path}: not a readable PyTorch checkpoint ({type(exc).__name__}: "
            f"{_first_line(exc)})"
        ) from None
    state = payload.get("state_dict", payload) if isinstance(payload, Mapping) else {}
    buffers = {
        key[len(_MANO_PREFIX):]: value for key, value in to_network_keys(state).items()
        if key.startswith(_MANO_PREFIX)
    }
    layer = ManoLayer()
    try:
        layer.load_state_dict(buffers, strict=True)
    except RuntimeError as exc:
        raise ModelFileError(f"{path}: no complete hand layer ({_first_line(exc)})") from None
    return layer.eval()


def load_hflnet(path: str | os.PathLike[str], mano: str | os.PathLike[str] | None = None,
                device: str | torch.device = "cpu") -> HFLNet:
    """HFL-Net with the weights of a checkpoint, in eval mode.

    Args:
        path: the official ``.pth.tar`` (or a bare state dict; keys with or without the
            ``honet.module.`` prefix).
        mano: optional ``MANO_RIGHT.pkl`` / ``.npz``. The checkpoint already holds the hand
            layer's buffers; when given, they must agree with this file.
        device: where the network goes.

    Raises:
        ModelFileError: unreadable, unsafe or mismatched checkpoint (the message names the
            missing, unexpected and mis-shaped keys), or a MANO file it disagrees with.
    """
    path = Path(path)
    state = to_network_keys(read_state_dict(path))
    _drop_unused_constants(path, state)
    # Built without storage: every tensor is replaced by the checkpoint's, so a random
    # initialisation of 46 M parameters would be wasted work.
    with torch.device("meta"):
        net = HFLNet()
    expected = net.state_dict()
    check_state_keys(path, state, expected, "an HFL-Net")
    if mano is not None:
        _check_mano(path, state, mano)
    # assign=True adopts the file's tensors as they are, so fix their dtypes first
    # (a checkpoint saved in half precision still gives a float32 network).
    state = {k: v.to(expected[k].dtype) for k, v in state.items()}
    net.load_state_dict(state, strict=True, assign=True)
    return net.to(device).eval()
