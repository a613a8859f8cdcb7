"""The ``hflpipe`` command line: thin commands over library calls."""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from click.core import ParameterSource
from pydantic_core import PydanticUndefined

from hflpipe import __version__
from hflpipe.bench.suite import BENCHMARKS, run_benchmarks
from hflpipe.model.errors import ModelFileError
from hflpipe.pipeline.cli.results import COMMANDS as RESULT_COMMANDS
from hflpipe.pipeline.common.errors import ConfigError, HflpipeError, redact
from hflpipe.pipeline.config.run_config import RunConfig
from hflpipe.pipeline.decode.base import BACKENDS
from hflpipe.pipeline.run.stop import RunInterrupted

if TYPE_CHECKING:
    from hflpipe.pipeline.run.submit import JobReport

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
    for handler in logging.getLogger().handlers:
        handler.addFilter(_RedactingFilter())


class _RedactingFilter(logging.Filter):
    """Masks credentials in every log line (see :func:`hflpipe.pipeline.common.errors.redact`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = redact(record.getMessage()), None
        return True


def _option(*decls: str, field: str, help: str, **kwargs: Any) -> Callable:
    """A ``hflpipe run`` flag for RunConfig ``field``: unset unless given, so spec values hold.

    The help shows the RunConfig default, the value used when neither flag nor spec sets it.
    """
    default = RunConfig.model_fields[field].default
    shown = f" [default: {default}]" if default not in (None, False, PydanticUndefined) else ""
    return click.option(*decls, field, default=None, help=help + shown, **kwargs)


_PATH = click.Path(path_type=Path)
#: A path or a store URL (``s3://...``): kept as text, since ``Path`` would fold its ``//``.
_LOCATION = click.Path(path_type=str)

RUN_OPTIONS = [
    _option("--videos", field="videos", multiple=True,
            help="Video file or glob (quote it); repeatable."),
    _option("--video-list", field="video_list", type=_LOCATION,
            help="Text file, one video path or glob a line."),
    _option("--manifest", field="manifest", type=_LOCATION,
            help="CSV/JSON of videos with per-video object, intrinsics, boxes (docs/jobs.md)."),
    _option("--out", field="out", type=_LOCATION,
            help="Output directory, or a store URL (s3://bucket/prefix)."),
    _option("--checkpoint", field="checkpoint", type=_LOCATION,
            help="Official HFL-Net checkpoint (.pth.tar)."),
    _option("--mano", field="mano", type=_LOCATION,
            help="MANO_RIGHT.pkl or converted .npz (checked against the checkpoint)."),
    _option("--intrinsics", field="intrinsics", help="'fx,fy,cx,cy' or a JSON file."),
    _option("--hfov", field="hfov_deg", type=float,
            help="Horizontal field of view assumed without --intrinsics."),
    _option("--object", field="object",
            help="YCB object name (e.g. 003_cracker_box) or a mesh/point file."),
    _option("--hand-detector", "--detector", field="detector",
            type=click.Choice(["mediapipe", "boxes", "torchvision", "hand-object"]),
            help="Detector (mediapipe unless a boxes file is given)."),
    _option("--boxes", field="boxes", type=_LOCATION,
            help="Boxes file (CSV/JSON/Parquet); see docs/boxes-format.md."),
    _option("--score-threshold", field="score_threshold", type=float,
            help="Detector score threshold."),
    _option("--detect-every", field="detect_every", type=int,
            help="Run the detector every n-th frame; propagate boxes from predictions between."),
    _option("--torchvision-model", field="torchvision_model",
            help="torchvision detection builder name."),
    _option("--torchvision-weights", field="torchvision_weights", type=_PATH,
            help="Weights for --torchvision-model."),
    _option("--hand-object-weights", field="hand_object_weights", type=_LOCATION,
            help="100DOH hand-object detector checkpoint (faster_rcnn_1_8_132028.pth)."),
    _option("--contact-states", field="contact_states",
            help="With the hand-object detector: contact states whose linked object HFL-Net "
            "gets, comma-separated (portable, stationary, other, self)."),
    _option("--torchvision-classes", field="torchvision_classes",
            help='Class map as JSON, e.g. \'{"1": "hand", "2": "003_cracker_box"}\'.'),
    _option("--decoder", field="decoder", type=click.Choice(BACKENDS),
            help="Video decoder: pyav (default) decodes every frame; decord seeks to "
            "keyframes, faster when far fewer frames are needed."),
    _option("--chunk-size", field="chunk_size", type=int, help="Frames decoded at once."),
    _option("--stream", field="stream", type=int,
            help="Index of the video stream to decode, as ffprobe lists it (default: the "
            "one a player shows: not cover art, the default stream, else the largest)."),
    _option("--stride", field="stride", type=int, help="Every n-th frame."),
    _option("--start", field="start_s", type=float,
            help="Start time (s from the video's first frame)."),
    _option("--end", field="end_s", type=float,
            help="End time (s from the video's first frame)."),
    _option("--max-gap", field="max_gap", type=int,
            help="Longest gap (selected frames) filled by interpolation."),
    _option("--smoothing-cutoff", field="smoothing_cutoff_hz", type=float,
            help="Smoothing bandwidth (Hz)."),
    _option("--vertices/--no-vertices", field="with_vertices",
            help="Also write the 778 MANO vertices per hand."),
    _option("--batch-size", field="batch_size", type=int, help="Crops per inference batch."),
    _option("--actors", field="num_actors", type=int,
            help="Inference actors (default: one per GPU, or 1)."),
    _option("--gpus-per-actor", field="gpus_per_actor", type=float, help="GPUs per actor."),
    _option("--cpus-per-actor", field="cpus_per_actor", type=float,
            help="CPUs per inference actor, its threads on the CPU (default: --cpus-per-task "
                 "with GPUs, half a node's CPUs without)."),
    _option("--cpus-per-task", field="cpus_per_task", type=float,
            help="CPUs per video (decode) task."),
    _option("--max-concurrent-videos", field="max_concurrent_videos", type=int,
            help="Videos in flight (default: cluster CPUs / --cpus-per-task)."),
    _option("--scratch-limit", field="scratch_limit_gb", type=float,
            help="Largest remote video (GB) a worker copies to its scratch space."),
    _option("--remote-videos", field="remote_videos", type=click.Choice(["stream", "copy"]),
            help="Read store videos streamed (pyav) or copied to scratch space first."),
    _option("--mediapipe-on", field="mediapipe_on",
            type=click.Choice(["auto", "actors", "tasks"]),
            help="Where the mediapipe detector's networks run: the inference actors "
            "(batched across videos, on their GPU) or each video task's CPU (default auto: "
            "the actors when they have a GPU)."),
    _option("--device", field="device", type=click.Choice(["auto", "cpu", "cuda"]),
            help="Inference device."),
    _option("--precision", field="precision",
            type=click.Choice(["auto", "fp32", "bf16", "fp16"]), help="Inference precision."),
    _option("--compile/--no-compile", field="compile",
            help="torch.compile the model (slow start, faster batches; same results)."),
    _option("--max-retries", field="max_retries", type=int,
            help="Retries of a video whose worker died."),
    _option("--stall-timeout", field="stall_timeout_s", type=float,
            help="Seconds without progress after which a video fails."),
    _option("--retry-failed", field="retry_failed", is_flag=True,
            help="Re-run videos that failed before."),
    _option("--new-version", field="new_version", is_flag=True,
            help="If OUT holds another config's results, write to OUT/versions/<hash>."),
    _option("--address", field="address",
            help="Ray cluster to join ('auto': the running one); default: start a local Ray."),
]


def _run_options(command: Callable) -> Callable:
    for option in reversed(RUN_OPTIONS):
        command = option(command)
    return command


@cli.command("run")
@click.argument("spec", nargs=-1, type=_PATH)
@_run_options
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@click.pass_context
def run_command(ctx: click.Context, spec: tuple[Path, ...], fmt: str, quiet: bool,
                **options: Any) -> None:
    """Run HFL-Net over videos and write hand/object pose tracks to Parquet.

    SPEC is a job spec (YAML, see docs/jobs.md); flags override its values.

    \b
    Examples:
      hflpipe run jobs/demo.yaml
      hflpipe run jobs/egocentric.yaml --out /data/results-v2 --stride 2
      hflpipe run --videos 'clips/*.mp4' --out results \\
          --checkpoint checkpoint.pth.tar --mano MANO_RIGHT.pkl --object 003_cracker_box
    """
    from hflpipe.pipeline.config.jobspec import NOT_A_SPEC_HINT, build_config, load_spec
    from hflpipe.pipeline.run.runner import run

    if len(spec) > 1:
        # The shell expanded an unquoted glob: every file after the first lands here.
        raise ConfigError(f"run takes one job spec, got {len(spec)} arguments ({spec[0]}, "
                          f"{spec[1]}, ...): {NOT_A_SPEC_HINT}")
    given = {name: value for name, value in options.items() if _given(ctx, name)}
    if "torchvision_classes" in given:
        given["torchvision_classes"] = _class_map(given["torchvision_classes"])
    if "videos" in given:
        given["videos"] = list(given["videos"])
    config = build_config(load_spec(spec[0]) if spec else None, given)
    summary = run(config, progress=not quiet)
    _print_summary(summary, fmt)
    if summary.statuses.get("failed") or summary.earlier_failures:
        sys.exit(2)


def _given(ctx: click.Context, name: str) -> bool:
    source = ctx.get_parameter_source(name)
    return source in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)


def _class_map(text: str) -> dict[int, str]:
    try:
        return {int(k): str(v) for k, v in json.loads(text).items()}
    except (ValueError, AttributeError) as exc:
        raise click.BadParameter(f"not a JSON object of id -> name ({exc})",
                                 param_hint="--torchvision-classes") from None


_ADDRESS = click.option(
    "--address", default=None,
    help="Job server of the cluster, e.g. http://HEAD:8265 (default: RAY_API_SERVER_ADDRESS "
         "or RAY_ADDRESS, else a local cluster).",
)
_FORMAT = click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")


@cli.command("submit", context_settings={"ignore_unknown_options": True})
@click.argument("spec", type=_PATH)
@_ADDRESS
@click.option("--working-dir", type=_PATH, default=None,
              help="Folder uploaded as the job's working directory (default: the spec's).")
@click.option("--submission-id", default=None, help="Choose the id (default: Ray's).")
@click.option("--follow", is_flag=True, help="Stream the job's output until it ends.")
@_FORMAT
@click.argument("run_args", nargs=-1, type=click.UNPROCESSED)
def submit_command(spec: Path, address: str | None, working_dir: Path | None,
                   submission_id: str | None, follow: bool, fmt: str,
                   run_args: tuple[str, ...]) -> None:
    """Submit job spec SPEC to a Ray cluster; prints the submission id.

    Flags after SPEC that submit does not know (e.g. --retry-failed, --stride 2) are
    passed to `hflpipe run` on the cluster.

    \b
    Example:
      hflpipe submit jobs/egocentric.yaml --address http://HEAD:8265 --retry-failed
      hflpipe status raysubmit_... --address http://HEAD:8265
    """
    from hflpipe.pipeline.run import submit as jobs

    job_id = jobs.submit(spec, address, working_dir=working_dir, run_args=run_args,
                         submission_id=submission_id)
    click.echo(json.dumps({"submission_id": job_id}) if fmt == "json" else job_id)
    if follow:
        _exit_with(jobs.follow(address, job_id, lambda text: click.echo(text, nl=False)))


@cli.command("status")
@click.argument("submission_id")
@_ADDRESS
@_FORMAT
def status_command(submission_id: str, address: str | None, fmt: str) -> None:
    """Status of a submitted job (PENDING, RUNNING, SUCCEEDED, FAILED, STOPPED)."""
    from hflpipe.pipeline.run import submit as jobs

    report = jobs.status(address, submission_id)
    if fmt == "json":
        click.echo(json.dumps(report.as_dict(), indent=2))
        return
    click.echo(f"{report.submission_id}  {report.status}")
    if report.message:
        click.echo(report.message)
    if report.metadata.get("out"):
        click.echo(f"out: {report.metadata['out']}")


@cli.command("logs")
@click.argument("submission_id")
@_ADDRESS
@click.option("--follow", "-f", is_flag=True, help="Keep streaming until the job ends.")
def logs_command(submission_id: str, address: str | None, follow: bool) -> None:
    """Output of a submitted job (its progress and final summary)."""
    from hflpipe.pipeline.run import submit as jobs

    if follow:
        _exit_with(jobs.follow(address, submission_id, lambda text: click.echo(text, nl=False)))
    else:
        click.echo(jobs.logs(address, submission_id), nl=False)


def _exit_with(report: JobReport) -> None:
    """After following a job: its final status on stderr; exit 0 only if it succeeded."""
    click.echo(f"job {report.submission_id}: {report.status}", err=True)
    if report.status != "SUCCEEDED":
        sys.exit(1)


@cli.command("demo")
@click.option("--out", type=click.Path(path_type=Path), default=Path("hflpipe-demo"),
              show_default=True, help="Where to put the scene, weights and results.")
@click.option("--frames", type=int, default=48, show_default=True)
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def demo_command(out: Path, frames: int, fmt: str, quiet: bool) -> None:
    """Generate a synthetic scene and run the whole pipeline on it (CPU is fine)."""
    from hflpipe.pipeline.demo.run import run_demo

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


@cli.command("bench")
@click.argument("names", nargs=-1, required=True, type=click.Choice([*BENCHMARKS, "all"]))
@click.option("--quick", is_flag=True,
              help="Tiny inputs: a rough first look, seconds to minutes each.")
@click.option("--out", type=_PATH, default=None,
              help="Results folder [default: bench/results/ in a source checkout, "
                   "else ./hflpipe-bench-results/].")
@click.option("--checkpoint", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="HFL-Net checkpoint [default: synthetic weights].")
def bench_command(names: tuple[str, ...], quick: bool, out: Path | None,
                  checkpoint: Path | None) -> None:
    """Measure this machine: each benchmark prints its tables and writes its JSON.

    NAMES: one or more of model, pipeline, decode, memory, scaling, smoothing, hand_object,
    or all.
    What each measures: docs/performance.md.
    """
    run_benchmarks(names, quick=quick, out_dir=out, checkpoint=checkpoint)


def _print_summary(summary: object, fmt: str) -> None:
    counts = dict(summary.statuses)
    data = {
        "out": str(summary.out), "config_hash": summary.config_hash,
        "ok": counts.get("ok", 0), "failed": counts.get("failed", 0),
        "skipped": counts.get("skipped", 0), "already_done": summary.already_done,
        "frames": summary.frames, "hand_rows": summary.hand_rows,
        "object_rows": summary.object_rows, "seconds": round(summary.elapsed_s, 1),
        "failures": [{"video": v, "error": e} for v, e in summary.failures],
        "redone": [{"video": v, "reason": r} for v, r in summary.redone],
        "earlier_failures": [{"video": v, "error": e} for v, e in summary.earlier_failures],
    }
    if fmt == "json":
        click.echo(json.dumps(data, indent=2))
        return
    for key in ("out", "config_hash", "ok", "failed", "already_done", "frames", "hand_rows",
                "object_rows", "seconds"):
        click.echo(f"{key:<13} {data[key]}")
    for redone in data["redone"]:
        click.echo(f"REDONE {redone['video']}: {redone['reason']}")
    for failure in data["failures"]:
        click.echo(f"FAILED {redact(failure['error'])}")
    for failure in data["earlier_failures"]:
        click.echo(f"FAILED EARLIER (--retry-failed re-runs it) {failure['video']}: "
                   f"{redact(failure['error'])}")


for _command in RESULT_COMMANDS:
    cli.add_command(_command)


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
    except RunInterrupted as stop:
        click.echo(f"hflpipe: {redact(str(stop))}", err=True)
        sys.exit(stop.exit_code)
    except (HflpipeError, ModelFileError) as exc:
        if os.environ.get("HFLPIPE_DEBUG"):
            raise
        click.echo(f"hflpipe: error: {redact(str(exc))}", err=True)
        sys.exit(1)
