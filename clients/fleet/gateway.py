"""The gateway actor: the fleet's one front door, on the node ``promptcam fleet`` runs on.

- ``bus.tracks`` / ``bus.annotated`` (the config's endpoints): every camera's tracks and
  annotated frames, relayed from whichever engine serves it (``relay.py``), so existing clients
  (``promptcam subscribe``, ``promptcam web``, robots) work unchanged against a fleet;
- ``bus.control``: control requests routed by camera (``router.py``);
- ``web.host``:``web.port``: the fleet page, every camera on one page (``page.py``).

It connects to engines with the fleet's CURVE client key; its own endpoints follow the config
(loopback unless ``bus.allow_remote``/``web.host`` say otherwise; ``bus.curve`` as for an engine).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping

import zmq

from clients.fleet.calls import ControllerHandle, controller_face, engine_face, get_actor
from clients.fleet.controller import CONTROLLER
from clients.fleet.keys import FleetKeys, KeyFiles
from clients.fleet.messages import ConfigTree, FleetCamera, FleetStatus, GatewayInfo, RelayCamera
from clients.fleet.node import setup_actor_logging, whereabouts
from clients.fleet.page import FleetPage
from clients.fleet.relay import Relay
from clients.fleet.router import ENGINE_TIMEOUT_S, ControlRouter
from stream.config import BusConfig, Config

log = logging.getLogger(__name__)

STATUS_CACHE_S = 1.0


def relay_counts(cam: RelayCamera | None) -> dict[str, object]:
    """A camera's relay snapshot without its objects (what the page shows per camera)."""
    return {} if cam is None else {k: v for k, v in cam.items() if k != "objects"}


class GatewayActor:
    """See the module docstring; created by the controller as a named, detached Ray actor."""

    def __init__(
        self, cfg_tree: ConfigTree, keys: Mapping[str, str] | None, namespace: str
    ) -> None:
        cfg = Config.model_validate(cfg_tree)
        setup_actor_logging(cfg.log_level)
        self.cfg = cfg
        self.namespace = namespace
        self.where = whereabouts()
        self._files = KeyFiles(FleetKeys.from_dict(keys)) if keys else None
        self._ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        upstream = BusConfig(curve=self._files.curve_config() if self._files else {})
        self._status_lock = threading.Lock()
        self._status: FleetStatus | None = None
        self._status_t = 0.0
        self._stopped = threading.Event()
        self.relay = Relay(self._ctx, upstream, cfg.bus).start()
        self.router = ControlRouter(
            self._ctx,
            cfg.bus.control,
            cfg.bus,
            self.relay.routes,
            self._fleet_cameras,
            self._call_engine,
            self._on_prompt,
        ).start()
        self.page = FleetPage(cfg.web, self.status, self._jpeg).start()
        log.info(
            "gateway on %s: tracks %s, annotated %s, control %s, page http://%s:%d/",
            self.where.node_ip,
            cfg.bus.tracks,
            cfg.bus.annotated,
            cfg.bus.control,
            cfg.web.host,
            cfg.web.port,
        )

    # ------------------------------------------------------------------ helpers

    def _controller(self) -> ControllerHandle:
        return controller_face(get_actor(CONTROLLER, self.namespace))

    def _call_engine(self, engine: str, raw: bytes) -> bytes:
        import ray

        handle = engine_face(get_actor(engine, self.namespace))
        return ray.get(handle.control.remote(raw), timeout=ENGINE_TIMEOUT_S)

    def _on_prompt(self, camera: str, prompt: str) -> None:
        try:
            self._controller().note_prompt.remote(camera, prompt)
        except ValueError:
            log.warning("controller not reachable: prompt of %s not remembered", camera)

    def _controller_status(self) -> FleetStatus | None:
        """The controller's status (cached for ``STATUS_CACHE_S``); while it restarts, the last
        one marked stale; None before the first."""
        import ray

        with self._status_lock:
            if time.monotonic() - self._status_t < STATUS_CACHE_S and self._status:
                return self._status
        try:
            st = ray.get(self._controller().status.remote(), timeout=3.0)
            st["stale"] = False
        except Exception as e:  # the controller restarting: the last status, marked stale
            log.info("controller status unavailable: %s", e)
            with self._status_lock:
                return {**self._status, "stale": True} if self._status else None
        with self._status_lock:
            self._status, self._status_t = st, time.monotonic()
        return st

    def _fleet_cameras(self) -> list[FleetCamera]:
        st = self._controller_status()
        return [
            {
                "camera": c["camera"],
                "state": c["state"],
                "fps": c["fps"],
                "objects": c["objects"],
                "prompt": c["prompt"],
                "engine": c["engine"],
            }
            for c in (st["cameras"] if st is not None else [])
        ]

    def _jpeg(self, camera: str) -> tuple[bytes | None, int]:
        st = self.relay.cameras.get(camera)
        return (None, -1) if st is None else (st.last_jpeg, st.last_jpeg_seq)

    # ------------------------------------------------------------------ actor methods

    def status(self) -> dict[str, object]:
        """The fleet status (the page's ``/api/status``) with the relay's counts per camera."""
        st = self._controller_status()
        if st is None:
            return {"cameras": []}
        relay = self.relay.snapshot()
        return {
            **st,
            "cameras": [
                {**c, "relay": relay_counts(relay.get(c["camera"]))} for c in st["cameras"]
            ],
        }

    def info(self) -> GatewayInfo:
        return {
            **self.where.as_dict(),
            "tracks": self.cfg.bus.tracks,
            "annotated": self.cfg.bus.annotated,
            "control": self.cfg.bus.control,
            "page": f"http://{self.cfg.web.host}:{self.cfg.web.port}/",
        }

    def set_routes(self, routes: dict[str, str], engines: dict[str, list[str]]) -> str:
        """camera -> engine; engine -> [tracks, annotated]. Returns this gateway's incarnation."""
        self.relay.set_routes(routes, {e: (t, a) for e, (t, a) in engines.items()})
        return self.where.incarnation

    def snapshot(self) -> dict[str, RelayCamera]:
        return self.relay.snapshot()

    def watch(self, timeout_s: float) -> str:
        self._stopped.wait(timeout_s)
        return self.where.incarnation

    def stop(self) -> bool:
        self._stopped.set()
        self.page.close()
        self.router.close()
        self.relay.close()
        self._ctx.destroy(linger=0)
        if self._files is not None:
            self._files.close()
        return True
