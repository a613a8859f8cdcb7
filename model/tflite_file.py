"""Reading a TensorFlow Lite model file: its tensors, weights and operator graph.

A ``.tflite`` file is a FlatBuffer laid out by TFLite's ``schema.fbs``. Only the
parts inference needs are read here -- the first subgraph's tensors (shape, type,
constant data), its operators in execution order (op name, inputs, outputs, the
builtin options as a dict) -- by a small reader of the FlatBuffer wire format, so
no schema package is needed. Float16 weights are returned as float16 arrays (the
graph's DEQUANTIZE ops widen them); quantized integer tensors are refused: the
MediaPipe hand models this serves are float models.

FlatBuffer wire format, as far as used: little-endian; a table starts with an
int32 offset back to its vtable (vtable = table - offset); the vtable holds
uint16 vtable size, uint16 table size, then one uint16 per field (0 = absent,
else the field's offset from the table start). Tables, vectors and strings are
referenced by a uint32 offset relative to where the reference is stored; a
vector is a uint32 length followed by its elements.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hflpipe.model.errors import ModelFileError

# TFLite's TensorType enum -> numpy dtype, for the types a float model stores.
_TENSOR_TYPES = {0: np.float32, 1: np.float16, 2: np.int32, 3: np.uint8, 4: np.int64, 9: np.int8}
# BuiltinOperator codes of the operators the hand models use (schema.fbs numbering).
_OPERATORS = {
    0: "ADD", 1: "AVERAGE_POOL_2D", 2: "CONCATENATION", 3: "CONV_2D",
    4: "DEPTHWISE_CONV_2D", 6: "DEQUANTIZE", 9: "FULLY_CONNECTED", 14: "LOGISTIC",
    17: "MAX_POOL_2D", 18: "MUL", 19: "RELU", 21: "RELU6", 22: "RESHAPE",
    23: "RESIZE_BILINEAR", 34: "PAD", 40: "MEAN", 54: "PRELU", 117: "HARD_SWISH",
}
# Builtin options tables: field names in schema order, and each field's scalar format
# (or "ints" for a vector of int32). Enums such as Padding are stored as int8.
_OPTIONS = {
    "CONV_2D": (("padding", "b"), ("stride_w", "i"), ("stride_h", "i"),
                ("fused_activation_function", "b"), ("dilation_w", "i"),
                ("dilation_h", "i")),
    "DEPTHWISE_CONV_2D": (("padding", "b"), ("stride_w", "i"), ("stride_h", "i"),
                          ("depth_multiplier", "i"), ("fused_activation_function", "b"),
                          ("dilation_w", "i"), ("dilation_h", "i")),
    "MAX_POOL_2D": (("padding", "b"), ("stride_w", "i"), ("stride_h", "i"),
                    ("filter_width", "i"), ("filter_height", "i"),
                    ("fused_activation_function", "b")),
    "AVERAGE_POOL_2D": (("padding", "b"), ("stride_w", "i"), ("stride_h", "i"),
                        ("filter_width", "i"), ("filter_height", "i"),
                        ("fused_activation_function", "b")),
    "ADD": (("fused_activation_function", "b"),),
    "MUL": (("fused_activation_function", "b"),),
    "CONCATENATION": (("axis", "i"), ("fused_activation_function", "b")),
    "FULLY_CONNECTED": (("fused_activation_function", "b"), ("weights_format", "b"),
                        ("keep_num_dims", "?")),
    "RESHAPE": (("new_shape", "ints"),),
    "RESIZE_BILINEAR": (("new_height", "i"), ("new_width", "i"), ("align_corners", "?"),
                        ("half_pixel_centers", "?")),
    "MEAN": (("keep_dims", "?"),),
}
# Schema defaults of the options above where they are not zero.
_OPTION_DEFAULTS = {"dilation_w": 1, "dilation_h": 1}


@dataclass(frozen=True)
class TfliteTensor:
    """One tensor of the graph.

    Attributes:
        name: the tensor's name in the file.
        shape: its shape (TFLite's NHWC layout for images, OHWI for conv filters).
        dtype: numpy dtype of its elements.
        data: the constant's values for weights, None for activations.
    """

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype
    data: np.ndarray | None


@dataclass(frozen=True)
class TfliteOperator:
    """One operator: its builtin name, tensor indices in and out, and options."""

    op: str
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TfliteGraph:
    """The first subgraph of a model: tensors, operators in order, inputs and outputs."""

    tensors: tuple[TfliteTensor, ...]
    operators: tuple[TfliteOperator, ...]
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]


class _Reader:
    """Random access to FlatBuffer tables in a byte buffer."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def _unpack(self, fmt: str, pos: int) -> Any:
        return struct.unpack_from("<" + fmt, self.data, pos)[0]

    def _field_pos(self, table: int, index: int) -> int | None:
        vtable = table - self._unpack("i", table)
        vtable_size = self._unpack("H", vtable)
        slot = 4 + 2 * index
        if slot >= vtable_size:
            return None
        offset = self._unpack("H", vtable + slot)
        return table + offset if offset else None

    def _deref(self, pos: int) -> int:
        return pos + self._unpack("I", pos)

    def root(self) -> int:
        return self._deref(0)

    def scalar(self, table: int, index: int, fmt: str, default: Any = 0) -> Any:
        pos = self._field_pos(table, index)
        return default if pos is None else self._unpack(fmt, pos)

    def table(self, table: int, index: int) -> int | None:
        pos = self._field_pos(table, index)
        return None if pos is None else self._deref(pos)

    def _vector(self, table: int, index: int) -> tuple[int, int] | None:
        pos = self._field_pos(table, index)
        if pos is None:
            return None
        start = self._deref(pos)
        return start + 4, self._unpack("I", start)

    def tables(self, table: int, index: int) -> list[int]:
        found = self._vector(table, index)
        if found is None:
            return []
        start, length = found
        return [self._deref(start + 4 * i) for i in range(length)]

    def ints(self, table: int, index: int) -> tuple[int, ...]:
        found = self._vector(table, index)
        if found is None:
            return ()
        start, length = found
        return struct.unpack_from(f"<{length}i", self.data, start)

    def raw(self, table: int, index: int) -> memoryview | None:
        found = self._vector(table, index)
        if found is None:
            return None
        start, length = found
        return memoryview(self.data)[start:start + length]

    def string(self, table: int, index: int) -> str:
        found = self.raw(table, index)
        return "" if found is None else bytes(found).decode("utf-8", "replace")


def _options(reader: _Reader, operator: int, op: str) -> dict[str, Any]:
    table = reader.table(operator, 4)
    spec = _OPTIONS.get(op, ())
    found: dict[str, Any] = {}
    for index, (name, fmt) in enumerate(spec):
        if fmt == "ints":
            found[name] = () if table is None else reader.ints(table, index)
        elif table is None:
            found[name] = _OPTION_DEFAULTS.get(name, 0)
        else:
            found[name] = reader.scalar(table, index, fmt, _OPTION_DEFAULTS.get(name, 0))
    return found


def _tensor(reader: _Reader, table: int, buffers: list[int], source: str) -> TfliteTensor:
    name = reader.string(table, 3)
    type_code = reader.scalar(table, 1, "b")
    if type_code not in _TENSOR_TYPES:
        raise ModelFileError(f"{source}: tensor {name!r} has unsupported type code {type_code}")
    dtype = np.dtype(_TENSOR_TYPES[type_code])
    quantization = reader.table(table, 4)
    if quantization is not None and reader.tables(quantization, 2) and dtype != np.int32:
        raise ModelFileError(f"{source}: tensor {name!r} is quantized; only float models are read")
    shape = tuple(reader.ints(table, 0))
    data = None
    buffer_index = reader.scalar(table, 2, "I")
    if 0 < buffer_index < len(buffers):
        raw = reader.raw(buffers[buffer_index], 0)
        if raw is not None and len(raw):
            data = np.frombuffer(raw, dtype=dtype).reshape(shape).copy()
    return TfliteTensor(name=name, shape=shape, dtype=dtype, data=data)


def parse_tflite(data: bytes, source: str = "model") -> TfliteGraph:
    """Read the first subgraph of a TFLite model held in ``data``.

    Args:
        data: the file's bytes.
        source: how errors name the model (its path).

    Raises:
        ModelFileError: not a TFLite file, or it uses types or operators not supported.
    """
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise ModelFileError(f"{source}: not a TensorFlow Lite model (no TFL3 identifier)")
    reader = _Reader(data)
    try:
        model = reader.root()
        codes = []
        for code in reader.tables(model, 1):
            # Codes above 127 live in the int32 field; the int8 one saturates at 127.
            codes.append(max(reader.scalar(code, 0, "b"), reader.scalar(code, 3, "i")))
        subgraphs = reader.tables(model, 2)
        if not subgraphs:
            raise ModelFileError(f"{source}: the model has no subgraph")
        buffers = reader.tables(model, 4)
        graph = subgraphs[0]
        tensors = tuple(_tensor(reader, t, buffers, source) for t in reader.tables(graph, 0))
        operators = []
        for table in reader.tables(graph, 3):
            code = codes[reader.scalar(table, 0, "I")]
            op = _OPERATORS.get(code)
            if op is None:
                raise ModelFileError(f"{source}: unsupported operator code {code}")
            operators.append(TfliteOperator(
                op=op, inputs=reader.ints(table, 1), outputs=reader.ints(table, 2),
                options=_options(reader, table, op),
            ))
        return TfliteGraph(tensors=tensors, operators=tuple(operators),
                           inputs=reader.ints(graph, 1), outputs=reader.ints(graph, 2))
    except (struct.error, IndexError, ValueError) as exc:
        if isinstance(exc, ModelFileError):
            raise
        raise ModelFileError(f"{source}: corrupted TensorFlow Lite model ({exc})") from None


def read_tflite(path: str | os.PathLike[str]) -> TfliteGraph:
    """Read a ``.tflite`` file (see ``parse_tflite``)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelFileError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    return parse_tflite(data, str(path))
