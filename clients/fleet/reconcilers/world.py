"""What the controller's reconcilers share: the engines and cameras as followed at runtime
(:class:`EngineSlot`, :class:`CameraSlot`, each with an explicit state), the durable record, the
ID leaser and the event log (:class:`FleetWorld`).

Every reconciler runs on the controller's loop thread under its lock; none blocks on an actor.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass, field
from enum import StrEnum

from clients.fleet.calls import Call, CallSlot, CaptureHandle, EngineHandle, Watch
from clients.fleet.ids import IdBlock, IdLeaser
from clients.fleet.messages import (
    CameraReply,
    CaptureInfo,
    CaptureStatus,
    EngineInfo,
    EngineReport,
    NodeStatus,
    RelayCamera,
    Reply,
)
from clients.fleet.store import CameraRecord, FleetRecord, KvStore
from stream.config import Config

log = logging.getLogger(__name__)

RESOURCE_SHARE = 0.001  # of a node label resource, per actor: many actors fit on a labelled node
REPORT_EVERY_S = 1.0
PENDING_AFTER_S = 5.0  # an actor not up after this long, whose resource no node has, is pending
MAX_EVENTS = 200


class EngineState(StrEnum):
    """An engine actor as the controller sees it (``fleet status`` shows these values)."""

    STARTING = "starting"  # created or restarting: its ``info`` not answered yet
    UP = "up"
    DOWN = "down"  # its watch call failed or it stopped answering; Ray restarts it
    PENDING = "pending"  # not up, and no alive node has the resource it needs
    DRAINING = "draining"  # shown for an engine that is up and drained (``draining`` flag)


class CameraState(StrEnum):
    """A camera as the controller sees it (``fleet status`` and the page show these values)."""

    STARTING = "starting"  # its capture not up yet
    PENDING = "pending"  # not placed; ``error`` says why
    PLACING = "placing"  # a ``place`` call in flight
    WAITING = "waiting"  # placed; its engine has no frame of it yet
    LIVE = "live"
    STALLED = "stalled"  # placed; no frame for a while
    FAILED = "failed"  # its capture cannot open the source
    MOVING = "moving"  # shown while a drain moves it (``moving_to`` set)


def engine_name(index: int) -> str:
    return f"engine-{index}"


def capture_name(camera: str) -> str:
    return f"capture-{camera}"


@dataclass
class EngineSlot:
    """One engine actor as the controller follows it."""

    name: str
    index: int
    handle: EngineHandle | None = None
    state: EngineState = EngineState.STARTING
    info: EngineInfo | None = None  # from ``info()`` of the current incarnation
    incarnation: str | None = None
    restarts: int = 0
    draining: bool = False
    error: str = ""
    since: float = field(default_factory=time.monotonic)  # of the current state
    infos: CallSlot[EngineInfo] = field(default_factory=CallSlot)
    watch: Watch = field(default_factory=Watch)
    reports: CallSlot[EngineReport] = field(default_factory=CallSlot)
    report: EngineReport | None = None

    def set_state(self, state: EngineState, error: str = "") -> None:
        if self.state != state:
            self.since = time.monotonic()
        self.state, self.error = state, error


@dataclass
class CameraSlot:
    """One camera: its record (persisted) and what the controller follows at runtime."""

    name: str
    record: CameraRecord
    handle: CaptureHandle | None = None  # its capture actor
    capture_incarnation: str | None = None
    capture_since: float = field(default_factory=time.monotonic)
    capture_status: CaptureStatus | None = None
    frames: str | None = None  # where its capture publishes now
    placed_frames: str | None = None  # where its engine subscribed
    state: CameraState = CameraState.STARTING
    error: str = ""
    infos: CallSlot[CaptureInfo] = field(default_factory=CallSlot)
    watch: Watch = field(default_factory=Watch)
    statuses: CallSlot[CaptureStatus] = field(default_factory=CallSlot)
    place_call: Call[Reply] | None = None
    place_target: str | None = None
    place_block: IdBlock | None = None
    retry_at: float = 0.0
    moving_to: str | None = None  # drain: placed there, switched to once it publishes
    placed_at: float = 0.0
    live: bool = False
    lost_at: float | None = None  # wall time its engine was lost (for the recovery figure)
    leases: CallSlot[Reply] = field(default_factory=CallSlot)
    fps: float = 0.0
    objects: int = 0
    next_id: int | None = None
    ids_left: int | None = None

    def serves_on(self, engine: str) -> bool:
        """Whether ``engine`` serves it, takes it over (drain) or is being asked to take it."""
        return engine in (self.record.engine, self.moving_to, self.place_target)


@dataclass
class Figures:
    """The fleet's fault and recovery counts (kept in ``FleetRecord.figures``)."""

    faults: int = 0
    recoveries: int = 0
    recovery_s: list[float] = field(default_factory=list)


class FleetWorld:
    """The state the reconcilers share, and the few things they all do with it."""

    def __init__(self, namespace: str, store: KvStore, record: FleetRecord) -> None:
        self.namespace = namespace
        self.store = store
        self.record = record
        self.cfg = Config.model_validate(record.config)
        self.leaser = IdLeaser(self.cfg.fleet.id_block, record.next_free)
        self.figures = Figures(
            faults=int(_number(record.figures.get("faults", 0))),
            recoveries=int(_number(record.figures.get("recoveries", 0))),
            recovery_s=_floats(record.figures.get("recovery_s", [])),
        )
        self.dirty = False
        self.events: deque[dict[str, object]] = deque(maxlen=MAX_EVENTS)
        n = self.cfg.fleet.engines or 1
        self.engines = {engine_name(k): EngineSlot(engine_name(k), k) for k in range(n)}
        for name in record.drained:
            if name in self.engines:
                self.engines[name].draining = True
        self.cameras = {
            name: CameraSlot(name, rec, placed_at=time.monotonic())
            for name, rec in record.cameras.items()
        }
        self.snapshot: dict[str, RelayCamera] = {}
        self.nodes: list[NodeStatus] = []
        self.started = time.monotonic()

    def event(self, what: str, **fields: object) -> None:
        self.events.append({"t": time.time(), "event": what, **fields})
        log.info("%s %s", what, " ".join(f"{k}={v}" for k, v in fields.items()))

    def save(self) -> None:
        self.record.next_free = self.leaser.next_free
        self.record.drained = [e.name for e in self.engines.values() if e.draining]
        self.record.cameras = {name: c.record for name, c in self.cameras.items()}
        self.record.config = self.cfg.model_dump(mode="json")
        self.record.figures = {
            "faults": self.figures.faults,
            "recoveries": self.figures.recoveries,
            "recovery_s": list(self.figures.recovery_s),
        }
        self.store.save(self.record)
        self.dirty = False

    def lease(self) -> IdBlock:
        """A fresh block of IDs, its high-water mark persisted before it is handed out."""
        block = self.leaser.lease()
        self.save()
        return block

    def keys(self) -> dict[str, str] | None:
        return self.record.keys

    def config_tree(self) -> dict[str, object]:
        tree: dict[str, object] = self.cfg.model_dump(mode="json")
        return tree

    def resource_missing(self, resource: str | None) -> bool:
        if resource is None:
            return False
        return not any(n["alive"] and resource in n["labels"] for n in self.nodes)

    def stuck_without(self, since: float, resource: str | None) -> bool:
        """Whether an actor not up for ``PENDING_AFTER_S`` since ``since`` needs a ``resource``
        that no alive node has (it stays pending until such a node joins)."""
        return time.monotonic() - since > PENDING_AFTER_S and self.resource_missing(resource)

    def engine_resource(self, e: EngineSlot) -> str | None:
        res = self.cfg.fleet.engine_resources
        return res[e.index] if e.index < len(res) else None

    def served_by(self, engine: str) -> list[str]:
        return [c.name for c in self.cameras.values() if c.record.engine == engine]

    def config_prompt(self, camera: str) -> str:
        s = self.cfg.camera_settings().get(camera)
        return s.engine.prompt if s is not None else ""

    def add_camera(self, name: str, resource: str | None) -> CameraReply:
        self.cameras[name] = CameraSlot(name, CameraRecord(resource=resource))
        self.save()
        self.event("camera added", camera=name, resource=resource)
        return {"ok": True, "camera": name, "state": CameraState.STARTING.value}


def _number(v: object) -> float:
    return float(v) if isinstance(v, int | float) else 0.0


def _floats(v: object) -> list[float]:
    return [float(x) for x in v if isinstance(x, int | float)] if isinstance(v, list) else []
