"""Run configuration: every option of ``hflpipe run``, validated, with a stable hash.

The same model backs command-line flags and job specs, so a job spec and the
equivalent command line produce the same configuration and the same hash.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from hflpipe.pipeline.common import storage
from hflpipe.pipeline.common.errors import ConfigError

#: Options that can change what lands in the output files; the config hash covers those
#: of them that do for a given run (see :func:`result_options`), plus the device and
#: precision the model really runs with, the model file hashes and the package version,
#: so that resources or logging never force a re-run.
RESULT_FIELDS = (
    "intrinsics",
    "hfov_deg",
    "object",
    "detector",
    "boxes",
    "torchvision_model",
    "torchvision_weights",
    "torchvision_classes",
    "hand_object_weights",
    "contact_states",
    "score_threshold",
    "stream",
    "stride",
    "start_s",
    "end_s",
    "max_gap",
    "detect_every",
    "smoothing_cutoff_hz",
    "with_vertices",
)


#: A local path (``Path``) or a store URL such as ``s3://bucket/key`` (kept as text).
Location = Annotated[Path | str, BeforeValidator(
    lambda value: storage.as_location(value) if isinstance(value, str | Path) else value)]


class RunConfig(BaseModel):
    """Everything a run needs. Paths are kept as given; checks happen in :func:`validate_paths`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    videos: list[str] = Field(default_factory=list, description="video files or glob patterns")
    video_list: Location | None = Field(
        None, description="text file, one video path or glob a line"
    )
    manifest: Location | None = Field(
        None, description="CSV/JSON table of videos with per-video object, intrinsics, boxes"
    )
    out: Location = Field(description="output directory or store URL (s3://bucket/prefix)")
    checkpoint: Location | None = Field(None, description="official HFL-Net checkpoint (.pth.tar)")
    mano: Location | None = Field(None, description="MANO_RIGHT.pkl or a converted .npz")
    intrinsics: str | None = Field(None, description="'fx,fy,cx,cy' or a JSON file")
    hfov_deg: float = Field(60.0, gt=1.0, lt=179.0, description="FOV assumed without intrinsics")
    object: str | None = Field(None, description="YCB object name or a mesh/point file")
    detector: Literal["boxes", "mediapipe", "torchvision", "hand-object"] = "mediapipe"
    boxes: Location | None = Field(None, description="boxes file (CSV, JSON or Parquet)")
    torchvision_model: str | None = None
    torchvision_weights: Path | None = None
    torchvision_classes: dict[int, str] | None = None
    hand_object_weights: Location | None = Field(
        None, description="100DOH detector checkpoint (faster_rcnn_1_8_132028.pth)"
    )
    contact_states: tuple[Literal["self", "other", "portable", "stationary"], ...] = Field(
        ("portable",), description="hand-object detector: contact states whose linked object "
        "HFL-Net is given; other hands take the hand-only path",
    )
    score_threshold: float = Field(0.5, ge=0.0, le=1.0)
    decoder: Literal["decord", "pyav"] = "pyav"
    chunk_size: int = Field(64, ge=1, le=4096, description="frames decoded at once")
    stream: int | None = Field(
        None, ge=0, description="index of the video stream to decode (default: the one a "
        "player shows)",
    )
    stride: int = Field(1, ge=1, description="process every n-th frame")
    start_s: float | None = Field(None, ge=0.0)
    end_s: float | None = Field(None, gt=0.0)
    max_gap: int = Field(
        5, ge=0, description="longest gap (selected frames) filled by interpolation"
    )
    detect_every: int = Field(
        1, ge=1, le=1000,
        description="run the detector on every n-th selected frame; boxes propagated between",
    )
    smoothing_cutoff_hz: float = Field(
        4.0, gt=0.0, description="smoothing bandwidth; raw values are kept beside"
    )
    with_vertices: bool = False
    batch_size: int = Field(32, ge=1, le=4096, description="crops per inference batch")
    num_actors: int | None = Field(None, ge=1, description="inference actors (default: GPUs or 1)")
    gpus_per_actor: float = Field(1.0, ge=0.0)
    cpus_per_task: float = Field(1.0, gt=0.0)
    cpus_per_actor: float | None = Field(
        None, gt=0.0,
        description="CPUs per inference actor, its torch threads on the CPU (default: "
                    "cpus_per_task with GPUs, half a node's CPUs without)",
    )
    max_concurrent_videos: int | None = Field(None, ge=1)
    mediapipe_on: Literal["auto", "actors", "tasks"] = Field(
        "auto", description="where the mediapipe detector's networks run: on the inference "
        "actors (batched across videos, on their GPU) or in each video task on its CPU; auto: "
        "the actors when they have a GPU",
    )
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    compile: bool = Field(
        False, description="torch.compile the predictor: minutes once per actor, faster batches"
    )
    max_retries: int = Field(2, ge=0, le=20, description="retries of a video whose worker died")
    stall_timeout_s: float = Field(
        600.0, gt=0.0, description="a video making no progress for this long fails"
    )
    scratch_limit_gb: float = Field(
        50.0, gt=0.0, description="largest remote video a worker copies to its scratch space"
    )
    remote_videos: Literal["stream", "copy"] = Field(
        "stream", description="how workers read store videos with the pyav decoder: streamed "
                              "in blocks, or copied to scratch space first (decord: always "
                              "copied)"
    )
    retry_failed: bool = False
    new_version: bool = Field(
        False, description="write a changed config's results to OUT/versions/<hash>"
    )
    address: str | None = None

    @field_validator("contact_states", mode="before")
    @classmethod
    def _split_states(cls, value: object) -> object:
        # The command line gives "portable,stationary".
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @model_validator(mode="after")
    def _check_consistency(self) -> RunConfig:
        if not (self.videos or self.video_list or self.manifest):
            raise ValueError("no inputs: give videos, a video_list or a manifest")
        if self.start_s is not None and self.end_s is not None and self.end_s <= self.start_s:
            raise ValueError(f"end_s ({self.end_s}) must be after start_s ({self.start_s})")
        if self.detector == "boxes" and self.boxes is None and self.manifest is None:
            raise ValueError("detector 'boxes' needs a boxes file (--boxes, or a manifest's boxes)")
        if self.detector == "torchvision" and (
            self.torchvision_model is None or self.torchvision_weights is None
        ):
            raise ValueError(
                "detector 'torchvision' needs --torchvision-model and --torchvision-weights"
            )
        if self.detector == "hand-object" and self.hand_object_weights is None:
            raise ValueError("detector 'hand-object' needs --hand-object-weights "
                             "(faster_rcnn_1_8_132028.pth)")
        return self


def result_options(config: RunConfig) -> dict[str, object]:
    """The options among :data:`RESULT_FIELDS` that change this run's results.

    Left out where the run ignores them: the torchvision settings unless that detector
    runs, the boxes file unless the boxes detector reads it,
    the assumed field of view when intrinsics are given. Paths are made absolute, so the
    same file named two ways is one option.
    """
    ignored = set()
    if config.detector != "torchvision":
        ignored |= {"torchvision_model", "torchvision_weights", "torchvision_classes"}
    if config.detector != "hand-object":
        ignored |= {"hand_object_weights", "contact_states"}
    if config.detector != "boxes":
        ignored.add("boxes")
    if config.intrinsics is not None:
        ignored.add("hfov_deg")
    if config.stream is None:
        ignored.add("stream")
    options: dict[str, object] = {}
    for name in RESULT_FIELDS:
        if name in ignored:
            continue
        value = getattr(config, name)
        if isinstance(value, Path):
            value = str(value.resolve())
        elif isinstance(value, dict):
            value = {str(key): item for key, item in value.items()}
        options[name] = value
    return options


#: Fields naming files that must exist before a run starts.
FILE_FIELDS = ("checkpoint", "mano", "boxes", "torchvision_weights", "hand_object_weights",
               "video_list", "manifest")


def validate_paths(config: RunConfig, describe: Callable[[str], str] | None = None) -> None:
    """Raise ConfigError naming the first input file that does not exist (cheap, no reads).

    ``describe`` turns a field name into how the user wrote it (a spec key or a flag);
    by default ``option 'field'``.
    """
    describe = describe or (lambda name: f"option '{name}'")
    for name in FILE_FIELDS:
        path = getattr(config, name)
        if path is not None and not storage.is_file(path):
            is_dir = not storage.is_url(path) and Path(path).is_dir()
            cause = "is a directory, not a file" if is_dir else "file not found"
            raise ConfigError(f"{describe(name)}: {cause}: {storage.describe(path)}")
    intrinsics = config.intrinsics
    if intrinsics and not looks_like_values(intrinsics) and not storage.is_file(intrinsics):
        raise ConfigError(f"{describe('intrinsics')}: file not found (or give 'fx,fy,cx,cy'): "
                          f"{storage.describe(intrinsics)}")
    # A name with a suffix is a mesh/point file; YCB catalogue names have none.
    if is_object_file(config.object) and not storage.is_file(config.object):
        raise ConfigError(f"{describe('object')}: mesh/point file not found: "
                          f"{storage.describe(config.object)}")


def is_object_file(spec: str | None) -> bool:
    """True for a mesh/point file name or URL (it has a suffix); YCB names have none."""
    return bool(spec) and bool(Path(storage.name_of(spec)).suffix)


def looks_like_values(text: str) -> bool:
    """True for an inline ``'fx,fy,cx,cy'`` intrinsics string (four comma-separated parts)."""
    return len(str(text).split(",")) == 4 and not Path(text).exists()


def make_config(**options: object) -> RunConfig:
    """Build a :class:`RunConfig`, turning validation errors into one-line :class:`ConfigError`."""
    try:
        return RunConfig(**options)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc)) from None


def format_validation_error(exc: ValidationError) -> str:
    """One line per problem, naming the option: ``option 'batch_size': Input should be ...``."""
    problems = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"])
        message = err["msg"].removeprefix("Value error, ")
        problems.append(f"option '{where}': {message}" if where else message)
    return "; ".join(problems)
