"""MQTT and Home Assistant output of the events service (issue 24), against Debian's mosquitto
started here on a free loopback port: every topic and the discovery payloads as a paho
subscriber sees them; the broker stopped and restarted mid-run (nothing lost, order kept); a
bounded queue while no broker answers; ``promptcam events`` as a real process flooded on its
command topic (counted rejections, only valid prompts reach the engine) and killed with SIGKILL
(the broker publishes its last will)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import cv2
import numpy as np
import paho.mqtt.client as paho
import pytest
import zmq
from paho.mqtt.enums import CallbackAPIVersion

from clients.events.config import CameraEventsConfig, EventsConfig
from clients.events.model import EventDict, EventMessage, EventType, Kind
from clients.events.mqtt import EventsMqtt, MqttConfig
from clients.events.mqtt_link import LinkState
from clients.events.mqtt_topics import Topics
from clients.events.service import EventsService
from clients.events.store import EventStore
from stream.config import ConfigError, load_config
from stream.errors import PromptError
from stream.prompts import normalize_prompt
from tests.conftest import free_port, tcp_endpoint
from tests.conftest import wait_for as _wait_for
from tests.test_events import rect_object, tracks

MOSQUITTO = shutil.which("mosquitto") or (
    "/usr/sbin/mosquitto" if os.path.exists("/usr/sbin/mosquitto") else None
)
WAIT_S = 30.0  # the least any wait here allows: a host loaded 10x (7 helpers on 2 cores) passes


def wait_for(
    cond: Callable[[], Any],
    timeout: float = WAIT_S,
    interval: float = 0.02,
    what: str = "condition",
) -> Any:
    """``tests.conftest.wait_for`` with at least ``WAIT_S`` (a bound for failures only)."""
    return _wait_for(cond, max(timeout, WAIT_S), interval, what)


needs_broker = pytest.mark.skipif(
    MOSQUITTO is None, reason="Debian's mosquitto is not installed (apt-get install mosquitto)"
)


# --------------------------------------------------------------------------- broker, subscriber


class Broker:
    """``mosquitto -c CONF``: a loopback listener on ``port``, persistence in ``folder`` (so a
    subscriber's session survives a stop and restart)."""

    def __init__(
        self, folder: Path, port: int | None = None, password_file: Path | None = None
    ) -> None:
        self.port = port or free_port()
        self.folder = folder
        self.conf = folder / "mosquitto.conf"
        auth = (
            f"allow_anonymous false\npassword_file {password_file}\n"
            if password_file is not None
            else "allow_anonymous true\n"
        )
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\n{auth}persistence true\n"
            f"persistence_location {folder}/\nlog_dest stderr\n"
            + ("user root\n" if os.geteuid() == 0 else "")  # else it drops to 'mosquitto'
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        assert MOSQUITTO is not None
        self.proc = subprocess.Popen(
            [MOSQUITTO, "-c", str(self.conf)],
            stdout=subprocess.DEVNULL,
            stderr=open(self.folder / "mosquitto.log", "ab"),  # noqa: SIM115
        )

        def listening() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                pytest.fail(f"mosquitto exited: {(self.folder / 'mosquitto.log').read_text()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return True
            except OSError:
                return False

        wait_for(listening, timeout=10.0, what="mosquitto listening")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=10)
        self.proc = None


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    b = Broker(tmp_path_factory.mktemp("mosquitto"))
    b.start()
    yield b
    b.stop()


class Sub:
    """A paho subscriber keeping every message (topic, payload, retain) in arrival order."""

    def __init__(
        self, port: int, topics: list[str], client_id: str = "", clean: bool = True
    ) -> None:
        self.messages: list[tuple[str, bytes, bool]] = []
        self.lock = threading.Lock()
        self.subscribed = threading.Event()
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean
        )
        self.client.reconnect_delay_set(1, 1)

        def on_connect(c: paho.Client, u: Any, f: Any, rc: Any, p: Any) -> None:
            for t in topics:
                c.subscribe(t, qos=1)

        def on_message(c: paho.Client, u: Any, m: paho.MQTTMessage) -> None:
            with self.lock:
                self.messages.append((m.topic, bytes(m.payload), bool(m.retain)))

        self.client.on_connect = on_connect
        self.client.on_subscribe = lambda *a: self.subscribed.set()
        self.client.on_message = on_message
        self.client.connect("127.0.0.1", port, 30)
        self.client.loop_start()
        assert self.subscribed.wait(10), "the subscriber's subscription was not acknowledged"

    def values(self, topic: str) -> list[bytes]:
        with self.lock:
            return [p for t, p, _ in self.messages if t == topic]

    def last(self, topic: str) -> bytes | None:
        v = self.values(topic)
        return v[-1] if v else None

    def wait(self, topic: str, payload: bytes, timeout: float = 10.0) -> None:
        wait_for(lambda: self.last(topic) == payload, timeout, what=f"{topic} = {payload!r}")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def jpeg() -> bytes:
    img = np.zeros((24, 32, 3), np.uint8)
    img[4:20, 8:24] = (0, 0, 255)
    ok, buf = cv2.imencode(".jpg", img)
    assert ok
    return buf.tobytes()


# --------------------------------------------------------------------------- topics, discovery

ZONE = {"points": [[100, 0], [200, 0], [200, 240], [100, 240]], "inertia": 1, "min_share": 0.5}


class SnapStore(EventStore):
    """The store with the snapshot reader the service asks for (``snapshot_jpeg``)."""

    data = b""

    def snapshot_jpeg(self, event_id: str) -> bytes | None:
        return self.data


def walk_through_door(service: EventsService, sub: Sub, prefix: str) -> list[EventMessage]:
    """A ball walks into ``ZONE`` (cam0's door: its count seen at 1) and out of the frame."""
    out: list[EventMessage] = []
    for i, x in enumerate([20, 40, 120, 130, 140, 150, 150, 150, 150]):
        objects = [rect_object(1, x, 100, x + 30, 140)] if i < 6 else []
        out += service.handle(tracks(i, objects))
        if i == 3:
            sub.wait(f"{prefix}/cam0/door/ball", b"1")
    return out


@needs_broker
def test_topics_counts_status_snapshots_and_discovery(broker: Broker, tmp_path: Path) -> None:
    """The events service with MQTT on: a ball walks into the zone and out of the frame. A
    subscriber sees ``online``, every events and reviews message as the ZeroMQ JSON, in order,
    the retained counts per camera, zone and label going 0 -> 1 -> 0, the status live -> waiting
    -> offline, the snapshot JPEG, and discovery configs whose topics are the ones published."""
    prefix = "t1/pc"
    sub = Sub(broker.port, [f"{prefix}/#", "homeassistant/#"])
    now = [100.0]
    cfg = MqttConfig(enabled=True, port=broker.port, prefix=prefix, client_id="t1")
    mqtt = EventsMqtt(cfg, {"cam0": ("ball. box.", ["door"])}, clock=lambda: now[0])
    mqtt.start()
    ecfg = EventsConfig.model_validate(
        {"probation_frames": 2, "end_after": 3, "cameras": {"cam0": {"zones": {"door": ZONE}}}}
    )
    store = SnapStore(str(tmp_path / "e.db"), 30.0, 1000, 100)
    service = EventsService(ecfg, store, None, mqtt)
    out: list[EventMessage] = []
    try:
        sub.wait(f"{prefix}/available", b"online")
        sub.wait(f"{prefix}/cam0/status", b"waiting")
        out += walk_through_door(service, sub, prefix)
        # A snapshot through the service: an event message whose event has one.
        store.data = jpeg()
        snap = EventMessage(
            "cam0",
            EventType.UPDATE,
            Kind.OBJECT,
            {**out[0].event, "has_snapshot": True},
            out[0].event,
        )
        service._emit([snap])
        out.append(snap)
        now[0] += cfg.status_waiting_s
        mqtt.tick()
        sub.wait(f"{prefix}/cam0/status", b"waiting")
        now[0] += cfg.status_offline_s
        mqtt.tick()
        sub.wait(f"{prefix}/cam0/status", b"offline")
        service.handle(tracks(20, []))
        sub.wait(f"{prefix}/cam0/status", b"live")
        mqtt.tracks("cam0", {"labels": {"cat": 1}, "zones": {}})  # a label not in the prompt
        sub.wait(f"{prefix}/cam0/cat", b"1")
        objects_out = [m.header() for m in out if m.kind is Kind.OBJECT]
        reviews_out = [m.header() for m in out if m.kind is Kind.REVIEW]
        assert [m["type"] for m in objects_out] == ["new", "update", "end", "update"]
        wait_for(
            lambda: len(sub.values(f"{prefix}/events")) == len(objects_out),
            what="every events message",
        )
        wait_for(lambda: len(sub.values(f"{prefix}/reviews")) == len(reviews_out), what="reviews")
        assert [json.loads(p) for p in sub.values(f"{prefix}/events")] == objects_out
        assert [json.loads(p) for p in sub.values(f"{prefix}/reviews")] == reviews_out
        assert sub.values(f"{prefix}/cam0/ball/snapshot") == [store.data]
        assert sub.values(f"{prefix}/cam0/ball") == [b"0", b"1", b"0"]
        assert sub.values(f"{prefix}/cam0/door/ball") == [b"0", b"1", b"0"]
        assert sub.values(f"{prefix}/cam0/door/all") == [b"0", b"1", b"0"]
        assert sub.values(f"{prefix}/cam0/box") == [b"0"]
        assert sub.values(f"{prefix}/cam0/status") == [
            b"waiting",
            b"live",
            b"waiting",
            b"offline",
            b"live",
        ]
        assert sub.last(f"{prefix}/cam0/prompt/state") == b"ball. box."
    finally:
        mqtt.close()
        store.close()
        sub.close()
    # A late subscriber gets the retained state and the discovery configs.
    late = Sub(broker.port, [f"{prefix}/#", "homeassistant/#"])
    try:

        def every_retained() -> dict[str, bytes] | None:
            # Retained messages come in any order: wait for the last of those looked at.
            with late.lock:
                got = {t: p for t, p, r in late.messages if r}
            want = [f"{prefix}/{x}" for x in ("available", "cam0/status", "cam0/door/ball")]
            want.append(f"{prefix}/cam0/ball/snapshot")
            configs = [json.loads(p) for t, p in got.items() if t.startswith("homeassistant/")]
            want += [c["state_topic"] for c in configs if "state_topic" in c]
            return got if all(t in got for t in want) and len(configs) >= 9 else None

        retained = wait_for(every_retained, what="the retained topics and discovery configs")
        assert retained[f"{prefix}/available"] == b"offline"
        assert retained[f"{prefix}/cam0/ball/snapshot"] == store.data
        assert retained[f"{prefix}/cam0/status"] == b"offline"
        assert retained[f"{prefix}/cam0/door/ball"] == b"0"
        configs = {t: json.loads(p) for t, p in retained.items() if t.startswith("homeassistant/")}
    finally:
        late.close()
    check_discovery(configs, prefix, set(retained))


@needs_broker
def test_zones_saved_from_the_page_are_announced_counted_and_cleared(
    broker: Broker, tmp_path: Path
) -> None:
    """A zone that only ``zones.json`` has (drawn on the web page; none in the config): its
    occupancy sensor is announced, its retained counts go 0 -> 1 -> 0 with the object (not stuck
    at 1); deleted on the page, its counts and its discovery config are cleared (empty retained
    payloads), so a late subscriber finds neither."""
    from clients.events.zones_file import save_camera, zones_path

    prefix = "t5/pc"
    sub = Sub(broker.port, [f"{prefix}/#", "homeassistant/#"])
    cfg = MqttConfig(enabled=True, port=broker.port, prefix=prefix, client_id="t5")
    mqtt = EventsMqtt(cfg, {"cam0": ("ball.", [])})
    mqtt.start()
    store = SnapStore(str(tmp_path / "e.db"), 30.0, 1000, 100)
    save_camera(
        zones_path(store.path), "cam0", CameraEventsConfig.model_validate({"zones": {"door": ZONE}})
    )
    service = EventsService(EventsConfig(probation_frames=2, end_after=3), store, None, mqtt)
    occupancy = "homeassistant/binary_sensor/t5_pc/cam0_door_occupancy/config"
    try:
        sub.wait(f"{prefix}/cam0/door/all", b"0")
        wait_for(lambda: sub.last(occupancy), what="the zone's occupancy sensor")
        walk_through_door(service, sub, prefix)
        sub.wait(f"{prefix}/cam0/door/ball", b"0")
        assert sub.values(f"{prefix}/cam0/door/all") == [b"0", b"1", b"0"]
        save_camera(zones_path(store.path), "cam0", CameraEventsConfig())  # deleted on the page
        assert service.zones.poll(service, force=True)
        sub.wait(f"{prefix}/cam0/door/all", b"")
        sub.wait(occupancy, b"")
    finally:
        mqtt.close()
        store.close()
        sub.close()
    late = Sub(broker.port, [f"{prefix}/#", "homeassistant/#"])
    try:
        late.wait(f"{prefix}/available", b"offline")
        time.sleep(0.5)  # retained messages arrive together; give the rest a moment
        with late.lock:
            topics = {t for t, _, r in late.messages if r}
        ours = [t for t in topics if t.startswith(prefix) or "/t5_pc/" in t]
        assert ours and not [t for t in ours if "door" in t], ours
    finally:
        late.close()


def check_discovery(configs: dict[str, dict[str, Any]], prefix: str, retained: set[str]) -> None:
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for topic, body in configs.items():
        parts = topic.split("/")
        assert len(parts) == 5 and parts[-1] == "config" and parts[2] == "t1_pc", topic
        by_kind.setdefault(parts[1], []).append(body)
    ids = [b["unique_id"] for b in configs.values()]
    # status, prompt; 3 labels (ball, box, and cat seen later) x (count, snapshot); the zone
    assert len(ids) == len(set(ids)) == 2 + 3 * 2 + 1
    for body in configs.values():
        assert body["availability_topic"] == f"{prefix}/available"
        assert body["device"]["identifiers"] == ["t1_pc_cam0"]
        if "state_topic" in body:  # every state it reads is published (and retained)
            assert body["state_topic"] in retained, (body["unique_id"], body["state_topic"])
    sensors = {b["unique_id"]: b for b in by_kind["sensor"]}
    assert sensors["t1_pc_cam0_ball_count"]["state_topic"] == f"{prefix}/cam0/ball"
    assert sensors["t1_pc_cam0_status"]["options"] == ["live", "waiting", "offline"]
    (occupancy,) = by_kind["binary_sensor"]
    assert occupancy["state_topic"] == f"{prefix}/cam0/door/all"
    assert occupancy["device_class"] == "occupancy"
    cams = sorted(b["topic"] for b in by_kind["camera"])
    assert cams == [f"{prefix}/cam0/{x}/snapshot" for x in ("ball", "box", "cat")]
    assert sensors["t1_pc_cam0_cat_count"]["state_topic"] == f"{prefix}/cam0/cat"
    (text,) = by_kind["text"]
    assert text["command_topic"] == f"{prefix}/cam0/prompt/set" and text["max"] == 255
    assert text["value_template"] == "{{ value[:255] }}"  # a longer prompt shows its start


# --------------------------------------------------------------------------- broker away


def link_stats(mqtt: EventsMqtt) -> dict[str, object]:
    """The ``link`` part of ``EventsMqtt.stats()`` (a JSON-like object)."""
    link = mqtt.stats()["link"]
    assert isinstance(link, dict), link
    return link


def numbered(i: int) -> EventMessage:
    # deliberately partial: the publisher reads only these fields of a new event
    body = {"id": f"ev{i}", "object_id": i, "label": "ball", "start_ns": i, "end_ns": None}
    return EventMessage("cam0", EventType.NEW, Kind.OBJECT, cast(EventDict, body), None)


@needs_broker
def test_broker_stopped_and_restarted_loses_nothing_in_order(tmp_path: Path) -> None:
    """Events published every 2 ms by another thread before, while and after the broker is away
    (stopped with some in flight, then started again on the same port): a subscriber with a
    persistent session receives every one, in the order published; ``online`` and the retained
    counts are there again after the restart."""
    broker = Broker(tmp_path)
    broker.start()
    prefix = "t2"
    topics = [f"{prefix}/events", f"{prefix}/cam0/ball", f"{prefix}/available"]
    sub = Sub(broker.port, topics, "t2-sub", clean=False)
    cfg = MqttConfig(
        enabled=True, port=broker.port, prefix=prefix, client_id="t2", reconnect_max_s=1
    )
    mqtt = EventsMqtt(cfg, {"cam0": ("ball.", [])})
    mqtt.start()
    produced = [0]
    done = threading.Event()

    def produce() -> None:
        while not done.is_set():
            mqtt.event(numbered(produced[0]))
            produced[0] += 1
            if produced[0] == 20:
                mqtt.tracks("cam0", {"labels": {"ball": 2}, "zones": {}})
            time.sleep(0.002)

    producer = threading.Thread(target=produce, daemon=True)
    producer.start()

    def ids() -> list[int]:
        return [json.loads(p)["event"]["object_id"] for p in sub.values(f"{prefix}/events")]

    try:
        wait_for(lambda: len(ids()) >= 10, what="the first events")
        broker.stop(signal.SIGTERM)  # its persistence keeps the subscriber's session
        wait_for(lambda: mqtt.link.state is LinkState.DISCONNECTED, what="publisher disconnected")
        at_stop = produced[0]
        wait_for(lambda: produced[0] >= at_stop + 30, what="events produced while away")
        assert mqtt.link.queued() >= 20  # queued, not sent to nowhere
        broker.start()
        wait_for(lambda: mqtt.link.state is LinkState.CONNECTED, what="publisher reconnected")
        at_connect = produced[0]
        wait_for(lambda: produced[0] >= at_connect + 50, what="events produced after")
        done.set()
        producer.join(5)
        total = produced[0]
        wait_for(
            lambda: len(set(ids())) == total, timeout=20.0, what="every event after the restart"
        )
        got = ids()
        first_seen = list(dict.fromkeys(got))  # QoS 1 may repeat one in flight at the stop
        assert first_seen == list(range(total))
        assert len(got) - total <= 16  # at most one window of repeats
        sub.wait(f"{prefix}/cam0/ball", b"2")
        # ``online`` said again after the restart (between, mosquitto publishes the will of the
        # session it stored at the stop: a true 'offline'; QoS 1 may repeat a message).
        sub.wait(f"{prefix}/available", b"online")
        said = sub.values(f"{prefix}/available")
        assert said[-1] == b"online" and said.count(b"online") >= 2, said
        stats = link_stats(mqtt)
        assert stats["dropped"] == 0 and stats["disconnects"] == 1 and stats["connects"] == 2
    finally:
        done.set()
        mqtt.close()
        sub.close()
        broker.stop()


@needs_broker
def test_credentials_refused_counted_then_accepted(tmp_path: Path) -> None:
    """A broker with a password file: a wrong password is a counted, logged refusal (retried
    with backoff, nothing raised); the right one connects and says ``online``."""
    passwd = tmp_path / "passwd"
    tool = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
    subprocess.run([tool, "-b", "-c", str(passwd), "cam", "s3cret"], check=True, timeout=10)
    passwd.chmod(0o600)
    broker = Broker(tmp_path, password_file=passwd)
    broker.start()
    wrong = right = None
    try:
        base = {"enabled": True, "port": broker.port, "prefix": "t6", "username": "cam"}
        wrong = EventsMqtt(
            MqttConfig(**base, password="nope", client_id="t6a"), {"cam0": ("ball.", [])}
        )
        wrong.start()
        wait_for(lambda: wrong.link.counters["connect_refused"] >= 1, what="a refused connect")
        assert wrong.link.state is not LinkState.CONNECTED
        right = EventsMqtt(
            MqttConfig(**base, password="s3cret", client_id="t6b"), {"cam0": ("ball.", [])}
        )
        right.start()
        wait_for(
            lambda: right.link.state is LinkState.CONNECTED, what="connected with the password"
        )
        wait_for(lambda: right.link.stats()["queued"] == 0, what="the first messages delivered")
        assert right.link.counters["connect_refused"] == 0
    finally:
        for m in (wrong, right):
            if m is not None:
                m.close(timeout=1.0)
        broker.stop()


def test_queue_is_bounded_and_drops_the_oldest_counted() -> None:
    """No broker answers: the queue keeps ``queue_limit`` messages, the newest; the dropped are
    counted; closing does not hang."""
    cfg = MqttConfig(enabled=True, port=free_port(), prefix="t5", queue_limit=10, discovery=False)
    mqtt = EventsMqtt(cfg, {"cam0": ("ball.", [])})
    mqtt.start()
    base = mqtt.link.queued()  # status, prompt state, counts of the camera
    for i in range(25):
        mqtt.event(numbered(i))
    stats = link_stats(mqtt)
    assert stats["queued"] == 10 and stats["dropped"] == 15 + base
    assert stats["state"] in ("connecting", "disconnected")
    t0 = time.monotonic()
    mqtt.close(timeout=1.0)
    assert time.monotonic() - t0 < 5.0
    undelivered = link_stats(mqtt)["undelivered_at_close"]
    assert isinstance(undelivered, int) and undelivered >= 10


# --------------------------------------------------------------------------- the process


class FakeEngine:
    """The engine's control socket (REP on loopback): records each request, answers as the
    engine does (``{"ok": true, "labels": [...]}``)."""

    def __init__(self) -> None:
        self.endpoint = tcp_endpoint()
        self.requests: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._ctx: zmq.Context[Any] = zmq.Context()
        self._sock = self._ctx.socket(zmq.REP)
        self._sock.linger = 0
        self._sock.bind(self.endpoint)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            if not self._sock.poll(50):
                continue
            req = json.loads(self._sock.recv())
            self.requests.append(req)
            try:
                reply = {"ok": True, "labels": normalize_prompt(req["prompt"])}
            except PromptError as e:
                reply = {"ok": False, "error": str(e)}
            self._sock.send(json.dumps(reply).encode())

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._ctx.destroy(linger=0)


def events_process(
    tmp_path: Path, broker: Broker, prefix: str, control: str
) -> subprocess.Popen[str]:
    cfg = tmp_path / f"{prefix}.yaml"
    cfg.write_text(
        json.dumps(
            {
                "camera": "cam0",
                "engine": {"prompt": "ball."},
                "bus": {"control": control, "tracks": tcp_endpoint(), "events": tcp_endpoint()},
                "events": {"database": str(tmp_path / f"{prefix}.db")},
                "mqtt": {
                    "enabled": True,
                    "port": broker.port,
                    "prefix": prefix,
                    "client_id": prefix,
                    "command_rate": 2.0,
                    "command_burst": 3,
                },
            }
        )
    )
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "clients.cli",
            "events",
            "--config",
            str(cfg),
            "--log-level",
            "WARNING",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


VALID = ["cat. dog.", "red ball.", "person. forklift."]
GARBAGE: list[bytes] = [
    b"",
    b"....",
    b"\xff\xfe\xfd",
    b"x" * 200_000,
    b"person.\x00car.",
    "é. ".encode() * 2000,
    b"\x1b[31mred.",
]


@needs_broker
def test_process_flooded_command_topic_counts_rejections(broker: Broker, tmp_path: Path) -> None:
    """1,000 commands on ``prompt/set`` (garbage, huge payloads, an unknown camera's topic, valid
    prompts faster than the rate allows): the process stays up, only valid prompts reach the
    engine's control socket, every command is counted (accepted or rejected by reason), the
    prompt's state topic says the last one applied; SIGTERM publishes ``offline``."""
    prefix = "t3"
    engine = FakeEngine()
    sub = Sub(broker.port, [f"{prefix}/#"])
    proc = events_process(tmp_path, broker, prefix, engine.endpoint)
    pub = paho.Client(CallbackAPIVersion.VERSION2, client_id="t3-flood")
    pub.max_inflight_messages_set(100)
    pub.connect("127.0.0.1", broker.port, 30)
    pub.loop_start()
    sent = 0
    try:
        assert proc.stdout is not None
        json.loads(proc.stdout.readline())  # listening
        sub.wait(f"{prefix}/available", b"online", timeout=20)
        sub.wait(f"{prefix}/cam0/prompt/state", b"ball.")
        infos = []
        for i in range(1000):
            if i % 10 == 3:
                topic, payload = f"{prefix}/nocam/prompt/set", b"cat."
            elif i % 10 == 7:
                topic, payload = f"{prefix}/cam0/prompt/set", VALID[i % 3].encode()
            else:
                topic, payload = f"{prefix}/cam0/prompt/set", GARBAGE[i % len(GARBAGE)]
            infos.append(pub.publish(topic, payload, qos=1))
        for info in infos:
            info.wait_for_publish(10)
        sent = 1000

        def final_applied() -> bool:  # the rate limit lets one through within 1 / rate s
            nonlocal sent
            if engine.requests and engine.requests[-1]["prompt"] == "last one.":
                return True
            pub.publish(f"{prefix}/cam0/prompt/set", b"last one.", qos=1).wait_for_publish(5)
            sent += 1
            return False

        wait_for(final_applied, timeout=15.0, interval=0.3, what="a valid prompt after the flood")
        sub.wait(f"{prefix}/cam0/prompt/state", b"last one.")
        assert proc.poll() is None, "the events process died"
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=WAIT_S)
    finally:
        pub.disconnect()
        pub.loop_stop()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        engine.close()
    assert proc.returncode == 0, err
    stats = json.loads(out.strip().splitlines()[-1])["mqtt"]["commands"]
    assert stats["received"] == sent
    assert stats["accepted"] == len(engine.requests) >= 2
    assert stats["accepted"] + sum(stats["rejected"].values()) == sent
    rejected = stats["rejected"]
    for reason in ("unknown_camera", "too_large", "not_utf8", "control_chars", "no_phrase"):
        assert rejected.get(reason, 0) > 0, (reason, rejected)
    assert rejected["unknown_camera"] == 100 and rejected["rate_limited"] > 0
    assert all(r["prompt"] in [*VALID, "last one."] for r in engine.requests)
    assert all(r["cmd"] == "set_prompt" and r["camera"] == "cam0" for r in engine.requests)
    assert "rejected" in err  # logged
    sub.wait(f"{prefix}/available", b"offline")
    sub.wait(f"{prefix}/cam0/status", b"offline")
    sub.close()


@needs_broker
def test_process_killed_broker_publishes_last_will(broker: Broker, tmp_path: Path) -> None:
    """``promptcam events`` killed with SIGKILL (no goodbye): the broker publishes the last will,
    ``<prefix>/available`` = ``offline``, retained."""
    prefix = "t4"
    sub = Sub(broker.port, [f"{prefix}/available", f"{prefix}/cam0/status"])
    proc = events_process(tmp_path, broker, prefix, tcp_endpoint())
    try:
        sub.wait(f"{prefix}/available", b"online", timeout=20)
        sub.wait(f"{prefix}/cam0/status", b"waiting")
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        sub.wait(f"{prefix}/available", b"offline")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        sub.close()
    late = Sub(broker.port, [f"{prefix}/available"])
    try:
        wait_for(lambda: late.last(f"{prefix}/available") == b"offline", what="retained will")
    finally:
        late.close()


@pytest.mark.parametrize(
    ("mqtt", "needle"),
    [
        ({"prefix": "a/#"}, "mqtt.prefix"),
        ({"prefix": "a//b"}, "mqtt.prefix"),
        ({"port": 0}, "mqtt.port"),
        ({"reconnect_min_s": 10, "reconnect_max_s": 2}, "reconnect_max_s (2) is below"),
        ({"status_waiting_s": 30, "status_offline_s": 10}, "status_offline_s (10) is below"),
        ({"password": "x"}, "password is set without a username"),
        ({"queue_limit": 5}, "mqtt.queue_limit"),
        ({"qos": 3}, "mqtt.qos"),
        ({"hots": "x"}, "mqtt.hots"),
    ],
)
def test_bad_mqtt_config_is_one_line(tmp_path: Path, mqtt: dict[str, Any], needle: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(json.dumps({"mqtt": mqtt}))
    with pytest.raises(ConfigError) as e:
        load_config(str(path))
    assert needle in str(e.value) and "\n" not in str(e.value).strip(), str(e.value)


def test_label_topics_and_ids_are_safe() -> None:
    """A label with '/', '+' or '#' stays one topic level (the broker refuses wildcards in a
    published topic); ids differ for labels whose slugs are the same."""
    t = Topics(MqttConfig(prefix="p"))
    assert t.count("cam0", "a/b+c#") == "p/cam0/a_b_c_"
    assert t.snapshot("cam0", "red ball") == "p/cam0/red ball/snapshot"
    ids = {
        json.loads(b)["unique_id"]
        for x in ("red ball", "red_ball")
        for _, b in t.label_discovery("cam0", x)
    }
    assert len(ids) == 4
    assert t.camera_of_command("p/cam0/prompt/set") == "cam0"
    assert t.camera_of_command("p/a/b/prompt/set") is None
    assert t.camera_of_command("q/cam0/prompt/set") is None
