"""The one seam between the pipeline and the model: a batch of crops in, small arrays out.

``HflnetPredictor`` loads HFL-Net once and maps a batch of 256x256 crops
(numpy, uint8) to per-crop results (numpy). It returns only what the rest of
the pipeline needs, so that a GPU actor ships kilobytes per crop, not the
object vote grids: the vote candidates are selected on the device.

Speed (``bench/model.py`` measures each step and its error against plain fp32):
BatchNorm layers are folded into the convolutions before them and the network
runs channels-last (oneDNN's and cuDNN's fast layout), both on every device and
both exact to float32 rounding; on CUDA, fp16 autocast is the default. On CPU
the inference actor also makes its process keep freed memory for the next batch
of the same shape (:mod:`hflpipe.pipeline.infer.freed_memory`), on its own most of the
CPU speed-up. With
``compile``, ``torch.compile`` (Inductor, frozen weights) fuses the network into
generated kernels: minutes of compiling once per process (kernels are cached on
disk for the next one), then each batch shape runs the compiled code.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from hflpipe.model.checkpoint import load_hflnet
from hflpipe.model.inference_speed import autocast_backbone, fold_batch_norms
from hflpipe.model.object_pose import select_vote_candidates
from hflpipe.pipeline.common.storage import Location, cached_copy
from hflpipe.pipeline.infer.freed_memory import ShapeChangeTrim

log = logging.getLogger(__name__)

#: Joint confidence is the heatmap mass of the densest (2r+1)^2 window, r this radius.
CONFIDENCE_RADIUS = 1


@dataclass(frozen=True)
class PredictorSettings:
    """How to run the model; ``device``/``precision`` ``"auto"`` pick CUDA + fp16 when present.

    ``optimize`` folds BatchNorm into convolutions and switches to channels-last; off, the
    network runs exactly as loaded. ``compile`` adds ``torch.compile``
    (needs a C++ compiler on CPU); batches are then padded to the largest batch
    seen so far, so a video's short last batch reuses the compiled shape.
    """

    checkpoint: Location  # a path, or a URL each actor fetches to its machine's cache
    mano: Location | None = None
    device: str = "auto"
    precision: str = "auto"
    optimize: bool = True
    compile: bool = False
    #: The 100DOH hand-object detector's weights, when the run detects with it.
    hand_object_weights: Location | None = None
    #: Whether the actors run MediaPipe's hand networks for the video tasks.
    mediapipe_hands: bool = False


def resolve_device(device: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or None for plain fp32. ``auto``: fp16 on CUDA, fp32 on CPU.

    fp16 runs the whole network; bf16 only the ResNet/FPN backbone (most of the
    arithmetic), the interaction blocks and heads staying fp32: over the whole
    network bf16's 8-bit mantissa moved the 2D joints by ~4 % of the hand box
    against the fp32 reference, fp16 by ~0.4 % (tests/test_hflnet_parity.py).
    """
    if precision == "auto":
        return torch.float16 if device.type == "cuda" else None
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


class HflnetPredictor:
    """Callable model wrapper in Ray's map-batches style: loaded once, numpy in, numpy out."""

    def __init__(self, settings: PredictorSettings) -> None:
        self.device = resolve_device(settings.device)
        self.autocast_dtype = resolve_precision(settings.precision, self.device)
        mano = cached_copy(settings.mano) if settings.mano else None
        self.net = load_hflnet(cached_copy(settings.checkpoint), mano=mano, device=self.device)
        self.channels_last = settings.optimize
        if settings.optimize:
            folded = fold_batch_norms(self.net)
            self.net = self.net.to(memory_format=torch.channels_last)
            log.debug("folded %d BatchNorm layers into convolutions", folded)
        # Autocast around the whole network; bf16 is confined to the backbone instead.
        self._network_autocast = self.autocast_dtype
        if self.autocast_dtype == torch.bfloat16:
            autocast_backbone(self.net, self.device.type, torch.bfloat16)
            self._network_autocast = None
        if self.device.type == "cuda":
            # Every batch but a video's last has the same shape: tuned kernels pay off.
            torch.backends.cudnn.benchmark = True
        self._forward: Callable[..., dict[str, torch.Tensor]] = self.net
        # Where the process keeps freed memory (CPU actors), a new batch shape returns it.
        self._trim_on_shape_change = ShapeChangeTrim()
        # Batch size the compiled graph was specialised for (0: not compiled).
        self._compiled_batch = 0
        if settings.compile:
            # Freezing turns weights into constants, so Inductor can pre-pack them for oneDNN.
            self._forward = torch.compile(self.net, dynamic=False, options={"freezing": True})
            self._compiled_batch = 1
        log.info("HFL-Net on %s (autocast %s, optimized %s, compiled %s)", self.device,
                 self.autocast_dtype, settings.optimize, settings.compile)

    @torch.inference_mode()
    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one batch.

        Args:
            batch: ``images`` (B,256,256,3) uint8 RGB crops, ``hand_boxes`` and
                ``object_boxes`` (B,4) float32 xyxy crop pixels.

        Returns:
            ``joints2d`` (B,21,2) crop px; ``joint_confidence`` (B,21) in [0,1];
            ``joints3d`` (B,21,3) m relative to the wrist; ``mano_pose`` (B,48)
            axis-angle; ``mano_shape`` (B,10); ``obj_keypoints`` (B,21,2) crop px
            and ``obj_keypoint_confidence`` (B,21) of the best cell per control
            point; ``obj_candidates`` (B,R,21,2) crop px with
            ``obj_candidate_valid`` (B,R,21) bool, R rounds of the test-time
            vote selection (see :func:`hflpipe.model.object_pose.select_vote_candidates`).
        """
        out = self.network_outputs(batch)
        hand_boxes = torch.as_tensor(batch["hand_boxes"], dtype=torch.float32, device=self.device)
        obj_boxes = torch.as_tensor(batch["object_boxes"], dtype=torch.float32, device=self.device)
        return self._summarise(out, hand_boxes, obj_boxes)

    @torch.inference_mode()
    def network_outputs(self, batch: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        """The network's raw output dict (see :class:`hflpipe.model.hflnet.HFLNet`) for a batch.

        Same inputs as :meth:`__call__`; runs with this predictor's layout and
        precision, so the benchmarks can compare it with the plain fp32 network.
        """
        # uint8 crosses to the device (a quarter of the bytes of float32), then converts.
        images = torch.from_numpy(np.ascontiguousarray(batch["images"])).to(self.device)
        hand_boxes = torch.as_tensor(batch["hand_boxes"], dtype=torch.float32, device=self.device)
        obj_boxes = torch.as_tensor(batch["object_boxes"], dtype=torch.float32, device=self.device)
        self._trim_on_shape_change(tuple(images.shape))
        size = images.shape[0]
        if self._compiled_batch:
            # A new shape would mean compiling again; padding a short batch is far cheaper.
            self._compiled_batch = max(self._compiled_batch, size)
            images, hand_boxes, obj_boxes = (
                _pad_batch(t, self._compiled_batch) for t in (images, hand_boxes, obj_boxes)
            )
        images = images.permute(0, 3, 1, 2).float().div_(255.0)
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with torch.autocast(
            self.device.type, dtype=self._network_autocast or torch.float32,
            enabled=self._network_autocast is not None,
        ):
            out = self._forward(images, hand_boxes, obj_boxes)
        return {name: value[:size] for name, value in out.items()}

    def _summarise(
        self, out: dict[str, torch.Tensor], hand_boxes: torch.Tensor, obj_boxes: torch.Tensor
    ) -> dict[str, np.ndarray]:
        out = {k: v.float() for k, v in out.items()}
        joints2d = _box_fractions_to_pixels(out["joints2d"], hand_boxes)
        conf = out["obj_conf"]
        best_conf, best_cell = conf.flatten(1, 2).max(dim=1)
        px = out["obj_pred_x"].flatten(1, 2).gather(1, best_cell[:, None, :])[:, 0]
        py = out["obj_pred_y"].flatten(1, 2).gather(1, best_cell[:, None, :])[:, 0]
        obj_keypoints = _box_fractions_to_pixels(torch.stack([px, py], dim=-1), obj_boxes)
        cand = select_vote_candidates(out["obj_conf"], out["obj_pred_x"], out["obj_pred_y"])
        candidates = _box_fractions_to_pixels(cand.positions, obj_boxes)
        result = {
            "joints2d": joints2d,
            "joint_confidence": _peak_mass(out["heatmaps"]),
            "joints3d": out["joints3d"],
            "mano_pose": out["mano_pose_aa"],
            "mano_shape": out["mano_shape"],
            "obj_keypoints": obj_keypoints,
            "obj_keypoint_confidence": best_conf,
            "obj_candidates": candidates,
            "obj_candidate_valid": cand.valid,
        }
        return {k: v.cpu().numpy() for k, v in result.items()}


def _pad_batch(tensor: torch.Tensor, size: int) -> torch.Tensor:
    """Repeat the last item of a batch-first tensor until the batch has ``size`` items."""
    missing = size - tensor.shape[0]
    if missing <= 0:
        return tensor
    return torch.cat([tensor, tensor[-1:].expand(missing, *tensor.shape[1:])])


def _box_fractions_to_pixels(uv: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """(B, ..., 2) fractions of (B, 4) xyxy boxes -> pixels."""
    shape = (boxes.shape[0],) + (1,) * (uv.dim() - 2)
    x0, y0 = boxes[:, 0].view(shape), boxes[:, 1].view(shape)
    w, h = (boxes[:, 2] - boxes[:, 0]).view(shape), (boxes[:, 3] - boxes[:, 1]).view(shape)
    return torch.stack([x0 + uv[..., 0] * w, y0 + uv[..., 1] * h], dim=-1)


def _peak_mass(heatmaps: torch.Tensor) -> torch.Tensor:
    """(B, J, H, W) softmax heatmaps -> (B, J) mass of the densest window around any cell."""
    k = 2 * CONFIDENCE_RADIUS + 1
    window_sums = torch.nn.functional.avg_pool2d(heatmaps, k, stride=1, padding=CONFIDENCE_RADIUS,
                                                 count_include_pad=True) * (k * k)
    return window_sums.flatten(2).max(dim=2).values.clamp(0.0, 1.0)
