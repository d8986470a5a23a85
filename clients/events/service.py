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
import os
import signal
import sqlite3
import threading
import time
from collections import deque
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

import zmq

from clients.events.config import EventsConfig
from clients.events.feed import FrameFeed
from clients.events.model import EventMessage, EventType, Kind
from clients.events.snapshots import FrameCache, SnapshotKeeper
from clients.events.store import EventStore
from clients.events.tracker import CameraEvents
from clients.events.zones_file import ZonesWatcher, zones_path
from clients.jsontypes import JsonObject, ZmqContext, ZmqSocket
from clients.subscriber import TracksSubscriber
from stream import bus as zbus
from stream.config import BusConfig, Config
from stream.errors import PromptcamError
from stream.wire import TracksMessage

if TYPE_CHECKING:
    from clients.events.mqtt import EventsMqtt

log = logging.getLogger(__name__)

MAX_CAMERAS = 256  # cameras followed at once; tracks of a further camera are rejected
RETAIN_EVERY_S = 60.0
LATENCY_SAMPLES = 10000  # the last event latencies kept (tracks capture -> published), ms
# the snapshot folder's size is checked (and pruned) each time this share of its budget, at
# least PRUNE_MIN_BYTES, has been written since the last check
PRUNE_SHARE = 0.1
PRUNE_MIN_BYTES = 64 * 1024


LEFT_OPEN_GRACE_S = 1.0  # after the start, before a previous run's open events' ends go out


class EventsService:
    """The events process's work, testable without signals: ``handle`` one tracks message,
    ``run`` until ``stop`` is set. With a ``FrameCache`` (``frames``) it keeps each event's best
    snapshot (``clients.events.snapshots``)."""

    def __init__(
        self,
        cfg: EventsConfig,
        store: EventStore,
        publisher: ZmqSocket | None = None,
        mqtt: EventsMqtt | None = None,
        frames: FrameCache | None = None,
    ) -> None:
        self.cfg = cfg
        self.store = store
        self.publisher = publisher
        self.mqtt = mqtt
        self.frames = frames if cfg.snapshots else None
        self.cameras: dict[str, CameraEvents] = {}
        self.keepers: dict[str, SnapshotKeeper] = {}
        self.stop = threading.Event()
        self.published = 0
        self.rejected_cameras = 0
        self._left_open: list[EventMessage] = []  # ends of a previous run's, to publish
        self._started = time.monotonic()
        # zones and lines saved from the web page: loaded now, reloaded when the file changes
        self.zones = ZonesWatcher(zones_path(store.path))
        self.zones.poll(self, force=True)
        self.latency_ms: deque[float] = deque(maxlen=LATENCY_SAMPLES)
        self._snapshot_bytes_mark = 0

    def handle(self, msg: TracksMessage) -> list[EventMessage]:
        self._flush_left_open()
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
            if self.frames is not None:
                self.keepers[msg.camera] = SnapshotKeeper(
                    msg.camera,
                    self.store.snapshots,
                    self.frames,
                    self.cfg.snapshot_every,
                    self.cfg.snapshot_quality,
                )
        out = logic.process(msg)
        keeper = self.keepers.get(msg.camera)
        if keeper is not None:
            keeper.observe(msg, logic.active_events())
            for ev in out:
                if ev.kind is Kind.OBJECT and ev.type is EventType.END:
                    keeper.forget(ev.event["id"])
            for eid in keeper.flush():
                out += logic.mark_snapshot(eid)
            self._maybe_prune()
        self._emit(out)
        if out:
            self.latency_ms.append((time.time_ns() - msg.header.t_capture_ns) / 1e6)
        if self.mqtt is not None:
            self.mqtt.tracks(msg.camera, logic.counts())
        return out

    def flush_snapshots(self) -> list[EventMessage]:
        """Write due snapshots whose frames arrived after their tracks message."""
        out: list[EventMessage] = []
        for camera, keeper in self.keepers.items():
            for eid in keeper.flush():
                out += self.cameras[camera].mark_snapshot(eid)
        self._emit(out)
        self._maybe_prune()
        return out

    def _maybe_prune(self) -> None:
        written = self.store.snapshots.written_bytes
        if written - self._snapshot_bytes_mark >= max(
            PRUNE_MIN_BYTES, self.store.max_snapshot_bytes * PRUNE_SHARE
        ):
            self._snapshot_bytes_mark = written
            self.store.prune_snapshots()

    def _emit(self, out: list[EventMessage]) -> None:
        for ev in out:
            self.store.write(ev)
            self._publish(ev)

    def _publish(self, ev: EventMessage) -> None:
        if self.publisher is not None:
            try:
                self.publisher.send_multipart(ev.to_parts(), zmq.NOBLOCK)
                self.published += 1
            except zmq.Again:
                log.warning("events publisher full: one %s message not sent", ev.type.value)
        if self.mqtt is not None:
            self.mqtt.event(ev, self._snapshot(ev))

    def _snapshot(self, ev: EventMessage) -> bytes | None:
        """The event's snapshot JPEG from the store, when it has one (``has_snapshot``)."""
        read = getattr(self.store, "snapshot_jpeg", None)
        if not ev.event.get("has_snapshot") or read is None:
            return None
        try:
            data = read(ev.event["id"])
        except (OSError, sqlite3.Error) as e:
            log.warning("snapshot of event %s not read: %s", ev.event["id"], e)
            return None
        return data if isinstance(data, bytes) else None

    def close_left_open(self) -> int:
        """End the events a previous run left open (a crash, a kill): stored closed now; their
        ``end`` is published (ZeroMQ and MQTT) with the first tracks message handled
        ``LEFT_OPEN_GRACE_S`` after the start, when the subscribers of the socket just bound
        have had time to connect (at the latest when the service stops)."""
        closed = self.store.close_open()
        self._left_open += closed
        if closed:
            log.info("closed %d events left open by the last stop", len(closed))
        return len(closed)

    def _flush_left_open(self, now: bool = False) -> None:
        if self._left_open and (now or time.monotonic() - self._started >= LEFT_OPEN_GRACE_S):
            for ev in self._left_open:
                self._publish(ev)
            self._left_open = []

    def end_all(self) -> None:
        self._flush_left_open(now=True)
        for logic in self.cameras.values():
            self._emit(logic.end_all())
            if self.mqtt is not None:
                self.mqtt.counts(logic.camera, logic.counts())

    def stats(self) -> JsonObject:
        """Counters for the status file and the last line."""
        lat = sorted(self.latency_ms)

        def pct(q: float) -> float | None:
            return round(lat[min(len(lat) - 1, int(q * len(lat)))], 2) if lat else None

        files = self.store.snapshots
        return {
            "pid": os.getpid(),
            "t_ns": time.time_ns(),
            "cameras": len(self.cameras),
            "published": self.published,
            "pending": len(self.store.pending),
            "dropped": self.store.dropped,
            "write_errors": self.store.write_errors,
            "snapshots_written": files.written,
            "snapshot_errors": files.errors,
            "latency_ms": {"p50": pct(0.5), "p99": pct(0.99), "n": len(lat)},
        }

    def run(
        self,
        sub: TracksSubscriber,
        feed: FrameFeed | None = None,
        status_file: Path | None = None,
    ) -> None:
        last_retain = last_status = time.monotonic()
        self.store.retain()
        while not self.stop.is_set():
            if feed is not None:
                feed.drain()
            msg = sub.recv(timeout=0.05 if feed is not None else 0.2)
            if feed is not None:
                feed.drain()
            self.zones.poll(self)
            if msg is not None:
                self.handle(msg)
            else:
                if self.store.pending:
                    self.store.flush()
                self.flush_snapshots()
            if self.mqtt is not None:
                self.mqtt.tick()
            now = time.monotonic()
            if now - last_retain > RETAIN_EVERY_S:
                self.store.retain()
                last_retain = now
            if status_file is not None and now - last_status >= 1.0:
                last_status = now
                _write_status(status_file, {**self.stats(), "tracks": sub.stats.as_dict()})
        self.end_all()


def _write_status(path: Path, doc: JsonObject) -> None:
    """Replace the status file atomically; a refusal is logged (rate-limited), never raised."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(doc))
        os.replace(tmp, path)
    except OSError as e:
        log.debug("events status file %s not written: %s", path, e)


def _open_store(ecfg: EventsConfig) -> EventStore:
    """The events database, with the events a previous run left open closed."""
    try:
        store = EventStore(
            ecfg.database,
            ecfg.retention_days,
            ecfg.max_events,
            ecfg.pending_limit,
            ecfg.max_snapshot_mb,
        )
    except (OSError, sqlite3.Error) as e:
        raise PromptcamError(f"cannot open the events database {ecfg.database}: {e}") from None
    return store


def _final_stats(
    service: EventsService,
    tracks: JsonObject,
    feed: FrameFeed | None,
    mqtt: EventsMqtt | None,
) -> JsonObject:
    """The last line: the service's counters, the subscriber's, the frames feed's, the counts
    per camera and the MQTT output's."""
    return {
        **service.stats(),
        "tracks": tracks,
        "frames": feed.stats.as_dict() if feed is not None else None,
        "counts": [logic.counts() for logic in service.cameras.values()],
        **({"mqtt": mqtt.stats()} if mqtt is not None else {}),
    }


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
    store = _open_store(ecfg)
    ctx: ZmqContext = zmq.Context.instance()
    pub = zbus.bind(ctx, zmq.PUB, events, bus, sndhwm=10000, curve=True)
    mqtt = _mqtt(cfg)
    cache = FrameCache() if ecfg.snapshots else None
    feed = FrameFeed(cfg, cache, ctx) if cache is not None else None
    service = EventsService(ecfg, store, pub, mqtt, cache)
    service.close_left_open()
    status_file = Path(ecfg.status_file).expanduser() if ecfg.status_file else None

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
        try:
            service.run(sub, feed, status_file)
        finally:
            if feed is not None:
                feed.close()
        stats = sub.stats.as_dict()
    store.flush()
    store.close()
    pub.close(linger=1000)
    if mqtt is not None:
        mqtt.close()
    final = _final_stats(service, stats, feed, mqtt)
    if status_file is not None:
        _write_status(status_file, final)
    print(json.dumps(final), flush=True)
    return 0


def _mqtt(cfg: Config) -> EventsMqtt | None:
    """The MQTT output when ``mqtt.enabled`` (started: it connects in the background), its
    ``prompt/set`` commands sent to ``bus.control``."""
    if not cfg.mqtt.enabled:
        return None
    from clients.events.mqtt import EventsMqtt
    from clients.events.mqtt_config import CameraZones

    cameras: CameraZones = {
        name: (
            s.engine.prompt,
            list(cfg.events.cameras[name].zones) if name in cfg.events.cameras else [],
        )
        for name, s in cfg.camera_settings().items()
    }
    timeout_ms = int(cfg.mqtt.command_timeout_s * 1000)

    def send_prompt(camera: str, text: str) -> JsonObject:
        request = {"cmd": "set_prompt", "prompt": text, "camera": camera}
        try:
            return zbus.request(cfg.bus.control, request, timeout_ms, cfg.bus)
        except (ValueError, zmq.ZMQError) as e:
            raise PromptcamError(f"bad reply from {cfg.bus.control}: {e}") from None

    mqtt = EventsMqtt(cfg.mqtt, cameras, send_prompt)
    mqtt.start()
    log.info("MQTT output to %s:%d, prefix %s", cfg.mqtt.host, cfg.mqtt.port, cfg.mqtt.prefix)
    return mqtt
