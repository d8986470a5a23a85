"""The engine actor: one ``EngineProcess`` (one GPU, or a CPU share) serving the cameras the
controller places on it.

Runs in a Ray worker process. The models load once, in the constructor; the engine's frame loop
runs in a thread. Data plane: ZeroMQ, as ever — it subscribes to each camera's capture actor
(``frame.<camera>``) and binds ``tracks``/``annotated`` on the node address Ray reports (CURVE
when the fleet says so); its control socket binds loopback only, for tools on its own host. The
controller and the gateway reach it through Ray calls instead: ``place`` / ``unplace`` /
``lease`` (cameras and ID blocks) and ``control`` (any control request, answered as the control
socket would). A frame loop that dies takes the process with it, so Ray restarts the actor.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import zmq

from clients.fleet.keys import FleetKeys, KeyFiles
from clients.fleet.messages import (
    CameraReport,
    ConfigTree,
    EngineInfo,
    EngineReport,
    Reply,
    section,
)
from clients.fleet.node import is_loopback, setup_actor_logging, tcp, whereabouts
from stream.bus import BusError, free_port
from stream.config import Config, EngineConfig
from stream.errors import PromptcamError

if TYPE_CHECKING:
    from engine.service import EngineProcess

log = logging.getLogger(__name__)

SEED_WAIT_S = 15.0  # how long seeding waits for the moved camera's first processed frame
BIND_ATTEMPTS = 5

Seed = tuple[Sequence[float], str]


def engine_config(tree: ConfigTree, node_ip: str, files: KeyFiles | None) -> Config:
    """The engine's own config: no configured cameras (the controller places them), tracks and
    annotated on ``node_ip``, control on loopback, fleet CURVE keys when given."""
    t = {**tree, "cameras": {}, "fleet": {**section(tree, "fleet"), "capture_resources": {}}}
    # the controller keeps what a camera needs across engines (prompt, objects to re-seed)
    t["engine"] = {**section(tree, "engine"), "state_file": None}
    bus = section(t, "bus")
    bus.update(
        tracks=tcp(node_ip, free_port(node_ip)),
        annotated=tcp(node_ip, free_port(node_ip)),
        control=tcp("127.0.0.1", free_port("127.0.0.1")),
        detections=None,
        frames_shm=False,
        allow_remote=not is_loopback(node_ip),
        curve=files.curve_config() if files is not None else {},
    )
    t["bus"] = bus
    return Config.model_validate(t)


class EngineActor:
    """See the module docstring; created by the controller as a named, detached Ray actor."""

    def __init__(self, name: str, cfg_tree: ConfigTree, keys: Mapping[str, str] | None) -> None:
        from engine.models.sam2 import load_sam2
        from engine.pipeline import MultiCameraEngine
        from engine.segmenters.sam2 import Sam2Kernel
        from engine.service import EngineProcess

        cfg = Config.model_validate(cfg_tree)
        setup_actor_logging(cfg.log_level)
        self.name = name
        self.where = whereabouts()
        self._files = KeyFiles(FleetKeys.from_dict(keys)) if keys else None
        self._ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self._auth = self._files.authenticator(self._ctx) if self._files else None
        loaded = load_sam2(cfg.models)
        engine = MultiCameraEngine(
            Sam2Kernel(loaded), None, background_grounding=True, device=loaded.device
        )
        for attempt in range(BIND_ATTEMPTS):
            self.cfg = engine_config(cfg_tree, self.where.node_ip, self._files)
            try:
                self.proc = EngineProcess(self.cfg, engine, ctx=self._ctx, serve_configured=False)
                break
            except BusError:
                if attempt == BIND_ATTEMPTS - 1:
                    raise
        self._stopping = threading.Event()
        self._loop = threading.Thread(target=self._run, name="engine-loop", daemon=True)
        self._loop.start()
        log.info(
            "engine %s on %s (pid %d): tracks %s, annotated %s",
            name,
            self.where.node_ip,
            self.where.pid,
            self.cfg.bus.tracks,
            self.cfg.bus.annotated,
        )

    def _run(self) -> None:
        try:
            self.proc.run()
        except Exception:
            log.exception("engine %s: frame loop failed", self.name)
        if not self._stopping.is_set():
            log.error("engine %s: frame loop ended unexpectedly; exiting for a restart", self.name)
            os._exit(1)

    # ------------------------------------------------------------------ for the controller

    def info(self) -> EngineInfo:
        return {
            "name": self.name,
            **self.where.as_dict(),
            "tracks": self.cfg.bus.tracks,
            "annotated": self.cfg.bus.annotated,
            "control": self.cfg.bus.control,
        }

    def watch(self, timeout_s: float) -> str:
        """Returns after ``timeout_s`` (or when stopped): a call that fails at once when this
        process dies, which is how the controller notices."""
        self._stopping.wait(timeout_s)
        return self.where.incarnation

    def report(self) -> EngineReport:
        """Per camera: state, fps, objects, frames out, IDs; and the engine's totals."""
        st = self.proc.stats()
        cams: dict[str, CameraReport] = {
            name: {
                "state": c["state"],
                "fps": c["fps_out"],
                "objects": c["objects"],
                "frames_out": c["frames_out"],
                "next_id": c["next_id"],
                "ids_left": c["ids_left"],
                "ids_exhausted": c["ids_exhausted"],
                "frames": c["frames"],
            }
            for name, c in st["cameras"].items()
        }
        return {
            "incarnation": self.where.incarnation,
            "cameras": cams,
            "fps_in": st["fps_in"],
            "fps_out": st["fps_out"],
            "rss_mb": st["memory"]["rss_mb"],
            "t": time.time(),
        }

    def place(
        self,
        camera: str,
        frames: str,
        engine_cfg: Mapping[str, object],
        first_id: int,
        id_limit: int,
        seeds: Sequence[Seed] = (),
    ) -> Reply:
        """Serve ``camera`` from ``frames`` with IDs from ``[first_id, id_limit)``; ``seeds``
        (box, label) become its first objects once it has a frame."""
        ecfg = EngineConfig.model_validate(engine_cfg)

        def add(p: EngineProcess) -> dict[str, object]:
            p.add_camera(camera, frames, None, engine=ecfg, first_id=first_id, id_limit=id_limit)
            return {}

        try:
            self.proc.call(add)
        except (PromptcamError, TimeoutError) as e:
            return {"ok": False, "error": str(e) or e.__class__.__name__}
        if seeds:
            threading.Thread(
                target=self._seed, args=(camera, list(seeds)), name=f"seed-{camera}", daemon=True
            ).start()
        return {"ok": True}

    def _seed(self, camera: str, seeds: list[Seed]) -> None:
        deadline = time.monotonic() + SEED_WAIT_S
        while time.monotonic() < deadline and not self._stopping.is_set():
            cam = self.proc.engine_stats().cameras.get(camera)
            if cam is None:
                return  # removed meanwhile
            if cam.frames_out > 0:
                break
            time.sleep(0.05)
        else:
            log.warning(
                "camera %s: no frame within %.0fs; objects not re-seeded", camera, SEED_WAIT_S
            )
            return
        added = 0
        for box, label in seeds:

            def add(
                p: EngineProcess, b: Sequence[float] = box, lbl: str = label
            ) -> dict[str, object]:
                return {"id": p.tracker(camera).add_object(b, lbl)}

            try:
                self.proc.call(add)
                added += 1
            except (PromptcamError, TimeoutError) as e:
                log.info("camera %s: object %r not re-seeded: %s", camera, label, e)
        log.info("camera %s: %d of %d objects re-seeded", camera, added, len(seeds))

    def unplace(self, camera: str) -> Reply:
        """Stop serving ``camera`` (not served: nothing to do)."""

        def remove(p: EngineProcess) -> dict[str, object]:
            if camera in p.cameras:
                p.remove_camera(camera)
            return {}

        try:
            self.proc.call(remove)
        except (PromptcamError, TimeoutError) as e:
            return {"ok": False, "error": str(e) or e.__class__.__name__}
        return {"ok": True}

    def lease(self, camera: str, first_id: int, id_limit: int) -> Reply:
        def lease(p: EngineProcess) -> dict[str, object]:
            p.lease_ids(camera, first_id, id_limit)
            return {}

        try:
            self.proc.call(lease)
        except (PromptcamError, TimeoutError) as e:
            return {"ok": False, "error": str(e) or e.__class__.__name__}
        return {"ok": True}

    def control(self, raw: bytes) -> bytes:
        """One control request (JSON), answered as the control socket would."""
        return self.proc.handle_request(raw)

    def stop(self) -> bool:
        """Stop the frame loop and close every socket (then the controller kills the actor)."""
        self._stopping.set()
        self.proc.stop.set()
        self._loop.join(timeout=10.0)
        if self._auth is not None:
            self._auth.stop()
        self._ctx.destroy(linger=0)
        if self._files is not None:
            self._files.close()
        return not self._loop.is_alive()
