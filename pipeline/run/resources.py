"""Whether a run's inference actors and video tasks can ever be scheduled on its cluster.

Ray waits forever for resources that no node has: two actors of one CPU each on a
two-CPU machine leave nothing for the video tasks, and the run would sit at 0 %. This
is checked before any work, against the nodes the cluster has, or on an autoscaling
cluster the nodes it may add (its node types up to their maximum counts).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import ray

log = logging.getLogger(__name__)

#: Ray rounds resources to 1/10000; a fraction this small is rounding, not a shortfall.
_EPSILON = 1e-4


@dataclass(frozen=True)
class Demand:
    """What a run asks Ray for: ``actors`` inference actors and video tasks."""

    actors: int
    cpus_per_actor: float
    gpus_per_actor: float
    cpus_per_task: float


def cpu_actor_share(nodes: Sequence[dict[str, float]], actors: int) -> float:
    """CPUs (and torch threads) for each of ``actors`` inference actors that run on the CPU.

    The model is then what bounds a run, so its actors take half of the CPUs they can
    share (never more than half a node, at least one); the other half decodes and crops.
    """
    cpus = [node.get("CPU", 0.0) for node in nodes]
    if not cpus:
        return 1.0
    return float(max(1, int(min(max(cpus), sum(cpus) / actors) / 2)))


def unschedulable(nodes: Sequence[dict[str, float]], demand: Demand) -> str | None:
    """Why the actors plus one video task can never all be placed on ``nodes`` (each a
    node's total resources), or None when they can.

    Actors are placed first fit, on the node with the most CPUs left, as Ray would spread
    them; what is left must hold a video task.
    """
    free = [{"CPU": node.get("CPU", 0.0), "GPU": node.get("GPU", 0.0)} for node in nodes]
    total_cpus = sum(node["CPU"] for node in free)
    for placed in range(demand.actors):
        fitting = [node for node in free if node["CPU"] + _EPSILON >= demand.cpus_per_actor
                   and node["GPU"] + _EPSILON >= demand.gpus_per_actor]
        if not fitting:
            return (f"{demand.actors} inference actors need {demand.cpus_per_actor:g} CPUs and "
                    f"{demand.gpus_per_actor:g} GPUs each; only {placed} fit on the cluster "
                    f"({_describe(nodes)}): use fewer --actors or lower --gpus-per-actor "
                    "or --cpus-per-actor")
        node = max(fitting, key=lambda n: n["CPU"])
        node["CPU"] -= demand.cpus_per_actor
        node["GPU"] -= demand.gpus_per_actor
    if not any(node["CPU"] + _EPSILON >= demand.cpus_per_task for node in free):
        held = demand.actors * demand.cpus_per_actor
        return (f"the {demand.actors} inference actor(s) hold {held:g} of the cluster's "
                f"{total_cpus:g} CPUs ({_describe(nodes)}) and a video task needs "
                f"{demand.cpus_per_task:g} more on one node, so no video could ever start: "
                "lower --cpus-per-task (e.g. 0.5) or --cpus-per-actor, use fewer --actors, "
                "or add CPUs")
    return None


def _describe(nodes: Sequence[dict[str, float]]) -> str:
    if not nodes:
        return "no nodes"
    shapes = [f"{node.get('CPU', 0.0):g} CPUs, {node.get('GPU', 0.0):g} GPUs" for node in nodes]
    if len(set(shapes)) == 1:
        return f"{len(nodes)} node(s) of {shapes[0]}"
    return "nodes of " + "; ".join(shapes)


def cluster_nodes(most: int) -> tuple[list[dict[str, float]], bool]:
    """The total resources of each node the cluster has or its autoscaler may add, and
    whether the autoscaler's node types were known.

    ``most``: how many nodes of one autoscaled type matter at most (the actors plus a
    task never need more). Ray publishes the autoscaler's node types through a private
    API; without it (a static cluster) the nodes that are alive count.
    """
    nodes = [dict(node["Resources"]) for node in ray.nodes() if node.get("Alive")]
    autoscaled = _autoscaled_node_types()
    for resources, count in autoscaled:
        nodes += [dict(resources)] * min(most, count)
    return nodes, bool(autoscaled)


def _autoscaled_node_types() -> list[tuple[dict[str, float], int]]:
    try:
        from ray._private.state import state

        config = state.get_cluster_config()
    except Exception as exc:  # a private API: without it, judge by the nodes alone
        log.debug("no autoscaler configuration (%s)", exc)
        return []
    if config is None:
        return []
    types = []
    for group in config.node_group_configs:
        count = group.max_count if group.max_count >= 0 else 1 << 20
        types.append(({key: float(value) for key, value in group.resources.items()}, count))
    return types


def waiting_for_resources(cpus_per_task: float) -> bool:
    """Whether Ray holds tasks shaped like a video task that no node has room for now.

    A task Ray has placed may still take a while to start (a worker process starting,
    its imports); only this says a task waits for resources. False when Ray cannot say.
    """
    try:
        from ray.autoscaler.v2.sdk import get_cluster_status

        status = get_cluster_status(ray.get_runtime_context().gcs_address)
    except Exception as exc:  # an API that may change: without it, never "waiting"
        log.debug("no cluster status (%s)", exc)
        return False
    return any(
        abs(request.bundle.get("CPU", 0.0) - cpus_per_task) < _EPSILON
        and not request.bundle.get("GPU")
        for demand in status.resource_demands.ray_task_actor_demand
        for request in demand.bundles_by_count
    )
