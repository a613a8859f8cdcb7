"""A module traced for the CPU with oneDNN Graph fusion (TorchScript's LLGA fuser).

oneDNN Graph compiles each convolution with the operators after it (bias,
activation, residual addition; not PReLU) into one partition and runs it through a
cached, pre-bound kernel. For networks of many small layers, such as MediaPipe's
hand models, the per-call cost of eager oneDNN convolutions (about 45 us each,
whatever their size) dominates; the fused graph gets rid of most of it. It needs
a fixed input shape: the profiling executor specialises the graph on the shape it
has seen, so callers keep to the one they traced with.

``torch.jit.trace`` and ``torch.jit.freeze`` warn that they are deprecated in favour
of ``torch.compile``, which has no such fuser on the CPU (its convolutions are the
eager oneDNN calls). torch is pinned, so the warnings are silenced here; where
tracing fails or nothing gets fused, ``trace_fused`` returns ``None`` and the
caller keeps its eager path.
"""

from __future__ import annotations

import logging
import threading
import warnings

import torch
from torch import nn

log = logging.getLogger(__name__)

# The profiling executor records shapes on the first call and builds the fused
# graph on the second; the third runs it.
_WARM_UP_CALLS = 3
_FUSION_GROUP = "prim::oneDNNFusionGroup"
# The fusion switch is process-wide: one build at a time turns it on and back.
_BUILD_LOCK = threading.Lock()


def onednn_graph_available() -> bool:
    """Whether this torch has oneDNN (and so the LLGA fuser) for the CPU."""
    return torch.backends.mkldnn.is_available() and hasattr(torch.jit, "enable_onednn_fusion")


def trace_fused(module: nn.Module, example: torch.Tensor) -> torch.jit.ScriptModule | None:
    """``module`` (in eval mode) traced on ``example``, frozen and fused; ``None`` where
    this torch fuses nothing or the trace fails (the reason is logged).

    The process-wide fusion switch is on only while the graph is built and warmed
    up: the fused plan stays with the returned module, and other TorchScript code
    in the process is left as it was.
    """
    if not onednn_graph_available():
        return None
    with _BUILD_LOCK:
        return _trace_fused(module, example)


def _trace_fused(module: nn.Module, example: torch.Tensor) -> torch.jit.ScriptModule | None:
    was_on = torch._C._jit_llga_enabled()
    torch.jit.enable_onednn_fusion(True)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning, message=r"`torch\.jit\.")
            with torch.no_grad():
                traced = torch.jit.freeze(torch.jit.trace(module, example, check_trace=False))
                for _ in range(_WARM_UP_CALLS):
                    traced(example)
        fused = _FUSION_GROUP in str(torch.jit.last_executed_optimized_graph())
    except RuntimeError as exc:
        log.warning("oneDNN graph fusion failed, using eager kernels: %s", exc)
        return None
    finally:
        torch.jit.enable_onednn_fusion(was_on)
    if not fused:
        log.info("oneDNN graph fusion found nothing to fuse; using eager kernels")
        return None
    return traced
