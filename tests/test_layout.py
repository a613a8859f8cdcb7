"""The tree reads as the data flow, and the import rules of docs/architecture.md hold."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PIPELINE = REPO / "pipeline"
STAGES = ("inputs", "decode", "detect", "track", "crop", "infer", "pose", "smooth", "output")
#: Subpackage -> the pipeline subpackages it may import (besides itself).
ALLOWED = {
    "common": set(),
    "config": {"common"},
    "inputs": {"common", "config"},
    "decode": {"common"},
    "detect": {"common"},
    "crop": {"common", "detect"},
    "infer": {"common", "crop", "detect"},
    "track": {"common", "detect", "crop", "decode", "infer"},
    "pose": {"common", "crop", "detect"},
    "smooth": {"common", "output", "pose"},
    "output": {"common"},
    "results": {"common", "output", "decode"},
    "run": {"common", "config", *STAGES},
    "demo": {"common", "config", "inputs", "results", "run"},
    "cli": {"common", "config", "decode", "detect", "demo", "inputs", "results", "run"},
}
#: The only modules that may import Ray: orchestration, the actor pool and its actors.
RAY_ALLOWED = ("pipeline/run/", "pipeline/infer/actor_pool.py",
               "pipeline/infer/predictor_actor.py")


def _imports(path: Path) -> list[str]:
    modules = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            modules.append(node.module)
            modules += [f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            modules += [alias.name for alias in node.names]
    return modules


def _sources(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.py"))


def test_pipeline_is_subpackages_named_after_the_data_flow() -> None:
    loose = [p.name for p in PIPELINE.glob("*.py") if p.name != "__init__.py"]
    assert loose == [], "modules belong in a stage subpackage"
    packages = {p.name for p in PIPELINE.iterdir() if (p / "__init__.py").is_file()}
    assert packages == set(ALLOWED)
    for name in packages:
        doc = ast.get_docstring(ast.parse((PIPELINE / name / "__init__.py").read_text()))
        assert doc and "import" in doc.lower(), f"pipeline/{name}: say what it may import"


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_a_subpackage_imports_only_what_its_rules_allow(package: str) -> None:
    bad = []
    for path in _sources(PIPELINE / package):
        for module in _imports(path):
            parts = module.split(".")
            if parts[:2] == ["hflpipe", "pipeline"] and len(parts) > 2:
                target = parts[2]
                if target != package and target not in ALLOWED[package]:
                    bad.append(f"{path.relative_to(REPO)} imports {module}")
    assert bad == []


def test_only_orchestration_and_the_actor_pool_import_ray() -> None:
    bad = [
        f"{path.relative_to(REPO)}"
        for path in _sources(PIPELINE) + _sources(REPO / "model")
        if any(m == "ray" or m.startswith("ray.") for m in _imports(path))
        and not str(path.relative_to(REPO)).startswith(RAY_ALLOWED)
    ]
    assert bad == []


def test_model_knows_nothing_of_the_pipeline_ray_or_the_benchmarks() -> None:
    bad = [
        f"{path.relative_to(REPO)} imports {module}"
        for path in _sources(REPO / "model")
        for module in _imports(path)
        if module.startswith(("hflpipe.pipeline", "hflpipe.bench", "ray", "bench"))
    ]
    assert bad == []


def test_stages_take_explicit_arguments_not_the_run_config() -> None:
    bad = [
        f"{path.relative_to(REPO)}"
        for stage in STAGES
        for path in _sources(PIPELINE / stage)
        if "hflpipe.pipeline.config.run_config.RunConfig" in _imports(path)
    ]
    assert bad == []


def test_results_tools_read_only_the_output_tables() -> None:
    # render decodes the video it draws on; nothing in results runs a stage of the pipeline.
    for path in _sources(PIPELINE / "results"):
        stages = {m.split(".")[2] for m in _imports(path)
                  if m.startswith("hflpipe.pipeline.") and len(m.split(".")) > 2}
        assert stages <= {"common", "output", "results", "decode"}, path.name


def test_files_are_replaced_in_one_place() -> None:
    """Every atomic write goes through hflpipe/atomic.py (temp file, fsync, rename)."""
    callers = [
        str(path.relative_to(REPO))
        for folder in ("pipeline", "model", "bench", "hflpipe")
        for path in _sources(REPO / folder)
        if "os.replace(" in path.read_text(encoding="utf-8")
    ]
    assert sorted(callers) == ["hflpipe/atomic.py"]


def _loaded_in_a_fresh_process(imports: tuple[str, ...], watched: tuple[str, ...]) -> list[str]:
    """Which of ``watched`` a new Python process has loaded after importing ``imports``."""
    import subprocess
    import sys

    probe = (f"import sys, {', '.join(imports)}; "
             f"print(sorted(m for m in {watched!r} if m in sys.modules))")
    found = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                           check=True).stdout.strip()
    return ast.literal_eval(found)


def test_the_command_line_starts_without_torch() -> None:
    # `hflpipe status`, `logs`, `submit` and `--help` need no model: importing torch would
    # cost them seconds on every call (and every test that runs the real command).
    loaded = _loaded_in_a_fresh_process(
        ("hflpipe.pipeline.cli.main", "hflpipe.pipeline.run.submit"), ("torch", "torchvision"))
    assert loaded == []


def test_processes_that_run_no_network_import_none() -> None:
    # A video task (its function lives in the runner), the progress board and a driver
    # preparing a run import the model's modules but run no network: torchvision (which
    # imports torch._dynamo) and the actors' module would cost each such process seconds
    # of CPU. The actors import them when they load the networks.
    loaded = _loaded_in_a_fresh_process(
        ("hflpipe.pipeline.run.runner", "hflpipe.pipeline.run.progress"),
        ("torchvision", "torch._dynamo", "hflpipe.pipeline.infer.predictor_actor"))
    assert loaded == []


def test_the_model_package_exports_its_entry_points() -> None:
    import hflpipe.model as model
    from hflpipe.model.checkpoint import load_hflnet

    assert model.load_hflnet is load_hflnet
    assert all(callable(getattr(model, name)) for name in model.__all__)
    assert set(model.__all__) <= set(dir(model))
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        model.nothing  # noqa: B018
