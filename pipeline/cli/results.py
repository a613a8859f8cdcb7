"""Commands that look at finished output: ``render``, ``inspect``, ``eval``, ``export``.

Each is a thin click command over a library call; ``pipeline/cli.py`` registers them on
the main group. User mistakes raise ``HflpipeError``s, which the entry point prints as
one line.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from hflpipe.pipeline.decode.base import BACKENDS, DEFAULT_BACKEND

_FORMAT = click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table",
                       show_default=True, help="Human-readable table or JSON.")


@click.command("render")
@click.argument("video", type=click.Path(path_type=Path, exists=True, dir_okay=False))
@click.argument("out_dir", type=click.Path(path_type=Path, exists=True, file_okay=False))
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True,
              help="overlay.mp4, or frame.png for stills (<stem>_<frame>.png per frame).")
@click.option("--frames", default=None, help="Frame range 'A:B' (B exclusive) or one frame.")
@click.option("--video-id", default=None,
              help="The video's id in OUT_DIR (default: found by its path).")
@click.option("--mano", type=click.Path(path_type=Path, exists=True, dir_okay=False),
              default=None, help="MANO file: draws the hand mesh (wireframe).")
@click.option("--object", "object_", default=None,
              help="Object control points for names outside the YCB catalogue: a mesh or "
              "point file.")
@click.option("--decoder", type=click.Choice(BACKENDS), default=DEFAULT_BACKEND,
              show_default=True)
def render_command(video: Path, out_dir: Path, output: Path, frames: str | None,
                   video_id: str | None, mano: Path | None, object_: str | None,
                   decoder: str) -> None:
    """Draw the results of OUT_DIR onto VIDEO: skeletons, mesh, object boxes, ids.

    \b
    Examples:
      hflpipe render clip.mp4 results -o overlay.mp4 --mano MANO_RIGHT.pkl
      hflpipe render clip.mp4 results -o look.png --frames 120   # one still
    """
    from hflpipe.pipeline.results.render import parse_frames, render

    points = None
    if object_ is not None:
        from hflpipe.pipeline.inputs.objects import resolve_object

        points = resolve_object(object_)[1]
    written = render(video, out_dir, output, video_id=video_id, frames=parse_frames(frames),
                     mano=mano, object_points=points, decoder=decoder)
    for path in written:
        click.echo(str(path))


@click.command("inspect")
@click.argument("out_dir", type=click.Path(path_type=Path))
@click.option("--plots", "plots_dir", type=click.Path(path_type=Path), default=None,
              help="Also write PNG plots (trajectories, quality timelines, histogram) here.")
@click.option("--no-tracks", is_flag=True, help="Only the per-job totals.")
@_FORMAT
def inspect_command(out_dir: Path, plots_dir: Path | None, no_tracks: bool, fmt: str) -> None:
    """Per-job totals, grouped failures and per-track quality of an output directory.

    \b
    Example:
      hflpipe inspect results --plots results/plots
    """
    from hflpipe.pipeline.results.inspect import find_output_roots, format_report, inspect_output

    report = inspect_output(out_dir)
    if fmt == "json":
        data = report.to_json()
        if no_tracks:
            data.pop("tracks")
        click.echo(json.dumps(data, indent=2))
    else:
        click.echo(format_report(report, tracks=not no_tracks))
    if plots_dir is not None:
        from hflpipe.pipeline.results.plots import write_plots

        roots = find_output_roots(out_dir)
        for root in roots:
            target = plots_dir if len(roots) == 1 else plots_dir / root.relative_to(out_dir)
            written = write_plots(root, target)
            click.echo(f"wrote {len(written)} plots to {target}", err=True)


@click.command("eval")
@click.argument("out_dir", type=click.Path(path_type=Path, exists=True, file_okay=False))
@click.argument("groundtruth", nargs=-1, required=True,
                type=click.Path(path_type=Path, exists=True, dir_okay=False))
@_FORMAT
def eval_command(out_dir: Path, groundtruth: tuple[Path, ...], fmt: str) -> None:
    """Hand (PA-MPJPE, PA-MPVPE, F-scores) and object (ADD-0.1D) metrics against
    ground-truth .npz files, one per video (format in docs/results.md).

    \b
    Example:
      hflpipe eval results gt/*.npz --format json
    """
    from hflpipe.pipeline.results.evaluate import evaluate_video, load_groundtruth

    results = [evaluate_video(out_dir, load_groundtruth(path)) for path in groundtruth]
    if fmt == "json":
        click.echo(json.dumps({r.video_id: r.summary for r in results}, indent=2))
        return
    for r in results:
        click.echo(r.video_id)
        for key, value in r.summary.items():
            shown = "-" if value is None else f"{value:.3f}" if isinstance(value, float) \
                else str(value)
            click.echo(f"  {key:<20} {shown}")


@click.command("export")
@click.argument("out_dir", type=click.Path(path_type=Path, exists=True, file_okay=False))
@click.option("--format", "fmt", type=click.Choice(["json", "npz", "csv"]), required=True)
@click.option("-o", "--output", "dest", type=click.Path(path_type=Path), required=True,
              help="Folder for the exported files (created).")
@click.option("--mano", type=click.Path(path_type=Path, exists=True, dir_okay=False),
              default=None, help="MANO file: also export 'transl' for MANO tools.")
def export_command(out_dir: Path, fmt: str, dest: Path, mano: Path | None) -> None:
    """Export the tracks as JSON, NPZ or CSV (layout in docs/results.md).

    \b
    Example:
      hflpipe export results --format json -o results-json --mano MANO_RIGHT.pkl
    """
    from hflpipe.pipeline.results.export import export_output

    written = export_output(out_dir, dest, fmt, mano=mano)
    click.echo(f"wrote {len(written)} files to {dest}", err=True)
    for path in written:
        click.echo(str(path))


COMMANDS = (render_command, inspect_command, eval_command, export_command)
