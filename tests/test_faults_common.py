"""Shared pieces of the fault tests (``test_faults_*.py``): inputs, configs, checks.

No tests live here. The fault tests import it as ``import test_faults_common`` (pytest puts
``tests/`` on ``sys.path``). The faults themselves are injected by :mod:`fault_hooks`.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import duckdb
import numpy as np
import pyarrow.parquet as pq
import videogen
from fault_hooks import MAGENTA
from fault_hooks import arm_actor_crash as arm_actor_crash
from fault_hooks import fault_runtime_env as fault_runtime_env

from hflpipe.model.synthetic_checkpoint import synthetic_mano_path
from hflpipe.pipeline.config.run_config import RunConfig, make_config
from hflpipe.pipeline.output.reader import read_table, visible_files

TESTS = Path(__file__).resolve().parent
WIDTH, HEIGHT = 160, 120
FPS = 10.0
HAND_BOX = (30, 30, 80, 90)
OBJECT_BOX = (70, 40, 130, 100)


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
