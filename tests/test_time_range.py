"""--start/--end are seconds from the video's first frame, whatever its container time;
an empty selection is a warning and a note, not a silent success."""

from __future__ import annotations

import numpy as np
from videogen import moving_square_frames, write_vfr_video

from hflpipe.model.synthetic_checkpoint import synthetic_mano_path
from hflpipe.pipeline.config.run_config import RunConfig
from hflpipe.pipeline.decode.base import get_decoder
from hflpipe.pipeline.demo.scene import make_demo_scene
from hflpipe.pipeline.inputs.videos import VideoInput, video_id_for
from hflpipe.pipeline.run.context import InputCache, context_for_video, prepare_context
from hflpipe.pipeline.run.video import presentation_range, process_video


def test_a_clip_starting_at_ten_seconds_counts_from_its_first_frame(tmp_path):
    path = tmp_path / "cut.mkv"
    write_vfr_video(path, list(moving_square_frames(10)), [10 + i / 10 for i in range(10)])
    for backend in ("pyav", "decord"):
        decoder = get_decoder(backend)
        start, end = presentation_range(decoder, str(path), 0.3, 0.7)
        chunks = decoder.read_chunks(str(path), start_s=start, end_s=end)
        assert np.concatenate([c.indices for c in chunks]).tolist() == [3, 4, 5, 6], backend
    assert presentation_range(get_decoder("pyav"), str(path), None, None) == (None, None)


def test_an_empty_selection_and_unused_boxes_rows_are_noted(tmp_path, synthetic_checkpoint):
    scene = make_demo_scene(tmp_path / "scene", num_frames=2, size=(320, 240))
    boxes = tmp_path / "boxes.csv"
    lines = scene.boxes_path.read_text().splitlines()
    lines += ["50,hand,1,1,20,20,1.0,right,", "1,hand,1,1,20,20,0.2,left,"]
    boxes.write_text("\n".join(lines) + "\n")
    config = RunConfig(videos=[str(scene.video_path)], out=tmp_path / "out", detector="boxes",
                       boxes=boxes, checkpoint=synthetic_checkpoint,
                       mano=synthetic_mano_path(), device="cpu", start_s=5.0)
    video = VideoInput(scene.video_path, video_id_for(scene.video_path))
    context = context_for_video(prepare_context(config), video, InputCache())
    outcome = process_video(video, config, context, inference=None)
    row = outcome.video_row
    assert row["status"] == "ok" and row["frames_processed"] == 0
    assert outcome.hands.num_rows == 0
    past, below, empty = row["notes"]
    assert past == "1 boxes file rows are for frames past the video's last frame (1); they " \
        "are ignored"
    assert below.endswith("1 rows for this video score below --score-threshold 0.5 and are "
                          "ignored")
    assert empty.startswith("no frames in the selected range (--start 5 s;")
