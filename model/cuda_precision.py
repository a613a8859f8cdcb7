"""cuDNN's float32 convolutions in IEEE float32 for a block of code, not TensorFloat-32.

torch lets cuDNN run float32 convolutions in TF32 by default on Ampere and later GPUs:
operands rounded to a 10-bit mantissa, about 1e-3 relative error. For MediaPipe's
hand networks, tracked over a few frames, that moves landmarks by 0.24-0.30 px on
640x480 and 640x360 frames and by 1.95 px on 4K frames (TF32 rounding emulated on the
CPU in a one-off script), where another order of the same float32 arithmetic moves
them by 0.03-0.06 and 0.37 px, and our parity with MediaPipe's own solution is 0.23
and 0.71 px.

The switch is process-wide, not per thread or per call: while any block holds it,
every float32 convolution in the process runs in IEEE float32, HFL-Net's included
where it runs in float32 (its default on a GPU, fp16, is not affected). Concurrent
blocks share one switch; the setting found before the first is restored when the last
leaves. It is set through torch's per-operation API
(``torch.backends.cudnn.conv.fp32_precision``); torch's legacy
``torch.backends.cudnn.allow_tf32`` refuses to be read while the two APIs disagree,
which nothing in hflpipe does.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import torch

_LOCK = threading.Lock()
_holders = 0
_saved = ""


@contextmanager
def ieee_float32_convolutions() -> Iterator[None]:
    """Within the block, cuDNN convolutions compute float32 in IEEE float32."""
    global _holders, _saved
    cudnn = torch.backends.cudnn
    with _LOCK:
        if _holders == 0:
            _saved = cudnn.conv.fp32_precision
            cudnn.conv.fp32_precision = "ieee"
        _holders += 1
    try:
        yield
    finally:
        with _LOCK:
            _holders -= 1
            if _holders == 0:
                cudnn.conv.fp32_precision = _saved
