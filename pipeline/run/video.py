"""One video, start to finish: decode, detect, track, crop, infer, map back, smooth.

:func:`process_video` is a plain function: the Ray runner calls it inside a
task with an actor-pool inference client, tests call it in-process. It never
raises for a problem with the video itself: those become a ``failed`` outcome
with a one-line reason.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from hflpipe.hashing import file_stamp
from hflpipe.model.geometry import mirror_mano_pose, mirror_points3d
from hflpipe.pipeline.common import storage
from hflpipe.pipeline.common.errors import HflpipeError, one_line
from hflpipe.pipeline.config.run_config import RunConfig
from hflpipe.pipeline.crop.batch import HandObjectPair
from hflpipe.pipeline.crop.to_frame import crops_to_frame
from hflpipe.pipeline.decode.base import Decoder, VideoInfo, get_decoder
from hflpipe.pipeline.detect.base import Detection, Detector
from hflpipe.pipeline.detect.frame_boxes import MIN_BOX_SIDE_PX, clip_to_frame
from hflpipe.pipeline.infer.batching import BatchedInference
from hflpipe.pipeline.infer.client import InferenceClient
from hflpipe.pipeline.inputs.camera import default_intrinsics, intrinsics_for_video
from hflpipe.pipeline.inputs.videos import VideoInput
from hflpipe.pipeline.pose.hands import fit_root_translation
from hflpipe.pipeline.pose.objects import solve_object_poses
from hflpipe.pipeline.run.context import RunContext
from hflpipe.pipeline.run.worker_cache import hand_layer, video_detector
from hflpipe.pipeline.smooth.tables import TableSettings, video_tables
from hflpipe.pipeline.track.propagation import keyframe_mask, propagate_video
from hflpipe.pipeline.track.tracker import TrackingConfig, pair_hands_with_objects, track

log = logging.getLogger(__name__)

#: Batches a video keeps in flight while it decodes and crops the next ones.
MAX_IN_FLIGHT = 2
#: Most bytes of decoded frames one read holds: ``chunk_size`` is lowered for large frames,
#: so a 4K video (25 MB a frame) reads 2 frames at a time instead of 64 (1.6 GB).
MAX_CHUNK_BYTES = 64 * 1024 * 1024

Report = Callable[[int, int], None]


@dataclass
class VideoOutcome:
    """A video's tables (None when it failed or the task wrote them) and its ``videos`` row
    (``notes``: the warnings its processing logged)."""

    video_id: str
    video_row: dict[str, Any]
    hands: pa.Table | None = None
    objects: pa.Table | None = None
    #: Set once the task wrote the tables itself (then ``hands``/``objects`` are None).
    data_written: bool = False
    hand_rows: int = 0
    object_rows: int = 0

#: (frame index, one-line cause) of a crop the model failed on.
CropFailure = tuple[int, str]


def base_row(video: VideoInput, context: RunContext) -> dict[str, Any]:
    """The ``videos`` row fields known before anything is decoded."""
    row: dict[str, Any] = {
        "video_id": video.video_id,
        "path": str(video.path),
        "config_hash": context.config_hash,
        "inputs_sha256": context.inputs_sha256,
        "started_at": dt.datetime.now(dt.UTC),
    }
    if not storage.is_url(video.path):
        with contextlib.suppress(OSError):
            stamp = file_stamp(video.path)
            row.update(size_bytes=stamp.size_bytes, mtime_ns=stamp.mtime_ns,
                       sample_sha256=stamp.sample_sha256)
    return row


def failed_outcome(
    video: VideoInput, context: RunContext, error: str, row: dict[str, Any] | None = None
) -> VideoOutcome:
    """A ``failed`` outcome with a one-line error that starts with the input's path."""
    row = dict(row or base_row(video, context))
    message = one_line(error) or "unknown error"
    if not message.startswith(str(video.path)):
        message = f"{video.path}: {message}"
    row.update(status="failed", error=message)
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
    report = report or _no_report
    # The first heartbeat starts the driver's stall clock only once the task really runs.
    report(0, 0)
    notes: list[str] = []
    try:
        with decoder_input(video.path, config) as local:
            row.setdefault("size_bytes", _size_bytes(local))
            with collected_warnings(notes, str(video.path), str(local)):
                try:
                    outcome = _process(replace(video, path=local), config, context, inference,
                                       report, row)
                except HflpipeError as exc:
                    # Messages name the file read, the scratch copy: the user knows the URL.
                    raise type(exc)(str(exc).replace(str(local), str(video.path))) from None
    except HflpipeError as exc:
        outcome = failed_outcome(video, context, str(exc), row)
    outcome.video_row["notes"] = notes
    return outcome


def decoder_input(path: storage.Location, config: RunConfig
                  ) -> contextlib.AbstractContextManager[storage.Location]:
    """What the decoder reads for ``path``: the path itself (a local file, or a store URL
    the PyAV backend streams), else a scratch copy removed when the block ends.

    decord opens files by name only, so a store video is copied for it, as for
    ``remote_videos: copy`` (a store that answers ranged reads slowly).
    """
    if storage.is_url(path) and config.decoder == "pyav" and config.remote_videos == "stream":
        return contextlib.nullcontext(path)
    return storage.scratch_copy(path, int(config.scratch_limit_gb * 1e9))


def _size_bytes(location: storage.Location) -> int | None:
    if storage.is_url(location):
        return storage.file_info(location).size
    return Path(location).stat().st_size


class _NoteHandler(logging.Handler):
    """Keeps the warnings logged while one video is processed, without its path prefix."""

    def __init__(self, notes: list[str], paths: tuple[str, ...]) -> None:
        super().__init__(logging.WARNING)
        self._prefixes = [f"{path}: " for path in paths]
        self._notes = notes

    def emit(self, record: logging.LogRecord) -> None:
        note = one_line(record.getMessage())
        for prefix in self._prefixes:
            note = note.removeprefix(prefix)
        if note not in self._notes:
            self._notes.append(note)


@contextlib.contextmanager
def collected_warnings(notes: list[str], *paths: str) -> Iterator[None]:
    """The warnings hflpipe logs inside the block, appended to ``notes`` (the video's) without
    the prefix naming the video (any of ``paths``: the input, its local copy).

    Inside a Ray task they would go to the worker's log, which the user never sees; the
    driver prints the notes instead, once each, with the video's name.
    """
    handler = _NoteHandler(notes, paths)
    logger = logging.getLogger("hflpipe")
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)


def _no_report(done: int, total: int) -> None:
    return None


def _process(
    video: VideoInput, config: RunConfig, context: RunContext, inference: InferenceClient,
    report: Report, row: dict[str, Any],
) -> VideoOutcome:
    path = str(video.path)
    # Ray reserved cpus_per_task cores for this task; the libraries' own choice would be
    # a thread per core of the machine in every one of the concurrent tasks.
    decoder = get_decoder(config.decoder, threads=max(1, int(config.cpus_per_task)),
                          stream=config.stream)
    info = decoder.probe(path)
    # Width, height, boxes, intrinsics and outputs are all those of the displayed frame.
    camera = (intrinsics_for_video(context.intrinsics, info.width, info.height)
              if context.intrinsics is not None
              else default_intrinsics(info.width, info.height, config.hfov_deg))
    row.update(
        content_sha256=storage.sha256(video.path), fps=info.fps, width=info.width,
        height=info.height, duration_s=info.duration_s, decoder=info.backend,
        stream_index=info.stream_index, rotation_deg=info.rotation_deg, mirrored=info.mirrored,
        intrinsics=camera.K, intrinsics_source=camera.source,
    )
    chunk_frames = frames_per_chunk(config.chunk_size, info.width, info.height)
    if context.boxes is not None:
        past = int(np.count_nonzero(context.boxes.frame_index >= info.num_frames))
        if past:
            log.warning("%s: %d boxes file rows are for frames past the video's last frame "
                        "(%d); they are ignored", path, past, info.num_frames - 1)
    with video_detector(config, context, video.path, inference) as detector:
        indices, keyframes, detections, decoded = _detect(
            decoder, detector, path, config, info, chunk_frames, report
        )
    detections, row["boxes_dropped"] = clip_to_frame(detections, info.width, info.height)
    if row["boxes_dropped"]:
        log.warning("%s: %d boxes dropped: outside the %dx%d frame, or under %g px once "
                    "clipped to it", path, row["boxes_dropped"], info.width, info.height,
                    MIN_BOX_SIDE_PX)
    # The tracker counts frame indices; max_gap counts detector runs.
    step = config.stride * config.detect_every
    tracked = track(keyframes, detections,
                    TrackingConfig(max_gap=(config.max_gap + 1) * step - 1))
    seeds = [
        HandObjectPair(int(frame_index), frame[h], frame[o] if o is not None else None,
                       detected_handedness=raw[h].handedness,
                       contact_state=raw[h].contact_state)
        for frame_index, frame, raw in zip(keyframes.tolist(), tracked, detections, strict=True)
        for h, o in pair_hands_with_objects(frame, contact_states=config.contact_states)
    ]
    if config.detect_every == 1:
        jobs, crops, failed = _infer(decoder, path, config, chunk_frames, seeds, inference,
                                     report, len(indices), info.num_frames)
    else:
        jobs, crops, failed = _propagate(decoder, path, config, chunk_frames, indices, seeds,
                                         inference, report)
    failed_frames = sorted({frame_index for frame_index, _ in failed})
    if failed:
        if not jobs:
            raise HflpipeError(
                f"{path}: the model failed on all {len(failed)} crops ({failed[0][1]})"
            )
        log.warning("%s: the model failed on %d crops (frames %s; their rows are missing or "
                    "interpolated): %s", path, len(failed), failed_frames, failed[0][1])
    hands = _hand_observations(jobs, crops, camera.K)
    objects = solve_object_poses(jobs, crops, camera.K, context.object_name,
                                 context.control_points)
    for obs in (hands, objects):
        obs["position"] = np.searchsorted(indices, obs.get("frame_index", np.zeros(0, int)))
    settings = TableSettings(max_gap=config.max_gap,
                             smoothing_cutoff_hz=config.smoothing_cutoff_hz,
                             with_vertices=config.with_vertices)
    hand_rows, object_rows = video_tables(
        video.video_id, indices, hands, objects, settings, context.metadata,
        hand_layer(context.predictor_settings.checkpoint), context.control_points,
    )
    row.update(
        status="ok",
        num_frames=decoded if decoded is not None else info.num_frames,
        frames_processed=len(indices),
        hand_tracks=len(np.unique(hands["track_id"])),
        object_tracks=len(np.unique(objects["track_id"])),
        failed_crops=len(failed),
    )
    return VideoOutcome(video.video_id, row, hand_rows, object_rows)


def _propagate(
    decoder: Decoder, path: str, config: RunConfig, chunk_frames: int, indices: np.ndarray,
    seeds: list[HandObjectPair], inference: InferenceClient, report: Report,
) -> tuple[list[HandObjectPair], dict[str, np.ndarray], list[CropFailure]]:
    """Detector boxes on keyframes, boxes propagated from the predictions in between."""
    keyframes: dict[int, list[HandObjectPair]] = {}
    for job in seeds:
        keyframes.setdefault(job.frame_index, []).append(job)
    done = 0

    def progress(frames: int) -> None:
        nonlocal done
        done += frames
        report(len(indices) // 2 + done // 2, len(indices))

    result = propagate_video(
        decoder.read_chunks(path, chunk_size=chunk_frames, frame_indices=indices.tolist()),
        keyframes, inference, video=path, batch_size=config.batch_size, progress=progress,
    )
    return result.jobs, result.outputs, result.failed


def frames_per_chunk(chunk_size: int, width: int, height: int) -> int:
    """``chunk_size`` lowered so that one chunk of RGB frames fits in :data:`MAX_CHUNK_BYTES`."""
    return max(1, min(chunk_size, MAX_CHUNK_BYTES // max(1, width * height * 3)))


def _stopped_early(path: str, next_frame: int, listed: int) -> HflpipeError:
    return HflpipeError(
        f"{path}: decoding stopped before frame {next_frame} although the container lists "
        f"{listed} frames (the file is damaged or cut short)"
    )


def _detect(
    decoder: Decoder, detector: Detector, path: str, config: RunConfig, info: VideoInfo,
    chunk_frames: int, report: Report,
) -> tuple[np.ndarray, np.ndarray, list[list[Detection]], int | None]:
    """Run the detector on the keyframes (every ``detect_every``-th selected frame).

    Returns the selected frame indices, the keyframe indices, the keyframes' detections
    and the number of frames decoded (None when the detector needs no pixels).
    """
    if not detector.needs_frames:
        indices = _select_without_decoding(info, config)
        keys = indices[keyframe_mask(0, len(indices), config.detect_every)]
        return indices, keys, detector.detect(keys, keys / max(info.fps, 1e-9), None), None
    all_indices, all_keys, all_detections = [], [], []
    position = 0
    start_s, end_s = presentation_range(decoder, path, config.start_s, config.end_s)
    for chunk in decoder.read_chunks(path, chunk_size=chunk_frames, stride=config.stride,
                                     start_s=start_s, end_s=end_s):
        mask = keyframe_mask(position, len(chunk), config.detect_every)
        position += len(chunk)
        all_indices.append(chunk.indices)
        all_keys.append(chunk.indices[mask])
        if mask.any():
            all_detections.extend(detector.detect(chunk.indices[mask],
                                                  chunk.timestamps_s[mask], chunk.frames[mask]))
        report(position // 2, info.num_frames)
    indices = np.concatenate(all_indices) if all_indices else np.zeros(0, np.int64)
    if len(indices) == 0:
        if config.start_s is None and config.end_s is None:
            raise HflpipeError(f"{path}: no frame could be decoded")
        _warn_empty_selection(path, config, info)
        return indices, indices, [], 0
    # The decoders end a read quietly at the first undecodable frame; a video that stops
    # short of what its container lists is damaged, and half a video must not pass as whole.
    if config.end_s is None and indices[-1] + config.stride < info.num_frames:
        raise _stopped_early(path, int(indices[-1]) + config.stride, info.num_frames)
    return indices, np.concatenate(all_keys), all_detections, len(indices) * config.stride


def _select_without_decoding(info: VideoInfo, config: RunConfig) -> np.ndarray:
    """The frames a decoder would select, from the frame count and the average rate."""
    indices = np.arange(info.num_frames, dtype=np.int64)
    times = indices / max(info.fps, 1e-9)
    keep = np.ones(len(indices), dtype=bool)
    if config.start_s is not None:
        keep &= times >= config.start_s
    if config.end_s is not None:
        keep &= times < config.end_s
    selected = indices[keep][:: config.stride]
    if len(selected) == 0 and len(indices) > 0:
        _warn_empty_selection(info.path, config, info)
    return selected


def presentation_range(
    decoder: Decoder, path: str, start_s: float | None, end_s: float | None
) -> tuple[float | None, float | None]:
    """``--start``/``--end`` (seconds from the video's first frame) as presentation times.

    Decoders select by the container's times, where the first frame may be at 10 s (a clip
    cut from a longer recording); a boxes file counts from the first frame. Shifting by the
    first frame's time gives both the same meaning.
    """
    if start_s is None and end_s is None:
        return None, None
    with contextlib.closing(decoder.read_chunks(path, chunk_size=1, frame_indices=[0])) as read:
        first = next(read, None)
    offset = float(first.timestamps_s[0]) if first is not None and len(first) else 0.0
    return (None if start_s is None else start_s + offset,
            None if end_s is None else end_s + offset)


def _warn_empty_selection(path: str, config: RunConfig, info: VideoInfo) -> None:
    chosen = " ".join(f"{flag} {value:g} s" for flag, value in
                      (("--start", config.start_s), ("--end", config.end_s)) if value is not None)
    log.warning("%s: no frames in the selected range (%s; the video is %.2f s long from its "
                "first frame)", path, chosen, info.duration_s)


def _infer(
    decoder: Decoder, path: str, config: RunConfig, chunk_frames: int, jobs: list[HandObjectPair],
    inference: InferenceClient, report: Report, total_frames: int, listed_frames: int,
) -> tuple[list[HandObjectPair], dict[str, np.ndarray], list[CropFailure]]:
    """Crop every job's frame region and run the network in batches.

    Returns the jobs the model ran on, their per-job arrays in the same order, and the
    crops it failed on (see :class:`~hflpipe.pipeline.infer.batching.BatchedInference`).
    """
    if not jobs:
        return [], {}, []
    by_frame: dict[int, list[int]] = {}
    for position, job in enumerate(jobs):
        by_frame.setdefault(job.frame_index, []).append(position)
    frames_needed = sorted(by_frame)
    progress = 0

    def heartbeat() -> None:
        report(progress, total_frames)

    runner = BatchedInference(inference, config.batch_size, MAX_IN_FLIGHT, on_batch=heartbeat)
    done = 0
    for chunk in decoder.read_chunks(path, chunk_size=chunk_frames,
                                     frame_indices=frames_needed):
        for frame_index, timestamp, frame in zip(
            chunk.indices.tolist(), chunk.timestamps_s.tolist(), chunk.frames, strict=True
        ):
            for position in by_frame.pop(frame_index, []):
                runner.add(frame, jobs[position], timestamp, key=position)
        done += len(chunk)
        progress = total_frames // 2 + done * total_frames // max(2 * len(frames_needed), 1)
        heartbeat()
    if by_frame:
        raise _stopped_early(path, min(by_frame), listed_frames)
    results = runner.finish()
    failed = [(jobs[key].frame_index, cause) for key, cause in sorted(results.failed.items())]
    return [jobs[key] for key in results.keys.tolist()], results.outputs, failed


def _hand_observations(
    jobs: list[HandObjectPair], crops: dict[str, np.ndarray], K: np.ndarray
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
        "detected_handedness": np.array([j.detected_handedness for j in jobs], dtype=object),
        "contact_state": np.array([j.contact_state for j in jobs], dtype=object),
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
