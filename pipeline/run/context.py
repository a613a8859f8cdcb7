"""What every video of a run shares (model settings, hashes, camera, object, boxes file),
what one video overrides, and the output folder the run owns.

Built once on the driver (so a bad checkpoint, MANO file, boxes file,
intrinsics or object name fails the run before any video starts); each video
task gets its own copy with only its rows of the boxes file and the hash of
what shaped its results besides the options (``inputs_sha256``: boxes rows,
intrinsics, object), which a re-run compares. A manifest row's own object,
intrinsics or boxes file gives that video a copy with those replaced and its
own config hash.

Output versions: ``OUT/_job.json`` records the config hash of the results in
``OUT``. A run whose config hashes differently refuses to mix its rows in; with
``new_version`` it writes to ``OUT/versions/<hash>/`` instead (the same layout).
``OUT/_hflpipe.lock`` keeps two runs from writing one folder at once. Both names
start with ``_``, so Parquet dataset readers skip them.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import hashlib
import json
import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from hflpipe import __version__
from hflpipe.jsonable import to_jsonable
from hflpipe.model.checkpoint import file_sha256, load_hflnet
from hflpipe.model.hand_object import load_hand_object_detector
from hflpipe.model.mano_file import load_mano_model
from hflpipe.pipeline.common import storage
from hflpipe.pipeline.common.errors import ConfigError, OutputError
from hflpipe.pipeline.config.run_config import RunConfig, result_options
from hflpipe.pipeline.detect.boxes import BoxesFile
from hflpipe.pipeline.infer.predictor import PredictorSettings
from hflpipe.pipeline.inputs.camera import Intrinsics, parse_intrinsics
from hflpipe.pipeline.inputs.objects import check_object_names, resolve_object
from hflpipe.pipeline.inputs.videos import VideoInput
from hflpipe.pipeline.output.object_lock import LockCheck, s3_lease
from hflpipe.pipeline.output.schema import SCHEMA_VERSION, OutputMetadata
from hflpipe.pipeline.output.store import OutputStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunContext:
    """Shared, validated inputs of one run."""

    config_hash: str
    metadata: OutputMetadata
    predictor_settings: PredictorSettings
    intrinsics: Intrinsics | None
    object_name: str | None
    control_points: np.ndarray | None  # (21, 3) metres, object frame
    boxes: BoxesFile | None
    #: See :func:`inputs_fingerprint`; set per video by :func:`context_for_video`.
    inputs_sha256: str | None = None


def run_precision(config: RunConfig, device: str) -> str:
    """``fp32``, ``fp16`` or ``bf16``: ``auto`` is fp16 on CUDA and fp32 on the CPU."""
    if config.precision != "auto":
        return config.precision
    return "fp16" if device == "cuda" else "fp32"


def config_hash(
    config: RunConfig, checkpoint_sha256: str, mano_sha256: str, device: str, precision: str,
    detector_sha256: str | None = None,
) -> str:
    """Hash of everything that determines the output rows (16 hex digits).

    Device and precision are the resolved ones: an fp32 run on the CPU and an fp16 run
    on a GPU give different numbers, so their rows never share a hash. ``detector_sha256``:
    the hand-object detector's weights, when the run uses them.
    """
    extra = {"detector_weights": detector_sha256} if detector_sha256 else {}
    fields = to_jsonable(result_options(config) | extra | {
        "device": device, "precision": precision, "checkpoint": checkpoint_sha256,
        "mano": mano_sha256, "version": __version__, "schema": SCHEMA_VERSION,
    })
    blob = json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


#: Weights this process has loaded and hashed, by the files' identities (see
#: :func:`checked_weights`).
_checked_weights: dict[tuple, tuple[str, str]] = {}


def checked_weights(checkpoint: Path, mano: Path | None) -> tuple[str, str]:
    """Load the checkpoint (with its MANO file) to check it; returns the SHA-256 of both
    (``from-checkpoint`` without a MANO file). Raises ModelFileError for a bad file.

    A driver that runs many jobs (a notebook, a service, the tests) checks a file once
    while its path, size, modification time and inode stay the same.
    """
    try:
        key = tuple(_identity(path) for path in (checkpoint, mano))
    except OSError:
        key = None  # loading says what is wrong with the file, in one line
    if key is not None and key in _checked_weights:
        return _checked_weights[key]
    load_hflnet(checkpoint, mano=mano, device="cpu")
    hashes = (file_sha256(checkpoint),
              load_mano_model(mano).sha256 if mano else "from-checkpoint")
    if key is not None:
        _checked_weights[key] = hashes
    return hashes


def _identity(path: Path | None) -> tuple:
    if path is None:
        return ()
    status = path.stat()
    return (str(path.resolve()), status.st_size, status.st_mtime_ns, status.st_ino)


def mediapipe_on_actors(config: RunConfig, device: str) -> bool:
    """Whether the run's MediaPipe networks go on the inference actors (running the model
    on ``device``): when asked to, or with ``auto`` when the actors have a GPU."""
    return config.detector == "mediapipe" and (
        config.mediapipe_on == "actors" or (config.mediapipe_on == "auto" and device == "cuda"))


def prepare_context(config: RunConfig, device: str | None = None) -> RunContext:
    """Validate the run's shared inputs and hash them into the config hash.

    ``device``: ``cpu`` or ``cuda``, where the inference actors will run the model (the
    runner finds out for ``device: auto``); None takes the configured device, ``auto``
    meaning the CPU. It decides the precision ``auto`` means, and both enter the hash.
    """
    if config.checkpoint is None:
        raise ConfigError("a checkpoint is required (--checkpoint HFL-Net .pth.tar)")
    # Loading once here turns a wrong or corrupted file into one line before Ray starts.
    checkpoint = storage.cached_copy(config.checkpoint)
    mano = storage.cached_copy(config.mano) if config.mano else None
    checkpoint_sha, mano_sha = checked_weights(checkpoint, mano)
    detector_weights, detector_sha = None, None
    if config.detector == "hand-object":
        local_weights = storage.cached_copy(config.hand_object_weights)
        load_hand_object_detector(local_weights)
        detector_weights = _absolute(config.hand_object_weights)
        detector_sha = file_sha256(local_weights)
    if device is None:
        device = "cpu" if config.device == "auto" else config.device
    precision = run_precision(config, device)
    run_hash = config_hash(config, checkpoint_sha, mano_sha, device, precision, detector_sha)
    intrinsics = read_intrinsics(config.intrinsics) if config.intrinsics else None
    object_name, control_points = resolve_object(config.object)
    boxes = load_boxes(config.boxes) if config.detector == "boxes" else None
    return RunContext(
        config_hash=run_hash,
        metadata=OutputMetadata(checkpoint_sha256=checkpoint_sha, mano_sha256=mano_sha,
                                config_hash=run_hash),
        predictor_settings=PredictorSettings(
            checkpoint=_absolute(config.checkpoint),
            mano=_absolute(config.mano) if config.mano else None,
            device=device, precision=precision, compile=config.compile,
            hand_object_weights=detector_weights,
            mediapipe_hands=mediapipe_on_actors(config, device),
        ),
        intrinsics=intrinsics,
        object_name=object_name,
        control_points=control_points,
        boxes=boxes,
    )


def _absolute(location: storage.Location) -> storage.Location:
    # Actors on other nodes read the model files themselves: a URL travels as it is.
    return location if storage.is_url(location) else Path(location).resolve()


def read_intrinsics(spec: str) -> Intrinsics:
    """Intrinsics from ``'fx,fy,cx,cy'``, a JSON file or a JSON file's URL."""
    return storage.load_named(spec, parse_intrinsics) if storage.is_url(spec) else (
        parse_intrinsics(spec))


def video_config_hash(job_hash: str, video: VideoInput) -> str:
    """The config hash of one video: the job's, or with its manifest overrides mixed in."""
    overrides = video.overrides()
    if "boxes" in overrides:
        overrides["boxes"] = str(_absolute(overrides["boxes"]))
    if not overrides:
        return job_hash
    blob = json.dumps({"job": job_hash, **overrides}, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


class InputCache:
    """Objects and boxes files by name, so that a manifest's thousand rows load each once."""

    def __init__(self) -> None:
        self._objects: dict[str, tuple[str | None, np.ndarray | None]] = {}
        self._boxes: dict[str, BoxesFile] = {}

    def object(self, spec: str) -> tuple[str | None, np.ndarray | None]:
        if spec not in self._objects:
            self._objects[spec] = resolve_object(spec)
        return self._objects[spec]

    def boxes(self, location: storage.Location) -> BoxesFile:
        key = storage.identity(location)
        if key not in self._boxes:
            self._boxes[key] = load_boxes(location)
        return self._boxes[key]


def load_boxes(location: storage.Location) -> BoxesFile:
    """A boxes file (path or URL) whose object names are all known (so each gets its pose)."""
    boxes = storage.load_named(location, BoxesFile.load)
    named = [name for name in boxes.object_name.tolist() if name is not None]
    check_object_names(named, f"boxes file {storage.describe(location)}")
    return boxes


def context_for_video(context: RunContext, video: VideoInput, cache: InputCache) -> RunContext:
    """``context`` for ``video``: its manifest overrides applied, its boxes rows alone, and
    its ``inputs_sha256``.

    Raises InputError when the video's own boxes file or object cannot be loaded.
    """
    video_hash = video_config_hash(context.config_hash, video)
    changes: dict[str, object] = {}
    if video.intrinsics is not None:
        changes["intrinsics"] = read_intrinsics(video.intrinsics)
    if video.object is not None:
        changes["object_name"], changes["control_points"] = cache.object(video.object)
    boxes = cache.boxes(video.boxes) if video.boxes is not None else context.boxes
    if boxes is not None:
        changes["boxes"] = boxes.rows_for(video.path)
    own = replace(with_config_hash(context, video_hash), **changes)
    return replace(own, inputs_sha256=inputs_fingerprint(own))


def inputs_fingerprint(context: RunContext) -> str:
    """SHA-256 of the inputs besides options and model files that shape a video's rows.

    The values as read (boxes rows, K, control points), not the files' bytes: an edited
    boxes file changes the fingerprint of the videos whose rows changed, and only theirs.
    """
    digest = hashlib.sha256()
    if context.intrinsics is not None:
        digest.update(b"K" + np.ascontiguousarray(context.intrinsics.K, np.float64).tobytes())
        digest.update(f"size{context.intrinsics.image_size}".encode())
    if context.object_name is not None:
        digest.update(b"object" + context.object_name.encode())
    if context.control_points is not None:
        digest.update(b"points" + np.ascontiguousarray(context.control_points,
                                                      np.float64).tobytes())
    if context.boxes is not None:
        digest.update(b"boxes" + context.boxes.digest().encode())
    return digest.hexdigest()


def with_config_hash(context: RunContext, config_hash: str) -> RunContext:
    """``context`` whose rows and file metadata carry ``config_hash``."""
    return replace(context, config_hash=config_hash,
                   metadata=replace(context.metadata, config_hash=config_hash))


JOB_RECORD = "_job.json"
LOCK_FILE = "_hflpipe.lock"
VERSIONS_FOLDER = "versions"


def output_folder(
    config: RunConfig, job_hash: str, committed: Mapping[str, Mapping], expected: Mapping[str, str]
) -> storage.Location:
    """The folder this run writes to: ``OUT``, or ``OUT/versions/<hash>`` for a new version.

    ``committed``: video id -> ``videos`` row already in ``OUT``; ``expected``: video id ->
    the config hash this run gives it. Raises ConfigError when ``OUT`` holds another
    config's results and ``new_version`` is off.
    """
    out = config.out
    recorded = _recorded_hash(out, job_hash, committed, expected)
    if recorded is None or recorded == job_hash:
        return out
    version = storage.join(out, VERSIONS_FOLDER, job_hash)
    if config.new_version:
        log.warning("%s holds config %s; writing config %s to %s", out, recorded, job_hash,
                    version)
        return version
    raise ConfigError(
        f"out {out}: holds results of another configuration (config hash {recorded}, this "
        f"run's is {job_hash}); choose another out, or pass --new-version to write to {version}"
    )


def _recorded_hash(out: storage.Location, job_hash: str, committed: Mapping[str, Mapping],
                   expected: Mapping[str, str]) -> str | None:
    store = OutputStore(out)
    if store.is_file(JOB_RECORD):
        try:
            return str(json.loads(store.read_bytes(JOB_RECORD))["config_hash"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise OutputError(f"job record {storage.describe(store.location(JOB_RECORD))}: "
                              f"unreadable ({storage.cause_of(exc)})") from None
    # A folder written before job records existed: judge it by its rows.
    for video_id, row in committed.items():
        if row.get("config_hash") != expected.get(video_id, job_hash):
            return str(row.get("config_hash"))
    return None


@contextmanager
def claim_output(folder: storage.Location, config: RunConfig, job_hash: str
                 ) -> Iterator[LockCheck]:
    """Hold ``folder``'s lock for the run and make sure its job record exists.

    Yields the check to call before each commit: it raises OutputError once the lock is
    no longer surely this run's (an S3 lease lost; an ``flock`` is never lost).

    The lock is an ``flock`` on ``_hflpipe.lock``: the kernel drops it when the process
    dies, so a killed run never blocks the next one. On S3 it is a lease object written
    with conditional writes (:mod:`~hflpipe.pipeline.output.object_lock`). Raises
    OutputError when another run holds it or the folder cannot be written.
    """
    if storage.is_url(folder):
        with object_store_lock(storage.join(folder, LOCK_FILE)) as check:
            if not OutputStore(folder).is_file(JOB_RECORD):
                _write_job_record(folder, config, job_hash)
            yield check
        return
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise OutputError(f"out {folder}: cannot be written: {exc.strerror or exc}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise OutputError(
                f"out {folder}: another hflpipe run is writing to it; wait for it to finish"
            ) from None
        if not (folder / JOB_RECORD).is_file():
            _write_job_record(folder, config, job_hash)
        yield _nothing_to_check
    finally:
        os.close(fd)


def _nothing_to_check() -> None:
    """The check of an ``flock`` (the kernel holds it until the process ends) and of stores
    without a lock: there is no lease to lose."""


def _write_job_record(folder: storage.Location, config: RunConfig, job_hash: str) -> None:
    record = {
        "config_hash": job_hash,
        "created_at": dt.datetime.now(dt.UTC).isoformat(),
        "result_options": to_jsonable(result_options(config)),
    }
    text = json.dumps(record, indent=2, sort_keys=True)
    OutputStore(folder).write_bytes(text.encode("utf-8"), JOB_RECORD)


@contextmanager
def object_store_lock(url: str) -> Iterator[LockCheck]:
    """The lock on an object store: S3's conditional writes; elsewhere none (a warning)."""
    if url.lower().startswith("s3://"):
        with s3_lease(url) as check:
            yield check
        return
    log.warning("%s: no exclusive lock on this store; make sure no other run writes to it",
                storage.describe(url))
    yield _nothing_to_check
