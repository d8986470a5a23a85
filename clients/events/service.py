"""``promptcam events``: subscribes ``tracks.<camera>`` (every camera) on ``bus.tracks``, runs the
event logic per camera (``clients.events.tracker``), stores events and review items in SQLite
(``clients.events.store``) and publishes them as ``events.<camera>`` on ``bus.events`` (binds
PUB; CONTRACT v1.2). A malformed tracks message is rejected, counted and logged (never a
crash); SIGTERM or SIGINT ends the open events (published and stored) and stops.

Prints one JSON line when it listens (``{"events": ENDPOINT, "tracks": ENDPOINT, "database":
PATH}``) and one when it stops (its counters, and the counts per camera: active objects per
label, per zone and label, line crossings per line, direction and label).
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sqlite3
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

import zmq

from clients.events.config import EventsConfig
from clients.events.model import EventMessage
from clients.events.store import EventStore
from clients.events.tracker import CameraEvents
from clients.events.zones_file import ZonesWatcher, zones_path
from clients.subscriber import TracksSubscriber
from stream import bus as zbus
from stream.config import BusConfig, Config
from stream.errors import PromptcamError
from stream.wire import TracksMessage

log = logging.getLogger(__name__)

MAX_CAMERAS = 256  # cameras followed at once; tracks of a further camera are rejected
RETAIN_EVERY_S = 60.0


class EventsService:
    """The events process's work, testable without signals: ``handle`` one tracks message,
    ``run`` until ``stop`` is set."""

    def __init__(
        self,
        cfg: EventsConfig,
        store: EventStore,
        publisher: zmq.Socket[Any] | None = None,
    ) -> None:
        self.cfg = cfg
        self.store = store
        self.publisher = publisher
        self.cameras: dict[str, CameraEvents] = {}
        self.stop = threading.Event()
        self.published = 0
        self.rejected_cameras = 0
        # zones and lines saved from the web page: loaded now, reloaded when the file changes
        self.zones = ZonesWatcher(zones_path(store.path))
        self.zones.poll(self, force=True)

    def handle(self, msg: TracksMessage) -> list[EventMessage]:
        logic = self.cameras.get(msg.camera)
        if logic is None:
            if len(self.cameras) >= MAX_CAMERAS:
                self.rejected_cameras += 1
                if self.rejected_cameras <= 10 or self.rejected_cameras % 1000 == 0:
                    log.warning(
                        "rejected tracks of camera %r: already following %d cameras (%d rejected)",
                        msg.camera[:64],
                        MAX_CAMERAS,
                        self.rejected_cameras,
                    )
                return []
            logic = self.cameras[msg.camera] = CameraEvents(msg.camera, self.cfg)
        out = logic.process(msg)
        self._emit(out)
        return out

    def _emit(self, out: list[EventMessage]) -> None:
        for ev in out:
            self.store.write(ev)
            if self.publisher is not None:
                try:
                    self.publisher.send_multipart(ev.to_parts(), zmq.NOBLOCK)
                    self.published += 1
                except zmq.Again:
                    log.warning("events publisher full: one %s message not sent", ev.type.value)

    def end_all(self) -> None:
        for logic in self.cameras.values():
            self._emit(logic.end_all())

    def run(self, sub: TracksSubscriber) -> None:
        last_retain = time.monotonic()
        self.store.retain()
        while not self.stop.is_set():
            msg = sub.recv(timeout=0.2)
            self.zones.poll(self)
            if msg is not None:
                self.handle(msg)
            elif self.store.pending:
                self.store.flush()
            if time.monotonic() - last_retain > RETAIN_EVERY_S:
                self.store.retain()
                last_retain = time.monotonic()
        self.end_all()


def main(cfg: Config, args: argparse.Namespace) -> int:
    """``promptcam events [--tracks EP] [--events EP] [--db FILE]``."""
    from setproctitle import setproctitle

    setproctitle("promptcam: events")
    ecfg = cfg.events
    if getattr(args, "db", None):
        ecfg = ecfg.model_copy(update={"database": args.db})
    bus: BusConfig = cfg.bus
    tracks = getattr(args, "tracks", None) or bus.tracks
    events = getattr(args, "events", None) or bus.events
    try:
        store = EventStore(ecfg.database, ecfg.retention_days, ecfg.max_events, ecfg.pending_limit)
    except (OSError, sqlite3.Error) as e:
        raise PromptcamError(f"cannot open the events database {ecfg.database}: {e}") from None
    closed = store.close_open()
    if closed:
        log.info("closed %d events left open by the last stop", closed)
    ctx: zmq.Context[Any] = zmq.Context.instance()
    pub = zbus.bind(ctx, zmq.PUB, events, bus, sndhwm=10000, curve=True)
    service = EventsService(ecfg, store, pub)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("signal %d: stopping", signum)
        service.stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    with TracksSubscriber(tracks, None, bus=bus) as sub:
        print(
            json.dumps({"events": events, "tracks": tracks, "database": str(Path(store.path))}),
            flush=True,
        )
        service.run(sub)
        stats = sub.stats.as_dict()
    store.flush()
    store.close()
    pub.close(linger=1000)
    print(
        json.dumps(
            {
                "published": service.published,
                "tracks": stats,
                "pending": len(store.pending),
                "dropped": store.dropped,
                "write_errors": store.write_errors,
                "counts": [logic.counts() for logic in service.cameras.values()],
            }
        ),
        flush=True,
    )
    return 0
