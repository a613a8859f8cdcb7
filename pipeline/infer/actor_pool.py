"""The model on a pool of Ray actors, one per GPU (or one CPU actor), shared by all videos.

:class:`ActorInference` is the pool's :class:`~hflpipe.pipeline.infer.client.InferenceClient`.
With :mod:`~hflpipe.pipeline.infer.predictor_actor` (the actors themselves), the only
modules of the stages that import Ray. This one imports no network: the video tasks
and the progress board import it, and each of their processes would pay seconds of CPU
for torch and the model's modules.
"""

from __future__ import annotations

import itertools
import re
from typing import TYPE_CHECKING

import numpy as np
import ray
from ray.exceptions import RayActorError

from hflpipe.pipeline.common.errors import HflpipeError

if TYPE_CHECKING:
    from hflpipe.model.mediapipe_hands import HandNetworks
    from hflpipe.pipeline.infer.predictor import PredictorSettings


def start_actors(
    settings: PredictorSettings, num_actors: int, gpus_per_actor: float, cpus_per_actor: float
) -> list[ray.actor.ActorHandle]:
    """Start the pool and wait until every replica has loaded its weights.

    Actors restart when their process dies (an out-of-memory kill, a node lost),
    and calls that were in flight are retried on the restarted replica.
    """
    # Here, not at the top: only a driver that starts actors loads the networks' modules.
    from hflpipe.pipeline.infer.predictor_actor import HAND_REQUEST_THREADS, PredictorActor

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
