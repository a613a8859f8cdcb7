"""The ``hflpipe`` command line: thin commands over library calls."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

import click

from hflpipe import __version__
from hflpipe.model.errors import ModelFileError
from hflpipe.pipeline.errors import HflpipeError

SYNTHETIC_NOTE = (
    "NOTE: the demo runs HFL-Net with SYNTHETIC weights and a synthetic hand model, so the "
    "poses are not meaningful. For real results bring the official checkpoint and "
    "MANO_RIGHT.pkl:\n  hflpipe run --videos 'clips/*.mp4' --out results "
    "--checkpoint checkpoint.pth.tar --mano MANO_RIGHT.pkl"
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="hflpipe")
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
def cli(verbose: int) -> None:
    """HFL-Net hand and object pose tracks from videos, on Ray, to Parquet."""
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


@cli.command("run")
@click.option("--videos", "videos", multiple=True, required=True,
              help="Video file or glob (quote it); repeatable.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Output directory.")
@click.option("--checkpoint", type=click.Path(path_type=Path), required=True,
              help="Official HFL-Net checkpoint (.pth.tar).")
@click.option("--mano", type=click.Path(path_type=Path), default=None,
              help="MANO_RIGHT.pkl or converted .npz (checked against the checkpoint).")
@click.option("--intrinsics", default=None, help="'fx,fy,cx,cy' or a JSON file.")
@click.option("--hfov", "hfov_deg", type=float, default=60.0, show_default=True,
              help="Horizontal field of view assumed without --intrinsics.")
@click.option("--object", "object_", default=None,
              help="YCB object name (e.g. 003_cracker_box) or a mesh/point file.")
@click.option("--hand-detector", "detector", type=click.Choice(["mediapipe", "boxes",
              "torchvision"]), default=None, help="Detector (default: mediapipe, or boxes "
              "when --boxes is given).")
@click.option("--boxes", type=click.Path(path_type=Path), default=None,
              help="Boxes file (CSV/JSON/Parquet); see docs/boxes-format.md.")
@click.option("--torchvision-model", default=None, help="torchvision detection builder name.")
@click.option("--torchvision-weights", type=click.Path(path_type=Path), default=None)
@click.option("--torchvision-classes", default=None,
              help='Class map as JSON, e.g. \'{"1": "hand", "2": "003_cracker_box"}\'.')
@click.option("--decoder", type=click.Choice(["decord", "pyav"]), default="decord",
              show_default=True)
@click.option("--stride", type=int, default=1, show_default=True, help="Every n-th frame.")
@click.option("--start", "start_s", type=float, default=None, help="Start time (s).")
@click.option("--end", "end_s", type=float, default=None, help="End time (s).")
@click.option("--batch-size", type=int, default=32, show_default=True)
@click.option("--actors", "num_actors", type=int, default=None,
              help="Inference actors (default: one per GPU, or 1).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto",
              show_default=True)
@click.option("--precision", type=click.Choice(["auto", "fp32", "bf16", "fp16"]),
              default="auto", show_default=True)
@click.option("--vertices/--no-vertices", "with_vertices", default=False,
              help="Also write the 778 MANO vertices per hand.")
@click.option("--max-gap", type=int, default=5, show_default=True,
              help="Longest gap (frames) filled by interpolation.")
@click.option("--retry-failed", is_flag=True, help="Re-run videos that failed before.")
@click.option("--address", default=None, help="Ray cluster address ('auto' to join).")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def run_command(videos: tuple[str, ...], out: Path, fmt: str, quiet: bool, object_: str | None,
                detector: str | None, torchvision_classes: str | None, **options: object) -> None:
    """Run HFL-Net over videos and write hand/object pose tracks to Parquet.

    \b
    Example:
      hflpipe run --videos 'clips/*.mp4' --out results \\
          --checkpoint checkpoint.pth.tar --mano MANO_RIGHT.pkl --object 003_cracker_box
    """
    from hflpipe.pipeline.config import make_config
    from hflpipe.pipeline.runner import run

    classes = None
    if torchvision_classes:
        try:
            classes = {int(k): str(v) for k, v in json.loads(torchvision_classes).items()}
        except (ValueError, AttributeError) as exc:
            raise click.BadParameter(f"not a JSON object of id -> name ({exc})",
                                     param_hint="--torchvision-classes") from None
    if detector is None:
        detector = "boxes" if options.get("boxes") else "mediapipe"
    config = make_config(videos=list(videos), out=out, object=object_, detector=detector,
                         torchvision_classes=classes, **options)
    summary = run(config, progress=not quiet)
    _print_summary(summary, fmt)
    if summary.statuses.get("failed"):
        sys.exit(2)


@cli.command("demo")
@click.option("--out", type=click.Path(path_type=Path), default=Path("hflpipe-demo"),
              show_default=True, help="Where to put the scene, weights and results.")
@click.option("--frames", type=int, default=48, show_default=True)
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def demo_command(out: Path, frames: int, fmt: str, quiet: bool) -> None:
    """Generate a synthetic scene and run the whole pipeline on it (CPU is fine)."""
    from hflpipe.pipeline.demo import run_demo

    click.echo(SYNTHETIC_NOTE, err=True)
    result = run_demo(out, num_frames=frames, progress=not quiet)
    _print_summary(result.summary, fmt)
    if fmt == "table":
        click.echo(f"video:    {result.video}")
        click.echo(f"overlay:  {result.overlay}")
        click.echo(f"results:  {result.results_dir}/{{hands,objects,videos}}/*.parquet")


@cli.command("convert-mano")
@click.argument("src", type=click.Path(path_type=Path))
@click.argument("dst", type=click.Path(path_type=Path))
def convert_mano_command(src: Path, dst: Path) -> None:
    """Convert MANO_RIGHT.pkl to a plain .npz once (no chumpy, no pickle afterwards)."""
    from hflpipe.model.mano_file import convert_mano

    model = convert_mano(src, dst)
    click.echo(f"wrote {dst} (from {src}, sha256 {model.sha256[:12]}...)")


@cli.command("setup-hand-detector")
@click.option("--env-dir", type=click.Path(path_type=Path), default=None,
              help="Where to create the detector's own virtualenv.")
def setup_hand_detector_command(env_dir: Path | None) -> None:
    """Create the isolated environment of the offline MediaPipe hand detector (once)."""
    from hflpipe.pipeline.detect_mediapipe import setup_mediapipe

    path = setup_mediapipe(env_dir)
    click.echo(f"hand detector ready in {path}")


def _print_summary(summary: object, fmt: str) -> None:
    counts = dict(summary.statuses)
    data = {
        "out": str(summary.out), "config_hash": summary.config_hash,
        "ok": counts.get("ok", 0), "failed": counts.get("failed", 0),
        "skipped": counts.get("skipped", 0), "already_done": summary.already_done,
        "frames": summary.frames, "hand_rows": summary.hand_rows,
        "object_rows": summary.object_rows, "seconds": round(summary.elapsed_s, 1),
        "failures": [{"video": v, "error": e} for v, e in summary.failures],
    }
    if fmt == "json":
        click.echo(json.dumps(data, indent=2))
        return
    for key in ("out", "config_hash", "ok", "failed", "already_done", "frames", "hand_rows",
                "object_rows", "seconds"):
        click.echo(f"{key:<13} {data[key]}")
    for failure in data["failures"]:
        click.echo(f"FAILED {failure['video']}: {failure['error']}")


def main() -> None:
    """Entry point: user mistakes become one line on stderr and exit status 1."""
    try:
        cli(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except (HflpipeError, ModelFileError) as exc:
        if os.environ.get("HFLPIPE_DEBUG"):
            raise
        click.echo(f"hflpipe: error: {exc}", err=True)
        sys.exit(1)
