"""The fleet controller's reconcilers, one per kind of thing it keeps as configured: nodes
(``nodes.py``), engines (``engines.py``), captures (``captures.py``), placement of cameras on
engines (``placer.py``) and the gateway with its routes (``gateway.py``). They share the state
in ``world.py`` (engines and cameras with their state enums, the record, the ID leaser);
``tick.py`` runs them in order on each tick of the controller (``clients/fleet/controller.py``)."""

from clients.fleet.reconcilers.captures import CaptureReconciler
from clients.fleet.reconcilers.engines import EngineReconciler
from clients.fleet.reconcilers.gateway import GATEWAY, GatewayReconciler
from clients.fleet.reconcilers.nodes import NodeReconciler
from clients.fleet.reconcilers.placer import Placer
from clients.fleet.reconcilers.tick import Reconcilers
from clients.fleet.reconcilers.world import (
    CameraSlot,
    CameraState,
    EngineSlot,
    EngineState,
    FleetWorld,
)

__all__ = [
    "GATEWAY",
    "CameraSlot",
    "CameraState",
    "CaptureReconciler",
    "EngineReconciler",
    "EngineSlot",
    "EngineState",
    "FleetWorld",
    "GatewayReconciler",
    "NodeReconciler",
    "Placer",
    "Reconcilers",
]
