"""One MQTT connection (paho-mqtt 2.x, ``CallbackAPIVersion.VERSION2``) that loses nothing while
the broker is away and keeps the order of what it is given.

Every message goes through one bounded queue (``queue_limit``; beyond it the oldest message is
dropped and counted) and one sender thread, which hands messages to paho only while connected
and at most ``WINDOW`` unacknowledged at a time. On a disconnect the unacknowledged ones stay in
paho's own session queue and paho sends them again, in order, after it reconnects (paho
reconnects by itself with a delay doubling from ``reconnect_min_s`` to ``reconnect_max_s``); the
sender hands nothing new until all of them are acknowledged, so nothing overtakes them. On every
connect it first sends ``<prefix>/available`` = ``online`` and the latest value of every
retained topic that has nothing newer waiting in the queue (a restarted broker without
persistence has forgotten them); the last will is ``offline`` (retained).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from clients.events.mqtt_config import MqttConfig

log = logging.getLogger(__name__)

WINDOW = 16  # messages handed to paho and not yet acknowledged
COUNTERS = (
    "published",  # acknowledged by the broker (QoS 1, 2) or written (QoS 0)
    "dropped",  # the oldest, when the queue was full
    "invalid",  # a topic or payload paho refused
    "lost_qos0",  # QoS 0 messages paho could not write
    "connects",
    "disconnects",
    "connect_refused",  # CONNACK with a failure (bad credentials, ...)
    "undelivered_at_close",  # still queued when the service stopped with the broker away
    "refused_closed",  # sent after close
    "handler_errors",  # a command handler that raised (a bug: logged with its traceback)
)


class LinkState(str, Enum):
    CONNECTING = "connecting"  # before the first connect
    CONNECTED = "connected"
    DISCONNECTED = "disconnected"  # lost: paho reconnects with backoff
    CLOSED = "closed"


@dataclass(frozen=True)
class Outgoing:
    topic: str
    payload: bytes
    retain: bool


CommandHandler = Callable[[str, bytes], None]


class MqttLink:
    """``send`` queues a message (never blocks); ``start`` connects; ``close`` drains what it
    can within a timeout, publishes ``offline`` and disconnects (no last will then)."""

    def __init__(
        self,
        cfg: MqttConfig,
        subscriptions: list[str] | None = None,
        on_message: CommandHandler | None = None,
    ) -> None:
        self.cfg = cfg
        self.available_topic = f"{cfg.prefix}/available"
        self._subscriptions = list(subscriptions or [])
        self._on_message = on_message
        self._queue: deque[Outgoing] = deque()
        self._front: deque[Outgoing] = deque()  # what a connect sends first
        self._retained: dict[str, bytes] = {}  # topic -> latest retained payload
        self._cond = threading.Condition()
        self.state = LinkState.CONNECTING
        self._resync = False
        self._resending = False  # paho resends unacknowledged messages: hand nothing new
        self._unacked = 0
        self._closing = False
        self.counters: Counter[str] = Counter(dict.fromkeys(COUNTERS, 0))
        self._client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=cfg.client_id, clean_session=True
        )
        self._client.max_inflight_messages_set(WINDOW)
        self._client.reconnect_delay_set(cfg.reconnect_min_s, cfg.reconnect_max_s)
        if cfg.username is not None:
            self._client.username_pw_set(cfg.username, cfg.password)
        self._client.will_set(self.available_topic, b"offline", qos=1, retain=True)
        self._client.on_connect = self._connected
        self._client.on_disconnect = self._disconnected
        self._client.on_publish = self._acked
        self._client.on_message = self._message
        self._sender = threading.Thread(target=self._send_loop, name="mqtt-send", daemon=True)

    # ------------------------------------------------------------------ API

    def start(self) -> None:
        self._client.connect_async(self.cfg.host, self.cfg.port, self.cfg.keepalive)
        self._client.loop_start()
        self._sender.start()

    def send(self, topic: str, payload: bytes | str, retain: bool = False) -> None:
        data = payload.encode() if isinstance(payload, str) else payload
        msg = Outgoing(topic, data, retain)
        with self._cond:
            if self._closing:
                self.counters["refused_closed"] += 1
                return
            if retain:
                self._retained[topic] = data
            if len(self._queue) >= self.cfg.queue_limit:
                self._queue.popleft()
                self.counters["dropped"] += 1
                n = self.counters["dropped"]
                if n <= 10 or n % 1000 == 0:
                    log.warning(
                        "MQTT queue full (%d messages, broker away?): oldest dropped, %d so far",
                        self.cfg.queue_limit,
                        n,
                    )
            self._queue.append(msg)
            self._cond.notify_all()

    def queued(self) -> int:
        with self._cond:
            return len(self._queue) + len(self._front)

    def stats(self) -> dict[str, object]:
        with self._cond:
            return {
                "state": self.state.value,
                "queued": len(self._queue) + len(self._front),
                "unacked": self._unacked,
                **dict(self.counters),
            }

    def close(self, timeout: float = 5.0) -> None:
        """Deliver what is queued (while connected, within ``timeout``), then ``offline`` and a
        clean disconnect."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while (
                self.state is LinkState.CONNECTED
                and (self._queue or self._front or self._unacked)
                and time.monotonic() < deadline
            ):
                self._cond.wait(0.05)
            self._closing = True
            self._cond.notify_all()
            connected = self.state is LinkState.CONNECTED
            left = len(self._queue) + len(self._front)
        self._sender.join(timeout=2.0)
        if left:
            self.counters["undelivered_at_close"] += left
            log.warning("MQTT: %d messages not delivered at stop (broker away)", left)
        if connected:
            info = self._client.publish(self.available_topic, b"offline", qos=1, retain=True)
            with contextlib.suppress(RuntimeError, ValueError):  # not sent: the will says it
                info.wait_for_publish(max(1.0, deadline - time.monotonic()))
        self._client.disconnect()
        self._client.loop_stop()
        with self._cond:
            self.state = LinkState.CLOSED

    # ------------------------------------------------------------------ paho callbacks

    def _connected(
        self,
        client: paho.Client,
        userdata: object,
        flags: paho.ConnectFlags,
        reason: ReasonCode,
        props: Properties | None,
    ) -> None:
        if reason.is_failure:
            with self._cond:
                self.counters["connect_refused"] += 1
                n = self.counters["connect_refused"]
            if n <= 10 or n % 100 == 0:
                log.error(
                    "MQTT broker %s:%d refused the connection: %s (%d refusals; retrying)",
                    self.cfg.host,
                    self.cfg.port,
                    reason,
                    n,
                )
            return
        for topic in self._subscriptions:
            client.subscribe(topic, qos=1)
        with self._cond:
            self.state = LinkState.CONNECTED
            self.counters["connects"] += 1
            self._resync = True
            self._cond.notify_all()
        log.info("MQTT connected to %s:%d", self.cfg.host, self.cfg.port)

    def _disconnected(
        self,
        client: paho.Client,
        userdata: object,
        flags: paho.DisconnectFlags,
        reason: ReasonCode,
        props: Properties | None,
    ) -> None:
        with self._cond:
            if self.state is LinkState.CONNECTED:
                self.counters["disconnects"] += 1
                if not self._closing:
                    log.warning("MQTT broker connection lost (%s): reconnecting, queueing", reason)
            if self.state is not LinkState.CLOSED:
                self.state = LinkState.DISCONNECTED
            if self.cfg.qos == 0:
                self._unacked = 0  # QoS 0 messages in paho's buffer are gone, never acknowledged
            self._resending = self._unacked > 0
            self._cond.notify_all()

    def _acked(
        self,
        client: paho.Client,
        userdata: object,
        mid: int,
        reason: ReasonCode,
        props: Properties | None,
    ) -> None:
        with self._cond:
            self._unacked = max(0, self._unacked - 1)
            self.counters["published"] += 1
            if self._unacked == 0:
                self._resending = False
            self._cond.notify_all()

    def _message(self, client: paho.Client, userdata: object, msg: paho.MQTTMessage) -> None:
        if self._on_message is None:
            return
        try:
            self._on_message(msg.topic, bytes(msg.payload))
        except Exception:  # a handler's bug must not stop paho's network thread
            with self._cond:
                self.counters["handler_errors"] += 1
            log.exception("MQTT message handler failed on %s", msg.topic[:200])

    # ------------------------------------------------------------------ sender

    def _ready(self) -> bool:
        return (
            self.state is LinkState.CONNECTED
            and not self._resending
            and self._unacked < WINDOW
            and bool(self._resync or self._front or self._queue)
        )

    def _next(self) -> Outgoing | None:
        """The next message to hand to paho (under the lock), or None when closing."""
        while not self._closing and not self._ready():
            self._cond.wait(0.5)
        if self._closing:
            return None
        if self._resync:
            self._resync = False
            pending = {m.topic for m in self._queue if m.retain}
            self._front = deque([Outgoing(self.available_topic, b"online", True)])
            self._front.extend(
                Outgoing(t, p, True) for t, p in self._retained.items() if t not in pending
            )
        msg = self._front.popleft() if self._front else self._queue.popleft()
        self._unacked += 1
        return msg

    def _send_loop(self) -> None:
        while True:
            with self._cond:
                msg = self._next()
            if msg is None:
                return
            try:
                info = self._client.publish(
                    msg.topic, msg.payload, qos=self.cfg.qos, retain=msg.retain
                )
            except ValueError as e:  # a topic or payload MQTT cannot carry
                with self._cond:
                    self._unacked -= 1
                    self.counters["invalid"] += 1
                log.warning("MQTT: message to %r refused: %s", msg.topic[:200], e)
                continue
            if self.cfg.qos == 0 and info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                with self._cond:
                    self._unacked = max(0, self._unacked - 1)
                    self.counters["lost_qos0"] += 1
