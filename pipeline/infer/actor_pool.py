"""The model on a pool of Ray actors, one per GPU (or one CPU actor), shared by all videos.

:class:`ActorInference` is the pool's :class:`~hflpipe.pipeline.infer.client.InferenceClient`.
This is the one module of the stages that imports Ray.
"""

from __future__ import annotations

import itertools
import re

import numpy as np
import ray
import torch
from ray.exceptions import RayActorError

from hflpipe.model.mediapipe_hands import HandNetworks
from hflpipe.pipeline.common.errors import HflpipeError
from hflpipe.pipeline.infer.freed_memory import keep_freed_memory
from hflpipe.pipeline.infer.hand_networks import SharedHandNetworks
from hflpipe.pipeline.infer.hand_object import HandObjectRunner
from hflpipe.pipeline.infer.predictor import HflnetPredictor, PredictorSettings


def load_actor_predictor(settings: PredictorSettings, cpu_threads: int) -> HflnetPredictor:
    """The predictor in the process setup of an inference actor (benchmarks measure this).

    Without CUDA, torch gets ``cpu_threads`` threads; a predictor on the CPU makes the
    process keep freed memory, since the process does nothing but run batches and each
    one reuses the last one's memory.
    """
    if not torch.cuda.is_available():
        torch.set_num_threads(cpu_threads)
    predictor = HflnetPredictor(settings)
    if predictor.device.type == "cpu":
        keep_freed_memory()
    return predictor


#: Threads of an actor's ``hands`` concurrency group: MediaPipe requests of this many
#: videos wait for a shared network call at once (a waiting request holds a thread).
HAND_REQUEST_THREADS = 64


class PredictorActor:
    """Ray actor holding one model replica; declared with ``num_gpus`` by :func:`start_actors`.

    HFL-Net batches run one at a time; MediaPipe's hand networks answer in their own
    concurrency group, so that a video waiting for one frame's landmarks does not wait
    behind HFL-Net batches, and the requests of many videos share network calls.
    """

    def __init__(self, settings: PredictorSettings, cpu_threads: int) -> None:
        self.predictor = load_actor_predictor(settings, cpu_threads)
        self.hand_object = (HandObjectRunner(settings.hand_object_weights, self.predictor.device)
                            if settings.hand_object_weights else None)
        self.hand_networks = (SharedHandNetworks(self.predictor.device)
                              if settings.mediapipe_hands else None)

    def infer(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            return self.predictor(batch)
        except torch.OutOfMemoryError:
            # Hand the failed batch's blocks back, so that the smaller batches the caller
            # retries with (video_job splits failed batches) find the memory free.
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            raise

    def detect_hands_objects(self, images: np.ndarray, scales: np.ndarray, hand_threshold: float,
                             object_threshold: float) -> list[tuple[np.ndarray, ...]]:
        return self.hand_object(images, scales, hand_threshold, object_threshold)

    @ray.method(concurrency_group="hands")
    def mediapipe_palms(self, images: np.ndarray, min_score: float
                        ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        return self._hand_networks().palms(images, min_score)

    @ray.method(concurrency_group="hands")
    def mediapipe_landmarks(self, crops: np.ndarray
                            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self._hand_networks().landmarks(crops)

    @ray.method(concurrency_group="hands")
    def mediapipe_batching(self) -> dict[str, int]:
        """Network calls and items so far: how well the videos' requests were shared."""
        networks = self._hand_networks()
        return {"palm_calls": networks.palm_batches.calls,
                "palm_images": networks.palm_batches.items,
                "landmark_calls": networks.landmark_batches.calls,
                "landmark_regions": networks.landmark_batches.items}

    def _hand_networks(self) -> SharedHandNetworks:
        if self.hand_networks is None:
            raise ValueError("this actor was started without MediaPipe's hand networks")
        return self.hand_networks

    def ready(self) -> str:
        return str(self.predictor.device)


def start_actors(
    settings: PredictorSettings, num_actors: int, gpus_per_actor: float, cpus_per_actor: float
) -> list[ray.actor.ActorHandle]:
    """Start the pool and wait until every replica has loaded its weights.

    Actors restart when their process dies (an out-of-memory kill, a node lost),
    and calls that were in flight are retried on the restarted replica.
    """
    remote = ray.remote(
        num_gpus=gpus_per_actor, num_cpus=cpus_per_actor, max_restarts=-1, max_task_retries=3,
        concurrency_groups={"hands": HAND_REQUEST_THREADS},
    )(PredictorActor)
    threads = max(1, int(cpus_per_actor))
    actors = [remote.remote(settings, threads) for _ in range(num_actors)]
    try:
        ray.get([a.ready.remote() for a in actors])
    except RayActorError as exc:
        cause = _last_error_line(exc)
        raise HflpipeError(f"the inference actors could not start: {cause}") from None
    return actors


def driver_session() -> tuple[str, str, str]:
    """What identifies this driver's connection to a Ray session: actors it started for
    one run can serve the next while it is unchanged."""
    runtime = ray.get_runtime_context()
    # Job ids restart at 1 in every Ray session; the driver's node id is new each time.
    return (runtime.gcs_address, runtime.get_node_id(), runtime.get_job_id())


#: The pool the last run of this driver process used, with what it was started for.
_kept_pool: tuple[tuple, list[ray.actor.ActorHandle]] | None = None


def actor_pool(
    settings: PredictorSettings, num_actors: int, gpus_per_actor: float, cpus_per_actor: float,
    weights_sha256: str,
) -> list[ray.actor.ActorHandle]:
    """The pool for a run: the one an earlier run of this driver started when it matches.

    A driver that runs several jobs (a notebook, a service, the tests) keeps its model
    loaded between them instead of loading it again for each; a pool for other settings,
    other weights (``weights_sha256``: the checkpoint's and MANO file's hashes) or another
    Ray session replaces it, and the old one is released.
    """
    global _kept_pool
    session = driver_session()
    key = (settings, num_actors, gpus_per_actor, cpus_per_actor, weights_sha256, session)
    if _kept_pool is not None and _kept_pool[0] == key:
        return _kept_pool[1]
    if _kept_pool is not None and _kept_pool[0][-1] == session:
        for actor in _kept_pool[1]:
            ray.kill(actor)
    _kept_pool = None
    actors = start_actors(settings, num_actors, gpus_per_actor, cpus_per_actor)
    _kept_pool = (key, actors)
    return actors


def _last_error_line(exc: BaseException) -> str:
    """The innermost ``SomeError: message`` line of a Ray error's text (its remote cause)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    causes = [line for line in lines if re.match(r"^[A-Za-z_.]*(Error|Exception): ", line)]
    return (causes or lines or [type(exc).__name__])[-1]


class ActorInference:
    """Spreads one video's batches over the actor pool, round-robin from a per-video offset;
    its MediaPipe requests go to the actor at that offset."""

    def __init__(self, actors: list[ray.actor.ActorHandle], offset: int = 0) -> None:
        if not actors:
            raise ValueError("ActorInference needs at least one actor")
        self.actors = actors
        self._hands_actor = actors[offset % len(actors)]
        self._next = itertools.cycle(range(len(actors)))
        for _ in range(offset % len(actors)):
            next(self._next)

    def submit(self, batch: dict[str, np.ndarray]) -> ray.ObjectRef:
        return self.actors[next(self._next)].infer.remote(batch)

    def result(self, handle: ray.ObjectRef) -> dict[str, np.ndarray]:
        return ray.get(handle)

    def detect_hands_objects(self, images: np.ndarray, scales: np.ndarray,
                             hand_threshold: float,
                             object_threshold: float) -> list[tuple[np.ndarray, ...]]:
        actor = self.actors[next(self._next)]
        return ray.get(actor.detect_hands_objects.remote(images, scales, hand_threshold,
                                                         object_threshold))

    def hand_networks(self) -> HandNetworks:
        return _ActorHandNetworks(self._hands_actor)


class _ActorHandNetworks:
    """:class:`HandNetworks` on an inference actor (one round trip per call)."""

    def __init__(self, actor: ray.actor.ActorHandle) -> None:
        self._actor = actor

    def palms(self, images: np.ndarray, min_score: float
              ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        return ray.get(self._actor.mediapipe_palms.remote(images, min_score))

    def landmarks(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return ray.get(self._actor.mediapipe_landmarks.remote(crops))
