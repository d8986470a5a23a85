"""The controller actor: places cameras on engines and re-places them when an engine dies.

A named, detached Ray actor (``controller`` in the fleet's namespace) that Ray restarts if its
process dies. Its reconcilers (``reconcilers/``) create the other actors (named and detached
too, so they outlive a controller restart): one engine actor per GPU (or CPU share), one capture
actor per camera, the gateway. Its loop (every ``fleet.check_every_s``) never blocks on an
actor; each tick runs the reconcilers in order:

1. nodes: the cluster's nodes and their labelled resources;
2. engines: each engine started, watched (a watch call fails at once when it dies) and its
   report held against the assignment (``reconcilers/engines.py``);
3. gateway: started and watched, its relay snapshot polled;
4. per camera, its capture (``reconcilers/captures.py``), then its placement
   (``reconcilers/placer.py``): a camera whose engine died placed on a survivor with a fresh
   block of object IDs (``ids.py``) and its last objects as seeds; one whose capture moved
   re-pointed;
5. drain: a drained engine's cameras placed elsewhere first, switched once the new engine
   publishes;
6. routes pushed to the gateway when they changed; the record saved when it changed.

A restarted controller recovers from its record in Ray's KV store (``store.py``) and by asking
the actors. State changes are written to the KV store before they take effect where it matters
(a new ID high-water mark before its block is used). Public methods (``status``,
``add_camera``, ...) are called by ``promptcam fleet`` verbs and the gateway.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Mapping

from clients.fleet.calls import ActorFace, describe, kill, wait_all
from clients.fleet.keys import FleetKeys
from clients.fleet.messages import CameraReply, DrainReply, FleetStatus, ShutdownReply
from clients.fleet.node import node_ip_address, setup_actor_logging
from clients.fleet.reconcilers import FleetWorld, Reconcilers
from clients.fleet.reconcilers.status import camera_status, engine_status, figures
from clients.fleet.store import CameraRecord, FleetRecord, KvStore
from stream.config import CameraConfig, Config, ConfigError
from stream.wire import is_camera_name

log = logging.getLogger(__name__)

CONTROLLER = "controller"
STOP_TIMEOUT_S = 15.0


def first_record(cfg: Config) -> FleetRecord:
    """The record of a fleet started now: its cameras unplaced, fresh keys when it uses CURVE."""
    record = FleetRecord(config=cfg.model_dump(mode="json"))
    record.cameras = {
        name: CameraRecord(resource=cfg.fleet.capture_resources.get(name))
        for name in cfg.camera_settings()
    }
    if cfg.fleet.curve != "off":  # the driver resolves "auto" (cluster.resolve_fleet)
        record.keys = FleetKeys.generate().as_dict()
    return record


class Controller:
    """See the module docstring."""

    def __init__(self, cfg_tree: Mapping[str, object], namespace: str, gateway_node: str) -> None:
        import ray

        setup_actor_logging(Config.model_validate(cfg_tree).log_level)
        self.namespace = namespace
        self.pid = os.getpid()
        self.node_ip = node_ip_address()
        self.node_id = ray.get_runtime_context().get_node_id()
        store = KvStore(namespace)
        record = store.load() or first_record(Config.model_validate(cfg_tree))
        record.controller_starts += 1
        self.world = FleetWorld(namespace, store, record)
        self.world.save()
        self.reconcilers = Reconcilers(self.world, gateway_node)
        self.gateway = self.reconcilers.gateway
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self.world.event("controller started", starts=record.controller_starts)
        self._thread = threading.Thread(target=self._run, name="controller", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ the loop

    def _run(self) -> None:
        while not self._stop.wait(self.world.cfg.fleet.check_every_s):
            try:
                with self._lock:
                    self.reconcilers.tick()
            except Exception:  # never let the loop die: log and go on next tick
                log.exception("controller tick failed")

    # ------------------------------------------------------------------ public API

    def status(self) -> FleetStatus:
        """The fleet as ``promptcam fleet status`` shows it."""
        with self._lock:
            w = self.world
            return {
                "fleet": w.cfg.fleet.name,
                "namespace": self.namespace,
                "curve": w.record.keys is not None,
                "t": time.time(),
                "controller": {
                    "pid": self.pid,
                    "node_id": self.node_id,
                    "node_ip": self.node_ip,
                    "starts": w.record.controller_starts,
                },
                "gateway": self.gateway.info,
                "engines": [engine_status(w, e) for e in w.engines.values()],
                "cameras": [camera_status(w, c) for c in w.cameras.values()],
                "nodes": list(w.nodes),
                "figures": figures(w),
                "events": list(w.events)[-30:],
            }

    def add_camera(
        self, name: str, spec: Mapping[str, object], resource: str | None
    ) -> CameraReply:
        """Add camera ``name`` (``spec``: a ``cameras:`` entry) at runtime."""
        with self._lock:
            w = self.world
            if not is_camera_name(name):
                return {"ok": False, "error": f"bad camera name {name[:80]!r}"}
            if name in w.cameras:
                return {"ok": False, "error": f"camera {name!r} is already in the fleet"}
            tree = w.cfg.model_dump(mode="json")
            cams = tree["cameras"] or {w.cfg.camera: {}}
            try:
                CameraConfig.model_validate(spec)
                tree["cameras"] = {**cams, name: spec}
                cfg = Config.model_validate(tree)
            except (ValueError, ConfigError) as e:
                return {"ok": False, "error": str(e).splitlines()[0][:300]}
            w.cfg = cfg
            return w.add_camera(name, resource)

    def remove_camera(self, name: str) -> CameraReply:
        with self._lock:
            w = self.world
            c = w.cameras.pop(name, None)
            if c is None:
                return {"ok": False, "error": f"no camera {name!r} in the fleet"}
            for engine in {c.record.engine, c.moving_to, c.place_target} - {None}:
                handle = w.engines[str(engine)].handle
                if handle is not None:
                    handle.unplace.remote(name)
            if c.handle is not None:
                kill(c.handle, no_restart=True)
            tree = w.cfg.model_dump(mode="json")
            tree["cameras"] = {k: v for k, v in tree["cameras"].items() if k != name}
            if not tree["cameras"] and w.cameras:  # keep the remaining one as a mapping
                tree["cameras"] = {k: {} for k in w.cameras}
            w.cfg = Config.model_validate(tree)
            w.save()
            w.event("camera removed", camera=name)
            return {"ok": True, "camera": name}

    def drain(self, engine: str, on: bool = True) -> DrainReply:
        with self._lock:
            w = self.world
            e = w.engines.get(engine)
            if e is None:
                return {
                    "ok": False,
                    "error": f"no engine {engine!r} (engines: {', '.join(w.engines)})",
                }
            e.draining = on
            w.save()
            w.event("drain" if on else "undrain", engine=engine)
            return {"ok": True, "engine": engine, "cameras": w.served_by(engine)}

    def note_prompt(self, camera: str, prompt: str) -> None:
        with self._lock:
            c = self.world.cameras.get(camera)
            if c is not None:
                c.record.prompt = prompt
                self.world.dirty = True

    def shutdown(self) -> ShutdownReply:
        """Stop every actor of the fleet cleanly (sockets closed), then forget the fleet."""
        import ray

        self._stop.set()
        self._thread.join(timeout=10.0)
        with self._lock:
            w = self.world
            handles: list[ActorFace] = [
                e.handle for e in w.engines.values() if e.handle is not None
            ]
            handles += [c.handle for c in w.cameras.values() if c.handle is not None]
            if self.gateway.handle is not None:
                handles.append(self.gateway.handle)
            refs = [h.stop.remote() for h in handles]
            stopped = 0
            for r in wait_all(refs, STOP_TIMEOUT_S):
                try:
                    stopped += bool(ray.get(r))
                except Exception as e:
                    log.info("stop failed: %s", describe(e))
            for h in handles:
                kill(h, no_restart=True)
            w.store.delete()
            return {"ok": True, "actors": len(handles), "stopped_cleanly": stopped}
