"""MediaPipe's palm detector and hand-landmark network, run by our TFLite reader and torch.

The reference is Google's own TFLite interpreter (the ``ai-edge-litert`` test
dependency) running the same shipped files on the same inputs. Measured
difference on these inputs: at most 1.2e-4 on outputs up to ~200 (pixels of the
network input), 3e-6 on probabilities; the tolerances below leave about 4x room.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from ai_edge_litert.interpreter import Interpreter

from hflpipe.model.cuda_precision import ieee_float32_convolutions
from hflpipe.model.errors import ModelFileError
from hflpipe.model.mediapipe_files import (
    HAND_LANDMARK_FILE,
    PALM_DETECTION_FILE,
    load_hand_landmarker,
    load_palm_detector,
)
from hflpipe.model.onednn_graph import onednn_graph_available, trace_fused
from hflpipe.model.tflite_file import parse_tflite, read_tflite
from hflpipe.model.tflite_net import TfliteNet, onednn_available


def _official(path, images: np.ndarray) -> list[np.ndarray]:
    """The TFLite interpreter's outputs, one image at a time (the files fix batch 1)."""
    interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    source = interpreter.get_input_details()[0]["index"]
    outputs = [d["index"] for d in interpreter.get_output_details()]
    per_image = []
    for image in images:
        interpreter.set_tensor(source, image[None])
        interpreter.invoke()
        per_image.append([interpreter.get_tensor(i)[0] for i in outputs])
    return [np.stack(column) for column in zip(*per_image, strict=True)]


def _inputs(size: int) -> np.ndarray:
    """Noise, a smooth gradient and a flat image: (3, size, size, 3) float32 in [0, 1]."""
    rng = np.random.default_rng(7)
    ramp = np.linspace(0, 1, size, dtype=np.float32)
    gradient = np.stack(np.broadcast_arrays(ramp[None, :], ramp[:, None], 0.5 * ramp[None, :]), -1)
    return np.stack([
        rng.random((size, size, 3), dtype=np.float32),
        gradient.astype(np.float32),
        np.full((size, size, 3), 0.8, np.float32),
    ])


# (onednn, cpu_graph): the shipped CPU path, the eager oneDNN layers, plain nn.Conv2d.
_CPU_PATHS = {"fused-graph": (True, True), "onednn-eager": (True, False),
              "conv2d": (False, False)}


@pytest.mark.parametrize("cpu_path", list(_CPU_PATHS))
@pytest.mark.parametrize(
    ("path", "size", "scales"),
    [
        (PALM_DETECTION_FILE, 192, (5e-4, 2e-4)),
        (HAND_LANDMARK_FILE, 224, (5e-4, 2e-5, 2e-5, 2e-5)),
    ],
)
def test_raw_outputs_match_the_official_interpreter(path, size, scales, cpu_path) -> None:
    images = _inputs(size)
    expected = _official(path, images)
    onednn, cpu_graph = _CPU_PATHS[cpu_path]
    net = TfliteNet(read_tflite(path), onednn=onednn, cpu_graph=cpu_graph).eval()
    uses_onednn = [step.onednn for step in net.steps if hasattr(step, "onednn")]
    assert uses_onednn and all(u == (onednn and onednn_available()) for u in uses_onednn)
    with torch.inference_mode():
        ours = net(torch.from_numpy(images).permute(0, 3, 1, 2))  # batched
    assert len(ours) == len(expected)
    for got, want, atol in zip(ours, expected, scales, strict=True):
        assert got.shape == want.shape
        np.testing.assert_allclose(got.numpy(), want, rtol=2e-6, atol=atol)


@pytest.mark.skipif(not onednn_graph_available(), reason="this torch has no oneDNN")
@pytest.mark.parametrize(("path", "size"), [(PALM_DETECTION_FILE, 192), (HAND_LANDMARK_FILE, 224)])
def test_a_cpu_batch_goes_image_by_image_through_the_fused_graph(path, size) -> None:
    graph = read_tflite(path)
    images = torch.from_numpy(_inputs(size)).permute(0, 3, 1, 2)
    fused, eager = TfliteNet(graph).eval(), TfliteNet(graph, cpu_graph=False).eval()
    assert not torch._C._jit_llga_enabled()
    traced = fused.fused_cpu_graph()
    assert traced is not None and fused.fused_cpu_graph() is traced  # built once
    # The process-wide switch is back off; the module keeps its fused plan.
    assert not torch._C._jit_llga_enabled()
    eager_calls = {"fused": [], "eager": []}
    for name, net in (("fused", fused), ("eager", eager)):
        net.steps[0].register_forward_pre_hook(
            lambda _, args, n=name: eager_calls[n].append(len(args[0])))
    with torch.inference_mode():
        got, want = fused(images), eager(images)
        one = traced(images[:1].contiguous(memory_format=torch.channels_last))
        assert "prim::oneDNNFusionGroup" in str(torch.jit.last_executed_optimized_graph())
    assert eager_calls == {"fused": [], "eager": [3]}
    for fused_output, eager_output, first in zip(got, want, one, strict=True):
        assert fused_output.shape == eager_output.shape
        torch.testing.assert_close(fused_output, eager_output, rtol=1e-5, atol=2e-4)
        torch.testing.assert_close(fused_output[:1], first, rtol=0, atol=0)


class _Text(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> str:
        return "not a tensor"


@pytest.mark.parametrize(("module", "logged"), [
    (_Text().eval(), "oneDNN graph fusion failed"),
    (torch.nn.Identity().eval(), "found nothing to fuse"),
], ids=["trace-fails", "nothing-to-fuse"])
def test_a_graph_that_cannot_be_fused_leaves_the_eager_path(module, logged, caplog) -> None:
    with caplog.at_level(logging.INFO, logger="hflpipe.model.onednn_graph"):
        assert trace_fused(module, torch.zeros(1, 3, 4, 4)) is None
    assert logged in caplog.text
    assert not torch._C._jit_llga_enabled()



def _conv_precision() -> str:
    return torch.backends.cudnn.conv.fp32_precision


def test_ieee_convolutions_hold_while_any_block_does_and_then_restore() -> None:
    outer = _conv_precision()
    first, second = ieee_float32_convolutions(), ieee_float32_convolutions()
    try:
        torch.backends.cudnn.conv.fp32_precision = "tf32"
        first.__enter__()
        second.__enter__()
        assert _conv_precision() == "ieee"
        first.__exit__(None, None, None)  # the other block still computes
        assert _conv_precision() == "ieee"
        second.__exit__(None, None, None)
        assert _conv_precision() == "tf32"
        with pytest.raises(RuntimeError), ieee_float32_convolutions():
            raise RuntimeError("a failing network call")
        assert _conv_precision() == "tf32"
    finally:
        torch.backends.cudnn.conv.fp32_precision = outer


@pytest.mark.needs_cuda
def test_the_gpu_runs_the_convolutions_in_ieee_float32() -> None:
    """cuDNN's default TF32 would move landmarks by 0.2-0.3 px at 640x480 and about 2 px
    on 4K frames (emulated on the CPU); the networks turn it off while they run."""
    net = load_hand_landmarker().to("cuda")
    seen = []
    net.steps[0].register_forward_pre_hook(lambda *_: seen.append(_conv_precision()))
    before = _conv_precision()
    with torch.inference_mode():
        net(torch.rand(2, 3, 224, 224, device="cuda"))
    assert seen == ["ieee"]
    assert _conv_precision() == before


def test_wrong_files_are_refused_with_one_line(tmp_path) -> None:
    with pytest.raises(ModelFileError, match="palm detection model file not found"):
        load_palm_detector(tmp_path / "missing.tflite")
    text = tmp_path / "notes.tflite"
    text.write_text("hello, not a model")
    with pytest.raises(ModelFileError, match="not a TensorFlow Lite model"):
        load_hand_landmarker(text)
    # A real TFLite file, but the other network.
    with pytest.raises(ModelFileError, match="not a palm detection model"):
        load_palm_detector(HAND_LANDMARK_FILE)
    truncated = tmp_path / "truncated.tflite"
    truncated.write_bytes(PALM_DETECTION_FILE.read_bytes()[:5000])
    with pytest.raises(ModelFileError, match="corrupted TensorFlow Lite model"):
        load_palm_detector(truncated)


def test_reader_widens_nothing_itself_and_reads_the_graph() -> None:
    graph = parse_tflite(PALM_DETECTION_FILE.read_bytes())
    dtypes = {t.dtype for t in graph.tensors if t.data is not None}
    assert np.dtype(np.float16) in dtypes  # weights stay float16 until DEQUANTIZE
    assert graph.operators[0].op == "DEQUANTIZE"
    assert {o.op for o in graph.operators} >= {"CONV_2D", "DEPTHWISE_CONV_2D", "PRELU"}
