"""One inference actor: HFL-Net (and the detectors' networks a run asks for) on a device.

The actors' own module: it imports the networks, which the driver and the video tasks,
going through :mod:`hflpipe.pipeline.infer.actor_pool`, do not need to load.
"""

from __future__ import annotations

import numpy as np
import ray
import torch

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
