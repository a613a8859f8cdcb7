"""``hflpipe inspect OUT``: what an output directory holds, per job, and how much to trust it.

A job is one config hash: every ``videos`` row records the hash of the config that
produced it, so one folder re-run with changed options holds several jobs. Any folder
below ``OUT`` (up to three levels) that has a ``videos`` folder is read as an output
root, which covers versioned layouts (``OUT/versions/<hash>/``) as well as plain ones.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from hflpipe.jsonable import to_jsonable
from hflpipe.pipeline.common.errors import InputError, one_line
from hflpipe.pipeline.output.quality import TrackQuality, track_quality
from hflpipe.pipeline.output.reader import read_table, scan_output
from hflpipe.pipeline.output.schema import column_numpy

#: How deep below OUT output roots are looked for.
MAX_DEPTH = 3
_QUALITY_COLUMNS = {
    "hands": ["video_id", "track_id", "handedness", "interpolated", "suspect",
              "suspect_reasons", "jitter_mps2", "handedness_flip", "hand_object_distance_m"],
    "objects": ["video_id", "track_id", "object_name", "interpolated", "suspect",
                "suspect_reasons", "jitter_mps2", "pose_valid", "reprojection_error_px"],
}


@dataclass
class JobSummary:
    """Totals of one job (config hash) in one output root.

    ``frames``: decoded frames of the ``ok`` videos; ``frames_processed``: frames run
    through the model. ``failures``: normalised reason -> video ids (see
    :func:`failure_reason`). ``suspect_*``/``interpolated_*``: row counts.
    """

    root: str
    config_hash: str
    videos_ok: int = 0
    videos_failed: int = 0
    videos_skipped: int = 0
    frames: int = 0
    frames_processed: int = 0
    hand_tracks: int = 0
    object_tracks: int = 0
    hand_rows: int = 0
    object_rows: int = 0
    interpolated_hand_rows: int = 0
    suspect_hand_rows: int = 0
    suspect_object_rows: int = 0
    object_pose_rows: int = 0
    suspect_reasons: dict[str, int] = field(default_factory=dict)
    failures: dict[str, list[str]] = field(default_factory=dict)


@dataclass
class OutputReport:
    """Everything ``inspect`` found below one path."""

    path: str
    jobs: list[JobSummary]
    tracks: list[TrackQuality]
    unreadable: dict[str, str]

    def to_json(self) -> dict:
        """A JSON-ready dict (NaN becomes None)."""
        return to_jsonable({
            "path": self.path,
            "jobs": [asdict(job) for job in self.jobs],
            "tracks": [asdict(t) | {"suspect_fraction": t.suspect_fraction}
                       for t in self.tracks],
            "unreadable": self.unreadable,
        })


def find_output_roots(path: str | Path) -> list[Path]:
    """Folders at or below ``path`` (``MAX_DEPTH`` levels) holding a ``videos`` folder."""
    path = Path(path)
    if not path.is_dir():
        raise InputError(f"output directory {path}: not a directory")
    roots = []
    frontier = [path]
    for _ in range(MAX_DEPTH + 1):
        next_frontier = []
        for folder in frontier:
            if (folder / "videos").is_dir():
                roots.append(folder)
            next_frontier += sorted(p for p in folder.iterdir()
                                    if p.is_dir() and not p.name.startswith("."))
        frontier = next_frontier
    if not roots:
        raise InputError(f"output directory {path}: no hflpipe output in it (no videos/ folder)")
    return roots


def failure_reason(error: str | None, path: str | None = None) -> str:
    """An error message with its video-specific parts replaced, so equal causes group.

    The video's path becomes ``<video>``, other paths ``<path>``, numbers ``<n>``.
    """
    text = one_line(error or "unknown error")
    if path:
        text = text.replace(path, "<video>")
    text = re.sub(r"(?<![\w<])/[^\s:,;'\"]+", "<path>", text)
    return re.sub(r"\b\d+(\.\d+)?\b", "<n>", text)


def inspect_output(path: str | Path) -> OutputReport:
    """Summarise every output root below ``path``: per-job totals and per-track quality."""
    jobs: list[JobSummary] = []
    tracks: list[TrackQuality] = []
    unreadable: dict[str, str] = {}
    for root in find_output_roots(path):
        unreadable |= {str(p): why for p, why in scan_output(root).unreadable.items()}
        videos = read_table(root, "videos").to_pylist()
        hands = read_table(root, "hands", columns=_QUALITY_COLUMNS["hands"])
        objects = read_table(root, "objects", columns=_QUALITY_COLUMNS["objects"])
        jobs += _job_summaries(root, videos, hands, objects)
        tracks += track_quality(hands, objects)
    return OutputReport(str(path), jobs, tracks, unreadable)


def _job_summaries(
    root: Path, videos: list[dict], hands: pa.Table, objects: pa.Table
) -> list[JobSummary]:
    by_hash: dict[str, JobSummary] = {}
    video_job: dict[str, str] = {}
    for row in videos:
        job = by_hash.setdefault(row["config_hash"], JobSummary(str(root), row["config_hash"]))
        video_job[row["video_id"]] = row["config_hash"]
        status = row["status"]
        if status == "ok":
            job.videos_ok += 1
            job.frames += row["num_frames"] or 0
            job.frames_processed += row["frames_processed"] or 0
            job.hand_tracks += row["hand_tracks"] or 0
            job.object_tracks += row["object_tracks"] or 0
        else:
            if status == "failed":
                job.videos_failed += 1
            else:
                job.videos_skipped += 1
            reason = failure_reason(row["error"], row["path"])
            job.failures.setdefault(f"{status}: {reason}", []).append(row["video_id"])
    for table, kind in ((hands, "hand"), (objects, "object")):
        if table.num_rows == 0:
            continue
        owner = np.array([video_job.get(v, "") for v in table.column("video_id").to_pylist()])
        suspect = column_numpy(table.column("suspect")) == 1.0
        interpolated = table.column("interpolated").to_numpy(zero_copy_only=False)
        reasons = table.column("suspect_reasons").to_pylist()
        for config_hash, job in by_hash.items():
            mine = owner == config_hash
            setattr(job, f"{kind}_rows", int(mine.sum()))
            setattr(job, f"suspect_{kind}_rows", int((suspect & mine).sum()))
            if kind == "hand":
                job.interpolated_hand_rows = int((interpolated & mine).sum())
            else:
                pose = table.column("pose_valid").to_numpy(zero_copy_only=False)
                job.object_pose_rows = int((pose & mine).sum())
            counts = Counter(
                name for i in np.flatnonzero(mine) for name in (reasons[i] or "").split(",")
                if name
            )
            for name, count in counts.items():
                job.suspect_reasons[f"{kind}:{name}"] = count
    return list(by_hash.values())


def format_report(report: OutputReport, *, tracks: bool = True) -> str:
    """The human-readable text ``hflpipe inspect`` prints."""
    lines = []
    for job in report.jobs:
        lines.append(f"job {job.config_hash}  ({job.root})")
        lines.append(f"  videos     ok {job.videos_ok}  failed {job.videos_failed}  "
                     f"skipped {job.videos_skipped}")
        lines.append(f"  frames     {job.frames} decoded, {job.frames_processed} processed")
        lines.append(f"  tracks     {job.hand_tracks} hand, {job.object_tracks} object")
        lines.append(f"  hands      {job.hand_rows} rows, {job.interpolated_hand_rows} "
                     f"interpolated, {job.suspect_hand_rows} suspect"
                     f"{_percent(job.suspect_hand_rows, job.hand_rows)}")
        lines.append(f"  objects    {job.object_rows} rows, {job.object_pose_rows} with a pose, "
                     f"{job.suspect_object_rows} suspect"
                     f"{_percent(job.suspect_object_rows, job.object_rows)}")
        if job.suspect_reasons:
            ranked = sorted(job.suspect_reasons.items(), key=lambda kv: (-kv[1], kv[0]))
            lines.append("  suspect by rule: " + ", ".join(f"{k} {v}" for k, v in ranked))
        for reason, ids in sorted(job.failures.items(), key=lambda kv: -len(kv[1])):
            shown = ", ".join(ids[:3]) + (f" (+{len(ids) - 3} more)" if len(ids) > 3 else "")
            lines.append(f"  {len(ids)} x {reason}  [{shown}]")
    if tracks and report.tracks:
        lines.append("")
        lines.append(f"{'video':<28} {'track':<12} {'frames':>6} {'interp':>6} {'suspect':>8} "
                     f"{'jitter p50/p95 m/s2':>20}  top reasons")
        for t in report.tracks:
            top = ", ".join(f"{k} {v}" for k, v in
                            sorted(t.reasons.items(), key=lambda kv: -kv[1])[:2])
            lines.append(
                f"{t.video_id[:28]:<28} {f'{t.kind} {t.track_id} {t.label}'[:12]:<12} "
                f"{t.frames:>6} {t.interpolated:>6} {t.suspect:>8} "
                f"{_num(t.median_jitter_mps2):>9}/{_num(t.p95_jitter_mps2):<10}  {top}"
            )
    for path, why in report.unreadable.items():
        lines.append(f"UNREADABLE {path}: {why}")
    return "\n".join(lines)


def _percent(part: int, whole: int) -> str:
    return f" ({100.0 * part / whole:.1f}%)" if whole else ""


def _num(value: float) -> str:
    return f"{value:.3g}" if np.isfinite(value) else "-"
