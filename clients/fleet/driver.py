"""Starting and stopping a fleet from a connected Ray driver (``promptcam fleet``, the bench).

``start_fleet`` resolves the fleet section against the cluster, refuses a second fleet of the
same name, removes actors an earlier run of this fleet left behind (and its KV record), and
creates the controller — named, detached, restarted by Ray, pinned to this driver's node with
the gateway. ``shutdown`` asks the controller to stop every actor cleanly, then kills it.
"""

from __future__ import annotations

import logging

from clients.fleet.calls import (
    ControllerHandle,
    actor_options,
    controller_face,
    kill,
    start_actor,
)
from clients.fleet.cluster import Connection, FleetError, named_actors, namespace, resolve_fleet
from stream.config import Config

log = logging.getLogger(__name__)

SHUTDOWN_TIMEOUT_S = 60.0


def start_fleet(cfg: Config, conn: Connection) -> tuple[ControllerHandle, Config]:
    """The controller's handle and the resolved config (engines, GPUs, CURVE)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from clients.fleet.controller import CONTROLLER, Controller
    from clients.fleet.store import KvStore

    fleet_cfg = resolve_fleet(cfg)
    ns = namespace(cfg)
    leftovers = named_actors(ns)
    if CONTROLLER in leftovers:
        raise FleetError(
            f"a fleet named {cfg.fleet.name!r} already runs on this cluster "
            "(promptcam fleet stop, or choose another fleet.name)"
        )
    for name in leftovers:  # left by an earlier run of this fleet that did not stop cleanly
        log.warning("removing actor %s left by an earlier run of fleet %s", name, cfg.fleet.name)
        ray.kill(ray.get_actor(name, namespace=ns), no_restart=True)
    KvStore(ns).delete()
    opts = actor_options(CONTROLLER, ns, 16, 0, get_if_exists=False)
    # on this node, with the gateway (run promptcam fleet on the head node: the steadiest one,
    # and the cluster's GCS dies with it anyway)
    opts["scheduling_strategy"] = NodeAffinitySchedulingStrategy(conn.node_id, soft=False)
    tree = fleet_cfg.model_dump(mode="json")
    controller = controller_face(start_actor(Controller, opts, tree, ns, conn.node_id))
    return controller, fleet_cfg


def shutdown(controller: ControllerHandle) -> None:
    import ray

    try:
        reply = ray.get(controller.shutdown.remote(), timeout=SHUTDOWN_TIMEOUT_S)
        log.info("fleet stopped: %s", reply)
    except Exception as e:
        log.warning("fleet shutdown incomplete: %s", e.__class__.__name__)
    try:
        kill(controller, no_restart=True)
    except Exception as e:
        log.warning("controller not killed: %s", e.__class__.__name__)
