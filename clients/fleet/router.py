"""The gateway's control socket: one REP endpoint for every camera of the fleet.

Requests follow CONTRACT.md (v1.1) and are answered as an engine would, routed by ``camera`` to
the engine that serves that camera now (through a Ray call to the engine actor, so engines'
control sockets never leave their hosts). With one camera in the fleet ``camera`` may be
omitted; with several it is required. ``cameras`` lists every camera of the fleet (placed or
not, with its engine); ``stats`` without a camera sums over the engines and keeps each camera's
figures under ``cameras``. ``add_camera``/``remove_camera``/``lease_ids`` are refused: the
controller places cameras (``promptcam fleet add-camera``). A prompt set here is remembered by
the controller, so a camera keeps it when it moves.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable

import zmq

from clients.fleet.messages import FleetCamera
from stream import bus as zbus
from stream.config import BusConfig
from stream.wire import (
    AddCamera,
    Cameras,
    LeaseIds,
    RemoveCamera,
    SetPrompt,
    Stats,
    WireError,
    control_reply,
    parse_control,
)

log = logging.getLogger(__name__)

ENGINE_TIMEOUT_S = 10.0
MAX_REQUEST_BYTES = 1 << 20

# the fleet's totals of these per-camera stats (``stats`` reply)
FLAT_STATS = ("fps_in", "fps_out", "objects", "frames_in", "frames_out", "frames_dropped")

# engine name, raw request -> raw reply (raises on an unreachable engine)
EngineCall = Callable[[str, bytes], bytes]


class ControlRouter:
    """See the module docstring. ``routes`` gives camera -> engine now; ``fleet_cameras`` the
    fleet's camera list (``cameras`` reply); ``on_prompt`` is told of accepted prompts."""

    def __init__(
        self,
        ctx: zmq.Context[zmq.Socket[bytes]],
        endpoint: str,
        bus: BusConfig,
        routes: Callable[[], dict[str, str]],
        fleet_cameras: Callable[[], list[FleetCamera]],
        call_engine: EngineCall,
        on_prompt: Callable[[str, str], None],
    ) -> None:
        self._sock = zbus.bind(ctx, zmq.REP, endpoint, bus, maxmsgsize=MAX_REQUEST_BYTES)
        self._routes = routes
        self._fleet_cameras = fleet_cameras
        self._call = call_engine
        self._on_prompt = on_prompt
        self.rejected = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="control-router", daemon=True)

    def start(self) -> ControlRouter:
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                if not self._sock.poll(100, zmq.POLLIN):
                    continue
                parts = self._sock.recv_multipart()
                try:
                    reply = self.handle(parts)
                except Exception as e:  # answer, never leave a REQ peer hanging
                    log.exception("control request failed")
                    reply = control_reply(False, error=f"gateway error: {e.__class__.__name__}")
                self._sock.send(reply)
        finally:
            self._sock.close(0)

    def _refuse(self, error: str) -> bytes:
        self.rejected += 1
        return control_reply(False, error=error)

    def handle(self, parts: list[bytes]) -> bytes:
        if len(parts) != 1:
            return self._refuse(f"request must be one JSON part, got {len(parts)} parts")
        try:
            req = parse_control(parts[0])
        except WireError as e:
            return self._refuse(str(e))
        routes = self._routes()
        if isinstance(req, Cameras):
            return control_reply(True, cameras=self._fleet_cameras())
        if isinstance(req, AddCamera | RemoveCamera | LeaseIds):
            return self._refuse(
                "the fleet places cameras: use promptcam fleet add-camera / remove-camera"
            )
        known = sorted({c["camera"] for c in self._fleet_cameras()} | set(routes))
        camera = req.camera
        if camera is None and isinstance(req, Stats) and len(known) != 1:
            return self._fleet_stats(routes)
        if camera is None:
            if len(known) != 1:
                return self._refuse(
                    f"this fleet serves several cameras ({', '.join(known) or 'none'}): "
                    "the request must name one in 'camera'"
                )
            camera = known[0]
        if camera not in known:
            return self._refuse(
                f"unknown camera {camera!r} (cameras: {', '.join(known) or 'none'})"
            )
        engine = routes.get(camera)
        if engine is None:
            return self._refuse(f"camera {camera!r} is not on an engine now (being placed); retry")
        body = json.loads(parts[0])
        body["camera"] = camera
        try:
            raw = self._call(engine, json.dumps(body).encode())
        except Exception as e:
            return self._refuse(f"engine {engine} of camera {camera!r} did not answer ({e}); retry")
        if isinstance(req, SetPrompt) and json.loads(raw).get("ok"):
            self._on_prompt(camera, req.prompt)
        return raw

    def _fleet_stats(self, routes: dict[str, str]) -> bytes:
        engines: dict[str, object] = {}
        cameras: dict[str, object] = {}
        sums = dict.fromkeys(FLAT_STATS, 0.0)
        for engine in sorted(set(routes.values())):
            try:
                reply = json.loads(self._call(engine, b'{"cmd":"stats"}'))
            except Exception as e:
                engines[engine] = {"error": str(e)}
                continue
            st = reply.get("stats", {})
            engines[engine] = {k: v for k, v in st.items() if k != "cameras"}
            for cam, cs in st.get("cameras", {}).items():
                if routes.get(cam) == engine:
                    cameras[cam] = {**cs, "engine": engine}
                    for k in FLAT_STATS:
                        sums[k] += float(cs.get(k, 0))
        flat = {k: round(v, 2) for k, v in sums.items()}
        return control_reply(True, stats={**flat, "cameras": cameras, "engines": engines})

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5.0)
        else:
            self._sock.close(0)
