"""The controller actor: places cameras on engines and re-places them when an engine dies.

A named, detached Ray actor (``controller`` in the fleet's namespace) that Ray restarts if its
process dies. It creates the other actors (named and detached too, so they outlive a controller
restart): one engine actor per GPU (or CPU share), one capture actor per camera, the gateway.
Its loop (every ``fleet.check_every_s``) never blocks on an actor; per engine it keeps one
``watch`` call open, which fails at once when the engine's process or node dies, and polls
``report`` (an engine that stops answering for ``fleet.engine_timeout_s`` is killed, and Ray
restarts it). Then:

- a camera whose engine died is placed on a surviving engine at once (capacity permitting:
  ``placement.py``), with a fresh block of object IDs (``ids.py``) and its last known objects
  as box prompts, and its text prompt re-grounds; until then it is ``pending`` with the reason;
- a camera whose capture moved (restarted elsewhere) is re-pointed;
- an engine that is drained (``drain``) hands its cameras over first: each is placed on another
  engine and, once that one publishes its tracks, the gateway switches to it and the old engine
  drops it;
- every report is checked against the assignment (a camera the engine should serve but does not
  is re-placed; one it should not serve is removed), which is also how a restarted controller
  recovers: from its record in Ray's KV store (``store.py``) and by asking the actors.

State changes are written to the KV store before they take effect where it matters (a new ID
high-water mark before its block is used). Public methods (``status``, ``add_camera``, ...) are
called by ``promptcam fleet`` verbs and the gateway.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from clients.fleet.calls import Call, Outcome, describe
from clients.fleet.ids import IdBlock, IdLeaser
from clients.fleet.keys import FleetKeys
from clients.fleet.node import setup_actor_logging
from clients.fleet.placement import Capacity, EngineLoad, Pending, choose_engine
from clients.fleet.store import CameraRecord, FleetRecord, KvStore
from stream.config import CameraConfig, Config, ConfigError
from stream.wire import is_camera_name

log = logging.getLogger(__name__)

CONTROLLER = "controller"
GATEWAY = "gateway"
RESOURCE_SHARE = 0.001  # of a node label resource, per actor: many actors fit on a labelled node
WATCH_S = 30.0  # a watch call returns after this long and is renewed
REPORT_EVERY_S = 1.0
NODES_EVERY_S = 1.0
PENDING_AFTER_S = 5.0  # an actor not up after this long, whose resource no node has, is pending
RETRY_PLACE_S = 1.0
GRACE_S = 3.0  # a placement younger than this is not yet expected in the engine's report
STOP_TIMEOUT_S = 15.0
START_GRACE_S = 60.0
RECOVER_GRACE_S = 5.0  # after a controller restart, how long an engine has to show it is up
MAX_EVENTS = 200


def engine_name(index: int) -> str:
    return f"engine-{index}"


def capture_name(camera: str) -> str:
    return f"capture-{camera}"


@dataclass
class EngineSlot:
    """One engine actor as the controller follows it."""

    name: str
    index: int
    handle: Any = None
    state: str = "starting"  # starting | up | down | pending
    info: dict[str, Any] | None = None  # from ``info()`` of the current incarnation
    incarnation: str | None = None
    restarts: int = 0
    draining: bool = False
    error: str = ""
    since: float = field(default_factory=time.monotonic)  # of the current state
    info_call: Call | None = None
    watch_call: Call | None = None
    report_call: Call | None = None
    report: dict[str, Any] | None = None
    report_sent: float = 0.0


@dataclass
class CameraSlot:
    """One camera: its record (persisted) and what the controller follows at runtime."""

    name: str
    record: CameraRecord
    handle: Any = None  # its capture actor
    capture_incarnation: str | None = None
    capture_since: float = field(default_factory=time.monotonic)
    capture_status: dict[str, Any] | None = None
    frames: str | None = None  # where its capture publishes now
    placed_frames: str | None = None  # where its engine subscribed
    state: str = "starting"
    error: str = ""
    info_call: Call | None = None
    watch_call: Call | None = None
    status_call: Call | None = None
    status_sent: float = 0.0
    place_call: Call | None = None
    place_target: str | None = None
    place_block: IdBlock | None = None
    retry_at: float = 0.0
    moving_to: str | None = None  # drain: placed there, switched to once it publishes
    placed_at: float = 0.0
    live: bool = False
    lost_at: float | None = None  # wall time its engine was lost (for the recovery figure)
    lease_call: Call | None = None
    fps: float = 0.0
    objects: int = 0
    next_id: int | None = None
    ids_left: int | None = None


class Controller:
    """See the module docstring."""

    def __init__(self, cfg_tree: dict[str, Any], namespace: str, gateway_node: str) -> None:
        import ray

        setup_actor_logging(Config.model_validate(cfg_tree).log_level)
        self.namespace = namespace
        self.gateway_node = gateway_node
        self.pid = os.getpid()
        self.node_ip = ray.util.get_node_ip_address()
        self.node_id = ray.get_runtime_context().get_node_id()
        self.store = KvStore(namespace)
        record = self.store.load()
        if record is None:
            cfg = Config.model_validate(cfg_tree)
            record = FleetRecord(config=cfg.model_dump(mode="json"))
            record.cameras = {
                name: CameraRecord(resource=cfg.fleet.capture_resources.get(name))
                for name in cfg.camera_settings()
            }
            if cfg.fleet.curve != "off":  # the driver resolves "auto" (cluster.resolve_fleet)
                record.keys = FleetKeys.generate().as_dict()
        record.controller_starts += 1
        record.figures.setdefault("faults", 0)
        record.figures.setdefault("recoveries", 0)
        record.figures.setdefault("recovery_s", [])
        self.record = record
        self.cfg = Config.model_validate(record.config)
        self.leaser = IdLeaser(self.cfg.fleet.id_block, record.next_free)
        self.store.save(record)
        self._lock = threading.RLock()
        self._dirty = False
        self.events: deque[dict[str, Any]] = deque(maxlen=MAX_EVENTS)
        n = self.cfg.fleet.engines or 1
        self.engines = {engine_name(k): EngineSlot(engine_name(k), k) for k in range(n)}
        for name in record.drained:
            if name in self.engines:
                self.engines[name].draining = True
        self.cameras = {
            name: CameraSlot(name, rec, placed_at=time.monotonic())
            for name, rec in record.cameras.items()
        }
        self.gateway: Any = None
        self.gateway_info: dict[str, Any] | None = None
        self._gw_info_call: Call | None = None
        self._gw_watch_call: Call | None = None
        self._gw_routes_call: Call | None = None
        self._gw_snapshot_call: Call | None = None
        self._gw_snapshot_sent = 0.0
        self._gw_pushed: tuple[Any, ...] | None = None
        self.snapshot: dict[str, dict[str, Any]] = {}
        self.nodes: list[dict[str, Any]] = []
        self._nodes_t = 0.0
        self._stop = threading.Event()
        self.started = time.monotonic()
        self._event("controller started", starts=record.controller_starts)
        self._thread = threading.Thread(target=self._run, name="controller", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ helpers

    def _event(self, what: str, **fields: Any) -> None:
        self.events.append({"t": time.time(), "event": what, **fields})
        log.info("%s %s", what, " ".join(f"{k}={v}" for k, v in fields.items()))

    def _save(self) -> None:
        self.record.next_free = self.leaser.next_free
        self.record.drained = [e.name for e in self.engines.values() if e.draining]
        self.record.cameras = {name: c.record for name, c in self.cameras.items()}
        self.record.config = self.cfg.model_dump(mode="json")
        self.store.save(self.record)
        self._dirty = False

    def _lease(self) -> IdBlock:
        """A fresh block of IDs, its high-water mark persisted before it is handed out."""
        block = self.leaser.lease()
        self._save()
        return block

    def _actor_class(self, cls: type) -> Any:
        import ray

        return ray.remote(cls)

    def _keys(self) -> dict[str, str] | None:
        return self.record.keys

    # ------------------------------------------------------------------ the loop

    def _run(self) -> None:
        while not self._stop.wait(self.cfg.fleet.check_every_s):
            try:
                with self._lock:
                    self._tick()
            except Exception:  # never let the loop die: log and go on next tick
                log.exception("controller tick failed")

    def _tick(self) -> None:
        self._refresh_nodes()
        for e in self.engines.values():
            self._engine_step(e)
        self._gateway_step()
        for c in list(self.cameras.values()):
            self._capture_step(c)
            self._placement_step(c)
        self._drain_step()
        self._routes_step()
        if self._dirty:
            self._save()

    def _refresh_nodes(self) -> None:
        import ray

        if time.monotonic() - self._nodes_t < NODES_EVERY_S:
            return
        self._nodes_t = time.monotonic()
        nodes = []
        for n in ray.nodes():
            res = n.get("Resources", {})
            nodes.append(
                {
                    "node_id": n["NodeID"],
                    "ip": n.get("NodeManagerAddress", ""),
                    "alive": bool(n.get("Alive")),
                    "cpus": res.get("CPU", 0.0),
                    "gpus": res.get("GPU", 0.0),
                    "labels": sorted(
                        k
                        for k in res
                        if k not in ("CPU", "GPU", "memory", "object_store_memory")
                        and not k.startswith("node:")
                    ),
                }
            )
        self.nodes = nodes

    def _resource_missing(self, resource: str | None) -> bool:
        if resource is None:
            return False
        return not any(n["alive"] and resource in n["labels"] for n in self.nodes)

    # ------------------------------------------------------------------ engines

    def _engine_resource(self, e: EngineSlot) -> str | None:
        res = self.cfg.fleet.engine_resources
        return res[e.index] if e.index < len(res) else None

    def _engine_handle(self, e: EngineSlot) -> Any:
        from clients.fleet.engine_actor import EngineActor

        f = self.cfg.fleet
        opts: dict[str, Any] = {
            "name": e.name,
            "namespace": self.namespace,
            "lifetime": "detached",
            "get_if_exists": True,
            "max_restarts": -1,
            "max_task_retries": 0,
            "max_concurrency": 16,
            "num_cpus": f.engine_cpus,
            "num_gpus": f.engine_gpus or 0,
        }
        resource = self._engine_resource(e)
        if resource is not None:
            opts["resources"] = {resource: RESOURCE_SHARE}
        return (
            self._actor_class(EngineActor)
            .options(**opts)
            .remote(e.name, self.cfg.model_dump(mode="json"), self._keys())
        )

    def _set_engine_state(self, e: EngineSlot, state: str, error: str = "") -> None:
        if e.state != state:
            e.since = time.monotonic()
        e.state, e.error = state, error

    def _engine_step(self, e: EngineSlot) -> None:
        if e.handle is None:
            e.handle = self._engine_handle(e)
        if e.info is None:
            self._engine_info_step(e)
            return
        if e.watch_call is None:
            e.watch_call = Call(e.handle.watch.remote(WATCH_S))
        out = e.watch_call.poll()
        if out is not None:
            e.watch_call = None
            if not out.ok:
                assert out.error is not None
                self._engine_down(e, describe(out.error))
                return
        self._engine_report_step(e)

    def _engine_info_step(self, e: EngineSlot) -> None:
        if e.info_call is None:
            e.info_call = Call(e.handle.info.remote())
        out = e.info_call.poll()
        if out is not None:
            e.info_call = None
            if out.ok:
                self._engine_up(e, out.value)
                return
            if e.state not in ("down", "pending"):  # still (re)starting: ask again next tick
                self._set_engine_state(e, "starting", describe(out.error or Exception()))
        resource = self._engine_resource(e)
        waited = time.monotonic() - e.since > PENDING_AFTER_S
        if e.state != "pending" and waited and self._resource_missing(resource):
            self._set_engine_state(e, "pending", f"no alive node has resource {resource}")

    def _engine_up(self, e: EngineSlot, info: dict[str, Any]) -> None:
        restarted = e.incarnation is not None and info["incarnation"] != e.incarnation
        e.restarts += restarted
        e.incarnation = info["incarnation"]
        e.info = info
        e.report = None
        e.report_sent = 0.0
        self._set_engine_state(e, "up")
        self._event("engine up", engine=e.name, node=info["node_ip"], pid=info["pid"])
        if restarted:  # a restarted engine serves nothing it served before
            for c in self.cameras.values():
                if c.record.engine == e.name and c.place_call is None:
                    self._lose(c, f"engine {e.name} restarted")

    def _engine_down(self, e: EngineSlot, reason: str) -> None:
        self._set_engine_state(e, "down", reason)
        e.info = None
        e.watch_call = e.report_call = e.info_call = None
        e.report = None
        self.record.figures["faults"] += 1
        self._dirty = True
        self._event("engine down", engine=e.name, reason=reason)
        for c in self.cameras.values():
            if c.record.engine == e.name:
                self._lose(c, f"engine {e.name} down")
            if c.place_target == e.name:
                c.place_call, c.place_target, c.place_block = None, None, None
            if c.moving_to == e.name:
                c.moving_to = None

    def _engine_report_step(self, e: EngineSlot) -> None:
        now = time.monotonic()
        if e.report_call is None:
            if now - e.report_sent >= REPORT_EVERY_S:
                e.report_call = Call(e.handle.report.remote())
                e.report_sent = now
            return
        out = e.report_call.poll()
        if out is None:
            if e.report_call.age() > self.cfg.fleet.engine_timeout_s:
                import ray

                self._engine_down(e, f"no answer for {self.cfg.fleet.engine_timeout_s:g}s")
                ray.kill(e.handle, no_restart=False)  # Ray restarts it
            return
        e.report_call = None
        if not out.ok:
            assert out.error is not None
            self._engine_down(e, describe(out.error))
            return
        rep: dict[str, Any] = out.value
        if rep["incarnation"] != e.incarnation:
            e.info = None  # restarted between two looks: learn the new incarnation first
            return
        e.report = rep
        self._engine_reconcile(e, rep)

    def _engine_reconcile(self, e: EngineSlot, rep: dict[str, Any]) -> None:
        served: dict[str, dict[str, Any]] = rep["cameras"]
        now = time.monotonic()
        for cam in served:
            c = self.cameras.get(cam)
            expected = c is not None and e.name in (c.record.engine, c.moving_to, c.place_target)
            if not expected:
                self._event("stray camera removed", engine=e.name, camera=cam)
                e.handle.unplace.remote(cam)
        for c in self.cameras.values():
            if c.record.engine != e.name and c.moving_to != e.name:
                continue
            got = served.get(c.name)
            if got is None:
                if c.place_call is None and now - c.placed_at > GRACE_S and c.moving_to != e.name:
                    self._lose(c, f"engine {e.name} no longer serves it")
                continue
            if c.moving_to == e.name:
                if got["frames_out"] > 0:
                    self._switch(c, e)
                continue
            c.fps, c.objects = float(got["fps"]), int(got["objects"])
            c.next_id, c.ids_left = got["next_id"], got["ids_left"]
            live = got["frames_out"] > 0 and got["state"] == "live"
            if live and not c.live and c.lost_at is not None:
                took = round(time.time() - c.lost_at, 3)
                self.record.figures["recoveries"] += 1
                self.record.figures["recovery_s"] = [*self.record.figures["recovery_s"][-99:], took]
                self._dirty = True
                self._event("camera recovered", camera=c.name, engine=e.name, seconds=took)
                c.lost_at = None
            c.live = live
            c.state = "live" if live else ("waiting" if got["state"] == "waiting" else "stalled")
            c.error = "" if live else c.error
            self._renew_ids(c, e)

    def _renew_ids(self, c: CameraSlot, e: EngineSlot) -> None:
        """A further block once half of what is left is used (engine ``lease``)."""
        if c.lease_call is not None:
            out = c.lease_call.poll()
            if out is None:
                return
            c.lease_call = None
        if c.ids_left is None or c.ids_left >= self.cfg.fleet.id_block // 2:
            return
        block = self._lease()
        c.record.blocks = [*c.record.blocks[-1:], block.as_list()]
        c.lease_call = Call(e.handle.lease.remote(c.name, block.first, block.limit))
        self._event("ID block leased", camera=c.name, engine=e.name, first=block.first)

    def _lose(self, c: CameraSlot, reason: str) -> None:
        """``c`` is no longer served: place it again (with its last objects as seeds). A camera
        being moved that its new engine already took is switched there instead."""
        target, c.moving_to = c.moving_to, None
        if target is not None and c.place_call is None and c.place_block is not None:
            block, c.place_block = c.place_block, None
            c.record.engine = target
            c.record.blocks = [block.as_list()]
            c.record.placements += 1
            c.placed_frames, c.placed_at = c.frames, time.monotonic()
            self._dirty = True
            self._event("moved early", camera=c.name, target=target, reason=reason)
            return
        c.record.engine = None
        c.record.blocks = []
        c.placed_frames = None
        c.live = False
        c.state, c.error = "pending", reason
        c.lost_at = time.time() if c.lost_at is None else c.lost_at
        c.retry_at = 0.0
        self._dirty = True
        self._event("camera lost", camera=c.name, reason=reason)

    # ------------------------------------------------------------------ captures

    def _capture_handle(self, c: CameraSlot) -> Any:
        from clients.fleet.capture_actor import CaptureActor

        opts: dict[str, Any] = {
            "name": capture_name(c.name),
            "namespace": self.namespace,
            "lifetime": "detached",
            "get_if_exists": True,
            "max_restarts": -1,
            "max_task_retries": 0,
            "max_concurrency": 4,
            "num_cpus": self.cfg.fleet.capture_cpus,
        }
        if c.record.resource is not None:
            opts["resources"] = {c.record.resource: RESOURCE_SHARE}
        return (
            self._actor_class(CaptureActor)
            .options(**opts)
            .remote(c.name, self.cfg.model_dump(mode="json"), self._keys())
        )

    def _capture_step(self, c: CameraSlot) -> None:
        if c.handle is None:
            c.handle = self._capture_handle(c)
        if c.capture_incarnation is None:
            if c.info_call is None:
                c.info_call = Call(c.handle.info.remote())
            out = c.info_call.poll()
            if out is not None:
                c.info_call = None
                if out.ok:
                    c.capture_incarnation = out.value["incarnation"]
                    c.capture_since = time.monotonic()
                    self._event("capture up", camera=c.name, node=out.value["node_ip"])
                    return
            waited = time.monotonic() - c.capture_since > PENDING_AFTER_S
            if waited and self._resource_missing(c.record.resource):
                c.state = "pending" if c.record.engine is None else c.state
                c.error = f"its capture needs a node with resource {c.record.resource}"
            return
        if c.watch_call is None:
            c.watch_call = Call(c.handle.watch.remote(WATCH_S))
        out = c.watch_call.poll()
        if out is not None:
            c.watch_call = None
            if not out.ok:
                assert out.error is not None
                self._event("capture down", camera=c.name, reason=describe(out.error))
                c.capture_incarnation, c.frames, c.capture_status = None, None, None
                c.status_call, c.capture_since = None, time.monotonic()
                c.error = f"capture down: {describe(out.error)}"
                return
        self._capture_status_step(c)

    def _capture_status_step(self, c: CameraSlot) -> None:
        now = time.monotonic()
        if c.status_call is None:
            if now - c.status_sent >= REPORT_EVERY_S or c.frames is None:
                c.status_call = Call(c.handle.status.remote())
                c.status_sent = now
            return
        out = c.status_call.poll()
        if out is None:
            return
        c.status_call = None
        if not out.ok:
            return  # the watch call reports a dead capture
        st: dict[str, Any] = out.value
        c.capture_status = st
        c.frames = st["frames"]
        if st["state"] == "failed":
            c.state, c.error = "failed", st["error"]

    # ------------------------------------------------------------------ placement

    def _loads(self) -> list[EngineLoad]:
        out = []
        for e in self.engines.values():
            mine = [
                c
                for c in self.cameras.values()
                if e.name in (c.record.engine, c.place_target, c.moving_to)
            ]
            out.append(
                EngineLoad(
                    name=e.name,
                    up=e.state == "up",
                    accepting=not e.draining,
                    cameras=len(mine),
                    reserved_objects=sum(self._reserve(c.name) for c in mine),
                )
            )
        return out

    def _capacity(self) -> Capacity:
        f = self.cfg.fleet
        return Capacity(f.max_cameras_per_engine, f.max_objects_per_engine)

    def _reserve(self, camera: str) -> int:
        settings = self.cfg.camera_settings().get(camera)
        return settings.engine.max_objects if settings is not None else 0

    def _engine_settings(self, c: CameraSlot) -> dict[str, Any]:
        eng = self.cfg.camera_settings()[c.name].engine.model_dump(mode="json")
        if c.record.prompt is not None:
            eng["prompt"] = c.record.prompt
        return eng

    def _seeds(self, camera: str) -> list[tuple[list[float], str]]:
        if not self.cfg.fleet.reseed_objects:
            return []
        objs = self.snapshot.get(camera, {}).get("objects", [])
        return [(o["box"], o["label"]) for o in objs]

    def _placement_step(self, c: CameraSlot) -> None:
        if c.place_call is not None:
            self._place_result(c)
            return
        if c.record.engine is not None:
            e = self.engines[c.record.engine]
            if e.state != "up" and time.monotonic() - self.started > RECOVER_GRACE_S:
                # recorded on an engine that did not come back (a controller restart after the
                # engine or its node died: nobody saw it go down)
                self._lose(c, f"engine {e.name} is {e.state}")
                return
        if c.state == "failed" or c.frames is None or c.capture_incarnation is None:
            return
        if c.record.engine is not None:
            if c.placed_frames is not None and c.frames != c.placed_frames:
                e = self.engines[c.record.engine]
                if e.handle is not None:
                    e.handle.unplace.remote(c.name)
                self._lose(c, f"its capture moved to {c.frames}")
            elif c.placed_frames is None:
                c.placed_frames = c.frames  # recovered from the record: assume the same capture
            return
        if time.monotonic() < c.retry_at or self._starting_up():
            return
        choice = choose_engine(self._loads(), self._reserve(c.name), self._capacity())
        if isinstance(choice, Pending):
            c.state, c.error = "pending", choice.reason
            return
        self._place(c, choice.engine)

    def _starting_up(self) -> bool:
        """At start, wait (up to ``START_GRACE_S``) for engines still starting, so that the
        first cameras spread over all of them instead of filling the first one up."""
        if time.monotonic() - self.started > START_GRACE_S:
            return False
        return any(e.state == "starting" for e in self.engines.values())

    def _place(self, c: CameraSlot, engine: str, moving: bool = False) -> None:
        e = self.engines[engine]
        block = self._lease()
        c.place_target, c.place_block = engine, block
        c.place_call = Call(
            e.handle.place.remote(
                c.name,
                c.frames,
                self._engine_settings(c),
                block.first,
                block.limit,
                self._seeds(c.name),
            )
        )
        if moving:
            c.moving_to = engine
        else:
            c.state, c.error = "placing", ""
        self._event("placing", camera=c.name, engine=engine, first_id=block.first, moving=moving)

    def _place_result(self, c: CameraSlot) -> None:
        assert c.place_call is not None and c.place_target is not None
        out: Outcome | None = c.place_call.poll()
        if out is None:
            return
        target, block = c.place_target, c.place_block
        c.place_call, c.place_target, c.place_block = None, None, None
        result = out.value if out.ok else {"ok": False, "error": describe(out.error or Exception())}
        if not result.get("ok"):
            c.moving_to = None
            c.retry_at = time.monotonic() + RETRY_PLACE_S
            if c.record.engine is None:
                c.state, c.error = "pending", f"{target} refused it: {result.get('error')}"
            self._event("placement failed", camera=c.name, engine=target, error=result.get("error"))
            return
        assert block is not None
        if c.moving_to == target:
            c.place_block = block  # kept until the switch
            return
        c.record.engine = target
        c.record.blocks = [block.as_list()]
        c.record.placements += 1
        c.placed_frames = c.frames
        c.placed_at = time.monotonic()
        c.state = "waiting"
        self._dirty = True
        self._event("placed", camera=c.name, engine=target)

    # ------------------------------------------------------------------ drain

    def _drain_step(self) -> None:
        for e in self.engines.values():
            if not e.draining or e.state != "up":
                continue
            for c in self.cameras.values():
                if c.record.engine != e.name or c.moving_to or c.place_call is not None:
                    continue
                choice = choose_engine(
                    self._loads(), self._reserve(c.name), self._capacity(), exclude=[e.name]
                )
                if isinstance(choice, Pending):
                    c.error = f"cannot leave {e.name}: {choice.reason}"
                    continue
                self._place(c, choice.engine, moving=True)

    def _switch(self, c: CameraSlot, new: EngineSlot) -> None:
        """Drain: the new engine publishes ``c``'s tracks; switch the gateway and drop the old."""
        old = self.engines.get(c.record.engine or "")
        block = c.place_block
        c.record.engine = new.name
        c.record.blocks = [block.as_list()] if block is not None else []
        c.record.placements += 1
        c.moving_to, c.place_block = None, None
        c.placed_at = time.monotonic()
        self._dirty = True
        self._routes_step()  # the gateway takes the new engine's messages first
        if old is not None and old.handle is not None:
            old.handle.unplace.remote(c.name)
        self._event("moved", camera=c.name, source=old.name if old else None, target=new.name)

    # ------------------------------------------------------------------ gateway

    def _gateway_step(self) -> None:
        from clients.fleet.gateway import GatewayActor

        if self.gateway is None:
            from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

            self.gateway = (
                self._actor_class(GatewayActor)
                .options(
                    name=GATEWAY,
                    namespace=self.namespace,
                    lifetime="detached",
                    get_if_exists=True,
                    max_restarts=-1,
                    max_task_retries=0,
                    max_concurrency=8,
                    num_cpus=0,
                    scheduling_strategy=NodeAffinitySchedulingStrategy(
                        self.gateway_node, soft=False
                    ),
                )
                .remote(self.cfg.model_dump(mode="json"), self._keys(), self.namespace)
            )
        if self.gateway_info is None:
            if self._gw_info_call is None:
                self._gw_info_call = Call(self.gateway.info.remote())
            out = self._gw_info_call.poll()
            if out is None:
                return
            self._gw_info_call = None
            if out.ok:
                self.gateway_info = out.value
                self._gw_pushed = None
                self._event("gateway up", node=out.value["node_ip"])
            return
        if self._gw_watch_call is None:
            self._gw_watch_call = Call(self.gateway.watch.remote(WATCH_S))
        out = self._gw_watch_call.poll()
        if out is not None:
            self._gw_watch_call = None
            if not out.ok:
                assert out.error is not None
                self._event("gateway down", reason=describe(out.error))
                self.gateway_info = None
                self._gw_routes_call = self._gw_snapshot_call = None
                return
        self._gateway_snapshot_step()

    def _gateway_snapshot_step(self) -> None:
        now = time.monotonic()
        if self._gw_snapshot_call is None:
            if now - self._gw_snapshot_sent >= REPORT_EVERY_S:
                self._gw_snapshot_call = Call(self.gateway.snapshot.remote())
                self._gw_snapshot_sent = now
            return
        out = self._gw_snapshot_call.poll()
        if out is not None:
            self._gw_snapshot_call = None
            if out.ok:
                self.snapshot = out.value

    def _routes_step(self) -> None:
        if self.gateway is None or self.gateway_info is None:
            return
        if self._gw_routes_call is not None:
            out = self._gw_routes_call.poll()
            if out is None:
                return
            self._gw_routes_call = None
            if not out.ok:
                self._gw_pushed = None  # push again
        routes = {
            c.name: c.record.engine
            for c in self.cameras.values()
            if c.record.engine is not None and self.engines[c.record.engine].state == "up"
        }
        endpoints = {
            e.name: [e.info["tracks"], e.info["annotated"]]
            for e in self.engines.values()
            if e.info is not None
        }
        key = (
            tuple(sorted(routes.items())),
            tuple(sorted((k, tuple(v)) for k, v in endpoints.items())),
        )
        if key == self._gw_pushed:
            return
        self._gw_pushed = key
        self._gw_routes_call = Call(self.gateway.set_routes.remote(routes, endpoints))

    # ------------------------------------------------------------------ public API

    def status(self) -> dict[str, Any]:
        """The fleet as ``promptcam fleet status`` shows it."""
        with self._lock:
            engines = []
            for e in self.engines.values():
                mine = [c.name for c in self.cameras.values() if c.record.engine == e.name]
                rep = e.report or {}
                state = "draining" if e.draining and e.state == "up" else e.state
                engines.append(
                    {
                        "name": e.name,
                        "state": state,
                        "error": e.error,
                        "node_id": (e.info or {}).get("node_id"),
                        "node_ip": (e.info or {}).get("node_ip"),
                        "pid": (e.info or {}).get("pid"),
                        "tracks": (e.info or {}).get("tracks"),
                        "resource": self._engine_resource(e),
                        "cameras": mine,
                        "fps": float(rep.get("fps_out", 0.0)),
                        "rss_mb": rep.get("rss_mb"),
                        "restarts": e.restarts,
                    }
                )
            cameras = []
            for c in self.cameras.values():
                st = c.capture_status or {}
                cameras.append(
                    {
                        "camera": c.name,
                        "state": "moving" if c.moving_to else c.state,
                        "error": c.error,
                        "engine": c.record.engine,
                        "moving_to": c.moving_to,
                        "frames": c.frames,
                        "capture": st.get("state"),
                        "capture_fps": (st.get("stats") or {}).get("fps", 0.0),
                        "resource": c.record.resource,
                        "fps": c.fps if c.record.engine else 0.0,
                        "objects": c.objects if c.record.engine else 0,
                        "prompt": c.record.prompt
                        if c.record.prompt is not None
                        else self._config_prompt(c.name),
                        "ids": c.record.blocks[-1] if c.record.blocks else None,
                        "next_id": c.next_id,
                        "placements": c.record.placements,
                    }
                )
            fig = self.record.figures
            rec = sorted(fig["recovery_s"])
            return {
                "fleet": self.cfg.fleet.name,
                "namespace": self.namespace,
                "curve": self.record.keys is not None,
                "t": time.time(),
                "controller": {
                    "pid": self.pid,
                    "node_id": self.node_id,
                    "node_ip": self.node_ip,
                    "starts": self.record.controller_starts,
                },
                "gateway": self.gateway_info,
                "engines": engines,
                "cameras": cameras,
                "nodes": list(self.nodes),
                "figures": {
                    "faults": fig["faults"],
                    "recoveries": fig["recoveries"],
                    "recovery_s": list(fig["recovery_s"]),
                    "recovery_p50_s": rec[len(rec) // 2] if rec else None,
                    "recovery_max_s": rec[-1] if rec else None,
                    "controller_restarts": self.record.controller_starts - 1,
                    "ids_next_free": self.leaser.next_free,
                },
                "events": list(self.events)[-30:],
            }

    def _config_prompt(self, camera: str) -> str:
        s = self.cfg.camera_settings().get(camera)
        return s.engine.prompt if s is not None else ""

    def add_camera(self, name: str, spec: dict[str, Any], resource: str | None) -> dict[str, Any]:
        """Add camera ``name`` (``spec``: a ``cameras:`` entry) at runtime."""
        with self._lock:
            if not is_camera_name(name):
                return {"ok": False, "error": f"bad camera name {name[:80]!r}"}
            if name in self.cameras:
                return {"ok": False, "error": f"camera {name!r} is already in the fleet"}
            tree = self.cfg.model_dump(mode="json")
            cams = tree["cameras"] or {self.cfg.camera: {}}
            try:
                CameraConfig.model_validate(spec)
                tree["cameras"] = {**cams, name: spec}
                cfg = Config.model_validate(tree)
            except (ValueError, ConfigError) as e:
                return {"ok": False, "error": str(e).splitlines()[0][:300]}
            self.cfg = cfg
            self.cameras[name] = CameraSlot(name, CameraRecord(resource=resource))
            self._save()
            self._event("camera added", camera=name, resource=resource)
            return {"ok": True, "camera": name, "state": "starting"}

    def remove_camera(self, name: str) -> dict[str, Any]:
        import ray

        with self._lock:
            c = self.cameras.pop(name, None)
            if c is None:
                return {"ok": False, "error": f"no camera {name!r} in the fleet"}
            for engine in {c.record.engine, c.moving_to, c.place_target} - {None}:
                e = self.engines[str(engine)]
                if e.handle is not None:
                    e.handle.unplace.remote(name)
            if c.handle is not None:
                ray.kill(c.handle, no_restart=True)
            tree = self.cfg.model_dump(mode="json")
            tree["cameras"] = {k: v for k, v in tree["cameras"].items() if k != name}
            if not tree["cameras"] and self.cameras:  # keep the remaining one as a mapping
                tree["cameras"] = {k: {} for k in self.cameras}
            self.cfg = Config.model_validate(tree)
            self._save()
            self._event("camera removed", camera=name)
            return {"ok": True, "camera": name}

    def drain(self, engine: str, on: bool = True) -> dict[str, Any]:
        with self._lock:
            e = self.engines.get(engine)
            if e is None:
                return {
                    "ok": False,
                    "error": f"no engine {engine!r} (engines: {', '.join(self.engines)})",
                }
            e.draining = on
            self._save()
            self._event("drain" if on else "undrain", engine=engine)
            return {
                "ok": True,
                "engine": engine,
                "cameras": [c.name for c in self.cameras.values() if c.record.engine == engine],
            }

    def note_prompt(self, camera: str, prompt: str) -> None:
        with self._lock:
            c = self.cameras.get(camera)
            if c is not None:
                c.record.prompt = prompt
                self._dirty = True

    def shutdown(self) -> dict[str, Any]:
        """Stop every actor of the fleet cleanly (sockets closed), then forget the fleet."""
        import ray

        self._stop.set()
        self._thread.join(timeout=10.0)
        with self._lock:
            handles = [e.handle for e in self.engines.values() if e.handle is not None]
            handles += [c.handle for c in self.cameras.values() if c.handle is not None]
            if self.gateway is not None:
                handles.append(self.gateway)
            refs = [h.stop.remote() for h in handles]
            ready, _ = ray.wait(refs, num_returns=len(refs), timeout=STOP_TIMEOUT_S)
            stopped = 0
            for r in ready:
                try:
                    stopped += bool(ray.get(r))
                except Exception as e:
                    log.info("stop failed: %s", describe(e))
            for h in handles:
                ray.kill(h, no_restart=True)
            self.store.delete()
            return {"ok": True, "actors": len(handles), "stopped_cleanly": stopped}
