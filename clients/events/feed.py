"""Frames for snapshots: ``annotated.<camera>`` JPEGs from the engine (``bus.annotated``) when
``engine.annotate`` is on, else the raw ``frame.<camera>`` messages of each camera's frames
endpoint (inline payloads; a shared-memory frame cannot be read here and is counted as
rejected). Drained without blocking into a ``FrameCache``; nothing is decoded until a snapshot
is taken. A malformed message is counted and logged, never raised."""

from __future__ import annotations

import logging

import zmq

from clients.events.snapshots import FrameCache
from clients.jsontypes import ZmqContext
from stream import bus as zbus
from stream.config import Config
from stream.counters import MessageCounters
from stream.wire import AnnotatedMessage, FrameMessage, WireError, decode_jpeg

log = logging.getLogger(__name__)

DRAIN_MAX = 256  # messages taken per drain, so a flood cannot starve the tracks loop


class FrameFeed:
    """SUB sockets feeding a ``FrameCache`` (see the module docstring)."""

    def __init__(self, cfg: Config, cache: FrameCache, ctx: ZmqContext | None = None) -> None:
        self.cache = cache
        self.stats = MessageCounters()
        self.annotated = cfg.engine.annotate
        ctx = ctx or zmq.Context.instance()
        maxmsg = int(cfg.bus.max_payload_mb * 2**20) + 2**20
        if self.annotated:
            endpoints, prefix = [cfg.bus.annotated], b"annotated."
        else:
            endpoints = sorted({c.frames for c in cfg.camera_settings().values()})
            prefix = b"frame."
        self.endpoints = endpoints
        self._socks = [
            zbus.connect(
                ctx,
                zmq.SUB,
                ep,
                cfg.bus,
                subscribe=[prefix],
                rcvhwm=16,
                curve=True,
                maxmsgsize=maxmsg,
            )
            for ep in endpoints
        ]
        self._max_payload = int(cfg.bus.max_payload_mb * 2**20)

    def close(self) -> None:
        for s in self._socks:
            s.close(0)
        self._socks = []

    def drain(self) -> int:
        """Take what has arrived (at most ``DRAIN_MAX`` a socket); returns frames cached."""
        n = 0
        for sock in self._socks:
            for _ in range(DRAIN_MAX):
                try:
                    parts = sock.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                self.stats.received += 1
                try:
                    self._put(parts)
                except WireError as e:
                    self.stats.reject(e.reason, str(e), log, "snapshot frame")
                    continue
                self.stats.delivered += 1
                n += 1
        return n

    def _put(self, parts: list[bytes]) -> None:
        if self.annotated:
            a = AnnotatedMessage.from_parts(parts, self._max_payload)
            jpeg = bytes(a.jpeg)
            self.cache.put(a.camera, a.t_capture_ns, lambda: decode_jpeg(jpeg))
            return
        f = FrameMessage.from_parts(parts, self._max_payload)
        owned = f.owned()
        self.cache.put(f.camera, f.t_capture_ns, owned.image)
