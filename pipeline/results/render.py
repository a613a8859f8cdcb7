"""Draw a run's results onto its video (``hflpipe render``): a video or PNG stills.

Per frame: each hand's skeleton (``joints2d``) and, when its vertices are known, its MANO
mesh as a projected wireframe; each object's 3D bounding box from its 6D pose (from its
2D keypoints when it has no pose or no known control points); track ids, handedness,
interpolated rows (thin lines, ``*`` after the id) and suspect rows (a red ``!``).

Projection uses the video's intrinsics from the ``videos`` table, so what is drawn is
exactly where the camera model puts the 3D output. Hand vertices come from the
``vertices`` column (``--vertices`` runs) or are recomputed from ``mano_pose``,
``mano_shape`` and ``translation`` with a MANO file, which also gives the faces.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import torch

from hflpipe.atomic import atomic_path
from hflpipe.hashing import sha256_file
from hflpipe.model.control_points import load_control_points
from hflpipe.model.geometry import (
    mirror_mano_pose,
    mirror_points3d,
    project,
    quaternion_to_matrix,
    to_camera,
)
from hflpipe.model.mano import ManoLayer
from hflpipe.model.mano_file import load_mano_model
from hflpipe.pipeline.common.errors import InputError, OutputError
from hflpipe.pipeline.decode.base import DEFAULT_BACKEND, get_decoder
from hflpipe.pipeline.output.reader import read_table
from hflpipe.pipeline.output.schema import column_numpy

#: Bones of the 21-joint hand (wrist, then 4 joints per finger from thumb to little).
HAND_BONES = [(0, 1 + 4 * f) for f in range(5)] + [
    (1 + 4 * f + k, 2 + 4 * f + k) for f in range(5) for k in range(3)
]
#: Edges of the 8 box corners of the 21 control points (corner i has bits x, y, z).
BOX_EDGES = [(a, b) for a in range(8) for b in range(a + 1, 8) if bin(a ^ b).count("1") == 1]
# BGR, as OpenCV draws.
RIGHT_COLOUR, LEFT_COLOUR, OBJECT_COLOUR = (60, 200, 60), (230, 120, 40), (40, 160, 240)
SUSPECT_COLOUR = (40, 40, 230)
MESH_ALPHA = 0.45
# Sub-pixel drawing: OpenCV takes coordinates as integers scaled by 2**_SHIFT.
_SHIFT = 4


@dataclass(frozen=True)
class HandMesh:
    """How to get a hand's mesh: ``faces`` (F, 3), and a layer to pose it when the table
    has no vertices."""

    faces: np.ndarray
    layer: ManoLayer | None


def load_hand_mesh(mano: str | Path) -> HandMesh:
    """Faces and the MANO layer from a MANO file (``.pkl`` or converted ``.npz``)."""
    model = load_mano_model(mano)
    return HandMesh(np.asarray(model.faces, dtype=np.int64), ManoLayer(model).eval())


def parse_frames(spec: str | None) -> tuple[int, int] | None:
    """``"A:B"`` (B exclusive, either side may be empty) or ``"A"`` -> (A, B); None: all."""
    if spec is None:
        return None
    try:
        if ":" in spec:
            start, end = spec.split(":", 1)
            bounds = (int(start) if start else 0, int(end) if end else 2**62)
        else:
            bounds = (int(spec), int(spec) + 1)
    except ValueError:
        raise InputError(f"frames {spec!r}: expected 'A:B' or a frame number") from None
    if bounds[0] < 0 or bounds[1] <= bounds[0]:
        raise InputError(f"frames {spec!r}: the range is empty or negative")
    return bounds


def render(
    video: str | Path,
    out_dir: str | Path,
    output: str | Path,
    *,
    video_id: str | None = None,
    frames: tuple[int, int] | None = None,
    mano: str | Path | None = None,
    object_points: np.ndarray | None = None,
    decoder: str = DEFAULT_BACKEND,
) -> list[Path]:
    """Draw the results of one video of ``out_dir`` onto ``video``; returns the files written.

    Args:
        video: the input video. ``video_id``: its id in the output (default: the row of
            the ``videos`` table whose ``path`` is this file).
        output: ``.png`` writes stills, ``<stem>_<frame>.png`` per frame, or exactly
            ``output`` when one frame is selected; anything else an mp4 video.
        frames: ``[start, end)`` frame indices to draw; None: every frame.
        mano: MANO file for the mesh (faces, and vertices when the table has none).
        object_points: (21, 3) control points for object names not in the YCB catalogue.
    """
    video = Path(video)
    row = _video_row(out_dir, video, video_id)
    vid = row["video_id"]
    if row["intrinsics"] is None:
        raise InputError(f"{out_dir}: video {vid!r} has no intrinsics recorded")
    K = np.asarray(row["intrinsics"], dtype=np.float64).reshape(3, 3)
    mesh = load_hand_mesh(mano) if mano is not None else None
    hands = _select(read_table(out_dir, "hands"), vid, frames)
    objects = _select(read_table(out_dir, "objects"), vid, frames)
    scene = FrameDrawer(hands, objects, K, mesh, object_points)
    # The stream the run decoded; frames come turned for display, like the run's.
    dec = get_decoder(decoder, stream=row.get("stream_index"))
    info = dec.probe(str(video))
    wanted = range(*(frames or (0, info.num_frames)))
    indices = [i for i in wanted if i < info.num_frames]
    if not indices:
        raise InputError(f"{video}: no frames in the range {frames} ({info.num_frames} frames)")
    output = Path(output)
    still = output.suffix.lower() == ".png"
    if still:
        return _write_stills(dec, video, indices, scene, output)
    return [_write_video(dec, video, indices, scene, output, info.fps,
                         (info.width, info.height))]


def render_overlay(video: str | Path, out_dir: str | Path, video_id: str, output: str | Path,
                   decoder: str = DEFAULT_BACKEND) -> Path:
    """Write ``output`` (mp4): ``video`` with the results of ``video_id`` from ``out_dir``."""
    return render(video, out_dir, output, video_id=video_id, decoder=decoder)[0]


class FrameDrawer:
    """Draws one video's rows onto its frames (BGR uint8 images, in place).

    Hand meshes are computed per frame on demand, so a long video never holds all of them.
    """

    def __init__(self, hands: pa.Table, objects: pa.Table, K: np.ndarray,
                 mesh: HandMesh | None, object_points: np.ndarray | None) -> None:
        self.K = K
        self.mesh = mesh
        self.object_points = object_points
        self.hands = hands.to_pylist()
        self.objects = objects.to_pylist()
        self.hand_vertices = (column_numpy(hands.column("vertices"))
                              if "vertices" in hands.column_names else None)
        self._by_frame: dict[int, list[tuple[str, int]]] = {}
        for kind, rows in (("hand", self.hands), ("object", self.objects)):
            for i, row in enumerate(rows):
                self._by_frame.setdefault(row["frame_index"], []).append((kind, i))

    def draw(self, image: np.ndarray, frame_index: int) -> None:
        """Draw every row of ``frame_index``: objects first, so hands stay visible on top."""
        items = sorted(self._by_frame.get(frame_index, []), key=lambda item: item[0] == "hand")
        for kind, i in items:
            if kind == "hand":
                self._draw_hand(image, i)
            else:
                self._draw_object(image, self.objects[i])

    def vertices(self, i: int) -> np.ndarray | None:
        """(778, 3) camera-frame vertices of hand row ``i``, metres, or None if unknown."""
        if self.hand_vertices is not None and np.isfinite(self.hand_vertices[i]).all():
            return self.hand_vertices[i]
        if self.mesh is None or self.mesh.layer is None:
            return None
        row = self.hands[i]
        pose = np.asarray(row["mano_pose"], dtype=np.float64)[None]
        left = row["handedness"] == "left"
        # The layer is a right hand: a left hand is posed mirrored and mirrored back.
        with torch.inference_mode():
            verts, _ = self.mesh.layer(
                torch.as_tensor(mirror_mano_pose(pose) if left else pose, dtype=torch.float32),
                torch.as_tensor(np.asarray(row["mano_shape"])[None], dtype=torch.float32),
                center_idx=0,
            )
        verts = verts[0].numpy().astype(np.float64)
        if left:
            verts = mirror_points3d(verts)
        return verts + np.asarray(row["translation"], dtype=np.float64)

    def _draw_hand(self, image: np.ndarray, i: int) -> None:
        row = self.hands[i]
        colour = LEFT_COLOUR if row["handedness"] == "left" else RIGHT_COLOUR
        verts = self.vertices(i) if self.mesh is not None else None
        if verts is not None and (verts[:, 2] > 0).all():
            draw_mesh(image, project(verts, self.K), self.mesh.faces, colour)
        draw_skeleton(image, np.asarray(row["joints2d"], np.float64), colour,
                      thin=row["interpolated"])
        mark = "*" if row["interpolated"] else ""
        label = f"{row['handedness'][0].upper()}{row['track_id']}{mark}"
        _label(image, label, row["box"], colour, row.get("suspect_reasons"))

    def _draw_object(self, image: np.ndarray, row: dict) -> None:
        points = self._control_points(row["object_name"])
        corners = None
        if row["rotation"] is not None and points is not None:
            R = quaternion_to_matrix(np.asarray(row["rotation"], np.float64))
            camera = to_camera(points[:8], R, np.asarray(row["translation"], np.float64))
            if (camera[:, 2] > 0).all():
                corners = project(camera, self.K)
        if corners is None:
            # No pose, unknown control points, or a pose behind the camera: the network's
            # own 2D corners still show where it saw the box.
            corners = np.asarray(row["keypoints2d"], np.float64)[:8]
        draw_box(image, corners, OBJECT_COLOUR, thin=row["interpolated"])
        mark = "*" if row["interpolated"] else ""
        name = row["object_name"] or "object"
        _label(image, f"{name} #{row['track_id']}{mark}", row["box"], OBJECT_COLOUR,
               row.get("suspect_reasons"))

    def _control_points(self, name: str | None) -> np.ndarray | None:
        if self.object_points is not None:
            return self.object_points
        if name is None:
            return None
        try:
            return load_control_points(name)
        except ValueError:
            return None


def _fixed(points: np.ndarray) -> np.ndarray:
    return np.round(np.asarray(points) * (1 << _SHIFT)).astype(np.int32)


def draw_skeleton(image: np.ndarray, joints2d: np.ndarray, colour: tuple[int, int, int],
                  *, thin: bool = False) -> None:
    """Bones and joints of a (21, 2) pixel skeleton; ``thin`` (interpolated rows): thin
    bones and hollow joints."""
    points = _fixed(joints2d)
    thickness = 1 if thin else 2
    for a, b in HAND_BONES:
        cv2.line(image, tuple(points[a]), tuple(points[b]), colour, thickness, cv2.LINE_AA,
                 _SHIFT)
    for p in points:
        cv2.circle(image, tuple(p), 3 << _SHIFT, colour, 1 if thin else -1, cv2.LINE_AA, _SHIFT)


def draw_box(image: np.ndarray, corners: np.ndarray, colour: tuple[int, int, int],
             *, thin: bool = False) -> None:
    """The 12 edges of a box from its (8, 2) projected corners (control-point order)."""
    points = _fixed(corners)
    for a, b in BOX_EDGES:
        cv2.line(image, tuple(points[a]), tuple(points[b]), colour, 1 if thin else 2,
                 cv2.LINE_AA, _SHIFT)


def mesh_edges(faces: np.ndarray) -> np.ndarray:
    """(E, 2) unique undirected edges of (F, 3) triangles."""
    edges = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    return np.unique(np.sort(edges, axis=1), axis=0)


def draw_mesh(image: np.ndarray, vertices2d: np.ndarray, faces: np.ndarray,
              colour: tuple[int, int, int]) -> None:
    """A translucent wireframe of a mesh from its (V, 2) projected vertices."""
    layer = image.copy()
    points = _fixed(vertices2d)
    lines = [points[edge] for edge in mesh_edges(faces)]
    cv2.polylines(layer, lines, False, colour, 1, cv2.LINE_AA, _SHIFT)
    cv2.addWeighted(layer, MESH_ALPHA, image, 1.0 - MESH_ALPHA, 0.0, dst=image)


def _label(image: np.ndarray, text: str, box: Sequence[float], colour: tuple[int, int, int],
           suspect_reasons: str | None) -> None:
    x0, y0 = (int(v) for v in box[:2])
    origin = (x0, max(12, y0 - 4))
    cv2.putText(image, text, origin, cv2.FONT_HERSHEY_SIMPLEX, 0.5, colour, 1, cv2.LINE_AA)
    if suspect_reasons:
        width = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.5, 1)[0][0]
        cv2.putText(image, f" ! {suspect_reasons}", (origin[0] + width, origin[1]),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.45, SUSPECT_COLOUR, 1, cv2.LINE_AA)


def _video_row(out_dir: str | Path, video: Path, video_id: str | None) -> dict:
    rows = [r for r in read_table(out_dir, "videos").to_pylist() if r["status"] == "ok"]
    if video_id is not None:
        match = [r for r in rows if r["video_id"] == video_id]
        what = f"video id {video_id!r}"
    else:
        target = video.resolve()
        match = [r for r in rows if Path(r["path"]).resolve() == target]
        if not match and video.is_file():
            # The run may have named it by a path relative to another folder: same bytes.
            digest = sha256_file(video)
            match = [r for r in rows if r["content_sha256"] == digest]
        what = f"finished video with the path or content of {video}"
    if not match:
        raise InputError(f"{out_dir}: no {what} in the videos table (pass --video-id)")
    return match[0]


def _select(table: pa.Table, video_id: str, frames: tuple[int, int] | None) -> pa.Table:
    ids = np.asarray(table.column("video_id").to_pylist(), dtype=object)
    keep = ids == video_id
    if frames is not None:
        index = table.column("frame_index").to_numpy()
        keep &= (index >= frames[0]) & (index < frames[1])
    return table.take(np.flatnonzero(keep))


def _frames(dec, video: Path, indices: list[int]):
    for chunk in dec.read_chunks(str(video), frame_indices=indices):
        for index, frame in zip(chunk.indices.tolist(), chunk.frames, strict=True):
            yield index, np.ascontiguousarray(frame[..., ::-1])


def _write_stills(dec, video: Path, indices: list[int], scene: FrameDrawer,
                  output: Path) -> list[Path]:
    written = []
    for index, image in _frames(dec, video, indices):
        scene.draw(image, index)
        path = output if len(indices) == 1 else output.with_name(
            f"{output.stem}_{index:06d}.png")
        with atomic_path(path, OutputError) as temp:
            if not cv2.imwrite(str(temp), image):
                raise OutputError(f"cannot write {path}")
        written.append(path)
    return written


def _write_video(dec, video: Path, indices: list[int], scene: FrameDrawer, output: Path,
                 fps: float, size: tuple[int, int]) -> Path:
    with atomic_path(output, OutputError) as temp:
        writer = cv2.VideoWriter(str(temp), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
        if not writer.isOpened():
            raise OutputError(
                f"cannot write {output}: OpenCV could not open a video writer there")
        try:
            for index, image in _frames(dec, video, indices):
                scene.draw(image, index)
                writer.write(image)
        finally:
            writer.release()
    return output
