"""``hflpipe demo``: the whole pipeline on a generated scene, with synthetic weights.

Everything it needs ships inside the package: the scene is rendered, the
checkpoint is written from the synthetic recipe and the MANO-format model is
package data. The weights are NOT trained, so the poses are not meaningful;
the demo shows the plumbing, the output files and their schema.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hflpipe.model.synthetic_checkpoint import synthetic_mano_path, write_synthetic_checkpoint
from hflpipe.pipeline.config.run_config import make_config
from hflpipe.pipeline.demo.scene import make_demo_scene
from hflpipe.pipeline.inputs.videos import video_id_for
from hflpipe.pipeline.results.render import render_overlay
from hflpipe.pipeline.run.runner import RunSummary, run

DEMO_FRAMES = 48


@dataclass(frozen=True)
class DemoResult:
    """Where the demo put things, and the run's summary."""

    out_dir: Path
    results_dir: Path
    video: Path
    overlay: Path
    checkpoint: Path
    summary: RunSummary


def run_demo(out_dir: str | Path, *, num_frames: int = DEMO_FRAMES, progress: bool = True
             ) -> DemoResult:
    """Generate the scene and weights under ``out_dir``, run the pipeline, render the overlay."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    scene = make_demo_scene(out_dir / "scene", num_frames=num_frames)
    checkpoint = out_dir / "synthetic_hflnet.pth.tar"
    if not checkpoint.exists():
        write_synthetic_checkpoint(checkpoint)
    results = out_dir / "results"
    config = make_config(
        videos=[str(scene.video_path)], out=results, checkpoint=checkpoint,
        mano=synthetic_mano_path(), detector="boxes", boxes=scene.boxes_path,
        intrinsics=str(scene.intrinsics_path), object=scene.object_name,
        max_concurrent_videos=1,
    )
    summary = run(config, progress=progress)
    overlay = render_overlay(scene.video_path, results, video_id_for(scene.video_path),
                             out_dir / "overlay.mp4")
    return DemoResult(out_dir, results, scene.video_path, overlay, checkpoint, summary)
