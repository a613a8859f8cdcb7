"""The one batching path: crops gathered into batches, a few in flight, failed batches split.

Every caller that runs the network on crops (per-frame inference, box propagation
between keyframes) goes through :class:`BatchedInference`, so that one crop the
model rejects costs that crop, never the batch or the video it came from.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hflpipe.pipeline.crop.batch import HandObjectPair, add_crop, empty_fields, split_batch
from hflpipe.pipeline.infer.client import InferenceClient

#: Key under which a crop's caller-given key travels with its batch.
KEY_FIELD = "key"


@dataclass
class BatchResults:
    """Per-crop outputs sorted by the callers' keys, and the keys of the crops that failed."""

    outputs: dict[str, np.ndarray] = field(default_factory=dict)
    keys: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    failed: dict[int, str] = field(default_factory=dict)


@dataclass(frozen=True)
class _SubmitError:
    """An error raised by ``submit`` itself (in-process inference runs the batch there)."""

    error: Exception


class BatchedInference:
    """Gathers crops into batches of ``batch_size`` and runs them through ``inference``.

    At most ``max_in_flight`` batches wait for their results while more crops are
    gathered (None: no limit, for callers that add everything, then :meth:`finish`).
    ``on_batch`` is called after each batch's result arrives (a progress heartbeat:
    inference can take longer than decoding a chunk).
    """

    def __init__(
        self, inference: InferenceClient, batch_size: int, max_in_flight: int | None = 2,
        on_batch: Callable[[], None] | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self._inference = inference
        self._batch_size = batch_size
        self._max_in_flight = max_in_flight
        self._on_batch = on_batch
        self._gathering = empty_fields(KEY_FIELD)
        self._pending: deque[tuple[Any, dict[str, np.ndarray], dict[str, np.ndarray]]] = deque()
        self._outputs: list[dict[str, np.ndarray]] = []
        self._failed: dict[int, str] = {}

    def add(self, frame: np.ndarray, job: HandObjectPair, timestamp_s: float, key: int) -> None:
        """Crop ``job`` out of ``frame``; ``key`` identifies it in :meth:`finish`'s results."""
        add_crop(self._gathering, frame, job, timestamp_s)
        self._gathering[KEY_FIELD].append(key)
        if len(self._gathering["images"]) >= self._batch_size:
            self._submit_gathered()

    def finish(self) -> BatchResults:
        """Run what is gathered, wait for every batch, and return the results by key."""
        self._submit_gathered()
        while self._pending:
            self._collect()
        results = BatchResults(failed=dict(self._failed))
        if self._outputs:
            merged = {k: np.concatenate([o[k] for o in self._outputs]) for k in self._outputs[0]}
            order = np.argsort(merged[KEY_FIELD], kind="stable")
            keys = merged.pop(KEY_FIELD)[order]
            results.outputs = {name: value[order] for name, value in merged.items()}
            results.keys = keys.astype(np.int64)
        self._outputs, self._failed = [], {}
        return results

    def _submit_gathered(self) -> None:
        if self._gathering["images"]:
            inputs, meta = split_batch(self._gathering)
            self._pending.append((self._submit(inputs), inputs, meta))
            self._gathering = empty_fields(KEY_FIELD)
        while self._max_in_flight is not None and len(self._pending) > self._max_in_flight:
            self._collect()

    def _submit(self, inputs: dict[str, np.ndarray]) -> Any:
        try:
            return self._inference.submit(inputs)
        except Exception as exc:  # raised again when collected, and split there
            return _SubmitError(exc)

    def _collect(self) -> None:
        handle, inputs, meta = self._pending.popleft()
        try:
            if isinstance(handle, _SubmitError):
                raise handle.error
            self._outputs.append(self._inference.result(handle) | meta)
        except Exception as exc:  # any model failure: bisected
            self._split_failed(inputs, meta, exc)
        if self._on_batch is not None:
            self._on_batch()

    def _split_failed(
        self, inputs: dict[str, np.ndarray], meta: dict[str, np.ndarray], error: Exception
    ) -> None:
        """Re-run a failed batch in halves until every failing crop is alone, and record it.

        A batch fails as a whole: CUDA out of memory, one crop a kernel rejects, an actor
        that died more often than its task retries. Halves that run keep their results, so
        a crop that fails deterministically costs that crop; a bad crop costs about
        ``2 log2(batch)`` extra calls.
        """
        keys = meta[KEY_FIELD]
        if len(keys) == 1:
            self._failed[int(keys[0])] = error_cause(error)
            return
        middle = len(keys) // 2
        for part in (slice(0, middle), slice(middle, None)):
            part_inputs = {name: value[part] for name, value in inputs.items()}
            part_meta = {name: value[part] for name, value in meta.items()}
            try:
                result = self._inference.result(self._inference.submit(part_inputs))
                self._outputs.append(result | part_meta)
            except Exception as exc:
                self._split_failed(part_inputs, part_meta, exc)


def error_cause(error: BaseException) -> str:
    """``"Type: first line"`` of an error, unwrapping the one Ray wraps a remote error in."""
    cause = getattr(error, "cause", None)
    if isinstance(cause, BaseException):
        error = cause
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__
