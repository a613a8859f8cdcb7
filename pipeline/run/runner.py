"""``hflpipe run``: plan the videos, start Ray and the predictor pool, process, write.

One Ray task per video decodes, detects, tracks and crops it, sends crop
batches to the predictor actors (a few in flight per video, so memory stays
bounded), smooths the tracks and returns the video's tables. The driver
writes each video's files atomically as its task finishes, so a crash loses at
most the videos in flight, and a re-run does only what is missing.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import os
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import ray
import torch
from ray.exceptions import GetTimeoutError, RayError, RayTaskError
from tqdm import tqdm

from hflpipe.pipeline.common.errors import ConfigError, HflpipeError, OutputError, one_line
from hflpipe.pipeline.common.storage import Location
from hflpipe.pipeline.config.run_config import RunConfig, validate_paths
from hflpipe.pipeline.infer.actor_pool import ActorInference, actor_pool
from hflpipe.pipeline.inputs.videos import VideoInput, collect_inputs
from hflpipe.pipeline.output.object_lock import LockCheck
from hflpipe.pipeline.output.reader import finished_videos
from hflpipe.pipeline.output.writer import (
    commit_video,
    remove_stale_temp_files,
    remove_uncommitted_outputs,
    write_video_output,
    write_video_status,
)
from hflpipe.pipeline.run.context import (
    InputCache,
    RunContext,
    claim_output,
    context_for_video,
    output_folder,
    prepare_context,
    video_config_hash,
    with_config_hash,
)
from hflpipe.pipeline.run.freshness import redo_reason
from hflpipe.pipeline.run.progress import start_board
from hflpipe.pipeline.run.ray_address import check_reachable
from hflpipe.pipeline.run.resources import (
    Demand,
    cluster_nodes,
    cpu_actor_share,
    unschedulable,
    waiting_for_resources,
)
from hflpipe.pipeline.run.stop import (
    RunInterrupted,
    check_stop,
    reclaim_signals,
    stop_on_signals,
)
from hflpipe.pipeline.run.video import VideoOutcome, failed_outcome, process_video
from hflpipe.pipeline.run.worker_cache import check_detector
from hflpipe.pipeline.run.worker_write import write_where_processed

log = logging.getLogger(__name__)

POLL_INTERVAL_S = 0.5
#: How long the device probe waits for a GPU of the cluster to be free.
DEVICE_PROBE_TIMEOUT_S = 120.0
#: tqdm counts videos; frames, rate and the frame-based ETA are in the postfix.
BAR_FORMAT = "{percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} videos [{elapsed}{postfix}]"


@dataclass
class RunSummary:
    """What a run did, for the CLI's summary table and for tests."""

    out: Location
    config_hash: str
    statuses: Counter = field(default_factory=Counter)
    already_done: int = 0
    frames: int = 0
    hand_rows: int = 0
    object_rows: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)
    #: (path, why) of videos done again because their inputs changed since their last run.
    redone: list[tuple[str, str]] = field(default_factory=list)
    #: Videos skipped because an earlier run with the same config recorded them as failed.
    earlier_failures: list[tuple[str, str]] = field(default_factory=list)
    elapsed_s: float = 0.0


def run(config: RunConfig, *, progress: bool = True) -> RunSummary:
    """Process every video of ``config``; returns a summary. Raises HflpipeError on setup errors.

    Resumable: videos already committed with the same config hash, inputs and video file
    are skipped (failed ones too, unless ``retry_failed``); changed ones are done again,
    their old rows replaced. Results of a different config are never mixed in: see
    :func:`~hflpipe.pipeline.run.context.output_folder`. SIGINT and SIGTERM stop it with
    :class:`~hflpipe.pipeline.run.stop.RunInterrupted` (see that module).
    """
    with stop_on_signals():
        return _run(config, progress)


def _run(config: RunConfig, progress: bool) -> RunSummary:
    started = time.monotonic()
    validate_paths(config)
    inputs = collect_inputs(config.videos, config.video_list, config.manifest,
                            out=config.out)
    context = prepare_context(config, device=model_device(config))
    # A detector that cannot start is the run's problem, not each video's.
    check_detector(config)
    expected = {v.video_id: video_config_hash(context.config_hash, v) for v in inputs}
    out = output_folder(config, context.config_hash, finished_videos(config.out), expected)
    summary = RunSummary(out=out, config_hash=context.config_hash)
    with claim_output(out, config, context.config_hash) as lock:
        # Leftovers of a killed run: hidden temporaries, and data files without a marker.
        remove_stale_temp_files(out)
        remove_uncommitted_outputs(out)
        todo = _plan(inputs, config, context, finished_videos(out), summary)
        log.info("%d videos, %d already done, %d to process", len(inputs),
                 summary.already_done, len(todo))
        demand = _check_resources(config, context) if any(p is None for *_, p in todo) else None
        runnable = _record_unusable(todo, config, summary, lock)
        if runnable and demand is not None:
            _process_on_ray(runnable, config, context, demand, summary, progress, lock)
    summary.elapsed_s = time.monotonic() - started
    return summary


#: A video to process, its own context, and why it cannot start (None if it can).
Planned = tuple[VideoInput, RunContext, str | None]


def _plan(
    inputs: list[VideoInput], config: RunConfig, context: RunContext,
    done: dict[str, dict], summary: RunSummary,
) -> list[Planned]:
    """The videos to process: new ones, failed ones with ``retry_failed``, and those whose
    committed results no longer match their inputs (noted in ``summary.redone``)."""
    if context.boxes is not None:
        unmatched = context.boxes.unmatched_names([video.path for video in inputs])
        if unmatched:
            shown = ", ".join(unmatched[:5]) + (", ..." if len(unmatched) > 5 else "")
            log.warning("boxes file %s: its 'video' column names %d videos that are not "
                        "inputs of this run (their rows are unused): %s", context.boxes.path,
                        len(unmatched), shown)
    cache = InputCache()
    todo: list[Planned] = []
    for video in inputs:
        try:
            video_context, problem = context_for_video(context, video, cache), video.problem
        except HflpipeError as exc:
            video_context = with_config_hash(context, video_config_hash(context.config_hash,
                                                                        video))
            problem = str(exc)
        previous = done.get(video.video_id)
        if previous is not None:
            reason = redo_reason(previous, video_context.config_hash,
                                 video_context.inputs_sha256, video.path)
            if reason is None and (previous["status"] == "ok" or not config.retry_failed):
                summary.already_done += 1
                if previous["status"] == "failed":
                    summary.earlier_failures.append(
                        (video.video_id, previous.get("error") or "failed"))
                continue
            if reason is not None:
                log.info("%s: done again: %s", video.path, reason)
                summary.redone.append((str(video.path), reason))
        todo.append((video, video_context, problem))
    return todo


def _record_unusable(
    todo: list[Planned], config: RunConfig, summary: RunSummary, lock: LockCheck
) -> list[tuple[VideoInput, RunContext]]:
    """Record failed rows for inputs that cannot start; returns the rest."""
    runnable = []
    for video, video_context, problem in todo:
        if problem is not None:
            _record(summary, config, video_context,
                    failed_outcome(video, video_context, problem), lock)
        else:
            runnable.append((video, video_context))
    return runnable


def _check_resources(config: RunConfig, context: RunContext) -> Demand:
    """What the run asks of Ray; raises ConfigError when the cluster can never give it.

    A joined cluster whose autoscaler did not publish its node types may still add the
    nodes the run needs (a ``ray up`` cluster starts with a head that runs nothing): there
    the shortfall is a warning, and the progress line says when videos wait.
    """
    gpus = _connect(config).get("GPU", 0.0)
    use_gpu = context.predictor_settings.device == "cuda" and gpus > 0 and config.gpus_per_actor > 0
    num_actors = config.num_actors or (max(1, int(gpus // config.gpus_per_actor)) if use_gpu else 1)
    nodes, autoscaler_known = cluster_nodes(most=num_actors + 1)
    cpus_per_actor = config.cpus_per_actor or (
        config.cpus_per_task if use_gpu else cpu_actor_share(nodes, num_actors))
    demand = Demand(actors=num_actors, cpus_per_actor=cpus_per_actor,
                    gpus_per_actor=config.gpus_per_actor if use_gpu else 0.0,
                    cpus_per_task=config.cpus_per_task)
    problem = unschedulable(nodes, demand)
    if problem is not None:
        if _joins_a_cluster(config) and not autoscaler_known:
            log.warning("resources: %s (unless the cluster adds nodes)", problem)
        else:
            raise ConfigError(f"resources: {problem}")
    return demand


def _process_on_ray(
    todo: list[tuple[VideoInput, RunContext]], config: RunConfig, context: RunContext,
    demand: Demand, summary: RunSummary, progress: bool, lock: LockCheck,
) -> None:
    actors = actor_pool(context.predictor_settings, demand.actors, demand.gpus_per_actor,
                        demand.cpus_per_actor,
                        f"{context.metadata.checkpoint_sha256}:{context.metadata.mano_sha256}")
    board = start_board()
    task = ray.remote(num_cpus=config.cpus_per_task, max_retries=config.max_retries,
                      retry_exceptions=False)(_video_task)
    concurrency = config.max_concurrent_videos or max(
        2, int(ray.cluster_resources().get("CPU", 2) // config.cpus_per_task)
    )
    pending = list(reversed(todo))
    contexts = {video.video_id: video_context for video, video_context in todo}
    running: dict[ray.ObjectRef, tuple[VideoInput, float]] = {}
    bar = tqdm(total=len(todo), unit="video", disable=not progress, dynamic_ncols=True,
               bar_format=BAR_FORMAT)
    # When a video last finished or reported, and since when videos wait for resources Ray
    # cannot give them: waiting while nothing moves is a stall, even if nothing started.
    last_activity = time.time()
    waiting_since: float | None = None
    # Each video sends its first batch to the next actor in turn: short videos (a few
    # batches each) would otherwise all start on the same actor and leave others idle.
    videos_started = 0
    try:
        while pending or running:
            check_stop()
            lock()
            while pending and len(running) < concurrency:
                video, video_context = pending.pop()
                ref = task.remote(video, config, video_context, actors, board, videos_started,
                                  summary.out)
                videos_started += 1
                running[ref] = (video, time.time())
            ready, _ = ray.wait(list(running), num_returns=1, timeout=POLL_INTERVAL_S)
            for ref in ready:
                video, _ = running.pop(ref)
                video_context = contexts[video.video_id]
                _record(summary, config, video_context,
                        _collect(ref, video, video_context, config), lock)
                ray.get(board.forget.remote(video.video_id))
                bar.update(1)
                last_activity = time.time()
            try:
                states = ray.get(board.snapshot.remote(), timeout=10)
            except GetTimeoutError:
                continue
            last_activity = max([last_activity, *(state[2] for state in states.values())])
            queued = sum(video.video_id not in states for video, _ in running.values())
            if queued and waiting_for_resources(config.cpus_per_task):
                waiting_since = waiting_since or time.time()
            else:
                waiting_since = None
            _fail_stalled(running, states, max(last_activity, waiting_since or math.inf), config,
                          contexts, summary, bar, lock)
            _show_frames(bar, states, summary, len(pending),
                         waiting=queued if waiting_since is not None else 0)
    except RunInterrupted as stop:
        raise RunInterrupted(stop.signum, _stopped_line(
            stop, summary, len(running) + len(pending))) from None
    finally:
        bar.close()
        for ref in running:
            ray.cancel(ref, force=True)


def _stopped_line(stop: RunInterrupted, summary: RunSummary, unfinished: int) -> str:
    committed = sum(summary.statuses.values())
    return (f"stopped by {stop.signal_name}: {committed} videos committed to {summary.out} by "
            f"this run ({summary.already_done} were done before), {unfinished} not finished "
            "and nothing of them kept; run the same command again to resume")


def model_device(config: RunConfig) -> str:
    """``cpu`` or ``cuda``: where the inference actors will run the model.

    For ``device: auto`` this decides the precision and so the config hash, so it is the
    actors' own answer: a local run asks this machine; on a cluster with GPUs a probe
    task with an actor's resources asks a GPU node whether CUDA works there.
    """
    if config.device != "auto":
        return config.device
    if not ray.is_initialized() and config.address is None and "RAY_ADDRESS" not in os.environ:
        # The local Ray this run starts has this machine's GPUs; not starting it yet keeps
        # a run with nothing to do, or a refused output folder, free of Ray's start-up.
        return "cuda" if torch.cuda.is_available() and config.gpus_per_actor > 0 else "cpu"
    gpus = _connect(config).get("GPU", 0.0)
    if gpus <= 0 or config.gpus_per_actor <= 0:
        return "cpu"
    probe = ray.remote(num_cpus=0, num_gpus=min(config.gpus_per_actor, gpus))(_has_cuda)
    try:
        return "cuda" if ray.get(probe.remote(), timeout=DEVICE_PROBE_TIMEOUT_S) else "cpu"
    except GetTimeoutError:
        # Every GPU is busy with other work: the cluster says it has GPUs, so trust it.
        return "cuda"


def _has_cuda() -> bool:
    return torch.cuda.is_available()


def _connect(config: RunConfig) -> dict[str, float]:
    """Join (or start) the run's Ray cluster once; returns its resources."""
    if not ray.is_initialized():
        check_reachable(config.address)
        try:
            with _quiet_local_ray_notices(config):
                ray.init(address=config.address, include_dashboard=False, log_to_driver=False,
                         configure_logging=False)
        except ConnectionError as exc:
            raise ConfigError(f"ray cluster '{config.address}': {one_line(exc)}") from None
        finally:
            reclaim_signals()
    return ray.cluster_resources()


#: Loggers of Ray notices that concern a cluster, not the Ray a run starts in its own
#: process (reachable from this machine only): the token-authentication notice.
LOCAL_RAY_NOTICES = ("ray._private.authentication.authentication_token_setup",)


def _joins_a_cluster(config: RunConfig) -> bool:
    """Whether the run uses a Ray cluster started elsewhere rather than its own local Ray."""
    return config.address is not None or "RAY_ADDRESS" in os.environ


@contextmanager
def _quiet_local_ray_notices(config: RunConfig) -> Iterator[None]:
    """Hide :data:`LOCAL_RAY_NOTICES` while a local Ray starts (a joined cluster keeps them)."""
    if _joins_a_cluster(config):
        yield
        return
    loggers = [logging.getLogger(name) for name in LOCAL_RAY_NOTICES]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def _video_task(
    video: VideoInput, config: RunConfig, context: RunContext, actors: list, board,
    first_actor: int, out: Location,
) -> VideoOutcome:
    def report(done: int, total: int) -> None:
        board.report.remote(video.video_id, done, total)

    inference = ActorInference(actors, offset=first_actor)
    outcome = process_video(video, config, context, inference, report)
    return write_where_processed(outcome, out, context.metadata)


def _collect(
    ref: ray.ObjectRef, video: VideoInput, context: RunContext, config: RunConfig
) -> VideoOutcome:
    try:
        outcome = ray.get(ref)
    except RayTaskError as exc:
        cause = exc.cause if isinstance(exc.cause, BaseException) else exc
        if isinstance(cause, OutputError):
            # The store refused a worker's write: every later video would fail the same way.
            raise OutputError(str(cause)) from None
        text = str(cause).strip()
        message = text.splitlines()[-1] if text else type(cause).__name__
        return failed_outcome(video, context, f"internal error: {type(cause).__name__}: {message}")
    except RayError as exc:
        attempts = config.max_retries + 1
        return failed_outcome(
            video, context, f"worker died while processing ({attempts} attempts): "
            f"{type(exc).__name__}"
        )
    return outcome


def _fail_stalled(
    running: dict[ray.ObjectRef, tuple[VideoInput, float]],
    states: dict[str, tuple[int, int, float]], stuck_since: float, config: RunConfig,
    contexts: dict[str, RunContext], summary: RunSummary, bar: tqdm, lock: LockCheck,
) -> None:
    """Fail videos without a heartbeat for the stall timeout, and videos not started yet
    when the run has been stuck (nothing moving, Ray out of room) for as long."""
    now = time.time()
    limit = config.stall_timeout_s
    for ref, (video, submitted) in list(running.items()):
        state = states.get(video.video_id)
        if state is not None:
            idle = now - max(state[2], submitted)
            cause = f"no progress for {limit:.0f} s (hung decoder?)"
        else:
            # Waiting for a CPU while other videos run is normal (process_video reports
            # first thing once it runs); waiting while nothing at all moves is not.
            idle = now - max(stuck_since, submitted)
            cause = (f"never started: nothing ran for {limit:.0f} s while it waited for a "
                     "CPU (other work holds the cluster's resources)")
        if idle > limit:
            ray.cancel(ref, force=True)
            running.pop(ref)
            context = contexts[video.video_id]
            _record(summary, config, context, failed_outcome(video, context, cause), lock)
            bar.update(1)


def _show_frames(bar: tqdm, states: dict[str, tuple[int, int, float]], summary: RunSummary,
                 not_started: int, waiting: int) -> None:
    if bar.disable:
        return
    if waiting > 0 and not states:
        bar.set_postfix_str(f"waiting for resources: {waiting} videos queued, "
                            f"{_free_resources()} free", refresh=True)
        return
    estimate = estimate_progress(summary.frames, bar.n, list(states.values()), not_started,
                                 bar.format_dict["elapsed"])
    bar.set_postfix_str(f"{estimate.describe()} | {per_video_progress(states)}", refresh=False)


def _free_resources() -> str:
    free = ray.available_resources()
    return f"{free.get('CPU', 0.0):g} CPUs, {free.get('GPU', 0.0):g} GPUs"


def per_video_progress(states: dict[str, tuple[int, int, float]], most: int = 3) -> str:
    """``clip-1a2b 40%, clip-3c4d 5% (+2)``: the videos in flight, furthest along first."""
    started = sorted(((done / total, video_id) for video_id, (done, total, _) in states.items()
                      if total > 0), reverse=True)
    shown = ", ".join(f"{video_id} {min(fraction, 1.0):.0%}" for fraction, video_id
                      in started[:most])
    more = len(states) - min(len(started), most)
    return shown + (f" (+{more})" if more > 0 else "")


@dataclass(frozen=True)
class ProgressEstimate:
    """Frames done and expected over a run; ``None`` where there is nothing to go on yet."""

    frames_done: int
    frames_total: int | None
    frames_per_s: float
    eta_s: float | None

    def describe(self) -> str:
        """``frames 120/~480, 12.3 frames/s, ETA 0:00:29`` for the progress bar."""
        total = f"/~{self.frames_total}" if self.frames_total is not None else ""
        eta = "?" if self.eta_s is None else str(dt.timedelta(seconds=round(self.eta_s)))
        return f"frames {self.frames_done}{total}, {self.frames_per_s:.1f} frames/s, ETA {eta}"


def estimate_progress(
    finished_frames: int, finished_videos: int, in_flight: list[tuple[int, int, float]],
    not_started: int, elapsed_s: float,
) -> ProgressEstimate:
    """Frames done, the run's expected total and the time left.

    ``in_flight``: (frames done, frames total, heartbeat time) per running video, as the
    ProgressBoard holds them. Videos not started yet are assumed as long as the average of
    those seen so far (finished and running), the best guess without probing them all.
    """
    # A video's first heartbeat (0, 0) says it started, not how long it is.
    in_flight = [state for state in in_flight if state[1] > 0]
    done = finished_frames + sum(d for d, _, _ in in_flight)
    rate = done / elapsed_s if elapsed_s > 0 else 0.0
    seen_videos = finished_videos + len(in_flight)
    if seen_videos == 0:
        return ProgressEstimate(done, None, rate, None)
    seen_frames = finished_frames + sum(t for _, t, _ in in_flight)
    total = seen_frames + round(not_started * seen_frames / seen_videos)
    eta = (total - done) / rate if rate > 0 else None
    return ProgressEstimate(done, max(total, done), rate, eta)


def _record(summary: RunSummary, config: RunConfig, context: RunContext,
            outcome: VideoOutcome, lock: LockCheck) -> None:
    """Commit one video's outcome, if the output's lock is still this run's."""
    lock()
    row = outcome.video_row
    row.setdefault("finished_at", dt.datetime.now(dt.UTC))
    if outcome.data_written:
        commit_video(summary.out, outcome.video_id, row, context.metadata)
    elif outcome.hands is not None and outcome.objects is not None:
        write_video_output(summary.out, outcome.video_id, outcome.hands, outcome.objects, row,
                           context.metadata)
    else:
        write_video_status(summary.out, outcome.video_id, row, context.metadata)
    for note in row.get("notes") or ():
        log.warning("%s: %s", row["path"], note)
    summary.statuses[row["status"]] += 1
    summary.frames += int(row.get("frames_processed") or 0)
    summary.hand_rows += outcome.hands.num_rows if outcome.hands is not None else (
        outcome.hand_rows)
    summary.object_rows += outcome.objects.num_rows if outcome.objects is not None else (
        outcome.object_rows)
    if row["status"] == "failed":
        summary.failures.append((str(row["path"]), str(row["error"])))
        log.warning("%s", row["error"])
