"""One tick of the controller: the reconcilers in the order they run."""

from __future__ import annotations

from clients.fleet.reconcilers.captures import CaptureReconciler
from clients.fleet.reconcilers.engines import EngineReconciler
from clients.fleet.reconcilers.gateway import GatewayReconciler
from clients.fleet.reconcilers.nodes import NodeReconciler
from clients.fleet.reconcilers.placer import Placer
from clients.fleet.reconcilers.world import FleetWorld


class Reconcilers:
    """Every reconciler over one :class:`FleetWorld`; :meth:`tick` runs them once."""

    def __init__(self, world: FleetWorld, gateway_node: str) -> None:
        self.world = world
        self.nodes = NodeReconciler(world)
        self.gateway = GatewayReconciler(world, gateway_node)
        self.placer = Placer(world, self.gateway.push_routes)
        self.engines = EngineReconciler(world, self.placer)
        self.captures = CaptureReconciler(world)

    def tick(self) -> None:
        w = self.world
        self.nodes.step()
        for e in w.engines.values():
            self.engines.step(e)
        self.gateway.step()
        for c in list(w.cameras.values()):
            self.captures.step(c)
            self.placer.step(c)
        self.placer.drain_step()
        self.gateway.push_routes()
        if w.dirty:
            w.save()
