"""MQTT and Home Assistant output of the events service (CONTRACT v1.2, ``mqtt:`` in the config).

``EventsMqtt`` turns what the events service produces into Frigate-shaped topics under the
prefix (``clients.events.mqtt_topics``) over one ``MqttLink`` (ordered, bounded queue while the
broker is away, last will ``offline``): each events message as JSON on ``<prefix>/events`` or
``<prefix>/reviews`` (the same JSON as on ZeroMQ ``events.<camera>``), retained counts per
camera and label and per zone and label (and ``all``), the latest snapshot JPEG per camera and
label, the camera status (``live`` while tracks arrive; ``waiting`` after ``status_waiting_s``
without them, ``offline`` after ``status_offline_s`` and when the service stops), Home Assistant
discovery, and the ``prompt/set`` command topic (``clients.events.mqtt_commands``).
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

from clients.events.model import EventMessage, Kind, LabelCounts
from clients.events.mqtt_commands import PromptCommands, SendPrompt
from clients.events.mqtt_config import CameraZones, MqttConfig
from clients.events.mqtt_link import MqttLink
from clients.events.mqtt_topics import ALL, Topics
from stream.errors import PromptcamError
from stream.prompts import prompt_text

__all__ = ["CameraStatus", "EventsMqtt", "MqttConfig"]

log = logging.getLogger(__name__)


class CameraStatus(str, Enum):
    LIVE = "live"  # tracks messages arrive
    WAITING = "waiting"  # none for status_waiting_s (or none yet)
    OFFLINE = "offline"  # none for status_offline_s, or the service stopped


@dataclass
class _Camera:
    labels: list[str]  # labels announced (discovery, counts)
    zones: list[str]
    prompt: str = ""
    status: CameraStatus | None = None
    last_tracks: float | None = None  # monotonic time of the last tracks message
    counts: dict[str, int] = field(default_factory=dict)  # count topic -> last value sent
    snapshots: dict[str, str] = field(default_factory=dict)  # label -> digest of the last JPEG


class EventsMqtt:
    """What the events service calls: ``event``, ``tracks``, ``tick``; ``start``/``close``.
    ``cameras`` maps each configured camera to (prompt, zone names)."""

    def __init__(
        self,
        cfg: MqttConfig,
        cameras: CameraZones,
        send_prompt: SendPrompt | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        from stream.prompts import normalize_prompt

        self.cfg = cfg
        self.topics = Topics(cfg)
        self._clock = clock
        self._lock = threading.Lock()  # the service thread and the prompt worker
        self._cameras: dict[str, _Camera] = {}
        self._zones = {name: list(zones) for name, (_, zones) in cameras.items()}  # in use
        for name, (prompt, zones) in cameras.items():
            try:
                labels = normalize_prompt(prompt) if prompt.strip() else []
            except PromptcamError:  # no phrase: no label known before tracks arrive
                labels = []
            self._cameras[name] = _Camera(labels, list(zones), prompt)
        self.commands: PromptCommands | None = None
        subscriptions: list[str] = []
        if send_prompt is not None:
            self.commands = PromptCommands(
                set(cameras), send_prompt, self._prompt_applied, cfg.command_rate, cfg.command_burst
            )
            subscriptions.append(self.topics.prompt_set_filter)
        self.link = MqttLink(cfg, subscriptions, self._command)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Connect (in the background) and queue each camera's discovery, status and counts."""
        with self._lock:
            for name, cam in self._cameras.items():
                self._announce(name, cam)
                self._set_status(name, cam, CameraStatus.WAITING)
                if cam.labels:
                    text = prompt_text(cam.labels)
                    self.link.send(self.topics.prompt_state(name), text, retain=True)
        self.link.start()

    def close(self, timeout: float = 5.0) -> None:
        """Every camera ``offline``, deliver what is queued (within ``timeout``), disconnect."""
        if self.commands is not None:
            self.commands.close()
        with self._lock:
            for name, cam in self._cameras.items():
                self._set_status(name, cam, CameraStatus.OFFLINE)
        self.link.close(timeout)

    def stats(self) -> dict[str, object]:
        out: dict[str, object] = {"link": self.link.stats()}
        if self.commands is not None:
            out["commands"] = self.commands.stats()
        return out

    # ------------------------------------------------------------------ from the service

    def event(self, msg: EventMessage, snapshot: bytes | None = None) -> None:
        """One events message (object or review) and, when given, its snapshot JPEG."""
        payload = msg.to_parts()[1]
        self.link.send(
            self.topics.reviews if msg.kind is Kind.REVIEW else self.topics.events, payload
        )
        if snapshot is None or msg.kind is Kind.REVIEW:
            return
        label = str(msg.event.get("label", ""))
        digest = hashlib.sha1(snapshot).hexdigest()
        with self._lock:
            cam = self._camera(msg.camera)
            if cam.snapshots.get(label) == digest:
                return  # the same best snapshot as before: already retained
            cam.snapshots[label] = digest
            self._label(msg.camera, cam, label)
        self.link.send(self.topics.snapshot(msg.camera, label), snapshot, retain=True)

    def tracks(self, camera: str, counts: LabelCounts) -> None:
        """A tracks message of ``camera`` was handled: the camera is live; its counts (as
        ``CameraEvents.counts``: ``labels`` and ``zones``) are sent where they changed."""
        with self._lock:
            cam = self._camera(camera)
            cam.last_tracks = self._clock()
            if cam.status is not CameraStatus.LIVE:
                self._set_status(camera, cam, CameraStatus.LIVE)
            self._counts(camera, cam, counts)

    def set_zones(self, zones: dict[str, list[str]]) -> None:
        """The zones in use per camera (the config's, or those saved from the web page and
        reloaded): a new zone is announced (discovery, its counts at 0); a zone gone has its
        retained counts and its discovery cleared (empty retained payloads), so neither a stuck
        count nor a dead Home Assistant entity is left. Cameras not named keep no zone; a
        camera seen later starts with its zones here."""
        with self._lock:
            self._zones = {name: list(names) for name, names in zones.items()}
            for name, cam in self._cameras.items():
                wanted = self._zones.get(name, [])
                for zone in [z for z in cam.zones if z not in wanted]:
                    cam.zones.remove(zone)
                    self._clear_zone(name, cam, zone)
                added = [z for z in wanted if z not in cam.zones]
                cam.zones.extend(added)
                for zone in added:  # nobody counted in it yet (the logic judges it afresh)
                    if self.cfg.discovery:
                        self._zone_discovery(name, zone)
                    for label in [*cam.labels, ALL]:
                        topic = self.topics.count(name, label, zone)
                        cam.counts[topic] = 0
                        self.link.send(topic, "0", retain=True)

    def _clear_zone(self, camera: str, cam: _Camera, zone: str) -> None:
        topics = [self.topics.count(camera, label, zone) for label in [*cam.labels, ALL]]
        if self.cfg.discovery:
            topics += [topic for topic, _ in self.topics.zone_discovery(camera, zone)]
        for topic in topics:
            cam.counts.pop(topic, None)
            self.link.send(topic, b"", retain=True)

    def counts(self, camera: str, counts: LabelCounts) -> None:
        """Counts changed without a tracks message (the service ended every event)."""
        with self._lock:
            self._counts(camera, self._camera(camera), counts)

    def tick(self) -> None:
        """Camera status from the time since each camera's last tracks message."""
        now = self._clock()
        with self._lock:
            for name, cam in self._cameras.items():
                if cam.last_tracks is None:
                    continue
                idle = now - cam.last_tracks
                if idle >= self.cfg.status_offline_s:
                    self._set_status(name, cam, CameraStatus.OFFLINE)
                elif idle >= self.cfg.status_waiting_s:
                    self._set_status(name, cam, CameraStatus.WAITING)

    # ------------------------------------------------------------------ internals (locked)

    def _camera(self, name: str) -> _Camera:
        cam = self._cameras.get(name)
        if cam is None:  # tracks of a camera the config does not name (a fleet's)
            cam = self._cameras[name] = _Camera([], list(self._zones.get(name, [])))
            self._announce(name, cam)
        return cam

    def _announce(self, name: str, cam: _Camera) -> None:
        if self.cfg.discovery:
            for topic, body in self.topics.camera_discovery(name):
                self.link.send(topic, body, retain=True)
            for zone in cam.zones:
                self._zone_discovery(name, zone)
        for label in cam.labels:
            self._label_discovery(name, label)
        zero: LabelCounts = {"labels": {}, "zones": {}}
        self._counts(name, cam, zero)

    def _zone_discovery(self, camera: str, zone: str) -> None:
        for topic, body in self.topics.zone_discovery(camera, zone):
            self.link.send(topic, body, retain=True)

    def _label_discovery(self, camera: str, label: str) -> None:
        if self.cfg.discovery:
            for topic, body in self.topics.label_discovery(camera, label):
                self.link.send(topic, body, retain=True)

    def _label(self, camera: str, cam: _Camera, label: str) -> None:
        if label and label not in cam.labels:
            cam.labels.append(label)
            self._label_discovery(camera, label)

    def _set_status(self, name: str, cam: _Camera, status: CameraStatus) -> None:
        if cam.status is status:
            return
        cam.status = status
        self.link.send(self.topics.status(name), status.value, retain=True)

    def _counts(self, camera: str, cam: _Camera, counts: LabelCounts) -> None:
        labels: dict[str, int] = dict(counts.get("labels") or {})
        zones: dict[str, dict[str, int]] = dict(counts.get("zones") or {})
        for label in labels:
            self._label(camera, cam, label)
        values: dict[str, int] = {}
        for label in cam.labels:
            values[self.topics.count(camera, label)] = int(labels.get(label, 0))
        values[self.topics.count(camera, ALL)] = sum(int(n) for n in labels.values())
        for zone in {*cam.zones, *zones}:
            per = zones.get(zone, {})
            for label in cam.labels:
                values[self.topics.count(camera, label, zone)] = int(per.get(label, 0))
            values[self.topics.count(camera, ALL, zone)] = sum(int(n) for n in per.values())
        for topic, n in values.items():
            if cam.counts.get(topic) != n:
                cam.counts[topic] = n
                self.link.send(topic, str(n), retain=True)

    # ------------------------------------------------------------------ commands

    def _command(self, topic: str, payload: bytes) -> None:
        camera = self.topics.camera_of_command(topic)
        if self.commands is not None and camera is not None:
            self.commands.handle(camera, payload)

    def _prompt_applied(self, camera: str, text: str, labels: list[str]) -> None:
        with self._lock:
            cam = self._camera(camera)
            cam.prompt = text
            for label in labels:
                self._label(camera, cam, label)
        self.link.send(self.topics.prompt_state(camera), prompt_text(labels), retain=True)
