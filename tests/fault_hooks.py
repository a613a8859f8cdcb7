"""The faults injected into the tests' Ray workers (a ``worker_process_setup_hook``).

Every worker of the shared test Ray (``conftest.local_ray``) runs :func:`install_faults`
when it starts, so this module imports nothing but the standard library: the pipeline
modules it wraps are patched when a worker first imports them, and a worker that never
does (a progress board, an idle worker) never pays for torch. The faults are inert for
ordinary inputs; they are keyed by the video's file name, so that one job can hold
healthy and poisoned videos side by side, or armed by a file in the fault folder:

- ``poison_crash`` in the name: the process decoding it dies (``os._exit``), every attempt;
  each attempt leaves a file in ``$HFLPIPE_FAULT_DIR`` so tests can count them.
- ``poison_hang`` in the name: decoding never returns (as decord does on some files).
- ``die_mid_write`` in the name: the process writing its output dies after its hands
  file is written, before its objects file, on the first attempt only (it leaves
  ``died-mid-write-*`` in ``$HFLPIPE_FAULT_DIR``).
- ``unreadable`` in the name: the permission check says no (tests run as root, for whom
  ``chmod 000`` still reads).
- ``arm-actor-crash`` in ``$HFLPIPE_FAULT_DIR`` (made by :func:`arm_actor_crash`): the first
  inference call that removes it leaves ``actor-crashed`` there and kills the actor process
  (a GPU process lost to the OOM killer).
- A crop that is mostly magenta raises ``torch.OutOfMemoryError`` every time (a crop that
  fails deterministically), in every batch that holds it.
- ``$HFLPIPE_FAULT_TRACE_INFERENCE`` set: every inference call leaves an ``infer-*`` file in
  ``$HFLPIPE_FAULT_DIR`` (no fault; it tells a test how far a job has got).
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType

TESTS = Path(__file__).resolve().parent
MAGENTA = (255, 0, 255)
ACTOR_CRASH_ARMED = "arm-actor-crash"
ACTOR_CRASHED = "actor-crashed"


def arm_actor_crash(fault_dir: Path) -> Path:
    """Make the next inference call kill its actor; returns the file that says it did."""
    (fault_dir / ACTOR_CRASHED).unlink(missing_ok=True)
    (fault_dir / ACTOR_CRASH_ARMED).touch()
    return fault_dir / ACTOR_CRASHED


def fault_runtime_env(fault_dir: Path, **env: str) -> dict:
    """``runtime_env`` for ``ray.init`` that installs :func:`install_faults` in every worker."""
    path = os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")]))
    variables = {"PYTHONPATH": path, "HFLPIPE_FAULT_DIR": str(fault_dir)} | env
    return {"env_vars": variables, "worker_process_setup_hook": "fault_hooks.install_faults"}


class _PatchOnImport(importlib.abc.MetaPathFinder):
    """Runs ``patches[name](module)`` right after the module ``name`` is first executed."""

    def __init__(self, patches: dict[str, Callable[[ModuleType], None]]) -> None:
        self.patches = patches

    def find_spec(self, name: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        patch = self.patches.get(name)
        if patch is None:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return None
        execute = spec.loader.exec_module

        def exec_and_patch(module: ModuleType) -> None:
            execute(module)
            patch(module)

        spec.loader.exec_module = exec_and_patch  # type: ignore[method-assign]
        return spec


def install_faults() -> None:
    """Ray worker setup hook: wrap the decoder factory, the permission check and the model."""
    fault_dir = Path(os.environ["HFLPIPE_FAULT_DIR"])
    real_access = os.access

    def access(path, mode, **kwargs):
        if "unreadable" in Path(path).name and mode & os.R_OK:
            return False
        return real_access(path, mode, **kwargs)

    os.access = access
    patches = {"hflpipe.pipeline.run.video": _poison_decoders,
               "hflpipe.pipeline.output.store": lambda module: _die_mid_write(module, fault_dir),
               "hflpipe.pipeline.infer.predictor": lambda module: _break_model(module, fault_dir)}
    for name, patch in patches.items():
        if name in sys.modules:
            patch(sys.modules[name])
    sys.meta_path.insert(0, _PatchOnImport(
        {name: patch for name, patch in patches.items() if name not in sys.modules}))


def _poison_decoders(video_job: ModuleType) -> None:
    fault_dir = Path(os.environ["HFLPIPE_FAULT_DIR"])
    real_get_decoder = video_job.get_decoder

    class PoisonedDecoder:
        def __init__(self, inner) -> None:
            self.inner = inner
            self.name = inner.name

        def probe(self, path: str):
            name = Path(path).name
            if "poison_crash" in name:
                (fault_dir / f"attempt-{name}-{os.getpid()}-{time.time_ns()}").touch()
                os._exit(3)
            if "poison_hang" in name:
                time.sleep(3600)
            return self.inner.probe(path)

        def read_chunks(self, path: str, **kwargs: object):
            return self.inner.read_chunks(path, **kwargs)

    video_job.get_decoder = lambda name="decord", **options: PoisonedDecoder(
        real_get_decoder(name, **options))


def _die_mid_write(store: ModuleType, fault_dir: Path) -> None:
    real_write = store.OutputStore.write_parquet

    def write_parquet(self, table, *parts, row_group_size):
        if parts[0] == "objects" and "die_mid_write" in parts[-1]:
            try:
                (fault_dir / f"died-mid-write-{parts[-1]}").touch(exist_ok=False)
            except FileExistsError:
                pass
            else:
                os._exit(5)
        return real_write(self, table, *parts, row_group_size=row_group_size)

    store.OutputStore.write_parquet = write_parquet


def _break_model(predictor: ModuleType, fault_dir: Path) -> None:
    import numpy as np
    import torch

    real_call = predictor.HflnetPredictor.__call__

    def call(self, batch):
        if os.environ.get("HFLPIPE_FAULT_TRACE_INFERENCE"):
            (fault_dir / f"infer-{os.getpid()}-{time.time_ns()}").touch()
        try:
            # Removing the arming file is atomic: exactly one call crashes.
            (fault_dir / ACTOR_CRASH_ARMED).unlink()
        except FileNotFoundError:
            pass
        else:
            (fault_dir / ACTOR_CRASHED).touch()
            os._exit(4)
        colours = batch["images"].reshape(len(batch["images"]), -1, 3).mean(axis=1)
        if (np.abs(colours - MAGENTA).max(axis=1) < 40).any():
            raise torch.OutOfMemoryError("CUDA out of memory (simulated for a magenta crop)")
        return real_call(self, batch)

    predictor.HflnetPredictor.__call__ = call
