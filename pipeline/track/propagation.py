"""Box propagation: detection on keyframes, boxes from the network's predictions in between.

With ``detect_every = N`` the detector looks at every N-th selected frame (a
keyframe). Each hand-object pair found there is then followed through the
next frames by the network itself: the hand box for a frame is the box around
the hand's 2D joints predicted on the previous frame, the object box the box
around the object's 21 predicted keypoints (the projected control points).
A pair is followed until the next keyframe, where the detector's boxes take
over, or until its hand box leaves the frame.

Batching: a frame's boxes depend on the previous frame's predictions, so the
frames of one run from a keyframe (a *segment*) are processed one after the
other, but segments do not depend on each other. A chunk of decoded frames is
split into segments at its keyframes and step ``j`` of every segment (the
``j``-th frame after its keyframe) goes to the network in one batch: a chunk
of C frames takes about N sequential steps of ``C / N`` segments' crops each.
A segment that runs past the end of a chunk is carried into the next chunk.
With ``detect_every = 1`` every frame is a keyframe and this is plain per-frame
inference: one step per chunk, its batches all in flight at once.

Jobs are the pipeline's per-crop records (``crop.batch.HandObjectPair``: ``frame_index``,
``hand``, ``obj``); new ones are made with :func:`dataclasses.replace`, so the
jobs returned are of the seeds' own type, and a propagated detection keeps the
track id, handedness and score of the keyframe detection it descends from.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from hflpipe.pipeline.common.errors import InputError
from hflpipe.pipeline.crop.batch import HandObjectPair
from hflpipe.pipeline.crop.to_frame import crops_to_frame
from hflpipe.pipeline.decode.base import FrameChunk
from hflpipe.pipeline.detect.frame_boxes import usable_boxes
from hflpipe.pipeline.infer.batching import BatchedInference
from hflpipe.pipeline.infer.client import InferenceClient

#: Margin around the predicted hand joints, per side, as a fraction of their extent. The
#: MediaPipe detector boxes the same 21 hand joints with this margin (its default
#: ``box_margin``), so a propagated hand box has the size a detected one would.
HAND_MARGIN = 0.1
#: Margin around the object keypoints: none. The reference's object box is the tight box
#: of the 21 projected control points, and so are the demo scene's boxes.
OBJECT_MARGIN = 0.0
def points_box(points: np.ndarray, margin: float, frame_size: tuple[int, int]) -> np.ndarray:
    """Boxes around point sets, grown by a margin and clipped to the frame.

    Args:
        points: ``(N, P, 2)`` frame pixels.
        margin: each side moves out by ``margin`` times the points' extent on that axis.
        frame_size: ``(width, height)`` in pixels; boxes are clipped to ``[0, width] x
            [0, height]``, as the detectors clip theirs.

    Returns:
        ``(N, 4)`` float32 xyxy frame pixels (NaN where a point set has a NaN).
    """
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim != 3 or pts.shape[2] != 2:
        raise ValueError(f"points must have shape (N, P, 2), got {pts.shape}")
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    low, high = pts.min(axis=1), pts.max(axis=1)
    grow = (high - low) * margin
    limit = np.asarray(frame_size, dtype=np.float64)
    low = np.clip(low - grow, 0.0, limit)
    high = np.clip(high + grow, 0.0, limit)
    return np.concatenate([low, high], axis=1).astype(np.float32)


def keyframe_mask(first_position: int, count: int, detect_every: int) -> np.ndarray:
    """Which selected frames are keyframes: every ``detect_every``-th, from the first.

    Args:
        first_position: position of the first of these frames among the video's
            selected frames (0 for the first selected frame).
        count: number of frames.
        detect_every: detector interval N (1: every frame is a keyframe).

    Returns:
        ``(count,)`` bool.
    """
    if detect_every < 1:
        raise ValueError(f"detect_every must be >= 1, got {detect_every}")
    if first_position < 0 or count < 0:
        raise ValueError(f"first_position and count must be >= 0, got {first_position}, {count}")
    return (np.arange(first_position, first_position + count) % detect_every) == 0


@dataclass(frozen=True)
class Segment:
    """Consecutive frames of a chunk followed from one set of seed boxes.

    ``start``/``stop``: chunk positions ``[start, stop)``. ``seeds``: the jobs of the
    first frame, from the detector (``from_detector``) or carried from the previous chunk.
    """

    start: int
    stop: int
    seeds: tuple[HandObjectPair, ...]
    from_detector: bool


def plan_segments(
    frame_indices: np.ndarray,
    keyframes: Mapping[int, Sequence[HandObjectPair]],
    carried: Sequence[HandObjectPair] = (),
) -> list[Segment]:
    """Split a chunk's frames into segments, each starting at a keyframe.

    Args:
        frame_indices: ``(F,)`` increasing frame indices of the chunk.
        keyframes: frame index -> that keyframe's jobs (an empty list where the detector
            found nothing, which ends the pairs followed so far). Keys outside the chunk
            are ignored.
        carried: jobs for the chunk's first frame, carried from the previous chunk; used
            only when that frame is not a keyframe (their ``frame_index`` is replaced).

    Returns:
        Segments in frame order covering every position of the chunk.
    """
    indices = np.asarray(frame_indices, dtype=np.int64).tolist()
    starts = [p for p, index in enumerate(indices) if index in keyframes]
    if indices and (not starts or starts[0] != 0):
        starts.insert(0, 0)
    segments = []
    for start, stop in zip(starts, [*starts[1:], len(indices)], strict=True):
        index = indices[start]
        if index in keyframes:
            seeds, from_detector = tuple(keyframes[index]), True
        else:
            seeds = tuple(dataclasses.replace(job, frame_index=index) for job in carried)
            from_detector = False
        segments.append(Segment(start, stop, seeds, from_detector))
    return segments


@dataclass
class Propagation:
    """Jobs and the network's outputs for them, in frame order.

    Attributes:
        jobs: one per crop, sorted by frame index (stable: a frame's jobs keep their order).
        outputs: per-job arrays aligned with ``jobs``: the model outputs (see
            ``HflnetPredictor.__call__``) plus ``affine`` (n,3,3), ``mirrored`` (n,),
            ``frame_width`` (n,) and ``timestamp_s`` (n,) float64 seconds; empty when
            there are no jobs.
        from_detector: ``(n,)`` bool, True where the boxes are the detector's, False
            where they were propagated.
        carried: jobs still followed at the end of the last chunk, with the boxes for the
            next selected frame (their ``frame_index`` is the last frame's until then).
        failed: (frame index, one-line cause) of each crop the model failed on; such a
            pair is not followed further (the next keyframe may pick it up again).
    """

    jobs: list[HandObjectPair] = field(default_factory=list)
    outputs: dict[str, np.ndarray] = field(default_factory=dict)
    from_detector: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    carried: list[HandObjectPair] = field(default_factory=list)
    failed: list[tuple[int, str]] = field(default_factory=list)


def propagate_chunk(
    chunk: FrameChunk,
    keyframes: Mapping[int, Sequence[HandObjectPair]],
    inference: InferenceClient,
    *,
    carried: Sequence[HandObjectPair] = (),
    batch_size: int = 32,
    hand_margin: float = HAND_MARGIN,
    object_margin: float = OBJECT_MARGIN,
) -> Propagation:
    """Crop and run the network on every followed pair of one chunk, propagating boxes.

    Args:
        chunk: decoded frames (``(F, H, W, 3)`` uint8 RGB) with their indices and times.
        keyframes: frame index -> the jobs the detector gave there (see
            :func:`plan_segments`).
        inference: the model (``submit`` a batch of ``images``, ``hand_boxes``,
            ``object_boxes``; ``result`` gives the outputs of ``HflnetPredictor``). All
            batches of one step are submitted before the first result is awaited, so
            they run in parallel on an actor pool; a failing batch is split until the
            failing crops are found (:class:`BatchedInference`).
        carried: the previous chunk's ``Propagation.carried``.
        batch_size: most crops per batch.
        hand_margin, object_margin: margins of the propagated boxes (:func:`points_box`).

    Returns:
        A :class:`Propagation` for this chunk.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    segments = plan_segments(chunk.indices, keyframes, carried)
    frame_size = (int(chunk.frames.shape[2]), int(chunk.frames.shape[1]))
    current = [list(segment.seeds) for segment in segments]
    jobs: list[HandObjectPair] = []
    flags: list[np.ndarray] = []
    outputs: list[dict[str, np.ndarray]] = []
    carry: list[HandObjectPair] = []
    failed: list[tuple[int, str]] = []
    step = 0
    while any(current):
        requests = [(k, job) for k, followed in enumerate(current) for job in followed]
        runner = BatchedInference(inference, batch_size, max_in_flight=None)
        for i, (k, job) in enumerate(requests):
            position = segments[k].start + step
            runner.add(chunk.frames[position], job, chunk.timestamps_s[position], key=i)
        step_results = runner.finish()
        failed.extend((requests[i][1].frame_index, cause)
                      for i, cause in sorted(step_results.failed.items()))
        requests = [requests[i] for i in step_results.keys.tolist()]
        current = [[] for _ in segments]
        if not requests:
            break
        result = step_results.outputs
        hand_boxes, object_boxes = _next_boxes(result, frame_size, hand_margin, object_margin)
        jobs.extend(job for _, job in requests)
        flags.append(np.array([step == 0 and segments[k].from_detector for k, _ in requests]))
        outputs.append(result)
        for i, (k, job) in enumerate(requests):
            position = segments[k].start + step
            following = _follow(job, hand_boxes[i], object_boxes[i])
            if following is None:
                continue
            position += 1
            if position < segments[k].stop:
                next_index = int(chunk.indices[position])
                current[k].append(dataclasses.replace(following, frame_index=next_index))
            elif position == len(chunk):
                carry.append(following)
        step += 1
    if not jobs:
        return Propagation(carried=carry, failed=failed)
    order = np.argsort([job.frame_index for job in jobs], kind="stable")
    merged = {key: np.concatenate([o[key] for o in outputs])[order] for key in outputs[0]}
    return Propagation(
        jobs=[jobs[i] for i in order],
        outputs=merged,
        from_detector=np.concatenate(flags)[order],
        carried=carry,
        failed=failed,
    )


def propagate_video(
    chunks: Iterable[FrameChunk],
    keyframes: Mapping[int, Sequence[HandObjectPair]],
    inference: InferenceClient,
    *,
    video: str,
    batch_size: int = 32,
    hand_margin: float = HAND_MARGIN,
    object_margin: float = OBJECT_MARGIN,
    progress: Callable[[int], None] | None = None,
) -> Propagation:
    """:func:`propagate_chunk` over a video's chunks, carrying pairs across chunk borders.

    Args:
        chunks: the selected frames in order (e.g. ``decoder.read_chunks(path,
            frame_indices=selected)``); every keyframe must be among them.
        keyframes: frame index -> the tracked, paired detector jobs of that keyframe.
        inference, batch_size, hand_margin, object_margin: as :func:`propagate_chunk`.
        video: the video's path, for error messages.
        progress: called after each chunk with the number of frames it held.

    Returns:
        A :class:`Propagation` over the whole video (``carried`` empty).

    Raises:
        InputError: a keyframe was not among the decoded frames.
    """
    parts: list[Propagation] = []
    carried: list[HandObjectPair] = []
    seen: set[int] = set()
    for chunk in chunks:
        part = propagate_chunk(chunk, keyframes, inference, carried=carried,
                               batch_size=batch_size, hand_margin=hand_margin,
                               object_margin=object_margin)
        carried = part.carried
        seen.update(chunk.indices.tolist())
        parts.append(part)
        if progress is not None:
            progress(len(chunk))
    missing = sorted(set(keyframes) - seen)
    if missing:
        raise InputError(f"{video}: keyframes {missing[:5]} could not be decoded for cropping")
    failed = [failure for part in parts for failure in part.failed]
    parts = [part for part in parts if part.jobs]
    if not parts:
        return Propagation(failed=failed)
    return Propagation(
        jobs=[job for part in parts for job in part.jobs],
        outputs={key: np.concatenate([p.outputs[key] for p in parts]) for key in parts[0].outputs},
        from_detector=np.concatenate([p.from_detector for p in parts]),
        failed=failed,
    )


def _next_boxes(
    result: dict[str, np.ndarray], frame_size: tuple[int, int], hand_margin: float,
    object_margin: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Hand and object boxes for the next frame, ``(n, 4)`` each, from one step's outputs."""
    mirrored = result["mirrored"].astype(bool)
    joints = crops_to_frame(result["joints2d"], result["affine"], mirrored,
                            result["frame_width"])
    keypoints = crops_to_frame(result["obj_keypoints"], result["affine"], mirrored,
                               result["frame_width"])
    return (points_box(joints, hand_margin, frame_size),
            points_box(keypoints, object_margin, frame_size))


def _follow(
    job: HandObjectPair, hand_box: np.ndarray, object_box: np.ndarray
) -> HandObjectPair | None:
    """The job for the next frame with the propagated boxes; None when the hand is lost.

    An object whose box is lost is dropped while its hand is still followed.
    """
    if not usable_boxes(hand_box)[0]:
        return None
    obj = job.obj
    if obj is not None:
        obj = dataclasses.replace(obj, box=object_box) if usable_boxes(object_box)[0] else None
    return dataclasses.replace(job, hand=dataclasses.replace(job.hand, box=hand_box), obj=obj)
