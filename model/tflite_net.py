"""A TFLite operator graph as a torch module: the file's weights, run by torch.

``TfliteNet`` takes a ``TfliteGraph`` (``tflite_file.read_tflite``) and runs its
operators in order with torch functions, on any device and for any batch size
(TFLite files fix the batch at 1; here the first dimension is free). Image
activations are kept in torch's NCHW layout; the operators whose meaning depends
on TFLite's NHWC layout (reshape, concatenation axis, mean axes, pad widths,
per-channel constants) translate it. Float16 weights are widened once, at build
time, to float32 (what the graph's DEQUANTIZE ops do).

Only the operators and options the MediaPipe hand models use are implemented;
anything else is refused when the module is built, never silently skipped.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hflpipe.model.tflite_file import TfliteGraph, TfliteOperator

# TFLite Padding enum.
_SAME, _VALID = 0, 1
# TFLite ActivationFunctionType enum -> torch function.
_ACTIVATIONS: dict[int, Callable[[torch.Tensor], torch.Tensor]] = {
    0: lambda x: x,
    1: F.relu,
    3: F.relu6,
}
# NHWC axis -> NCHW axis for 4-D activations.
_NHWC_TO_NCHW = (0, 2, 3, 1)


def _same_padding(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    """TFLite's SAME padding along one axis: (before, after); the odd pixel goes after."""
    out = -(-size // stride)
    total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


def _pad_same(x: torch.Tensor, kernel: tuple[int, int], stride: tuple[int, int],
              dilation: tuple[int, int], value: float = 0.0) -> torch.Tensor:
    top, bottom = _same_padding(x.shape[2], kernel[0], stride[0], dilation[0])
    left, right = _same_padding(x.shape[3], kernel[1], stride[1], dilation[1])
    if top or bottom or left or right:
        x = F.pad(x, (left, right, top, bottom), value=value)
    return x


def _activation(op: TfliteOperator) -> Callable[[torch.Tensor], torch.Tensor]:
    code = op.options.get("fused_activation_function", 0)
    if code not in _ACTIVATIONS:
        raise ValueError(f"{op.op}: fused activation {code} is not supported")
    return _ACTIVATIONS[code]


def _to_nchw(x: torch.Tensor) -> torch.Tensor:
    return x.permute(0, 3, 1, 2) if x.dim() == 4 else x


def _to_nhwc(x: torch.Tensor) -> torch.Tensor:
    return x.permute(0, 2, 3, 1) if x.dim() == 4 else x


class TfliteNet(nn.Module):
    """Runs a float TFLite graph with torch.

    Args:
        graph: the parsed model.

    ``forward(x)`` takes the graph's single image input as (B, C, H, W) float32 (the
    file's NHWC input, channels first) and returns the graph's outputs in file order,
    each with the file's shape and the batch size B in place of its leading 1.

    Raises:
        ValueError: the graph uses an operator or option this module does not implement.
    """

    def __init__(self, graph: TfliteGraph) -> None:
        super().__init__()
        if len(graph.inputs) != 1:
            raise ValueError(f"expected one graph input, got {len(graph.inputs)}")
        self._input = graph.inputs[0]
        self._outputs = graph.outputs
        self._constants: dict[int, np.ndarray] = {
            i: t.data for i, t in enumerate(graph.tensors) if t.data is not None
        }
        self._steps: list[tuple[Callable[[dict[int, torch.Tensor]], torch.Tensor], int]] = []
        for op in graph.operators:
            if op.op == "DEQUANTIZE" and op.inputs[0] in self._constants:
                self._constants[op.outputs[0]] = self._constants[op.inputs[0]].astype(np.float32)
                continue
            build = getattr(self, f"_build_{op.op.lower()}", None)
            if build is None:
                raise ValueError(f"operator {op.op} is not supported")
            self._steps.append((build(op), op.outputs[0]))

    def _buffer(self, index: int, array: np.ndarray) -> str:
        """Register a converted constant and return the attribute name it is kept under."""
        name = f"const_{index}_{len(self._buffers)}"
        self.register_buffer(name, torch.from_numpy(np.ascontiguousarray(array)), persistent=False)
        return name

    def _constant(self, index: int) -> np.ndarray:
        if index not in self._constants:
            raise ValueError(f"tensor {index} must be a constant")
        return self._constants[index]

    def _operand(self, index: int, rank_hint: int = 4) -> Callable[[dict], torch.Tensor]:
        """An elementwise operand: an activation, or a constant laid out for NCHW."""
        if index not in self._constants:
            return lambda values: values[index]
        array = self._constants[index].astype(np.float32)
        if array.ndim == 4:
            array = array.transpose(0, 3, 1, 2)
        elif array.ndim in (1, 3) and rank_hint == 4:
            # Per-channel (C,) or (1, 1, C): broadcast over NCHW as (1, C, 1, 1).
            array = array.reshape(1, -1, 1, 1)
        name = self._buffer(index, array)
        return lambda values: getattr(self, name)

    def _build_conv_2d(self, op: TfliteOperator) -> Callable[[dict], torch.Tensor]:
        weight = self._constant(op.inputs[1]).transpose(0, 3, 1, 2)  # OHWI -> OIHW
        bias = self._constant(op.inputs[2]) if len(op.inputs) > 2 and op.inputs[2] >= 0 else None
        return self._convolution(op, weight, bias, groups=1)

    def _build_depthwise_conv_2d(self, op: TfliteOperator) -> Callable[[dict], torch.Tensor]:
        filters = self._constant(op.inputs[1])  # (1, KH, KW, C * multiplier)
        if op.options["depth_multiplier"] != 1:
            raise ValueError("DEPTHWISE_CONV_2D: only depth_multiplier 1 is supported")
        weight = filters.transpose(3, 0, 1, 2)  # (C, 1, KH, KW)
        bias = self._constant(op.inputs[2]) if len(op.inputs) > 2 and op.inputs[2] >= 0 else None
        return self._convolution(op, weight, bias, groups=weight.shape[0])

    def _convolution(self, op: TfliteOperator, weight: np.ndarray, bias: np.ndarray | None,
                     groups: int) -> Callable[[dict], torch.Tensor]:
        source = op.inputs[0]
        weight_name = self._buffer(op.inputs[1], weight)
        bias_name = self._buffer(op.inputs[2], bias) if bias is not None else None
        stride = (op.options["stride_h"], op.options["stride_w"])
        dilation = (op.options["dilation_h"], op.options["dilation_w"])
        kernel = weight.shape[2:]
        same = op.options["padding"] == _SAME
        activation = _activation(op)

        def run(values: dict) -> torch.Tensor:
            x = values[source]
            if same:
                x = _pad_same(x, kernel, stride, dilation)
            bias_value = getattr(self, bias_name) if bias_name else None
            y = F.conv2d(x, getattr(self, weight_name), bias_value, stride=stride,
                         dilation=dilation, groups=groups)
            return activation(y)

        return run

    def _build_max_pool_2d(self, op: TfliteOperator) -> Callable[[dict], torch.Tensor]:
        source = op.inputs[0]
        kernel = (op.options["filter_height"], op.options["filter_width"])
        stride = (op.options["stride_h"], op.options["stride_w"])
        same = op.options["padding"] == _SAME
        activation = _activation(op)

        def run(values: dict) -> torch.Tensor:
            x = values[source]
            if same:
                x = _pad_same(x, kernel, stride, (1, 1), value=float("-inf"))
            return activation(F.max_pool2d(x, kernel, stride))

        return run

    def _build_prelu(self, op: TfliteOperator) -> Callable[[dict], torch.Tensor]:
        source, alpha = op.inputs[0], self._operand(op.inputs[1])
        return lambda values: torch.where(
            values[source] >= 0, values[source], values[source] * alpha(values)
        )

    def _build_add(self, op: TfliteOperator) -> Callable[[dict], torch.Tensor]:
        return self._elementwise(op, torch.add)

    def _build_mul(self, op: TfliteOperator) -> Callable[[dict], torch.Tensor]:
        return self._elementwise(op, torch.mul)

    def _elementwise(
        self, op: TfliteOperator, function: Callable
    ) -> Callable[[dict], torch.Tensor]:
        left, right = self._operand(op.inputs[0]), self._operand(op.inputs[1])
        activation = _activation(op)
        return lambda values: activation(function(left(values), right(values)))

    def _build_relu(self, op: TfliteOperator) -> Callable[[dict], torch.Tensor]:
        source = op.inputs[0]
        return lambda values: F.relu(values[source])

    def _build_relu6(self, op: TfliteOperator) -> Callable[[dict], torch.Tensor]:
        source = op.inputs[0]
        return lambda values: F.relu6(values[source])

    def _build_logistic(self, op: TfliteOperator) -> Callable[[dict], torch.Tensor]:
        source = op.inputs[0]
        return lambda values: torch.sigmoid(values[source])

    def _build_pad(self, op: TfliteOperator) -> Callable[[dict], torch.Tensor]:
        source = op.inputs[0]
        widths = self._constant(op.inputs[1]).reshape(-1, 2)  # per NHWC axis: before, after
        if widths[0].any():
            raise ValueError("PAD: padding the batch axis is not supported")
        flat: list[int] = []
        # F.pad lists the last NCHW axis first: W, H, then C.
        for axis in (2, 1, 3):
            flat += [int(widths[axis][0]), int(widths[axis][1])]
        return lambda values: F.pad(values[source], flat)

    def _build_resize_bilinear(self, op: TfliteOperator) -> Callable[[dict], torch.Tensor]:
        source = op.inputs[0]
        size = tuple(int(v) for v in self._constant(op.inputs[1]))
        if op.options["align_corners"] or not op.options["half_pixel_centers"]:
            raise ValueError("RESIZE_BILINEAR: only half-pixel centres are supported")
        return lambda values: F.interpolate(values[source], size=size, mode="bilinear",
                                            align_corners=False)

    def _build_reshape(self, op: TfliteOperator) -> Callable[[dict], torch.Tensor]:
        source = op.inputs[0]
        if len(op.inputs) > 1 and op.inputs[1] in self._constants:
            shape = [int(v) for v in self._constant(op.inputs[1])]
        else:
            shape = list(op.options["new_shape"])
        tail = shape[1:]
        # The result's layout is TFLite's: a 4-D result would need NCHW again.
        if len(shape) == 4:
            return lambda values: _to_nchw(_to_nhwc(values[source]).reshape(-1, *tail))
        return lambda values: _to_nhwc(values[source]).reshape(values[source].shape[0], *tail)

    def _build_concatenation(self, op: TfliteOperator) -> Callable[[dict], torch.Tensor]:
        sources = [self._operand(i) for i in op.inputs]
        axis = op.options["axis"]
        activation = _activation(op)

        def run(values: dict) -> torch.Tensor:
            parts = [source(values) for source in sources]
            rank = parts[0].dim()
            dim = axis % rank
            if rank == 4:
                dim = _NHWC_TO_NCHW[dim]
            return activation(torch.cat(parts, dim=dim))

        return run

    def _build_mean(self, op: TfliteOperator) -> Callable[[dict], torch.Tensor]:
        source = op.inputs[0]
        axes = [int(a) % 4 for a in np.atleast_1d(self._constant(op.inputs[1]))]
        dims = [_NHWC_TO_NCHW[a] for a in axes]
        if op.options["keep_dims"]:
            return lambda values: _to_nchw(
                _to_nhwc(values[source]).mean(dim=axes, keepdim=True))
        if sorted(dims) != [2, 3]:
            raise ValueError("MEAN without keep_dims: only the spatial mean is supported")
        return lambda values: values[source].mean(dim=(2, 3))

    def _build_fully_connected(self, op: TfliteOperator) -> Callable[[dict], torch.Tensor]:
        source = op.inputs[0]
        weight_name = self._buffer(op.inputs[1], self._constant(op.inputs[1]))
        has_bias = len(op.inputs) > 2 and op.inputs[2] >= 0
        bias_name = self._buffer(op.inputs[2], self._constant(op.inputs[2])) if has_bias else None
        activation = _activation(op)

        def run(values: dict) -> torch.Tensor:
            x = _to_nhwc(values[source]).reshape(values[source].shape[0], -1)
            bias_value = getattr(self, bias_name) if bias_name else None
            return activation(F.linear(x, getattr(self, weight_name), bias_value))

        return run

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        values: dict[int, torch.Tensor] = {self._input: x}
        for run, output in self._steps:
            values[output] = run(values)
        return tuple(values[i] for i in self._outputs)
