"""A TFLite operator graph as a torch module: the file's weights, run by torch.

``TfliteNet`` takes a ``TfliteGraph`` (``tflite_file.read_tflite``) and builds one
torch module per operator (convolutions as ``nn.Conv2d``, PReLU as ``nn.PReLU``
...), run in the file's order, on any device and for any batch size (TFLite files
fix the batch at 1; here the first dimension is free). Image activations are NCHW
tensors in torch's ``channels_last`` memory format: the bytes are laid out as
TFLite's NHWC, which is also what the CPU convolution kernels prefer, so the
operators whose meaning depends on NHWC (reshape, concatenation axis, mean axes,
pad widths, per-channel constants) read the tensor as NHWC without copying it.

Everything is converted once, when the module is built: float16 weights widened to
float32 (what the graph's DEQUANTIZE ops do), filters re-laid out, SAME padding
computed from the file's static shapes and folded into the convolution (where it is
asymmetric, see ``_Convolution``), fused activations applied in place on the
operator's fresh result, or on the CPU inside oneDNN's convolution. Intermediate
results are dropped after their last use. On the CPU, images go one at a time
through the network traced once with oneDNN Graph fusion (``onednn_graph``). On a
GPU, float32 convolutions run in IEEE float32, not cuDNN's default TF32
(``cuda_precision``).

Only the operators and options the MediaPipe hand models use are implemented;
anything else is refused when the module is built, never silently skipped.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hflpipe.model.cuda_precision import ieee_float32_convolutions
from hflpipe.model.onednn_graph import trace_fused
from hflpipe.model.tflite_file import TfliteGraph, TfliteOperator

# TFLite Padding enum.
_SAME, _VALID = 0, 1
# NHWC axis -> NCHW axis for 4-D activations.
_NHWC_TO_NCHW = (0, 2, 3, 1)


def _relu6_(x: torch.Tensor) -> torch.Tensor:
    return F.hardtanh_(x, 0.0, 6.0)


# TFLite ActivationFunctionType enum -> in-place torch function (None: no activation).
_ACTIVATIONS: dict[int, Callable[[torch.Tensor], torch.Tensor] | None] = {
    0: None,
    1: F.relu_,
    3: _relu6_,
}


# Fused activation -> oneDNN post-op (name, scalars) of torch.ops.mkldnn._convolution_pointwise.
_ONEDNN_POST_OPS: dict[Callable[[torch.Tensor], torch.Tensor] | None, tuple[str, list[float]]] = {
    None: ("none", []),
    F.relu_: ("relu", []),
    _relu6_: ("hardtanh", [0.0, 6.0]),
}


def onednn_available() -> bool:
    """Whether this torch has oneDNN's fused CPU convolution (the ops ``torch.compile``
    emits for CPU convolutions; absent from builds without oneDNN)."""
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn,
                                                            "_convolution_pointwise")


def _activation(op: TfliteOperator) -> Callable[[torch.Tensor], torch.Tensor] | None:
    code = op.options.get("fused_activation_function", 0)
    if code not in _ACTIVATIONS:
        raise ValueError(f"{op.op}: fused activation {code} is not supported")
    return _ACTIVATIONS[code]


def _same_padding(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    """TFLite's SAME padding along one axis: (before, after); the odd pixel goes after."""
    out = -(-size // stride)
    total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


def _window_padding(op: TfliteOperator, shape: tuple[int, ...], kernel: tuple[int, int],
                    dilation: tuple[int, int]) -> tuple[tuple[int, int], tuple[int, int]]:
    """(top, bottom), (left, right) padding of a windowed op on an NHWC input of ``shape``."""
    if op.options["padding"] != _SAME:
        return (0, 0), (0, 0)
    stride = (op.options["stride_h"], op.options["stride_w"])
    return (_same_padding(shape[1], kernel[0], stride[0], dilation[0]),
            _same_padding(shape[2], kernel[1], stride[1], dilation[1]))


def _as_nhwc(x: torch.Tensor) -> torch.Tensor:
    """The NHWC view of an NCHW activation (a view without copy for ``channels_last``)."""
    return x.permute(0, 2, 3, 1) if x.dim() == 4 else x


def _as_nchw(x: torch.Tensor) -> torch.Tensor:
    return x.permute(0, 3, 1, 2) if x.dim() == 4 else x


def _tensor(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))


class _Convolution(nn.Module):
    """CONV_2D and DEPTHWISE_CONV_2D as one ``nn.Conv2d`` with the padding inside.

    TFLite's SAME padding puts the odd pixel after (bottom, right); ``nn.Conv2d`` pads
    both sides alike. A depthwise convolution pads both sides by the larger amount and
    grows its filter by the difference, in zeros before its first tap: that reads
    exactly the same pixels and gives the same output size, without copying the input
    into a padded one (which would also end the fused oneDNN partition before it). A
    dense convolution pads its input explicitly instead: its zero taps would cost
    arithmetic for every output channel, where the copy costs one pass over the
    input. The networks' first layers are such (3 channels in, 24-32 out, stride 2):
    a 5x5 filter grown to 6x6 takes 1.41x the time of the pad and the 5x5 filter, a
    3x3 grown to 4x4 1.23x (one CPU thread, oneDNN Graph, a one-off script).

    With ``onednn`` set, CPU inputs go through oneDNN's convolution with the weight
    reordered once into its own layout and the activation fused into the same pass
    (about 1.3x on the landmark network than ``nn.Conv2d`` plus a separate
    activation); other devices, and a torch without those kernels, use ``nn.Conv2d``.
    """

    def __init__(self, weight: np.ndarray, bias: np.ndarray | None, *, groups: int,
                 stride: tuple[int, int], dilation: tuple[int, int],
                 padding: tuple[tuple[int, int], tuple[int, int]],
                 activation: Callable[[torch.Tensor], torch.Tensor] | None,
                 onednn: bool) -> None:
        super().__init__()
        (top, bottom), (left, right) = padding
        self.input_padding: tuple[int, int, int, int] | None = None
        if (top, left) != (bottom, right) and groups == 1:
            self.input_padding = (left, right, top, bottom)
            top = bottom = left = right = 0
        if (bottom - top) % dilation[0] or (right - left) % dilation[1]:
            raise ValueError("convolution: uneven padding the filter cannot absorb")
        grow_h, grow_w = (bottom - top) // dilation[0], (right - left) // dilation[1]
        weight = np.pad(weight, ((0, 0), (0, 0), (grow_h, 0), (grow_w, 0)))
        out_channels, in_per_group, kh, kw = weight.shape
        self.conv = nn.Conv2d(in_per_group * groups, out_channels, (kh, kw), stride=stride,
                              padding=(bottom, right), dilation=dilation, groups=groups,
                              bias=bias is not None)
        self.conv.weight.data = _tensor(weight).contiguous(memory_format=torch.channels_last)
        if bias is not None:
            self.conv.bias.data = _tensor(bias)
        self.activation = activation
        self.onednn = onednn
        # oneDNN's copy of the weight, made on the first CPU call (a plain dict: an
        # attribute holding a oneDNN tensor would be taken for a parameter or buffer).
        self._onednn_weight: dict[str, torch.Tensor] = {}

    def _onednn_forward(self, x: torch.Tensor) -> torch.Tensor:
        conv = self.conv
        settings = (list(conv.padding), list(conv.stride), list(conv.dilation), conv.groups)
        weight = self._onednn_weight.get("weight")
        if weight is None:
            weight = torch.ops.mkldnn._reorder_convolution_weight(
                conv.weight.detach().contiguous(), *settings, list(x.shape))
            self._onednn_weight["weight"] = weight
        post_op, scalars = _ONEDNN_POST_OPS[self.activation]
        return torch.ops.mkldnn._convolution_pointwise(
            x, weight, conv.bias, *settings, post_op, scalars, "")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_padding is not None:
            x = F.pad(x, self.input_padding)
        # A trace records nn.Conv2d: oneDNN Graph fuses it with what follows.
        if (self.onednn and x.device.type == "cpu" and x.dtype == torch.float32
                and not torch.jit.is_tracing()):
            return self._onednn_forward(x)
        y = self.conv(x)
        return self.activation(y) if self.activation else y


class _MaxPool(nn.Module):
    def __init__(self, kernel: tuple[int, int], stride: tuple[int, int],
                 padding: tuple[tuple[int, int], tuple[int, int]],
                 activation: Callable[[torch.Tensor], torch.Tensor] | None) -> None:
        super().__init__()
        (top, bottom), (left, right) = padding
        self.kernel, self.stride = kernel, stride
        self.pad = (left, right, top, bottom) if top or bottom or left or right else None
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pad is not None:
            x = F.pad(x, self.pad, value=float("-inf"))
        y = F.max_pool2d(x, self.kernel, self.stride)
        return self.activation(y) if self.activation else y


class _Elementwise(nn.Module):
    """ADD and MUL; a constant operand is a buffer laid out for NCHW."""

    def __init__(self, function: Callable, constants: dict[int, torch.Tensor],
                 activation: Callable[[torch.Tensor], torch.Tensor] | None) -> None:
        super().__init__()
        self.function = function
        self.constant_slots = tuple(constants)
        for slot, value in constants.items():
            self.register_buffer(f"operand_{slot}", value, persistent=False)
        self.activation = activation

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        operands = list(inputs)
        for slot in self.constant_slots:
            operands.insert(slot, getattr(self, f"operand_{slot}"))
        y = self.function(*operands)
        return self.activation(y) if self.activation else y


class _Function(nn.Module):
    """An operator without weights: a torch function of its activation inputs."""

    def __init__(self, function: Callable[..., torch.Tensor], description: str) -> None:
        super().__init__()
        self.function = function
        self.description = description

    def extra_repr(self) -> str:
        return self.description

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.function(*inputs)


class _FullyConnected(nn.Module):
    def __init__(self, weight: np.ndarray, bias: np.ndarray | None,
                 activation: Callable[[torch.Tensor], torch.Tensor] | None) -> None:
        super().__init__()
        self.linear = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
        self.linear.weight.data = _tensor(weight)
        if bias is not None:
            self.linear.bias.data = _tensor(bias)
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.linear(_as_nhwc(x).reshape(x.shape[0], -1))
        return self.activation(y) if self.activation else y


class TfliteNet(nn.Module):
    """Runs a float TFLite graph with torch.

    Args:
        graph: the parsed model.
        onednn: on the CPU, run the convolutions through oneDNN's fused kernels (see
            ``_Convolution``) where this torch has them; ``nn.Conv2d`` otherwise.
        cpu_graph: on the CPU, run float32 images one at a time through the network
            traced once, on the first such call, with oneDNN Graph fusion
            (``onednn_graph.trace_fused``); where that cannot be built, or with this
            off, the eager layers take the whole batch. One image at a time is what
            the traced graph needs (a fixed shape), and costs nothing: the fused
            graph runs an image in about the time per image of a batch of 4-8
            (``bench detector``).

    ``forward(x)`` takes the graph's single image input as (B, C, H, W) float32 (the
    file's NHWC input, channels first; any memory format) and returns the graph's
    outputs in file order, each with the file's shape and the batch size B in place
    of its leading 1. Image-sized inputs must have the file's height and width.

    Raises:
        ValueError: the graph uses an operator or option this module does not implement.
    """

    def __init__(self, graph: TfliteGraph, *, onednn: bool = True,
                 cpu_graph: bool = True) -> None:
        super().__init__()
        self._onednn = onednn and onednn_available()
        self.cpu_graph = cpu_graph
        # The traced graph once built (None: it could not be), in a plain dict so
        # that it is neither a submodule nor part of the state.
        self._traced: dict[str, torch.jit.ScriptModule | None] = {}
        if len(graph.inputs) != 1:
            raise ValueError(f"expected one graph input, got {len(graph.inputs)}")
        self._graph = graph
        self._input = graph.inputs[0]
        self._outputs = tuple(graph.outputs)
        self._constants: dict[int, np.ndarray] = {
            i: t.data for i, t in enumerate(graph.tensors) if t.data is not None
        }
        self.steps = nn.ModuleList()
        self._wiring: list[tuple[tuple[int, ...], int]] = []
        for op in graph.operators:
            if op.op == "DEQUANTIZE" and op.inputs[0] in self._constants:
                self._constants[op.outputs[0]] = self._constants[op.inputs[0]].astype(np.float32)
                continue
            build = getattr(self, f"_build_{op.op.lower()}", None)
            if build is None:
                raise ValueError(f"operator {op.op} is not supported")
            module, inputs = build(op)
            self.steps.append(module)
            self._wiring.append((inputs, op.outputs[0]))
        self._release = self._last_uses()
        self._input_shape = self._shape(self._input)
        del self._graph, self._constants

    def _last_uses(self) -> list[tuple[int, ...]]:
        """Per step, the activations no later step (nor the output) needs."""
        last: dict[int, int] = {}
        for step, (inputs, _) in enumerate(self._wiring):
            for index in inputs:
                last[index] = step
        release: list[list[int]] = [[] for _ in self._wiring]
        for index, step in last.items():
            if index not in self._outputs:
                release[step].append(index)
        return [tuple(r) for r in release]

    def _shape(self, index: int) -> tuple[int, ...]:
        return self._graph.tensors[index].shape

    def _constant(self, index: int) -> np.ndarray:
        if index not in self._constants:
            raise ValueError(f"tensor {index} must be a constant")
        return self._constants[index]

    def _activations(self, op: TfliteOperator, count: int) -> tuple[int, ...]:
        """The first ``count`` inputs of ``op``, which must not be constants."""
        inputs = tuple(op.inputs[:count])
        if any(i in self._constants for i in inputs):
            raise ValueError(f"{op.op}: a constant where an activation is expected")
        return inputs

    def _optional_constant(self, op: TfliteOperator, slot: int) -> np.ndarray | None:
        has = len(op.inputs) > slot and op.inputs[slot] >= 0
        return self._constant(op.inputs[slot]) if has else None

    def _build_conv_2d(self, op: TfliteOperator) -> tuple[nn.Module, tuple[int, ...]]:
        weight = self._constant(op.inputs[1]).transpose(0, 3, 1, 2)  # OHWI -> OIHW
        return self._convolution(op, weight, groups=1)

    def _build_depthwise_conv_2d(self, op: TfliteOperator) -> tuple[nn.Module, tuple[int, ...]]:
        filters = self._constant(op.inputs[1])  # (1, KH, KW, C * multiplier)
        if op.options["depth_multiplier"] != 1:
            raise ValueError("DEPTHWISE_CONV_2D: only depth_multiplier 1 is supported")
        weight = filters.transpose(3, 0, 1, 2)  # (C, 1, KH, KW)
        return self._convolution(op, weight, groups=weight.shape[0])

    def _convolution(self, op: TfliteOperator, weight: np.ndarray, groups: int
                     ) -> tuple[nn.Module, tuple[int, ...]]:
        dilation = (op.options["dilation_h"], op.options["dilation_w"])
        padding = _window_padding(op, self._shape(op.inputs[0]), weight.shape[2:], dilation)
        module = _Convolution(
            weight, self._optional_constant(op, 2), groups=groups,
            stride=(op.options["stride_h"], op.options["stride_w"]), dilation=dilation,
            padding=padding, activation=_activation(op), onednn=self._onednn,
        )
        return module, self._activations(op, 1)

    def _build_max_pool_2d(self, op: TfliteOperator) -> tuple[nn.Module, tuple[int, ...]]:
        kernel = (op.options["filter_height"], op.options["filter_width"])
        padding = _window_padding(op, self._shape(op.inputs[0]), kernel, (1, 1))
        module = _MaxPool(kernel, (op.options["stride_h"], op.options["stride_w"]), padding,
                          _activation(op))
        return module, self._activations(op, 1)

    def _build_prelu(self, op: TfliteOperator) -> tuple[nn.Module, tuple[int, ...]]:
        alpha = self._constant(op.inputs[1])
        channels = self._shape(op.inputs[0])[-1]
        if alpha.size != channels or alpha.shape[-1] != channels:
            raise ValueError("PRELU: only one slope per channel is supported")
        module = nn.PReLU(channels)
        module.weight.data = _tensor(alpha.reshape(-1))
        return module, self._activations(op, 1)

    def _build_add(self, op: TfliteOperator) -> tuple[nn.Module, tuple[int, ...]]:
        return self._elementwise(op, torch.add)

    def _build_mul(self, op: TfliteOperator) -> tuple[nn.Module, tuple[int, ...]]:
        return self._elementwise(op, torch.mul)

    def _elementwise(self, op: TfliteOperator, function: Callable
                     ) -> tuple[nn.Module, tuple[int, ...]]:
        constants: dict[int, torch.Tensor] = {}
        for slot, index in enumerate(op.inputs[:2]):
            if index in self._constants:
                array = self._constants[index].astype(np.float32)
                if array.ndim == 4:
                    array = array.transpose(0, 3, 1, 2)
                elif array.ndim in (1, 3):
                    # Per-channel (C,) or (1, 1, C): broadcast over NCHW as (1, C, 1, 1).
                    array = array.reshape(1, -1, 1, 1)
                constants[slot] = _tensor(array)
        inputs = tuple(i for i in op.inputs[:2] if i not in self._constants)
        return _Elementwise(function, constants, _activation(op)), inputs

    def _simple(self, op: TfliteOperator, function: Callable[..., torch.Tensor],
                count: int = 1) -> tuple[nn.Module, tuple[int, ...]]:
        return _Function(function, op.op), self._activations(op, count)

    def _build_relu(self, op: TfliteOperator) -> tuple[nn.Module, tuple[int, ...]]:
        return self._simple(op, F.relu)

    def _build_relu6(self, op: TfliteOperator) -> tuple[nn.Module, tuple[int, ...]]:
        return self._simple(op, F.relu6)

    def _build_logistic(self, op: TfliteOperator) -> tuple[nn.Module, tuple[int, ...]]:
        return self._simple(op, torch.sigmoid)

    def _build_pad(self, op: TfliteOperator) -> tuple[nn.Module, tuple[int, ...]]:
        widths = self._constant(op.inputs[1]).reshape(-1, 2)  # per NHWC axis: before, after
        if widths[0].any():
            raise ValueError("PAD: padding the batch axis is not supported")
        flat: list[int] = []
        # F.pad lists the last NCHW axis first: W, H, then C.
        for axis in (2, 1, 3):
            flat += [int(widths[axis][0]), int(widths[axis][1])]
        return self._simple(op, lambda x: F.pad(x, flat))

    def _build_resize_bilinear(self, op: TfliteOperator) -> tuple[nn.Module, tuple[int, ...]]:
        size = tuple(int(v) for v in self._constant(op.inputs[1]))
        if op.options["align_corners"] or not op.options["half_pixel_centers"]:
            raise ValueError("RESIZE_BILINEAR: only half-pixel centres are supported")
        return self._simple(op, lambda x: F.interpolate(x, size=size, mode="bilinear",
                                                        align_corners=False))

    def _build_reshape(self, op: TfliteOperator) -> tuple[nn.Module, tuple[int, ...]]:
        if len(op.inputs) > 1 and op.inputs[1] in self._constants:
            shape = [int(v) for v in self._constant(op.inputs[1])]
        else:
            shape = list(op.options["new_shape"])
        tail = shape[1:]
        # The result's layout is TFLite's: a 4-D result is NCHW again.
        if len(shape) == 4:
            return self._simple(op, lambda x: _as_nchw(_as_nhwc(x).reshape(-1, *tail)))
        return self._simple(op, lambda x: _as_nhwc(x).reshape(x.shape[0], *tail))

    def _build_concatenation(self, op: TfliteOperator) -> tuple[nn.Module, tuple[int, ...]]:
        rank = len(self._shape(op.outputs[0]))
        dim = op.options["axis"] % rank
        if rank == 4:
            dim = _NHWC_TO_NCHW[dim]
        activation = _activation(op)

        def concatenate(*parts: torch.Tensor) -> torch.Tensor:
            y = torch.cat(parts, dim=dim)
            return activation(y) if activation else y

        return self._simple(op, concatenate, count=len(op.inputs))

    def _build_mean(self, op: TfliteOperator) -> tuple[nn.Module, tuple[int, ...]]:
        axes = [int(a) % 4 for a in np.atleast_1d(self._constant(op.inputs[1]))]
        if op.options["keep_dims"]:
            return self._simple(
                op, lambda x: _as_nchw(_as_nhwc(x).mean(dim=axes, keepdim=True)))
        if sorted(_NHWC_TO_NCHW[a] for a in axes) != [2, 3]:
            raise ValueError("MEAN without keep_dims: only the spatial mean is supported")
        return self._simple(op, lambda x: x.mean(dim=(2, 3)))

    def _build_fully_connected(self, op: TfliteOperator) -> tuple[nn.Module, tuple[int, ...]]:
        module = _FullyConnected(self._constant(op.inputs[1]), self._optional_constant(op, 2),
                                 _activation(op))
        return module, self._activations(op, 1)

    def _run(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The eager steps, in file order."""
        values = {self._input: x}
        for step, (inputs, output), release in zip(self.steps, self._wiring, self._release,
                                                   strict=True):
            values[output] = step(*(values[i] for i in inputs))
            for index in release:
                del values[index]
        return tuple(values[i] for i in self._outputs)

    def fused_cpu_graph(self) -> torch.jit.ScriptModule | None:
        """The network traced for one CPU image with oneDNN Graph fusion, built on the
        first call; ``None`` where this torch cannot build it (the eager layers run)."""
        if "graph" not in self._traced:
            _, height, width, channels = self._input_shape
            example = torch.zeros(1, channels, height, width).contiguous(
                memory_format=torch.channels_last)
            self._traced["graph"] = trace_fused(self, example)
        return self._traced["graph"]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x = x.contiguous(memory_format=torch.channels_last)
        if (self.cpu_graph and x.device.type == "cpu" and x.dtype == torch.float32
                and not torch.jit.is_tracing()):
            traced = self.fused_cpu_graph()
            if traced is not None:
                per_image = [traced(image) for image in x.split(1)]
                if len(per_image) == 1:
                    return tuple(per_image[0])
                return tuple(torch.cat(parts) for parts in zip(*per_image, strict=True))
        if x.is_cuda and x.dtype == torch.float32:
            # TF32 would cost the interpreter's results their parity (cuda_precision).
            with ieee_float32_convolutions():
                return self._run(x)
        return self._run(x)
