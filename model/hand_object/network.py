"""The 100DOH hand-object detector (Shan et al., CVPR 2020): Faster R-CNN, ResNet-101 C4.

Classes background, object ("targetobject") and hand, with class-specific box regression,
plus three heads on each RoI: the hand's contact state (no contact, self, other person,
portable object, stationary object) and an offset vector towards the held object, both
read from an enlarged RoI, and the hand's side, read from the RoI itself.

Images go in as the original's network input: BGR minus the pixel means, resized by
:mod:`hflpipe.model.hand_object.transforms`. Detections come out as rows
``x1, y1, x2, y2, score, contact_state, magnitude, dx, dy, side`` in frame pixels.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hflpipe.model.hand_object.backbone import resnet101_c4
from hflpipe.model.hand_object.boxes import clip_boxes, decode_boxes, enlarge_rois, legacy_nms
from hflpipe.model.hand_object.links import link_hands_to_objects
from hflpipe.model.hand_object.rpn import FEATURE_STRIDE, Proposals, RegionProposalNetwork, propose
from hflpipe.model.hand_object.transforms import prepare_image
from hflpipe.model.vision_ops import roi_align

CLASSES = ("__background__", "targetobject", "hand")
OBJECT_CLASS, HAND_CLASS = 1, 2
CONTACT_STATES = ("none", "self", "other", "portable", "stationary")
#: Scale of the box regression targets the detector was trained with (dx, dy, dw, dh).
_BOX_DELTA_STDS = (0.1, 0.1, 0.2, 0.2)
_POOL_SIZE = 7
#: Per-class NMS of the final detections (cfg.TEST.NMS).
DETECTION_NMS = 0.3
_HEAD_CHANNELS = 2048


@dataclass(frozen=True)
class FrameDetections:
    """The hands and objects found on one frame.

    Attributes:
        hands: (M, 10) float32 rows ``x1, y1, x2, y2`` (frame pixels), ``score,
            contact_state`` (index into :data:`CONTACT_STATES`), ``magnitude, dx, dy``
            (offset towards the held object), ``side`` (1.0 right, 0.0 left); by
            decreasing score.
        objects: (K, 10) float32, the same layout (the extra heads run on objects too).
        links: (M,) int64 index into ``objects`` of each hand's object; -1 when the hand is
            not in contact or there is no object.
    """

    hands: np.ndarray
    objects: np.ndarray
    links: np.ndarray


@dataclass(frozen=True)
class RawOutputs:
    """Every intermediate output of the original's forward, for a batch of B images.

    Per-RoI arrays have 300 rows per image (zero-padded proposals included), in the order
    of ``proposals.rois``.

    Attributes:
        features: (B, 1024, Hf, Wf) stride-16 feature map.
        proposals: the RPN's RoIs and objectness.
        enlarged_rois: (B, 300, 4) RoIs of the contact and offset heads.
        class_probs: (B, 300, 3) softmax over background, object, hand.
        box_deltas: (B, 300, 12) raw class-specific regression (before the 0.1/0.2 scaling).
        contact_logits: (B, 300, 5).
        offsets: (B, 300, 3) raw magnitude, then 0.1 x the unit vector of the other two.
        side_logits: (B, 300, 1).
    """

    features: torch.Tensor
    proposals: Proposals
    enlarged_rois: torch.Tensor
    class_probs: torch.Tensor
    box_deltas: torch.Tensor
    contact_logits: torch.Tensor
    offsets: torch.Tensor
    side_logits: torch.Tensor


def _with_batch_index(rois: torch.Tensor) -> torch.Tensor:
    """(B, R, 4) boxes -> (B*R, 5) rows ``index, x1, y1, x2, y2`` for RoIAlign."""
    batch, count = rois.shape[:2]
    index = torch.arange(batch, device=rois.device, dtype=rois.dtype).repeat_interleave(count)
    return torch.cat([index[:, None], rois.reshape(-1, 4)], dim=1)


class HandObjectDetector(nn.Module):
    """Faster R-CNN (ResNet-101 C4) with the 100DOH hand-state heads.

    ``forward`` is the original's test-time network; :meth:`detect` adds its pre- and
    post-processing. Weights come from
    :func:`hflpipe.model.hand_object.loader.load_hand_object_detector`.
    """

    def __init__(self) -> None:
        super().__init__()
        self.backbone, self.roi_stage = resnet101_c4()
        self.rpn = RegionProposalNetwork()
        self.class_logits = nn.Linear(_HEAD_CHANNELS, len(CLASSES))
        self.box_deltas = nn.Linear(_HEAD_CHANNELS, 4 * len(CLASSES))
        self.contact_head = nn.Sequential(
            nn.Linear(_HEAD_CHANNELS, 32), nn.ReLU(), nn.Dropout(0.5),
            nn.Linear(32, len(CONTACT_STATES)),
        )
        self.offset_head = nn.Linear(_HEAD_CHANNELS, 3)
        self.side_head = nn.Linear(_HEAD_CHANNELS, 1)

    def roi_features(self, features: torch.Tensor, rois: torch.Tensor) -> torch.Tensor:
        """Stage 4 on 7x7 RoIAlign crops, averaged: (N, 5) indexed RoIs -> (N, 2048) float32.

        RoIAlign in the legacy convention (no half-pixel offset, sizes floored at one cell,
        adaptive sampling).
        """
        pooled = roi_align(features, rois.to(features.dtype), (_POOL_SIZE, _POOL_SIZE),
                           spatial_scale=1.0 / FEATURE_STRIDE, sampling_ratio=0, aligned=False)
        return self.roi_stage(pooled).mean(3).mean(2).float()

    def contact_outputs(self, enlarged_features: torch.Tensor) -> tuple[torch.Tensor,
                                                                          torch.Tensor]:
        """(N, 2048) features of enlarged RoIs -> contact logits (N, 5) and offsets (N, 3)."""
        head_input = enlarged_features.to(self.side_head.weight.dtype)
        contact = self.contact_head(head_input).float()
        raw = self.offset_head(head_input).float()
        offsets = torch.cat([raw[:, :1], 0.1 * F.normalize(raw[:, 1:], p=2, dim=1)], dim=1)
        return contact, offsets

    def _box_outputs(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor,
                                                             torch.Tensor]:
        head_input = features.to(self.side_head.weight.dtype)
        probs = F.softmax(self.class_logits(head_input).float(), dim=1)
        return probs, self.box_deltas(head_input).float(), self.side_head(head_input).float()

    def _propose(self, images: torch.Tensor) -> tuple[torch.Tensor, Proposals]:
        images = images.to(self.side_head.weight.dtype)
        features = self.backbone(images)
        foreground, deltas = self.rpn(features)
        proposals = propose(foreground.float(), deltas.float(), tuple(features.shape[2:]),
                            tuple(images.shape[2:]))
        return features, proposals

    def forward(self, images: torch.Tensor) -> RawOutputs:
        """The original network on a batch of same-size inputs, every head on every RoI.

        Args:
            images: (B, 3, H, W) BGR minus the pixel means, at the detector's resolution.
        """
        features, proposals = self._propose(images)
        batch, count = proposals.rois.shape[:2]
        height, width = images.shape[2:]
        enlarged = enlarge_rois(proposals.rois.reshape(-1, 4), height, width)
        plain = self.roi_features(features, _with_batch_index(proposals.rois))
        probs, deltas, side = self._box_outputs(plain)
        padded = self.roi_features(features, _with_batch_index(enlarged.view(batch, count, 4)))
        contact, offsets = self.contact_outputs(padded)
        return RawOutputs(
            features, proposals, enlarged.view(batch, count, 4), probs.view(batch, count, -1),
            deltas.view(batch, count, -1), contact.view(batch, count, -1),
            offsets.view(batch, count, -1), side.view(batch, count, -1),
        )

    @torch.inference_mode()
    def detect_resized(self, images: torch.Tensor | np.ndarray, scales: Sequence[float],
                       hand_threshold: float = 0.5,
                       object_threshold: float = 0.5) -> list[FrameDetections]:
        """Detections on inputs already prepared by ``transforms.prepare_image``.

        The contact and offset heads, the costliest half of the RoI work, run only on the
        RoIs that become detections; their outputs are those of :meth:`forward`.

        Args:
            images: (B, H, W, 3) BGR minus the pixel means (any float dtype), one size.
            scales: the B factors ``s`` the frames were resized by.
            hand_threshold, object_threshold: class scores must exceed them.

        Returns:
            One :class:`FrameDetections` per image, boxes in the frames' own pixels.
        """
        device = self.side_head.weight.device
        images = torch.as_tensor(images).to(device).permute(0, 3, 1, 2)
        if self.backbone[0].weight.is_contiguous(memory_format=torch.channels_last):
            images = images.contiguous(memory_format=torch.channels_last)
        features, proposals = self._propose(images)
        batch, count = proposals.rois.shape[:2]
        height, width = images.shape[2:]
        probs, deltas, side = self._box_outputs(
            self.roi_features(features, _with_batch_index(proposals.rois)))
        rois = proposals.rois.reshape(-1, 4)

        def hand_state(wanted: torch.Tensor) -> torch.Tensor:
            return self._hand_state(features, rois, wanted, count, (height, width))

        return detections_from_outputs(
            proposals.rois, probs.view(batch, count, -1), deltas.view(batch, count, -1),
            side.view(batch, count, -1), hand_state, (height, width), scales, hand_threshold,
            object_threshold)

    def _hand_state(self, features: torch.Tensor, rois: torch.Tensor, wanted: torch.Tensor,
                    count: int, image_size: tuple[int, int]) -> torch.Tensor:
        """Contact state (argmax) and offset for the flat RoI rows ``wanted``: (K, 4)."""
        if not len(wanted):
            return rois.new_zeros(0, 4)
        unique, position = torch.unique(wanted, return_inverse=True)
        enlarged = enlarge_rois(rois[unique], *image_size)
        index = torch.div(unique, count, rounding_mode="floor").to(enlarged.dtype)
        contact, offsets = self.contact_outputs(
            self.roi_features(features, torch.cat([index[:, None], enlarged], dim=1)))
        states = contact.argmax(dim=1, keepdim=True).float()
        return torch.cat([states, offsets], dim=1)[position]

    def detect(self, images: Sequence[np.ndarray], hand_threshold: float = 0.5,
               object_threshold: float = 0.5, *, batch_size: int = 4) -> list[FrameDetections]:
        """Hands, objects and links on RGB frames of any sizes, as the original's demo.

        Args:
            images: (H, W, 3) uint8 RGB frames; sizes may differ.
            hand_threshold, object_threshold: class scores must exceed them.
            batch_size: frames of one size per forward pass.

        Returns:
            One :class:`FrameDetections` per frame, in input order.

        Raises:
            ValueError: a frame that is not HxWx3 uint8, or too elongated to detect on.
        """
        prepared = [prepare_image(np.asarray(frame)) for frame in images]
        results: list[FrameDetections | None] = [None] * len(prepared)
        by_size: dict[tuple[int, ...], list[int]] = {}
        for i, (image, _) in enumerate(prepared):
            by_size.setdefault(image.shape, []).append(i)
        for members in by_size.values():
            for start in range(0, len(members), batch_size):
                chunk = members[start:start + batch_size]
                found = self.detect_resized(
                    np.stack([prepared[i][0] for i in chunk]), [prepared[i][1] for i in chunk],
                    hand_threshold, object_threshold)
                for i, detections in zip(chunk, found, strict=True):
                    results[i] = detections
        return results


def detections_from_outputs(
    rois: torch.Tensor, class_probs: torch.Tensor, box_deltas: torch.Tensor,
    side_logits: torch.Tensor, hand_state: Callable[[torch.Tensor], torch.Tensor],
    image_size: tuple[int, int], scales: Sequence[float], hand_threshold: float,
    object_threshold: float,
) -> list[FrameDetections]:
    """The original demo's post-processing of a batch's RoI outputs.

    Boxes decoded per class (deltas x 0.1/0.2), clipped to the network input, divided by
    ``s``; per class, scores above the threshold, sorted, NMS at 0.3 (+1 areas, IoU >= 0.3
    suppresses) on the frame-pixel boxes; hands linked to the objects kept.

    Args:
        rois: (B, R, 4) proposals in network-input pixels.
        class_probs: (B, R, 3); box_deltas: (B, R, 12); side_logits: (B, R, 1).
        hand_state: flat RoI rows (K,) (``image * R + row``) -> (K, 4) contact state
            (argmax, as float) and offset ``magnitude, dx, dy`` of those RoIs.
        image_size: ``(H, W)`` of the network input.
        scales: the B resize factors.
    """
    batch, count = rois.shape[:2]
    stds = box_deltas.new_tensor(_BOX_DELTA_STDS * len(CLASSES))
    boxes = decode_boxes(rois.reshape(-1, 4), box_deltas.reshape(batch * count, -1) * stds)
    boxes = clip_boxes(boxes, *image_size).view(batch, count, -1)
    # Per image, hands then objects: (flat RoI rows, boxes, scores).
    found = []
    for i in range(batch):
        frame_boxes = boxes[i] / float(scales[i])
        for cls, threshold in ((HAND_CLASS, hand_threshold), (OBJECT_CLASS, object_threshold)):
            rows, class_boxes, scores = _class_detections(frame_boxes, class_probs[i], cls,
                                                          threshold)
            found.append((rows + i * count, class_boxes, scores))
    wanted = torch.cat([rows for rows, _, _ in found])
    sides = (torch.sigmoid(side_logits.reshape(-1)) > 0.5).float()[wanted]
    table = torch.cat([
        torch.cat([b for _, b, _ in found]), torch.cat([s for _, _, s in found])[:, None],
        hand_state(wanted), sides[:, None],
    ], dim=1).cpu().numpy()
    results, start = [], 0
    for i in range(batch):
        hands_end = start + len(found[2 * i][0])
        end = hands_end + len(found[2 * i + 1][0])
        hands, objects = table[start:hands_end], table[hands_end:end]
        results.append(FrameDetections(hands, objects, link_hands_to_objects(hands, objects)))
        start = end
    return results


def _class_detections(boxes: torch.Tensor, probs: torch.Tensor, cls: int,
                      threshold: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One class's detections on one image: score above ``threshold``, then NMS at 0.3.

    Args:
        boxes: (R, 12) decoded boxes per class, frame pixels.
        probs: (R, 3) class probabilities.

    Returns:
        RoI rows (K,) int64, boxes (K, 4), scores (K,), by decreasing score.
    """
    rows = torch.nonzero(probs[:, cls] > threshold).view(-1)
    scores = probs[rows, cls]
    rows = rows[torch.sort(scores, descending=True).indices]
    class_boxes = boxes[rows, 4 * cls:4 * cls + 4]
    keep = legacy_nms(class_boxes, probs[rows, cls], DETECTION_NMS)
    return rows[keep], class_boxes[keep], probs[rows[keep], cls]
