"""Shared pieces of the fault tests (``test_faults_*.py``): inputs, configs, checks, faults.

No tests live here. The fault tests import it as ``import test_faults_common`` (pytest puts
``tests/`` on ``sys.path``); Ray workers import it through ``PYTHONPATH`` to install the
injected faults (:func:`install_faults`, a ``worker_process_setup_hook``).

Injected faults, installed in every worker of the tests' shared Ray (``conftest.local_ray``)
and inert for ordinary inputs: keyed by the video's file name, so that one job can hold
healthy and poisoned videos side by side, or armed by a file in the fault folder:

- ``poison_crash`` in the name: the process decoding it dies (``os._exit``), every attempt;
  each attempt leaves a file in ``$HFLPIPE_FAULT_DIR`` so tests can count them.
- ``poison_hang`` in the name: decoding never returns (as decord does on some files).
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

import os
import time
from collections.abc import Iterable
from pathlib import Path

import duckdb
import numpy as np
import pyarrow.parquet as pq
import videogen

from hflpipe.model.synthetic_checkpoint import synthetic_mano_path
from hflpipe.pipeline.config.run_config import RunConfig, make_config
from hflpipe.pipeline.output.reader import read_table, visible_files

TESTS = Path(__file__).resolve().parent
WIDTH, HEIGHT = 160, 120
FPS = 10.0
HAND_BOX = (30, 30, 80, 90)
OBJECT_BOX = (70, 40, 130, 100)
MAGENTA = (255, 0, 255)


def write_boxes(path: Path, num_frames: int) -> Path:
    """A boxes CSV with one right hand and one object on frames ``0 .. num_frames-1``."""
    lines = ["frame_index,kind,x0,y0,x1,y1,handedness"]
    for frame in range(num_frames):
        lines.append(f"{frame},hand,{','.join(map(str, HAND_BOX))},right")
        lines.append(f"{frame},object,{','.join(map(str, OBJECT_BOX))},")
    path.write_text("\n".join(lines) + "\n")
    return path


def write_clip(
    path: Path, num_frames: int, *, size: tuple[int, int] = (WIDTH, HEIGHT),
    magenta_frames: Iterable[int] = (),
) -> Path:
    """An mp4v clip of bar-coded frames; ``magenta_frames`` are painted solid magenta."""
    magenta = set(magenta_frames)

    def frames():
        for index in range(num_frames):
            frame = videogen.moving_square_frame(index, *size)
            if index in magenta:
                frame[:] = MAGENTA
            yield frame

    videogen.write_video(path, frames(), FPS)
    return path


def run_config(videos: Iterable[Path | str], out: Path, checkpoint: Path, boxes: Path,
               **extra: object) -> RunConfig:
    """A boxes-detector run on CPU with the synthetic checkpoint and MANO model."""
    options: dict[str, object] = {
        "videos": [str(v) for v in videos], "out": out, "checkpoint": checkpoint,
        "mano": synthetic_mano_path(), "detector": "boxes", "boxes": boxes,
        "object": "003_cracker_box", "device": "cpu", "batch_size": 4, "chunk_size": 8,
    }
    return make_config(**(options | extra))


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
    return {"env_vars": variables,
            "worker_process_setup_hook": "test_faults_common.install_faults"}


def install_faults() -> None:
    """Ray worker setup hook: wrap the decoder factory, the permission check and the model."""
    import torch

    from hflpipe.pipeline.decode import base as decode
    from hflpipe.pipeline.infer import predictor
    from hflpipe.pipeline.run import video as video_job

    fault_dir = Path(os.environ["HFLPIPE_FAULT_DIR"])
    real_get_decoder = video_job.get_decoder
    real_access = os.access
    real_call = predictor.HflnetPredictor.__call__

    class PoisonedDecoder:
        def __init__(self, inner: decode.Decoder) -> None:
            self.inner = inner
            self.name = inner.name

        def _maybe_die(self, path: str) -> None:
            name = Path(path).name
            if "poison_crash" in name:
                (fault_dir / f"attempt-{name}-{os.getpid()}-{time.time_ns()}").touch()
                os._exit(3)
            if "poison_hang" in name:
                time.sleep(3600)

        def probe(self, path: str) -> decode.VideoInfo:
            self._maybe_die(path)
            return self.inner.probe(path)

        def read_chunks(self, path: str, **kwargs: object):
            return self.inner.read_chunks(path, **kwargs)

    def access(path, mode, **kwargs):
        if "unreadable" in Path(path).name and mode & os.R_OK:
            return False
        return real_access(path, mode, **kwargs)

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

    video_job.get_decoder = lambda name="decord", **options: PoisonedDecoder(
        real_get_decoder(name, **options))
    decode.os.access = access
    predictor.HflnetPredictor.__call__ = call


def visible_parquet(out: Path) -> list[Path]:
    """Every non-hidden Parquet file under ``out`` (what a raw glob reader sees)."""
    return sorted(p for p in out.rglob("*.parquet") if not p.name.startswith("."))


def check_output_is_clean(out: Path) -> None:
    """Every footer reads, no temporary files, no rows without a commit, no duplicate rows."""
    for path in visible_parquet(out):
        pq.read_metadata(path)
    assert not [p for p in out.rglob(".*") if p.is_file()], "temporary files left behind"
    videos = read_table(out, "videos").to_pandas()
    assert videos["video_id"].is_unique
    ok = set(videos.loc[videos["status"] == "ok", "video_id"])
    for table in ("hands", "objects"):
        ids = {p.stem for p in visible_files(out / table)}
        assert ids == ok, f"{table} files without an ok videos row: {ids - ok}"
        keys = ["video_id", "frame_index", "track_id"]
        rows = read_table(out, table, columns=keys).to_pandas()
        assert not rows.duplicated().any(), f"duplicate {table} rows"
        if ids:
            raw = duckdb.connect().execute(
                f"select count(*) from read_parquet('{out / table}/*.parquet')"
            ).fetchone()[0]
            assert raw == len(rows)


def frame_rows(out: Path, table: str = "hands") -> set[tuple[str, int]]:
    """The (video_id, frame_index) pairs of an output table."""
    rows = read_table(out, table, columns=["video_id", "frame_index"]).to_pylist()
    return {(row["video_id"], row["frame_index"]) for row in rows}


def assert_same_results(out: Path, reference: Path) -> None:
    """``out`` holds the same rows and values as ``reference`` (run-time columns aside)."""
    for table in ("hands", "objects"):
        got = read_table(out, table).to_pandas()
        want = read_table(reference, table).to_pandas()
        keys = ["video_id", "frame_index", "track_id"]
        got = got.sort_values(keys).reset_index(drop=True)
        want = want.sort_values(keys).reset_index(drop=True)
        assert list(got.columns) == list(want.columns)
        assert len(got) == len(want) and len(got) > 0
        for column in got.columns:
            for a, b in zip(got[column], want[column], strict=True):
                a, b = _plain(a), _plain(b)
                if a is None or b is None:
                    assert a is None and b is None, f"{table}.{column}"
                elif np.issubdtype(a.dtype, np.floating):
                    # Same model, same batches: equal up to float rounding.
                    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6,
                                               err_msg=f"{table}.{column}")
                else:
                    np.testing.assert_array_equal(a, b, err_msg=f"{table}.{column}")


def _plain(value: object) -> np.ndarray | None:
    """A cell as a numpy array (nested lists stacked), or None for a null."""
    if value is None:
        return None
    array = np.asarray(value)
    if array.dtype == object and array.ndim == 1 and len(array) and hasattr(array[0], "__len__"):
        return np.stack([np.asarray(v) for v in array])
    return array
