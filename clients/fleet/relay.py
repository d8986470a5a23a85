"""The gateway's relay: every engine's ``tracks.<camera>`` and ``annotated.<camera>`` onto one
pair of stable endpoints, each camera taken only from the engine that serves it now.

Subscribers (robots, ``promptcam subscribe``, the web server, the fleet page) connect to the
relay's endpoints once and keep receiving a camera wherever it moves. The routing table comes
from the controller; while a camera moves (a drain places it on the new engine before removing
it from the old one) the old engine's messages for it are dropped, so a subscriber never sees
two engines' tracks of one camera interleaved. Sockets are owned by the relay thread only; the
table and the engines' endpoints are handed over under a lock and applied between polls.
Keeps the newest tracks header and annotated JPEG of every camera (the page, and the objects a
moved camera is re-seeded with).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import zmq

from clients.fleet.messages import RelayCamera, RelayObject
from stream import bus as zbus
from stream.config import BusConfig

log = logging.getLogger(__name__)

POLL_MS = 100


@dataclass
class CameraFeedState:
    """What the relay has seen of one camera."""

    tracks: int = 0  # messages relayed
    annotated: int = 0
    dropped: int = 0  # from an engine that does not serve it (now)
    last_tracks: bytes | None = None  # header of the newest tracks message
    last_tracks_t: float = 0.0
    last_jpeg: bytes | None = None
    last_jpeg_seq: int = -1


@dataclass
class _EngineSockets:
    tracks: str
    annotated: str
    socks: list[zmq.Socket[bytes]] = field(default_factory=list)


class Relay:
    """See the module docstring. ``upstream``: the bus config used to connect to engines (fleet
    CURVE client keys); ``downstream``: the bus config of the relay's own endpoints."""

    def __init__(
        self,
        ctx: zmq.Context[zmq.Socket[bytes]],
        upstream: BusConfig,
        downstream: BusConfig,
    ) -> None:
        self._ctx = ctx
        self._up = upstream
        self.tracks_out = zbus.bind(
            ctx, zmq.PUB, downstream.tracks, downstream, sndhwm=100, curve=True
        )
        self.annotated_out = zbus.bind(
            ctx, zmq.PUB, downstream.annotated, downstream, sndhwm=4, curve=True
        )
        self._lock = threading.Lock()
        self._routes: dict[str, str] = {}
        self._wanted: dict[str, tuple[str, str]] = {}  # engine -> (tracks, annotated)
        self._engines: dict[str, _EngineSockets] = {}
        self.cameras: dict[str, CameraFeedState] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="relay", daemon=True)

    def start(self) -> Relay:
        self._thread.start()
        return self

    def set_routes(self, routes: Mapping[str, str], engines: Mapping[str, tuple[str, str]]) -> None:
        """``routes``: camera -> engine serving it; ``engines``: engine -> (tracks, annotated)."""
        with self._lock:
            self._routes = dict(routes)
            self._wanted = dict(engines)

    def routes(self) -> dict[str, str]:
        with self._lock:
            return dict(self._routes)

    # ------------------------------------------------------------------ the thread

    def _apply(self, poller: zmq.Poller, owner: dict[zmq.Socket[bytes], tuple[str, str]]) -> None:
        with self._lock:
            wanted = dict(self._wanted)
        for name in list(self._engines):
            es = self._engines[name]
            if wanted.get(name) != (es.tracks, es.annotated):
                for s in es.socks:
                    poller.unregister(s)
                    owner.pop(s, None)
                    s.close(0)
                del self._engines[name]
        for name, (tracks, annotated) in wanted.items():
            if name in self._engines:
                continue
            es = _EngineSockets(tracks, annotated)
            try:
                for kind, ep in (("tracks", tracks), ("annotated", annotated)):
                    s = zbus.connect(
                        self._ctx,
                        zmq.SUB,
                        ep,
                        self._up,
                        subscribe=[f"{kind}.".encode()],
                        rcvhwm=100 if kind == "tracks" else 4,
                        curve=True,
                    )
                    es.socks.append(s)
                    poller.register(s, zmq.POLLIN)
                    owner[s] = (name, kind)
            except zbus.BusError as e:
                log.warning("relay: cannot connect to engine %s: %s", name, e)
            self._engines[name] = es

    def _run(self) -> None:
        poller = zmq.Poller()
        owner: dict[zmq.Socket[bytes], tuple[str, str]] = {}
        try:
            while not self._stop.is_set():
                self._apply(poller, owner)
                for sock, _ in poller.poll(POLL_MS):
                    for _ in range(64):  # drain a burst, then look at the others
                        try:
                            parts = sock.recv_multipart(zmq.NOBLOCK, copy=True)
                        except zmq.Again:
                            break
                        engine, kind = owner[sock]
                        self._forward(engine, kind, parts)
        finally:
            for es in self._engines.values():
                for s in es.socks:
                    s.close(0)
            self.tracks_out.close(0)
            self.annotated_out.close(0)

    def _forward(self, engine: str, kind: str, parts: list[bytes]) -> None:
        if len(parts) < 2:
            return
        topic = parts[0].decode(errors="replace")
        camera = topic.split(".", 1)[1] if "." in topic else ""
        with self._lock:
            serving = self._routes.get(camera)
        st = self.cameras.setdefault(camera, CameraFeedState())
        if serving != engine:
            st.dropped += 1
            return
        if kind == "tracks":
            st.tracks += 1
            st.last_tracks = parts[1]
            st.last_tracks_t = time.time()
            self.tracks_out.send_multipart(parts)
        else:
            st.annotated += 1
            if len(parts) >= 3:
                st.last_jpeg = parts[2]
                st.last_jpeg_seq += 1
            self.annotated_out.send_multipart(parts)

    # ------------------------------------------------------------------ views

    def last_objects(self, camera: str) -> list[RelayObject]:
        """The objects of ``camera``'s newest tracks message: id, label, box."""
        st = self.cameras.get(camera)
        if st is None or st.last_tracks is None:
            return []
        try:
            header = json.loads(st.last_tracks)
            return [
                {"id": int(o["id"]), "label": str(o["label"]), "box": [float(v) for v in o["box"]]}
                for o in header.get("objects", [])
            ]
        except (ValueError, KeyError, TypeError):
            return []

    def snapshot(self) -> dict[str, RelayCamera]:
        """Per camera: relayed/dropped counts, age of the newest tracks, its objects."""
        now = time.time()
        return {
            cam: {
                "tracks": st.tracks,
                "annotated": st.annotated,
                "dropped": st.dropped,
                "tracks_age_s": round(now - st.last_tracks_t, 2) if st.last_tracks_t else None,
                "objects": self.last_objects(cam),
            }
            for cam, st in list(self.cameras.items())
        }

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5.0)
        else:
            self.tracks_out.close(0)
            self.annotated_out.close(0)
