"""Job specs: YAML files that hold a run's options, grouped in sections.

Each key of a section is a :class:`~hflpipe.pipeline.config.run_config.RunConfig` field (see
``SECTIONS`` and ``docs/jobs.md``). Loading checks everything that can be checked
without doing work (unknown or misplaced keys, types, ranges, files that must exist)
and reports the first problem in one line naming the key, as a ConfigError.

Relative paths in a spec are relative to the spec file's folder, so a spec and the
files beside it can move together; command-line overrides are relative to the
current directory, as usual for flags.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from hflpipe.pipeline.common import storage
from hflpipe.pipeline.common.errors import ConfigError, one_line
from hflpipe.pipeline.config.run_config import (
    RunConfig,
    is_object_file,
    looks_like_values,
    validate_paths,
)

#: Section -> the RunConfig fields it holds. Every field is in exactly one section or
#: in COMMAND_LINE_ONLY.
SECTIONS: dict[str, tuple[str, ...]] = {
    "inputs": ("videos", "video_list", "manifest"),
    "output": ("out", "with_vertices"),
    "model": ("checkpoint", "mano", "device", "precision", "compile"),
    "scene": ("intrinsics", "hfov_deg", "object"),
    "detection": ("detector", "boxes", "score_threshold", "detect_every", "torchvision_model",
                  "torchvision_weights", "torchvision_classes", "hand_object_weights",
                  "contact_states"),
    "decoding": ("decoder", "chunk_size", "stream", "stride", "start_s", "end_s"),
    "smoothing": ("max_gap", "smoothing_cutoff_hz"),
    "resources": ("batch_size", "num_actors", "gpus_per_actor", "cpus_per_actor",
                  "cpus_per_task", "max_concurrent_videos", "scratch_limit_gb",
                  "remote_videos", "mediapipe_on"),
    "retries": ("max_retries", "stall_timeout_s"),
}
#: Choices made per invocation, not properties of a job: flags only.
COMMAND_LINE_ONLY = ("retry_failed", "new_version", "address")

_SECTION_OF = {name: section for section, names in SECTIONS.items() for name in names}
_PATH_FIELDS = ("out", "checkpoint", "mano", "boxes", "torchvision_weights",
                "hand_object_weights", "video_list", "manifest")


#: What a file that is no job spec most often is: a shell-expanded video glob.
NOT_A_SPEC_HINT = "is this a video? quote your glob: --videos 'clips/*.mp4'"


@dataclass(frozen=True)
class JobSpec:
    """A loaded spec: its file, its values by RunConfig field (paths made absolute), and
    the fields that were written as relative paths (anchored at the spec's folder).
    """

    path: Path
    values: dict[str, Any]
    relative: frozenset[str] = frozenset()

    def describe(self, name: str) -> str:
        """How the user wrote field ``name``: ``jobs/x.yaml: key 'resources.batch_size'``."""
        return f"{self.path}: key '{spec_key(name)}'"


def spec_key(name: str) -> str:
    """The spec key of a RunConfig field, ``section.field``."""
    section = _SECTION_OF.get(name)
    return f"{section}.{name}" if section else name


def load_spec(path: str | Path) -> JobSpec:
    """Read and structurally check a spec file (sections, known keys); no value checks yet."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"job spec {path}: file not found") from None
    except UnicodeDecodeError:
        raise ConfigError(f"job spec {path}: is not a YAML text file ({NOT_A_SPEC_HINT})"
                          ) from None
    except OSError as exc:
        raise ConfigError(f"job spec {path}: cannot be read: {exc}") from None
    try:
        # A SafeLoader subclass: plain data only, no Python objects from the file.
        data = yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as exc:
        raise ConfigError(f"job spec {path}: not valid YAML: {_yaml_problem(exc)}") from None
    if data is None:
        raise ConfigError(f"job spec {path}: is empty")
    if not isinstance(data, (dict, list)):
        raise ConfigError(f"job spec {path}: is not a YAML job spec ({NOT_A_SPEC_HINT})")
    if not isinstance(data, dict):
        raise ConfigError(f"job spec {path}: expected sections ({', '.join(SECTIONS)}) at the "
                          f"top level, got {type(data).__name__}")
    values: dict[str, Any] = {}
    for section, content in data.items():
        if section not in SECTIONS:
            raise ConfigError(f"job spec {path}: {_unknown_section(section)}")
        if content is None:
            continue
        if not isinstance(content, dict):
            raise ConfigError(f"job spec {path}: key '{section}': expected a mapping of "
                              f"options, got {type(content).__name__}")
        for key, value in content.items():
            if key not in SECTIONS[section]:
                raise ConfigError(f"job spec {path}: key '{section}.{key}': "
                                  f"{_unknown_key(section, key)}")
            values[key] = value
    anchored = _anchor_paths(values, path.parent)
    relative = frozenset(
        name for name in anchored if anchored[name] != values[name] and _is_relative(values[name])
    )
    return JobSpec(path, anchored, relative)


def build_config(
    spec: JobSpec | None, overrides: Mapping[str, Any] | None = None, *,
    check_files: bool = True,
) -> RunConfig:
    """The RunConfig of ``spec`` with ``overrides`` (from flags) on top, fully validated.

    Without an explicit ``detector``, a boxes file selects the boxes detector (as the
    ``--boxes`` flag does). ``check_files=False`` skips the existence checks, for specs
    whose files live on a cluster (``hflpipe submit``).
    """
    overrides = dict(overrides or {})
    values = {**(spec.values if spec else {}), **overrides}
    if "detector" not in values and values.get("boxes"):
        values["detector"] = "boxes"

    def describe(name: str) -> str:
        if spec is not None and name in spec.values and name not in overrides:
            return spec.describe(name)
        return f"option '{name}'"

    try:
        config = RunConfig(**values)
    except ValidationError as exc:
        raise ConfigError(_first_problem(exc, describe, spec)) from None
    if check_files:
        validate_paths(config, describe)
    return config


def _anchor_paths(values: dict[str, Any], folder: Path) -> dict[str, Any]:
    """Relative paths (and glob patterns) joined to the spec's folder; other values as is."""
    anchored = dict(values)
    for name in _PATH_FIELDS:
        if isinstance(values.get(name), str):
            anchored[name] = _beside(folder, values[name])
    videos = values.get("videos")
    if isinstance(videos, str):
        videos = [videos]
    if isinstance(videos, list):
        anchored["videos"] = [_beside(folder, v) if isinstance(v, str) else v for v in videos]
    intrinsics = values.get("intrinsics")
    if isinstance(intrinsics, str) and not looks_like_values(intrinsics):
        anchored["intrinsics"] = _beside(folder, intrinsics)
    obj = values.get("object")
    if isinstance(obj, str) and is_object_file(obj):
        anchored["object"] = _beside(folder, obj)
    return anchored


def _is_relative(value: object) -> bool:
    names = value if isinstance(value, list) else [value]
    return any(isinstance(n, str) and not storage.is_url(n)
               and not Path(n).expanduser().is_absolute() for n in names)


def _beside(folder: Path, name: str) -> str:
    """An absolute, normalised path (URLs as they are), so the hash does not depend on the cwd."""
    if storage.is_url(name):
        return name
    return os.path.abspath(Path(folder, Path(name).expanduser()))


def _first_problem(exc: ValidationError, describe: Callable[[str], str],
                   spec: JobSpec | None) -> str:
    error = exc.errors()[0]
    message = error["msg"].removeprefix("Value error, ")
    if not error["loc"]:
        where = f"job spec {spec.path}" if spec else "options"
        return f"{where}: {message}"
    name = str(error["loc"][0])
    detail = "".join(f"[{part}]" for part in error["loc"][1:])
    if error["type"] == "missing":
        if spec is None:
            return f"option '{name}': required"
        return f"job spec {spec.path}: key '{spec_key(name)}' is required"
    return f"{describe(name)}{detail}: {message} (got {error.get('input')!r})"


def _unknown_section(section: object) -> str:
    name = str(section)
    if name in _SECTION_OF:
        return f"key '{name}' belongs in section '{_SECTION_OF[name]}' ({spec_key(name)})"
    if name in COMMAND_LINE_ONLY:
        return f"key '{name}' is a command-line option (--{name.replace('_', '-')}), not a " \
               "spec key"
    return f"unknown section '{name}' (expected one of: {', '.join(SECTIONS)})"


def _unknown_key(section: str, key: object) -> str:
    name = str(key)
    if name in _SECTION_OF:
        return f"belongs in section '{_SECTION_OF[name]}' ({spec_key(name)})"
    if name in COMMAND_LINE_ONLY:
        return f"is a command-line option (--{name.replace('_', '-')}), not a spec key"
    return f"unknown key (expected one of: {', '.join(SECTIONS[section])})"


def _yaml_problem(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    where = f"line {mark.line + 1}: " if mark is not None else ""
    return one_line(f"{where}{problem}")


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key given twice (YAML keeps the last silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set[object] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key '{key}' given twice", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)
