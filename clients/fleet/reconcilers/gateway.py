"""The gateway reconciler: the fleet's one gateway actor (on the node ``promptcam fleet`` runs
on), its routes (camera → the engine that serves it, engine → its endpoints) pushed whenever
they change, and its relay snapshot (each camera's last objects, the seeds of a re-placement).
"""

from __future__ import annotations

from clients.fleet.calls import (
    Call,
    CallSlot,
    Done,
    GatewayHandle,
    Watch,
    actor_options,
    gateway_face,
    start_actor,
)
from clients.fleet.messages import GatewayInfo, RelayCamera
from clients.fleet.reconcilers.world import REPORT_EVERY_S, EngineState, FleetWorld

GATEWAY = "gateway"

RoutesKey = tuple[tuple[tuple[str, str], ...], tuple[tuple[str, tuple[str, ...]], ...]]


class GatewayReconciler:
    """Starts and watches the gateway; see the module docstring."""

    def __init__(self, world: FleetWorld, node_id: str) -> None:
        self.world = world
        self.node_id = node_id  # the gateway's node
        self.handle: GatewayHandle | None = None
        self.info: GatewayInfo | None = None
        self._infos: CallSlot[GatewayInfo] = CallSlot()
        self._watch = Watch()
        self._routes_call: Call[str] | None = None
        self._snapshots: CallSlot[dict[str, RelayCamera]] = CallSlot()
        self._pushed: RoutesKey | None = None

    def _start(self) -> GatewayHandle:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        from clients.fleet.gateway import GatewayActor

        opts = actor_options(GATEWAY, self.world.namespace, 8, 0)
        opts["scheduling_strategy"] = NodeAffinitySchedulingStrategy(self.node_id, soft=False)
        w = self.world
        actor = start_actor(GatewayActor, opts, w.config_tree(), w.keys(), w.namespace)
        return gateway_face(actor)

    def step(self) -> None:
        if self.handle is None:
            self.handle = self._start()
        if self.info is None:
            self._info_step(self.handle)
            return
        died = self._watch.died(self.handle)
        if died is not None:
            self.world.event("gateway down", reason=died)
            self.info = None
            self._routes_call = self._snapshots.call = None
            return
        self._snapshot_step(self.handle)

    def _info_step(self, handle: GatewayHandle) -> None:
        out = self._infos.ask(handle.info)
        if isinstance(out, Done):
            self.info = out.value
            self._pushed = None
            self.world.event("gateway up", node=out.value["node_ip"])

    def _snapshot_step(self, handle: GatewayHandle) -> None:
        out = self._snapshots.every(REPORT_EVERY_S, handle.snapshot)
        if isinstance(out, Done):
            self.world.snapshot = out.value

    def push_routes(self) -> None:
        """Tell the gateway the routes, when they changed since it last took them."""
        if self.handle is None or self.info is None:
            return
        if self._routes_call is not None:
            out = self._routes_call.poll()
            if out is None:
                return
            self._routes_call = None
            if not isinstance(out, Done):
                self._pushed = None  # push again
        w = self.world
        routes = {
            c.name: c.record.engine
            for c in w.cameras.values()
            if c.record.engine is not None and w.engines[c.record.engine].state == EngineState.UP
        }
        endpoints = {
            e.name: [e.info["tracks"], e.info["annotated"]]
            for e in w.engines.values()
            if e.info is not None
        }
        key: RoutesKey = (
            tuple(sorted(routes.items())),
            tuple(sorted((k, tuple(v)) for k, v in endpoints.items())),
        )
        if key == self._pushed:
            return
        self._pushed = key
        self._routes_call = Call(self.handle.set_routes.remote(routes, endpoints))
