"""MediaPipe's hand solution around its two networks: palms -> hand regions -> landmarks.

What MediaPipe's ``HandLandmarkTrackingCpu`` graph (0.10.21, the legacy
``solutions.hands``) computes, as plain functions plus one tracker class:

- palm detection on the whole frame letterboxed into 192x192 (values in [0, 1],
  zero border), SSD anchors (4 layers, strides 8/16/16/16, fixed size, offset 0.5),
  box and 7 keypoints decoded relative to the anchors (scale 192), sigmoid scores
  (logits clipped to +-100) kept at ``min_detection_confidence``, weighted
  non-max suppression (IoU > 0.3), letterbox removed, at most ``max_hands`` kept;
- the hand region from a palm: its box, rotated so that keypoint 0 (wrist) to
  keypoint 2 (middle finger knuckle) points up, shifted by -0.5 of its height along
  that direction, squared on the long side and scaled by 2.6;
- the landmark network on that region warped to 224x224 (edge pixels repeated):
  21 landmarks (x, y in the region, z scaled by 1/224/0.4), presence, handedness;
  a hand counts when its presence exceeds ``min_tracking_confidence``;
- video mode: the next frame's regions come from this frame's landmarks (wrist and
  the finger bases' MCP/PIP joints, rotated by wrist -> knuckles, squared, scaled by
  2, shifted by -0.1); palm detection runs only while fewer than ``max_hands`` hands
  are tracked, and a palm region overlapping a tracked one (IoU > 0.5) yields to it.

Regions are ``NormalizedRect`` rows ``(x_center, y_center, width, height, rotation)``:
centre and size as fractions of the frame width and height, rotation in radians
(clockwise on screen, since y points down).

Images are sampled as MediaPipe's OpenCV path does: a region's corners map to the
tensor's coordinates 0 and its size (``warpPerspective`` of the rectangle's corner
points, pixel centres at integers), bilinear on 8 bits, then scaled to [0, 1].

Handedness is MediaPipe's label, which assumes a mirrored (selfie) image; callers
with ordinary footage swap it (MediaPipe's documented remedy).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import cv2
import numpy as np
import torch
from torch import nn

PALM_SIZE = 192
LANDMARK_SIZE = 224
_ANCHOR_STRIDES = (8, 16, 16, 16)
_ANCHORS_PER_LAYER = 2  # aspect ratio 1.0 plus the interpolated scale
_SCORE_CLIP = 100.0
_NMS_IOU = 0.3
_ASSOCIATION_IOU = 0.5
# Landmark subset used for the tracking region: wrist and the more stable finger joints.
_STABLE_LANDMARKS = (0, 1, 2, 3, 5, 6, 9, 10, 13, 14, 17, 18)
_Z_NORMALIZATION = 0.4
#: Frames whose palms are detected in one batch (see ``HandTracker.process``).
PALM_BATCH = 4


def _normalize_radians(angle: float) -> float:
    return angle - 2 * math.pi * math.floor((angle + math.pi) / (2 * math.pi))


def palm_anchors() -> np.ndarray:
    """SSD anchor centres of the palm detector, in its output order: (2016, 2) float32 in [0, 1].

    Layers sharing a stride share one grid with their anchors interleaved per cell.
    """
    centres = []
    layer = 0
    while layer < len(_ANCHOR_STRIDES):
        stride = _ANCHOR_STRIDES[layer]
        same = 0
        while layer + same < len(_ANCHOR_STRIDES) and _ANCHOR_STRIDES[layer + same] == stride:
            same += 1
        cells = math.ceil(PALM_SIZE / stride)
        for y in range(cells):
            for x in range(cells):
                centres += [((x + 0.5) / cells, (y + 0.5) / cells)] * (same * _ANCHORS_PER_LAYER)
        layer += same
    return np.asarray(centres, np.float32)


@dataclass(frozen=True)
class Palm:
    """One palm detection in frame-normalised coordinates.

    Attributes:
        score: detection probability.
        box: (4,) ``xmin, ymin, width, height`` as fractions of the frame.
        keypoints: (7, 2) x, y as fractions of the frame.
    """

    score: float
    box: np.ndarray
    keypoints: np.ndarray


def decode_palms(
    raw_boxes: np.ndarray, logits: np.ndarray, anchors: np.ndarray, min_score: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The palm detector's raw outputs for one image -> candidate palms in tensor coordinates.

    Args:
        raw_boxes: (2016, 18) centre x, y, width, height, then 7 keypoints x, y, in
            192-pixel units relative to the anchors.
        logits: (2016,) or (2016, 1) score logits.
        anchors: (2016, 2) from ``palm_anchors``.
        min_score: smallest probability kept.

    Returns:
        scores (K,), boxes (K, 4) ``xmin, ymin, width, height`` and keypoints (K, 7, 2),
        fractions of the 192x192 tensor.
    """
    scores = 1.0 / (1.0 + np.exp(-np.clip(logits.reshape(-1), -_SCORE_CLIP, _SCORE_CLIP)))
    keep = scores >= min_score
    raw = raw_boxes[keep].astype(np.float32) / np.float32(PALM_SIZE)
    centre = raw[:, 0:2] + anchors[keep]
    size = raw[:, 2:4]
    boxes = np.concatenate([centre - size / 2, size], axis=1)
    keypoints = raw[:, 4:].reshape(-1, 7, 2) + anchors[keep][:, None, :]
    return scores[keep].astype(np.float32), boxes, keypoints


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one ``xmin, ymin, width, height`` box with (K, 4) others."""
    x0 = np.maximum(box[0], boxes[:, 0])
    y0 = np.maximum(box[1], boxes[:, 1])
    x1 = np.minimum(box[0] + box[2], boxes[:, 0] + boxes[:, 2])
    y1 = np.minimum(box[1] + box[3], boxes[:, 1] + boxes[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    union = box[2] * box[3] + boxes[:, 2] * boxes[:, 3] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def weighted_nms(
    scores: np.ndarray, boxes: np.ndarray, keypoints: np.ndarray, iou_threshold: float = _NMS_IOU
) -> list[tuple[float, np.ndarray, np.ndarray]]:
    """MediaPipe's weighted non-max suppression, best first.

    The best remaining detection takes every remaining one overlapping it by more
    than ``iou_threshold`` (itself included); its box corners and keypoints become
    their score-weighted mean, its score stays its own.

    Returns:
        (score, box (4,), keypoints (7, 2)) per kept detection.
    """
    order = np.argsort(-scores, kind="stable")
    kept = []
    while order.size:
        best = order[0]
        overlaps = _iou(boxes[best], boxes[order]) > iou_threshold
        group, order = order[overlaps], order[~overlaps]
        if group.size == 0:  # a degenerate box does not even overlap itself
            group = np.array([best])
            order = order[order != best]
        weights = scores[group][:, None]
        corners = np.concatenate([boxes[group, :2], boxes[group, :2] + boxes[group, 2:]], axis=1)
        low_high = (corners * weights).sum(0) / weights.sum()
        box = np.concatenate([low_high[:2], low_high[2:] - low_high[:2]])
        points = (keypoints[group] * weights[:, :, None]).sum(0) / weights.sum()
        kept.append((float(scores[best]), box.astype(np.float32), points.astype(np.float32)))
    return kept


def letterbox(width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """The whole frame fitted into a square tensor, as MediaPipe letterboxes it.

    Returns:
        region (5,) covering the frame padded to a square, and the padding
        ``left, top, right, bottom`` as fractions of the tensor.
    """
    side = max(width, height)
    pad_x = (1 - width / side) / 2
    pad_y = (1 - height / side) / 2
    region = np.array([0.5, 0.5, side / width, side / height, 0.0], np.float64)
    return region, np.array([pad_x, pad_y, pad_x, pad_y], np.float64)


def remove_letterbox(box: np.ndarray, keypoints: np.ndarray, padding: np.ndarray
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Tensor fractions -> frame fractions (``DetectionLetterboxRemovalCalculator``)."""
    left, top, right, bottom = padding
    scale = np.array([1 - left - right, 1 - top - bottom])
    offset = np.array([left, top])
    frame_box = np.concatenate([(box[:2] - offset) / scale, box[2:] / scale])
    return frame_box, (keypoints - offset) / scale


def transform_region(region: np.ndarray, width: int, height: int, *, scale: float,
                     shift_y: float) -> np.ndarray:
    """``RectTransformationCalculator`` with ``square_long``: shift along the region's own
    axes, square it on its long side (in pixels), then scale it."""
    x, y, w, h, rotation = (float(v) for v in region)
    if rotation == 0.0:
        y += h * shift_y
    else:
        x += -height * h * shift_y * math.sin(rotation) / width
        y += height * h * shift_y * math.cos(rotation) / height
    long_side = max(w * width, h * height)
    return np.array([x, y, long_side / width * scale, long_side / height * scale, rotation])


def palm_region(palm: Palm, width: int, height: int) -> np.ndarray:
    """The hand region a palm implies (``PalmDetectionDetectionToRoi``): (5,)."""
    box, points = palm.box, palm.keypoints
    x0, y0 = points[0, 0] * width, points[0, 1] * height
    x1, y1 = points[2, 0] * width, points[2, 1] * height
    rotation = _normalize_radians(math.pi / 2 - math.atan2(-(y1 - y0), x1 - x0))
    rect = np.array([box[0] + box[2] / 2, box[1] + box[3] / 2, box[2], box[3], rotation])
    return transform_region(rect, width, height, scale=2.6, shift_y=-0.5)


def landmarks_region(landmarks: np.ndarray, width: int, height: int) -> np.ndarray:
    """The next frame's hand region from this frame's landmarks (video mode): (5,).

    Args:
        landmarks: (21, 2+) x, y as fractions of the frame.
    """
    points = landmarks[list(_STABLE_LANDMARKS), :2].astype(np.float64)
    # In the subset, 0 is the wrist and 4, 6, 8 the index, middle and ring finger bases.
    x0, y0 = points[0, 0] * width, points[0, 1] * height
    knuckles = (points[4] + points[8]) / 2
    x1 = (knuckles[0] + points[6, 0]) / 2 * width
    y1 = (knuckles[1] + points[6, 1]) / 2 * height
    rotation = _normalize_radians(math.pi / 2 - math.atan2(-(y1 - y0), x1 - x0))
    centre = (points.min(0) + points.max(0)) / 2
    offset = (points - centre) * (width, height)
    cos, sin = math.cos(-rotation), math.sin(-rotation)
    projected = np.stack([offset[:, 0] * cos - offset[:, 1] * sin,
                          offset[:, 0] * sin + offset[:, 1] * cos], axis=1)
    mid = (projected.min(0) + projected.max(0)) / 2
    size = projected.max(0) - projected.min(0)
    cos, sin = math.cos(rotation), math.sin(rotation)
    cx = mid[0] * cos - mid[1] * sin + width * centre[0]
    cy = mid[0] * sin + mid[1] * cos + height * centre[1]
    rect = np.array([cx / width, cy / height, size[0] / width, size[1] / height, rotation])
    return transform_region(rect, width, height, scale=2.0, shift_y=-0.1)


def _axis_aligned(region: np.ndarray) -> np.ndarray:
    return np.array([region[0] - region[2] / 2, region[1] - region[3] / 2, region[2], region[3]])


def associate_regions(from_palms: list[np.ndarray], tracked: list[np.ndarray],
                      iou_threshold: float = _ASSOCIATION_IOU) -> list[np.ndarray]:
    """``AssociationNormRectCalculator``: palm regions first, then tracked ones; each new
    region removes the earlier ones it overlaps (IoU of the unrotated rectangles)."""
    kept: list[np.ndarray] = []
    for region in [*from_palms, *tracked]:
        box = _axis_aligned(region)
        kept = [r for r in kept if _iou(box, _axis_aligned(r)[None])[0] <= iou_threshold]
        kept.append(region)
    return kept


def warp_with_opencv(frame: np.ndarray, region: np.ndarray, size: int,
                      zero_border: bool) -> np.ndarray:
    """MediaPipe's own CPU sampling (``ImageToTensorOpenCvConverter``): the region's
    corners (``cv2.boxPoints``) onto the tensor's edges, ``warpPerspective`` bilinear on
    the 8-bit frame. (H, W, 3) uint8 -> (size, size, 3) uint8."""
    height, width = frame.shape[:2]
    rect = ((region[0] * width, region[1] * height), (region[2] * width, region[3] * height),
            math.degrees(region[4]))
    corners = cv2.boxPoints(rect)  # bottom-left, top-left, top-right, bottom-right
    edges = np.array([[0, size], [0, 0], [size, 0], [size, size]], np.float32)
    matrix = cv2.getPerspectiveTransform(corners, edges)
    border = cv2.BORDER_CONSTANT if zero_border else cv2.BORDER_REPLICATE
    return cv2.warpPerspective(frame, matrix, (size, size), flags=cv2.INTER_LINEAR,
                               borderMode=border)


def sample_regions(frame: np.ndarray, regions: np.ndarray, size: int, *,
                   zero_border: bool) -> np.ndarray:
    """Rotated regions of one (H, W, 3) uint8 frame warped into square tensors, as
    MediaPipe's CPU path does: (K, 5) ``NormalizedRect`` rows -> (K, size, size, 3) uint8.

    The networks take these 8-bit tensors wherever they run: what crosses to a device
    (or an inference actor) is small, and the pixels are MediaPipe's own.
    """
    return np.stack([warp_with_opencv(frame, region, size, zero_border) for region in regions])


def project_landmarks(raw: np.ndarray, region: np.ndarray) -> np.ndarray:
    """Landmark network output -> frame fractions (``LandmarkProjectionCalculator``).

    Args:
        raw: (63,) x, y, z per landmark in 224-pixel tensor units.
        region: the (5,) region the tensor was sampled from.

    Returns:
        (21, 3) x, y as fractions of the frame; z in the same scale as x (MediaPipe's).
    """
    points = raw.reshape(21, 3).astype(np.float64) / LANDMARK_SIZE
    x, y = points[:, 0] - 0.5, points[:, 1] - 0.5
    cos, sin = math.cos(region[4]), math.sin(region[4])
    out = np.empty((21, 3))
    out[:, 0] = (cos * x - sin * y) * region[2] + region[0]
    out[:, 1] = (sin * x + cos * y) * region[3] + region[1]
    out[:, 2] = points[:, 2] / _Z_NORMALIZATION * region[2]
    return out


@dataclass(frozen=True)
class Hand:
    """One hand on one frame.

    Attributes:
        landmarks: (21, 3) x, y as fractions of the frame, z relative (MediaPipe's scale).
        label: MediaPipe's ``"Left"`` or ``"Right"`` (which assumes a mirrored image).
        label_score: the label's probability.
        presence: the landmark network's hand presence probability.
        region: the (5,) region the landmarks were found in.
    """

    landmarks: np.ndarray
    label: str
    label_score: float
    presence: float
    region: np.ndarray


class HandNetworks(Protocol):
    """The two networks, wherever they run, on 8-bit tensors (see ``sample_regions``)."""

    def palms(self, images: np.ndarray, min_score: float
              ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Palm candidates on (B, 192, 192, 3) uint8 letterboxed frames: per image the
        ``decode_palms`` result (before non-max suppression), tensor fractions."""
        ...

    def landmarks(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """On (K, 224, 224, 3) uint8 hand regions: landmarks (K, 63) in tensor pixels, hand
        presence (K,) and the probability of MediaPipe's "Left" (K,), float32."""
        ...


class TorchHandNetworks:
    """:class:`HandNetworks` by our torch modules on one device.

    Args:
        palm_detector: the palm network (``mediapipe_files.load_palm_detector``).
        landmarker: the landmark network (``mediapipe_files.load_hand_landmarker``).
        device: where both are; tensors travel there as uint8.
    """

    def __init__(self, palm_detector: nn.Module, landmarker: nn.Module,
                 device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)
        self.palm_detector = palm_detector.to(self.device)
        self.landmarker = landmarker.to(self.device)
        self._anchors = palm_anchors()

    def _scaled(self, images: np.ndarray) -> torch.Tensor:
        pixels = torch.from_numpy(np.ascontiguousarray(images)).to(self.device)
        return (pixels.float() / 255.0).permute(0, 3, 1, 2)

    @torch.inference_mode()
    def palm_outputs(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The palm network's raw outputs on (B, 192, 192, 3) uint8: boxes (B, 2016, 18)
        and score logits (B, 2016, 1), float32."""
        raw_boxes, logits = self.palm_detector(self._scaled(images))
        return raw_boxes.float().cpu().numpy(), logits.float().cpu().numpy()

    @torch.inference_mode()
    def landmark_outputs(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The landmark network on (K, 224, 224, 3) uint8: see :meth:`landmarks`."""
        raw, presence, left, _world = self.landmarker(self._scaled(crops))
        return (raw.float().cpu().numpy(), presence[:, 0].float().cpu().numpy(),
                left[:, 0].float().cpu().numpy())

    def palms(self, images: np.ndarray, min_score: float
              ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        raw_boxes, logits = self.palm_outputs(images)
        return [decode_palms(boxes, scores, self._anchors, min_score)
                for boxes, scores in zip(raw_boxes, logits, strict=True)]

    def landmarks(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.landmark_outputs(crops)


class HandTracker:
    """MediaPipe Hands over the frames of one video, in video (tracking) mode.

    Args:
        networks: the palm and landmark networks (``TorchHandNetworks``, or the same
            networks on an inference actor).
        max_hands: most hands tracked.
        min_detection_confidence: palm score threshold.
        min_tracking_confidence: hand presence threshold.
        static_images: detect palms on every frame (no tracking), as for unrelated images.
    """

    def __init__(self, networks: HandNetworks, *, max_hands: int = 2,
                 min_detection_confidence: float = 0.5, min_tracking_confidence: float = 0.5,
                 static_images: bool = False) -> None:
        self.networks = networks
        self.max_hands = max_hands
        self.min_detection_confidence = min_detection_confidence
        self.min_tracking_confidence = min_tracking_confidence
        self.static_images = static_images
        self._tracked: list[np.ndarray] = []
        self._palms_last_frame = False

    def reset(self) -> None:
        """Forget tracked hands (a new video starts)."""
        self._tracked = []
        self._palms_last_frame = False

    def detect_palms(self, frames: np.ndarray) -> list[list[Palm]]:
        """Palms on each of (N, H, W, 3) uint8 RGB frames, best first, at most
        ``max_hands`` per frame; the palm network runs once on all N."""
        height, width = frames.shape[1:3]
        region, padding = letterbox(width, height)
        images = np.concatenate([sample_regions(f, region[None], PALM_SIZE, zero_border=True)
                                 for f in frames])
        found = []
        for candidates in self.networks.palms(images, self.min_detection_confidence):
            palms = []
            for score, box, points in weighted_nms(*candidates)[: self.max_hands]:
                frame_box, frame_points = remove_letterbox(box, points, padding)
                palms.append(Palm(score=score, box=frame_box, keypoints=frame_points))
            found.append(palms)
        return found

    def landmarks(self, frame: np.ndarray, regions: list[np.ndarray]) -> list[Hand | None]:
        """The landmark network on regions of one (H, W, 3) uint8 RGB frame, all regions in
        one batch; None where no hand."""
        if not regions:
            return []
        crops = sample_regions(frame, np.stack(regions), LANDMARK_SIZE, zero_border=False)
        raw, presence, left = self.networks.landmarks(crops)
        hands: list[Hand | None] = []
        for i, region in enumerate(regions):
            if not presence[i] > self.min_tracking_confidence:
                hands.append(None)
                continue
            is_left = left[i] >= 0.5
            hands.append(Hand(
                landmarks=project_landmarks(raw[i], region),
                label="Left" if is_left else "Right",
                label_score=float(left[i] if is_left else 1.0 - left[i]),
                presence=float(presence[i]),
                region=region,
            ))
        return hands

    def process(self, frames: np.ndarray) -> list[list[Hand]]:
        """Hands on consecutive frames of one video, continuing its tracked hands.

        Args:
            frames: (N, H, W, 3) uint8 RGB.

        Returns:
            Per frame, its hands in MediaPipe's output order.

        Palms depend on the frame alone, not on what is tracked: when a frame needs palm
        detection and so did the one before it, the next ``PALM_BATCH`` frames are
        detected with it in one batch, and used as far as those frames need palms too
        (with fewer hands in view than ``max_hands``, every frame does). A frame that
        needs palms after one that did not is detected alone: most often its hands are
        tracked from the next frame on, and palms detected ahead would go unused.
        """
        frames = np.ascontiguousarray(frames)
        height, width = frames.shape[1:3]
        palms_ahead: dict[int, list[Palm]] = {}
        results = []
        for index, frame in enumerate(frames):
            tracked = [] if self.static_images else self._tracked
            from_palms: list[np.ndarray] = []
            needs_palms = len(tracked) < self.max_hands
            if needs_palms:
                if index not in palms_ahead:
                    ahead = PALM_BATCH if self._palms_last_frame else 1
                    batch = frames[index:index + ahead]
                    palms_ahead = dict(enumerate(self.detect_palms(batch), start=index))
                from_palms = [palm_region(p, width, height) for p in palms_ahead[index]]
            self._palms_last_frame = needs_palms
            regions = associate_regions(from_palms, tracked)
            hands = [h for h in self.landmarks(frame, regions) if h is not None]
            self._tracked = [landmarks_region(h.landmarks, width, height) for h in hands]
            results.append(hands)
        return results
