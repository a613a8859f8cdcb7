"""Draw a run's results onto its video: hand skeletons, object keypoint boxes, track ids."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pyarrow.compute as pc

from hflpipe.pipeline.decode import get_decoder
from hflpipe.pipeline.writer import read_table

#: Bones of the 21-joint hand (wrist, then 4 joints per finger from thumb to little).
HAND_BONES = [(0, 1 + 4 * f) for f in range(5)] + [
    (1 + 4 * f + k, 2 + 4 * f + k) for f in range(5) for k in range(3)
]
#: Edges of the 8 box corners of the 21 control points (corner i has bits x, y, z).
BOX_EDGES = [(a, b) for a in range(8) for b in range(a + 1, 8) if bin(a ^ b).count("1") == 1]
RIGHT_COLOUR, LEFT_COLOUR, OBJECT_COLOUR = (60, 200, 60), (230, 120, 40), (40, 160, 240)


def render_overlay(video: str | Path, out_dir: str | Path, video_id: str, output: str | Path,
                   decoder: str = "decord") -> Path:
    """Write ``output`` (mp4): ``video`` with the results of ``video_id`` from ``out_dir``."""
    hands = read_table(out_dir, "hands")
    objects = read_table(out_dir, "objects")
    hands = hands.filter(pc.equal(hands["video_id"], video_id)).to_pylist()
    objects = objects.filter(pc.equal(objects["video_id"], video_id)).to_pylist()
    by_frame: dict[int, list[tuple[str, dict]]] = {}
    for row in hands:
        by_frame.setdefault(row["frame_index"], []).append(("hand", row))
    for row in objects:
        by_frame.setdefault(row["frame_index"], []).append(("object", row))
    dec = get_decoder(decoder)
    info = dec.probe(str(video))
    output = Path(output)
    tmp = output.with_name(f".{output.name}.tmp.mp4")
    writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), info.fps,
                             (info.width, info.height))
    try:
        for chunk in dec.read_chunks(str(video)):
            for index, frame in zip(chunk.indices.tolist(), chunk.frames, strict=True):
                image = np.ascontiguousarray(frame[..., ::-1])
                for kind, row in by_frame.get(index, []):
                    (draw_hand if kind == "hand" else draw_object)(image, row)
                writer.write(image)
    finally:
        writer.release()
    os.replace(tmp, output)
    return output


def draw_hand(image: np.ndarray, row: dict) -> None:
    """Skeleton from ``joints2d``; dashed look (thin lines) on interpolated frames."""
    colour = LEFT_COLOUR if row["handedness"] == "left" else RIGHT_COLOUR
    points = np.round(np.asarray(row["joints2d"], dtype=np.float64)).astype(int)
    thickness = 1 if row["interpolated"] else 2
    for a, b in HAND_BONES:
        cv2.line(image, tuple(points[a]), tuple(points[b]), colour, thickness, cv2.LINE_AA)
    for p in points:
        cv2.circle(image, tuple(p), 2, colour, -1, cv2.LINE_AA)
    mark = "*" if row["interpolated"] else ""
    label = f"{row['handedness'][0].upper()}{row['track_id']}{mark}"
    x0, y0 = (int(v) for v in row["box"][:2])
    cv2.putText(image, label, (x0, max(12, y0 - 4)), cv2.FONT_HERSHEY_SIMPLEX, 0.5, colour, 1)


def draw_object(image: np.ndarray, row: dict) -> None:
    """The object's 3D box from its 21 keypoints (corners 0-7), and its track id."""
    points = np.round(np.asarray(row["keypoints2d"], dtype=np.float64)).astype(int)
    for a, b in BOX_EDGES:
        cv2.line(image, tuple(points[a]), tuple(points[b]), OBJECT_COLOUR, 1, cv2.LINE_AA)
    x0, y0 = (int(v) for v in row["box"][:2])
    name = row["object_name"] or "object"
    cv2.putText(image, f"{name} #{row['track_id']}", (x0, max(12, y0 - 4)),
                cv2.FONT_HERSHEY_SIMPLEX, 0.45, OBJECT_COLOUR, 1)
