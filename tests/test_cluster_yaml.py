"""cluster.yaml passes Ray's own cluster-launcher validation and declares what jobs need."""

from __future__ import annotations

import copy
import re
import tomllib
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cluster() -> dict:
    return yaml.safe_load((REPO / "cluster.yaml").read_text())


def _validated(config: dict) -> dict:
    """What `ray up` does before talking to the cloud: fill defaults, then validate."""
    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


def test_ray_accepts_the_cluster_config(cluster):
    prepared = _validated(cluster)
    assert prepared["provider"]["type"] == "aws"
    assert prepared["head_node_type"] in prepared["available_node_types"]


def test_ray_rejects_a_broken_copy(cluster):
    broken = copy.deepcopy(cluster)
    broken["available_node_types"]["gpu_worker"]["resourcez"] = {"GPU": 1}
    with pytest.raises(jsonschema.ValidationError, match="resourcez"):
        _validated(broken)


def test_gpu_workers_autoscale_and_the_head_does_no_video_work(cluster):
    types = cluster["available_node_types"]
    head = types[cluster["head_node_type"]]
    workers = [t for name, t in types.items() if name != cluster["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0 and head["resources"].get("CPU", 0) == 0
    assert workers and all(t["resources"]["GPU"] >= 1 for t in workers)
    assert all(t["min_workers"] < t["max_workers"] for t in workers)


def test_nodes_install_this_checkout_and_the_pinned_ray(cluster):
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    pinned = next(d for d in pyproject["project"]["dependencies"] if d.startswith("ray"))
    version = re.search(r"==\s*([\w.]+)", pinned).group(1)
    assert version == ray.__version__
    commands = " ".join(cluster["setup_commands"])
    assert f"ray[default]=={version}" in commands
    (target,) = [k for k, v in cluster["file_mounts"].items() if v == "."]
    assert f"pip install {target}" in commands
    # The hand detector's model files ship with the package: nothing else to set up.
    assert not any("setup-hand-detector" in c for c in cluster.get("worker_setup_commands") or [])
