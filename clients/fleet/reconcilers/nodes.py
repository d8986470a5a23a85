"""The nodes reconciler: the cluster's nodes as ``fleet status`` shows them, and which
labelled resources an alive node offers (an actor needing a missing one is ``pending``)."""

from __future__ import annotations

import time
from collections.abc import Mapping

from clients.fleet.cluster import node_resources, ray_nodes, resource_labels
from clients.fleet.messages import NodeStatus
from clients.fleet.reconcilers.world import FleetWorld

NODES_EVERY_S = 1.0


def node_status(n: Mapping[str, object]) -> NodeStatus:
    res = node_resources(n)
    return {
        "node_id": str(n["NodeID"]),
        "ip": str(n.get("NodeManagerAddress", "")),
        "alive": bool(n.get("Alive")),
        "cpus": res.get("CPU", 0.0),
        "gpus": res.get("GPU", 0.0),
        "labels": resource_labels(res),
    }


class NodeReconciler:
    """Refreshes ``world.nodes`` from Ray every ``NODES_EVERY_S``."""

    def __init__(self, world: FleetWorld) -> None:
        self.world = world
        self._t = 0.0

    def step(self) -> None:
        if time.monotonic() - self._t < NODES_EVERY_S:
            return
        self._t = time.monotonic()
        self.world.nodes = [node_status(n) for n in ray_nodes()]
