"""The synthetic HFL-Net checkpoint that ``hflpipe demo`` runs with.

The official weights and the licensed MANO file cannot ship with hflpipe, so the demo
uses a deterministic stand-in in the official on-disk layout: a ``torch.save``d dict
``{"epoch": 0, "network": "honet_transformer", "state_dict": OrderedDict}`` whose keys,
order, shapes and dtypes follow the shipped ``data/checkpoint_manifest.json``.

Values follow the recipe of the parity fixtures (``make_checkpoint.py`` there), so the file
is bit-identical to the one the reference outputs were computed with:

* ``weight`` keys: one ``np.random.RandomState(crc32(key))`` per key; scaled standard-normal
  draws (uniform draws for BatchNorm running variances), computed in float64, rounded to
  float32. Convolution and linear weights are scaled by ``gain / sqrt(fan_in)`` with the gain
  chosen by the first rule of ``_GAIN_RULES`` that matches the module path.
* ``mano`` keys: buffers of the right-hand MANO layer built from the shipped synthetic hand
  model ``data/mano_synthetic_right.npz`` (flat hand mean, zero default shape).
* ``fixed`` keys: values stored in the manifest (BatchNorm counters, soft-argmax grids, ...).

The values have no physical meaning; they only make the network run end to end.
"""

from __future__ import annotations

import json
import math
import os
import re
import zlib
from collections import OrderedDict
from collections.abc import Callable, Mapping
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hflpipe.atomic import atomic_path
from hflpipe.model.errors import ModelFileError

MANIFEST_FILE = "checkpoint_manifest.json"
MANO_FILE = "mano_synthetic_right.npz"
NETWORK_NAME = "honet_transformer"

_BIAS_STD = 0.02
_BN_BIAS_STD = 0.05
_BN_MEAN_STD = 0.05
_BN_VAR_LOW = 0.6
_BN_VAR_SPAN = 0.8
# The last BatchNorm of each ResNet bottleneck starts small so residual branches do not
# blow up activations through 16 blocks of random weights.
_RESNET_LAST_BN_SCALE = 0.2
_SOFTARGMAX_BETA = 3.0
_OBJECT_CONFIDENCE_BIAS = 0.0
# The MANO pose regressor is biased towards identity rotations (6D form: first two columns).
_IDENTITY_6D = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)

_SQRT2 = math.sqrt(2.0)
_RESNET_BLOCK = r"base_net\.layer\d_[ho]\.0\.\d+"
_ATTENTION_LAYER = r"transformer_(?:hand|obj)\.layers\.\d+"
# (pattern searched in the module path, gain); the first match wins, so order matters.
_GAIN_RULES: tuple[tuple[re.Pattern[str], float], ...] = tuple(
    (re.compile(pattern), gain)
    for pattern, gain in (
        (r"base_net\.layer0_h\.0$", _SQRT2),
        (_RESNET_BLOCK + r"\.conv[12]$", _SQRT2),
        (_RESNET_BLOCK + r"\.conv3$", 1.0),
        (_RESNET_BLOCK + r"\.downsample\.0$", 1.0),
        (r"base_net\.(?:toplayer|latlayer\d|smooth\d)_[ho]$", 1.0),
        (_ATTENTION_LAYER + r"\.encode_(?:query|key)$", 5.0),
        (_ATTENTION_LAYER + r"\.encode_value$", 1.0),
        (_ATTENTION_LAYER + r"\.mlp\.fc1$", 1.0),
        (_ATTENTION_LAYER + r"\.mlp\.fc2$", 0.5),
        (r"hand_head\..*\.conv3$", 0.25),
        (r"hand_head\..*\.conv[12]$", _SQRT2),
        (r"hand_head\.fc\.\d+\.block\.0$", _SQRT2),
        (r"hand_head\.score\.\d+$", 1.0),
        (r"hand_encoder\.(?:heatmap_conv|encoding_conv)$", 0.5),
        (r"hand_encoder\.reg\.\d+\.conv3$", 0.25),
        (r"hand_encoder\.reg\.\d+\.conv[12]$", _SQRT2),
        (r"mano_branch\.mano_base_layer\.\d+$", 1.0),
        (r"mano_branch\.pose_reg$", 0.1),
        (r"mano_branch\.shape_reg$", 1.0),
        (r"obj_head\.conv\d_\d$", _SQRT2),
        (r"obj_head\.out_conv$", 0.6),
    )
)
_RESNET_LAST_BN = re.compile(_RESNET_BLOCK + r"\.bn3$")
_POSE_REGRESSOR = re.compile(r"mano_branch\.pose_reg$")
_OBJECT_OUTPUT = re.compile(r"obj_head\.out_conv$")

_DTYPES: dict[str, np.dtype[Any]] = {"float32": np.dtype(np.float32), "int64": np.dtype(np.int64)}


def _data(name: str) -> Traversable:
    """A file shipped in ``hflpipe/model/data`` (readable even from a zipped install)."""
    return resources.files("hflpipe.model").joinpath("data", name)


def synthetic_mano_path() -> Path:
    """The shipped synthetic right-hand model (npz of plain MANO arrays), usable as ``--mano``.

    NOT the real MANO model: 778 vertices and 16 joints in the MANO layout, made up values.

    Raises:
        FileNotFoundError: hflpipe is installed without its data files, or zipped.
    """
    resource = _data(MANO_FILE)
    if not isinstance(resource, Path) or not resource.is_file():
        raise FileNotFoundError(
            f"hflpipe package data {MANO_FILE!r} is not a file on disk: reinstall hflpipe"
        )
    return resource


def _gain(module_path: str) -> float:
    for pattern, gain in _GAIN_RULES:
        if pattern.search(module_path):
            return gain
    raise KeyError(f"synthetic checkpoint recipe has no gain for module {module_path!r}")


def _scaled_normal(module: str, z: np.ndarray) -> np.ndarray:
    fan_in = int(np.prod(z.shape[1:]))
    return z * (_gain(module) / math.sqrt(fan_in))


def _bias(module: str, z: np.ndarray) -> np.ndarray:
    value = _BIAS_STD * z
    if _POSE_REGRESSOR.search(module):
        value = value + np.tile(np.array(_IDENTITY_6D), z.shape[0] // len(_IDENTITY_6D))
    if _OBJECT_OUTPUT.search(module):
        # Channels are [confidence | x offsets | y offsets], 21 each.
        value[: z.shape[0] // 3] += _OBJECT_CONFIDENCE_BIAS
    return value


def _bn_weight(module: str, z: np.ndarray) -> np.ndarray:
    scale = _RESNET_LAST_BN_SCALE if _RESNET_LAST_BN.search(module) else 1.0
    return scale * (1.0 + 0.1 * z)


# role -> value from (module path, standard-normal draws of the key's shape), float64.
_NORMAL_ROLES: dict[str, Callable[[str, np.ndarray], np.ndarray]] = {
    "conv_weight": _scaled_normal,
    "linear_weight": _scaled_normal,
    "conv_bias": _bias,
    "linear_bias": _bias,
    "bn_weight": _bn_weight,
    "bn_bias": lambda _, z: _BN_BIAS_STD * z,
    "bn_running_mean": lambda _, z: _BN_MEAN_STD * z,
    "ln_weight": lambda _, z: 1.0 + 0.1 * z,
    "ln_bias": lambda _, z: _BIAS_STD * z,
    "softargmax_beta": lambda _, z: _SOFTARGMAX_BETA * (1.0 + 0.1 * z),
}


def _weight_value(name: str, shape: tuple[int, ...], role: str) -> np.ndarray:
    # crc32 of the key makes every tensor independent of the others and of key order.
    rng = np.random.RandomState(zlib.crc32(name.encode("utf-8")))
    if role == "bn_running_var":
        return _BN_VAR_LOW + _BN_VAR_SPAN * rng.random_sample(shape)
    if role not in _NORMAL_ROLES:
        raise KeyError(f"synthetic checkpoint recipe has no rule for role {role!r} of {name!r}")
    module = name.rsplit(".", 1)[0]
    return _NORMAL_ROLES[role](module, rng.standard_normal(shape))


def _mano_value(name: str, shape: tuple[int, ...], mano: Mapping[str, np.ndarray]) -> np.ndarray:
    buffer = name.rsplit(".", 1)[1]
    if buffer in ("th_betas", "th_hands_mean"):
        # Zero default shape, and flat hand mean: the file's hands_mean is not used.
        return np.zeros(shape)
    if buffer == "th_v_template":
        return mano["v_template"][None]
    if buffer == "th_faces":
        return mano["f"].astype(np.int64)
    if buffer == "th_selected_comps":
        return mano["hands_components"][: shape[0]]
    plain = {
        "th_shapedirs": "shapedirs",
        "th_posedirs": "posedirs",
        "th_J_regressor": "J_regressor",
        "th_weights": "weights",
    }
    if buffer not in plain:
        raise KeyError(f"synthetic checkpoint recipe has no MANO rule for {name!r}")
    return mano[plain[buffer]]


def build_synthetic_state_dict(
    manifest: Mapping[str, Any], mano: Mapping[str, np.ndarray]
) -> OrderedDict[str, torch.Tensor]:
    """State dict of the synthetic checkpoint, in manifest order.

    Args:
        manifest: the parsed checkpoint manifest (its ``keys`` list gives name, shape,
            dtype, source and role or value of every tensor).
        mano: plain MANO arrays (``v_template (778,3)``, ``shapedirs (778,3,10)``, ...).

    Returns:
        1094 CPU tensors (float32 or int64), each owning its own storage.
    """
    state: OrderedDict[str, torch.Tensor] = OrderedDict()
    for entry in manifest["keys"]:
        name, shape = entry["name"], tuple(entry["shape"])
        source = entry["source"]
        if source == "weight":
            value = _weight_value(name, shape, entry["role"])
        elif source == "mano":
            value = _mano_value(name, shape, mano)
        elif source == "fixed":
            value = np.asarray(entry["value"])
        else:
            raise KeyError(f"unknown source {source!r} for {name!r} in the checkpoint manifest")
        array = np.ascontiguousarray(np.asarray(value).astype(_DTYPES[entry["dtype"]]))
        state[name] = torch.from_numpy(array.reshape(shape).copy())
    return state


def synthetic_state_dict() -> OrderedDict[str, torch.Tensor]:
    """The synthetic state dict built from the shipped manifest and synthetic MANO arrays."""
    manifest = json.loads(_data(MANIFEST_FILE).read_text(encoding="utf-8"))
    with _data(MANO_FILE).open("rb") as handle, np.load(handle) as archive:
        mano = {key: archive[key] for key in archive.files}
    return build_synthetic_state_dict(manifest, mano)


def write_synthetic_checkpoint(path: str | os.PathLike[str]) -> Path:
    """Write the synthetic checkpoint (~187 MB) to ``path`` atomically and return the path.

    Missing parent folders are created; an existing file is replaced only once the new
    one is complete.

    Raises:
        ModelFileError: the file or its folder cannot be written.
    """
    target = Path(path)
    try:
        # Before the ~2 s build, so an unusable folder fails fast.
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ModelFileError(f"cannot write synthetic checkpoint {target}: {exc}") from exc
    checkpoint = {"epoch": 0, "network": NETWORK_NAME, "state_dict": synthetic_state_dict()}
    with atomic_path(target, ModelFileError) as temp:
        torch.save(checkpoint, temp)
    return target
