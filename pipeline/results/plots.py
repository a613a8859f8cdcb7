"""``hflpipe inspect OUT --plots DIR``: PNG plots of the tracks and their quality.

Per video: ``<video_id>_trajectories.png`` (wrist and object translation x/y/z over time,
smoothed lines over raw dots, interpolated frames shaded) and ``<video_id>_quality.png``
(per track along the timeline: jitter, confidence or reprojection error, and the frames
marked suspect). Once: ``quality_histogram.png`` (share of suspect rows per video).

Figures are drawn with matplotlib's object API onto an Agg canvas: no display, no global
pyplot state, safe in worker processes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from hflpipe.atomic import atomic_path
from hflpipe.pipeline.common.errors import OutputError
from hflpipe.pipeline.output.quality import MAX_JITTER_MPS2, MAX_REPROJECTION_ERROR_PX
from hflpipe.pipeline.output.reader import read_table
from hflpipe.pipeline.output.schema import column_numpy, rows_by_value

AXES = ("x", "y", "z")
AXIS_COLOURS = ("tab:red", "tab:green", "tab:blue")
DPI = 100


def _tracks(table: pa.Table) -> list[tuple[int, pa.Table]]:
    """(track id, its rows by time) of a table holding one video's rows."""
    tracks = table.column("track_id").to_numpy()
    out = []
    for track_id in np.unique(tracks):
        part = table.take(np.flatnonzero(tracks == track_id))
        order = np.argsort(part.column("timestamp_s").to_numpy(), kind="stable")
        out.append((int(track_id), part.take(order)))
    return out


def _shade(ax, t: np.ndarray, flags: np.ndarray, colour: str, label: str) -> None:
    """Shade the time span of every flagged row (half a frame each side)."""
    if not flags.any():
        return
    step = np.median(np.diff(t)) if len(t) > 1 else 1.0
    for k, i in enumerate(np.flatnonzero(flags)):
        ax.axvspan(t[i] - step / 2, t[i] + step / 2, color=colour, alpha=0.25, lw=0,
                   label=label if k == 0 else None)


def _save(fig: Figure, path: Path) -> Path:
    with atomic_path(path, OutputError) as temp:
        FigureCanvasAgg(fig).print_png(str(temp))
    return path


def _track_panels(
    hands: pa.Table, objects: pa.Table
) -> tuple[Figure, list[tuple[Axes, str, int, pa.Table]]]:
    """A figure with one full-width axis per hand track, then per object track."""
    tracks = [("hand", tid, part) for tid, part in _tracks(hands)]
    tracks += [("object", tid, part) for tid, part in _tracks(objects)]
    fig = Figure(figsize=(9, 2.4 * max(len(tracks), 1)), dpi=DPI, layout="constrained")
    if not tracks:
        fig.add_subplot(1, 1, 1).text(0.5, 0.5, "no tracks", ha="center")
    return fig, [(fig.add_subplot(len(tracks), 1, k + 1), kind, track_id, part)
                 for k, (kind, track_id, part) in enumerate(tracks)]


def _finish(fig: Figure, title: str, path: Path) -> Path:
    fig.axes[-1].set_xlabel("time (s)")
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def plot_trajectories(hands: pa.Table, objects: pa.Table, video_id: str, path: Path) -> Path:
    """Wrist and object translation (m) over time, smoothed vs raw, one panel per track.

    ``hands``/``objects`` hold the rows of ``video_id`` only.
    """
    fig, panels = _track_panels(hands, objects)
    for ax, kind, track_id, part in panels:
        t = part.column("timestamp_s").to_numpy()
        smooth = column_numpy(part.column("translation"))
        raw = column_numpy(part.column("translation_raw"))
        for axis, colour in enumerate(AXIS_COLOURS):
            ax.plot(t, smooth[:, axis], color=colour, lw=1.5, label=f"{AXES[axis]} smoothed")
            ax.plot(t, raw[:, axis], ".", color=colour, ms=3, alpha=0.6,
                    label=f"{AXES[axis]} raw")
        interpolated = part.column("interpolated").to_numpy(zero_copy_only=False)
        _shade(ax, t, interpolated, "grey", "interpolated")
        label = (part.column("handedness")[0].as_py() if kind == "hand"
                 else part.column("object_name")[0].as_py() or "object")
        what = "wrist" if kind == "hand" else "object origin"
        ax.set_title(f"{kind} {track_id} ({label}): {what}, camera frame", fontsize=9)
        ax.set_ylabel("m")
        ax.legend(fontsize=7, ncol=4, loc="upper right")
    return _finish(fig, video_id, path)


def plot_quality_timeline(hands: pa.Table, objects: pa.Table, video_id: str,
                          path: Path) -> Path:
    """Per track: jitter (log scale, threshold dashed) and confidence (hands) or
    reprojection error (objects) over time; suspect rows shaded red. Tables as in
    :func:`plot_trajectories`."""
    fig, panels = _track_panels(hands, objects)
    for ax, kind, track_id, part in panels:
        t = part.column("timestamp_s").to_numpy()
        jitter = column_numpy(part.column("jitter_mps2"))
        ax.semilogy(t, np.where(jitter > 0, jitter, np.nan), color="black", lw=1,
                    label="jitter (m/s²)")
        ax.axhline(MAX_JITTER_MPS2, color="black", ls="--", lw=0.8)
        ax.set_ylabel("jitter m/s²")
        other = ax.twinx()
        if kind == "hand":
            other.plot(t, column_numpy(part.column("confidence")), color="tab:green", lw=1)
            other.set_ylim(0, 1)
            other.set_ylabel("confidence", color="tab:green")
        else:
            error = column_numpy(part.column("reprojection_error_px"))
            other.plot(t, error, color="tab:orange", lw=1)
            other.axhline(MAX_REPROJECTION_ERROR_PX, color="tab:orange", ls="--", lw=0.8)
            other.set_ylabel("reprojection px", color="tab:orange")
        suspect = column_numpy(part.column("suspect")) == 1.0
        _shade(ax, t, suspect, "red", "suspect")
        _shade(ax, t, part.column("interpolated").to_numpy(zero_copy_only=False), "grey",
               "interpolated")
        ax.set_title(f"{kind} {track_id}: {int(suspect.sum())}/{len(t)} suspect", fontsize=9)
        ax.legend(fontsize=7, loc="upper left")
    return _finish(fig, f"{video_id}: quality", path)


def plot_quality_histogram(hands: pa.Table, objects: pa.Table, path: Path) -> Path:
    """Histogram over videos of the share of their rows (hands and objects) marked suspect."""
    suspect_rows: dict[object, int] = {}
    all_rows: dict[object, int] = {}
    for table in (hands, objects):
        suspect = column_numpy(table.column("suspect")) == 1.0
        for video_id, rows in rows_by_value(table.column("video_id")).items():
            suspect_rows[video_id] = suspect_rows.get(video_id, 0) + int(suspect[rows].sum())
            all_rows[video_id] = all_rows.get(video_id, 0) + len(rows)
    ids = sorted(all_rows)
    shares = [100.0 * suspect_rows[v] / all_rows[v] for v in ids]
    fig = Figure(figsize=(6, 3.5), dpi=DPI, layout="constrained")
    ax = fig.add_subplot(1, 1, 1)
    ax.hist(shares, bins=np.linspace(0, 100, 21), color="tab:blue", edgecolor="white")
    ax.set_xlabel("suspect rows per video (%)")
    ax.set_ylabel("videos")
    ax.set_title(f"quality over {len(ids)} videos", fontsize=10)
    return _save(fig, path)


def write_plots(out_dir: str | Path, plots_dir: str | Path) -> list[Path]:
    """All plots of an output root into ``plots_dir`` (created); returns the files."""
    plots_dir = Path(plots_dir)
    try:
        plots_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create plot folder {plots_dir}: {exc.strerror}") from exc
    hands = read_table(out_dir, "hands")
    objects = read_table(out_dir, "objects")
    written = []
    hand_rows, object_rows = rows_by_value(hands["video_id"]), rows_by_value(objects["video_id"])
    none = np.zeros(0, np.int64)
    for video_id in sorted(set(hand_rows) | set(object_rows)):
        mine = (hands.take(hand_rows.get(video_id, none)),
                objects.take(object_rows.get(video_id, none)))
        written.append(plot_trajectories(*mine, video_id,
                                         plots_dir / f"{video_id}_trajectories.png"))
        written.append(plot_quality_timeline(*mine, video_id,
                                             plots_dir / f"{video_id}_quality.png"))
    written.append(plot_quality_histogram(hands, objects, plots_dir / "quality_histogram.png"))
    return written
