"""One video, start to finish: decode, detect, track, crop, infer, map back, smooth.

:func:`process_video` is a plain function: the Ray runner calls it inside a
task with an actor-pool inference client, tests call it in-process. It never
raises for a problem with the video itself: those become a ``failed`` outcome
with a one-line reason.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from hflpipe.model.crop import crop_hand_object
from hflpipe.pipeline.camera import default_intrinsics
from hflpipe.pipeline.config import RunConfig
from hflpipe.pipeline.decode import Decoder, VideoInfo, get_decoder
from hflpipe.pipeline.detection import Detection, Detector
from hflpipe.pipeline.detectors import detector_for
from hflpipe.pipeline.errors import HflpipeError
from hflpipe.pipeline.frame_mapping import crops_to_frame
from hflpipe.pipeline.hand_pose import fit_root_translation, mirror_mano_pose, mirror_points3d
from hflpipe.pipeline.inference import InferenceClient
from hflpipe.pipeline.inputs import VideoInput
from hflpipe.pipeline.object_poses import solve_object_poses
from hflpipe.pipeline.run_context import RunContext
from hflpipe.pipeline.track_tables import hand_table, object_table
from hflpipe.pipeline.tracking import TrackingConfig, pair_hands_with_objects, track

log = logging.getLogger(__name__)

#: Batches a video keeps in flight while it decodes and crops the next ones.
MAX_IN_FLIGHT = 2

Report = Callable[[int, int], None]


@dataclass
class VideoOutcome:
    """A video's tables (None when it failed) and its ``videos`` row."""

    video_id: str
    video_row: dict[str, Any]
    hands: pa.Table | None = None
    objects: pa.Table | None = None


@dataclass(frozen=True)
class CropJob:
    """One hand-object pair on one frame: what the network is run on."""

    frame_index: int
    hand: Detection
    obj: Detection | None


def base_row(video: VideoInput, context: RunContext) -> dict[str, Any]:
    """The ``videos`` row fields known before anything is decoded."""
    row: dict[str, Any] = {
        "video_id": video.video_id,
        "path": str(video.path),
        "config_hash": context.config_hash,
        "started_at": dt.datetime.now(dt.UTC),
    }
    with contextlib.suppress(OSError):
        row["size_bytes"] = video.path.stat().st_size
    return row


def failed_outcome(
    video: VideoInput, context: RunContext, error: str, row: dict[str, Any] | None = None
) -> VideoOutcome:
    """A ``failed`` outcome with a one-line error."""
    row = dict(row or base_row(video, context))
    row.update(status="failed", error=" ".join(str(error).split()) or "unknown error")
    return VideoOutcome(video.video_id, row)


def process_video(
    video: VideoInput,
    config: RunConfig,
    context: RunContext,
    inference: InferenceClient,
    report: Report | None = None,
) -> VideoOutcome:
    """Process one video; problems with the video come back as a ``failed`` outcome."""
    row = base_row(video, context)
    try:
        return _process(video, config, context, inference, report or _no_report, row)
    except HflpipeError as exc:
        return failed_outcome(video, context, str(exc), row)


def _no_report(done: int, total: int) -> None:
    return None


def _process(
    video: VideoInput, config: RunConfig, context: RunContext, inference: InferenceClient,
    report: Report, row: dict[str, Any],
) -> VideoOutcome:
    path = str(video.path)
    decoder = get_decoder(config.decoder)
    info = decoder.probe(path)
    camera = context.intrinsics or default_intrinsics(info.width, info.height, config.hfov_deg)
    row.update(
        content_sha256=sha256_of(video.path), fps=info.fps, width=info.width,
        height=info.height, duration_s=info.duration_s, decoder=decoder.name,
        intrinsics=camera.K, intrinsics_source=camera.source,
    )
    detector = detector_for(config, context, video.path)
    try:
        indices, detections, decoded = _detect(decoder, detector, path, config, info, report)
    finally:
        detector.close()
    tracked = track(indices, detections, TrackingConfig(max_gap=config.max_gap))
    jobs = [
        CropJob(int(frame_index), frame[h], frame[o] if o is not None else None)
        for frame_index, frame in zip(indices.tolist(), tracked, strict=True)
        for h, o in pair_hands_with_objects(frame)
    ]
    crops = _infer(decoder, path, config, jobs, inference, report, len(indices))
    hands = _hand_observations(jobs, crops, camera.K)
    objects = solve_object_poses(jobs, crops, camera.K, context)
    row.update(
        status="ok",
        num_frames=decoded if decoded is not None else info.num_frames,
        frames_processed=len(indices),
        hand_tracks=len(np.unique(hands["track_id"])),
        object_tracks=len(np.unique(objects["track_id"])),
    )
    return VideoOutcome(
        video.video_id, row,
        hand_table(video.video_id, hands, config, context.metadata, inference),
        object_table(video.video_id, objects, config, context.metadata),
    )


def sha256_of(path: Path, block: int = 1 << 20) -> str:
    """SHA-256 of a file's bytes, streamed."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(block):
            digest.update(chunk)
    return digest.hexdigest()


def _detect(
    decoder: Decoder, detector: Detector, path: str, config: RunConfig, info: VideoInfo,
    report: Report,
) -> tuple[np.ndarray, list[list[Detection]], int | None]:
    """Detections on every selected frame: (frame indices, detections, frames decoded or None)."""
    if not detector.needs_frames:
        indices = _select_without_decoding(info, config)
        return indices, detector.detect(indices, indices / max(info.fps, 1e-9), None), None
    all_indices, all_detections = [], []
    for chunk in decoder.read_chunks(path, chunk_size=config.chunk_size, stride=config.stride,
                                     start_s=config.start_s, end_s=config.end_s):
        all_indices.append(chunk.indices)
        all_detections.extend(detector.detect(chunk.indices, chunk.timestamps_s, chunk.frames))
        report(sum(len(i) for i in all_indices) // 2, info.num_frames)
    indices = np.concatenate(all_indices) if all_indices else np.zeros(0, np.int64)
    if len(indices) == 0:
        raise HflpipeError(f"{path}: no frames decoded in the selected range")
    return indices, all_detections, len(indices) * config.stride


def _select_without_decoding(info: VideoInfo, config: RunConfig) -> np.ndarray:
    """The frames a decoder would select, from the frame count and the average rate."""
    indices = np.arange(info.num_frames, dtype=np.int64)
    times = indices / max(info.fps, 1e-9)
    keep = np.ones(len(indices), dtype=bool)
    if config.start_s is not None:
        keep &= times >= config.start_s
    if config.end_s is not None:
        keep &= times < config.end_s
    return indices[keep][:: config.stride]


def _infer(
    decoder: Decoder, path: str, config: RunConfig, jobs: list[CropJob],
    inference: InferenceClient, report: Report, total_frames: int,
) -> dict[str, np.ndarray]:
    """Crop every job's frame region, run the network in batches; per-job arrays in job order."""
    if not jobs:
        return {}
    by_frame: dict[int, list[int]] = {}
    for position, job in enumerate(jobs):
        by_frame.setdefault(job.frame_index, []).append(position)
    frames_needed = sorted(by_frame)
    batch: dict[str, list[Any]] = _empty_batch()
    pending: deque[tuple[Any, dict[str, np.ndarray]]] = deque()
    outputs: list[dict[str, np.ndarray]] = []
    done = 0

    def collect() -> None:
        handle, meta = pending.popleft()
        outputs.append(inference.result(handle) | meta)

    def flush() -> None:
        if batch["images"]:
            stacked = _stack(batch)
            inputs = {key: stacked.pop(key) for key in _MODEL_INPUTS}
            pending.append((inference.submit(inputs), stacked))
            batch.update(_empty_batch())
        while len(pending) > MAX_IN_FLIGHT:
            collect()

    for chunk in decoder.read_chunks(path, chunk_size=config.chunk_size,
                                     frame_indices=frames_needed):
        for frame_index, timestamp, frame in zip(
            chunk.indices.tolist(), chunk.timestamps_s.tolist(), chunk.frames, strict=True
        ):
            for position in by_frame.pop(frame_index, []):
                job = jobs[position]
                obj_box = job.obj.box if job.obj is not None else job.hand.box
                crop = crop_hand_object(frame, job.hand.box, obj_box,
                                        mirror=job.hand.handedness == "left")
                batch["images"].append(crop.image)
                batch["hand_boxes"].append(crop.hand_box)
                batch["object_boxes"].append(crop.object_box)
                batch["affine"].append(crop.affine)
                batch["mirrored"].append(crop.mirrored)
                batch["frame_width"].append(crop.frame_width)
                batch["timestamp_s"].append(timestamp)
                batch["position"].append(position)
                if len(batch["images"]) >= config.batch_size:
                    flush()
        done += len(chunk)
        report(total_frames // 2 + done * total_frames // max(2 * len(frames_needed), 1),
               total_frames)
    if by_frame:
        missing = sorted(by_frame)[:5]
        raise HflpipeError(f"{path}: frames {missing} could not be decoded for cropping")
    flush()
    while pending:
        collect()
    merged = {key: np.concatenate([o[key] for o in outputs]) for key in outputs[0]}
    order = np.argsort(merged.pop("position"), kind="stable")
    return {key: value[order] for key, value in merged.items()}


_MODEL_INPUTS = ("images", "hand_boxes", "object_boxes")
_CROP_META = ("affine", "mirrored", "frame_width", "timestamp_s", "position")


def _empty_batch() -> dict[str, list[Any]]:
    return {key: [] for key in (*_MODEL_INPUTS, *_CROP_META)}


def _stack(batch: dict[str, list[Any]]) -> dict[str, np.ndarray]:
    return {key: np.stack(values) for key, values in batch.items()}


def _hand_observations(
    jobs: list[CropJob], crops: dict[str, np.ndarray], K: np.ndarray
) -> dict[str, np.ndarray]:
    """Per-crop hand results in frame pixels and the camera frame (one row per job)."""
    n = len(jobs)
    if n == 0:
        return {"track_id": np.zeros(0, np.int32)}
    mirrored = crops["mirrored"].astype(bool)
    joints2d = crops_to_frame(crops["joints2d"], crops["affine"], mirrored, crops["frame_width"])
    joints_rel = crops["joints3d"].astype(np.float64)
    pose = crops["mano_pose"].astype(np.float64)
    joints_rel[mirrored] = mirror_points3d(joints_rel[mirrored])
    pose[mirrored] = mirror_mano_pose(pose[mirrored])
    confidence = crops["joint_confidence"]
    translation = fit_root_translation(joints_rel, joints2d, K, weights=confidence)
    return {
        "frame_index": np.array([j.frame_index for j in jobs], np.int64),
        "timestamp_s": crops["timestamp_s"].astype(np.float64),
        "track_id": np.array([j.hand.track_id for j in jobs], np.int32),
        "handedness": np.array([j.hand.handedness or "right" for j in jobs]),
        "box": np.stack([j.hand.box for j in jobs]).astype(np.float32),
        "detector_score": np.array([j.hand.score for j in jobs], np.float32),
        "confidence": confidence.mean(axis=1).astype(np.float32),
        "joints2d": joints2d,
        "joints_rel": joints_rel,
        "mano_pose": pose,
        "mano_shape": crops["mano_shape"].astype(np.float64),
        "translation": translation,
        "mirrored": mirrored,
    }
