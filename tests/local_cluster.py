"""A Ray of several nodes on this machine (``ray.cluster_utils.Cluster``) for the ``own_ray``
tests, joined by this process.

No tests live here. The cluster gets its own Ray temporary folder: ``Cluster()`` advertises
its address in ``<temp>/ray_current_cluster``, where a plain ``ray.init()`` elsewhere on
this machine would otherwise find and join it.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import ray
from ray.cluster_utils import Cluster


@contextmanager
def local_cluster(head_cpus: int, *nodes: dict) -> Iterator[tuple[Cluster, list]]:
    """A head of ``head_cpus`` CPUs (no dashboard) and one node per ``add_node`` arguments
    in ``nodes``; yields the cluster and its added nodes, this process connected to it."""
    temp = tempfile.mkdtemp(prefix="hfc", dir="/tmp")  # short: Ray's socket paths are limited
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RAY_TMPDIR", temp)
        patch.delenv("RAY_ADDRESS", raising=False)
        cluster = Cluster(initialize_head=True,
                          head_node_args={"num_cpus": head_cpus, "include_dashboard": False})
        try:
            added = [cluster.add_node(**node) for node in nodes]
            cluster.wait_for_nodes()
            ray.init(address=cluster.address, log_to_driver=False, configure_logging=False)
            yield cluster, added
        finally:
            ray.shutdown()
            cluster.shutdown()
            shutil.rmtree(temp, ignore_errors=True)
