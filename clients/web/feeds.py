"""Newest-message feeds from the engine's PUB sockets, for the web server.

``TopicFeed`` drains one SUB socket (``annotated`` or ``tracks``) in a named thread, subscribed
to the topic of every camera it serves (``add``/``remove`` at runtime), and hands each camera's
newest valid message to that camera's ``LatestFeed`` (policy LATEST: everything older is
dropped, so memory is one message per camera however slow the readers are). Malformed messages
are logged and counted by reason, never raised. Asyncio code waits for a camera's newer message
with ``LatestFeed.wait_newer``; the thread wakes it with ``call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

import zmq

from clients.jsontypes import ZmqContext, ZmqSocket
from stream import bus as zbus
from stream.config import BusConfig
from stream.wire import DEFAULT_MAX_PAYLOAD, AnnotatedMessage, Part, TracksMessage, WireError

log = logging.getLogger(__name__)

M = TypeVar("M")


class LatestFeed(Generic[M]):
    """The newest message of one camera on one topic, with a version that grows per message."""

    def __init__(self, name: str, camera: str) -> None:
        self.name = name
        self.camera = camera
        self.received = 0
        self._lock = threading.Lock()
        self._latest: M | None = None
        self._latest_at = 0.0  # time.monotonic() of arrival
        self._version = 0
        self._waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()

    def latest(self) -> tuple[M | None, int, float]:
        """(newest message or None, its version, seconds since it arrived or inf)."""
        with self._lock:
            age = time.monotonic() - self._latest_at if self._latest is not None else float("inf")
            return self._latest, self._version, age

    async def wait_newer(self, version: int, timeout: float) -> tuple[M | None, int]:
        """Wait up to ``timeout`` s for a message newer than ``version``; (msg, version) or
        (None, version) on timeout."""
        loop = asyncio.get_running_loop()
        event = asyncio.Event()
        key = (loop, event)
        with self._lock:
            if self._version > version:
                return self._latest, self._version
            self._waiters.add(key)
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except asyncio.TimeoutError:
            return None, version
        finally:
            with self._lock:
                self._waiters.discard(key)
        with self._lock:
            return self._latest, self._version

    def publish(self, msg: M) -> None:
        """Make ``msg`` the newest (the feed thread) and wake the waiters."""
        with self._lock:
            self.received += 1
            self._latest = msg
            self._latest_at = time.monotonic()
            self._version += 1
            waiters = list(self._waiters)
        for loop, event in waiters:
            try:
                loop.call_soon_threadsafe(event.set)
            except RuntimeError:  # that loop is closed: its waiter is gone
                log.debug("%s %s: waiter's event loop is closed", self.name, self.camera)


class TopicFeed(Generic[M]):
    """Subscribe to ``<kind>.<camera>`` on ``endpoint`` for every camera added, and keep each
    camera's newest message parsed by ``parse`` in its ``LatestFeed``.

    ``camera_of`` names the camera of a parsed message: a message of a camera not added (a
    prefix match, ``cam1`` vs ``cam10``, or one just removed) is ignored. ``on_message(camera,
    msg)`` is called in the feed thread for every message handed on.
    """

    def __init__(
        self,
        kind: str,
        endpoint: str,
        parse: Callable[[Sequence[Part]], M],
        camera_of: Callable[[M], str],
        *,
        bus: BusConfig | None = None,
        ctx: ZmqContext | None = None,
        on_message: Callable[[str, M], None] | None = None,
        on_reject: Callable[[str], None] | None = None,
    ) -> None:
        self.kind = kind
        self.endpoint = endpoint
        self.received = 0
        self.rejected: dict[str, int] = {}
        self._parse = parse
        self._camera_of = camera_of
        self._bus = bus
        self._ctx = ctx or zmq.Context.instance()
        self._on_message = on_message
        self._on_reject = on_reject
        self._lock = threading.Lock()
        self._feeds: dict[str, LatestFeed[M]] = {}
        self._pending: list[tuple[int, bytes]] = []  # (SUBSCRIBE | UNSUBSCRIBE, topic)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"web-feed-{kind}", daemon=True)

    def start(self) -> TopicFeed[M]:
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(2.0)

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())

    def set_on_message(self, on_message: Callable[[str, M], None]) -> None:
        """Set the callback before ``start`` (when it needs the feed to exist first)."""
        self._on_message = on_message

    def add(self, camera: str) -> LatestFeed[M]:
        """Follow ``camera`` (its own feed, if it was added already)."""
        with self._lock:
            feed = self._feeds.get(camera)
            if feed is None:
                feed = self._feeds[camera] = LatestFeed(self.kind, camera)
                self._pending.append((zmq.SUBSCRIBE, f"{self.kind}.{camera}".encode()))
            return feed

    def remove(self, camera: str) -> None:
        """Stop following ``camera``: its messages are ignored from now on."""
        with self._lock:
            if self._feeds.pop(camera, None) is not None:
                self._pending.append((zmq.UNSUBSCRIBE, f"{self.kind}.{camera}".encode()))

    def feed(self, camera: str) -> LatestFeed[M] | None:
        with self._lock:
            return self._feeds.get(camera)

    def _reject(self, reason: str, detail: str) -> None:
        self.rejected[reason] = self.rejected.get(reason, 0) + 1
        if self._on_reject is not None:
            self._on_reject(reason)
        n = self.rejected_total
        if n <= 10 or n % 1000 == 0:
            log.warning("%s: rejected message (%s), %d so far: %s", self.kind, reason, n, detail)

    def _apply_subscriptions(self, sock: ZmqSocket) -> None:
        """Subscription changes asked from other threads (a socket belongs to one thread)."""
        with self._lock:
            pending, self._pending = self._pending, []
        for option, topic in pending:
            sock.setsockopt(option, topic)

    def _run(self) -> None:
        sock = zbus.connect(self._ctx, zmq.SUB, self.endpoint, self._bus, curve=True)
        try:
            while not self._stop.is_set():
                self._apply_subscriptions(sock)
                if not sock.poll(100, zmq.POLLIN):
                    continue
                newest: dict[str, M] = {}
                while True:  # drain: keep only each camera's newest valid message
                    try:
                        parts = sock.recv_multipart(flags=zmq.NOBLOCK, copy=True)
                    except zmq.Again:
                        break
                    self.received += 1
                    try:
                        msg = self._parse(parts)
                    except WireError as e:
                        self._reject(e.reason, str(e))
                        continue
                    newest[self._camera_of(msg)] = msg
                for camera, msg in newest.items():
                    feed = self.feed(camera)
                    if feed is None:
                        continue
                    feed.publish(msg)
                    if self._on_message is not None:
                        self._on_message(camera, msg)
        finally:
            sock.close(0)


def annotated_feed(
    endpoint: str,
    max_payload: int = DEFAULT_MAX_PAYLOAD,
    *,
    bus: BusConfig | None = None,
    ctx: ZmqContext | None = None,
    on_reject: Callable[[str], None] | None = None,
) -> TopicFeed[AnnotatedMessage]:
    def parse(parts: Sequence[Part]) -> AnnotatedMessage:
        return AnnotatedMessage.from_parts(parts, max_payload)

    return TopicFeed(
        "annotated", endpoint, parse, lambda m: m.camera, bus=bus, ctx=ctx, on_reject=on_reject
    )


def tracks_feed(
    endpoint: str,
    *,
    bus: BusConfig | None = None,
    ctx: ZmqContext | None = None,
    on_reject: Callable[[str], None] | None = None,
) -> TopicFeed[TracksMessage]:
    return TopicFeed(
        "tracks",
        endpoint,
        TracksMessage.from_parts,
        lambda m: m.camera,
        bus=bus,
        ctx=ctx,
        on_reject=on_reject,
    )
