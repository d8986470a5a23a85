"""Newest-message feeds from the engine's PUB sockets, for the web server.

``LatestFeed`` drains one SUB socket in a named thread and keeps only the newest valid message
(policy LATEST: everything older is dropped, so memory is one message however slow the readers
are). Malformed messages are logged and counted by reason, never raised. Asyncio code waits for
a newer message with ``wait_newer``; the thread wakes it with ``call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

import zmq

from stream import bus as zbus
from stream.config import BusConfig
from stream.wire import DEFAULT_MAX_PAYLOAD, AnnotatedMessage, Part, TracksMessage, WireError

log = logging.getLogger(__name__)

M = TypeVar("M")


class LatestFeed(Generic[M]):
    """Subscribe to ``topic`` on ``endpoint`` and keep the newest message parsed by ``parse``.

    ``camera_of`` filters prefix matches of other cameras (``cam1`` vs ``cam10``).
    """

    def __init__(
        self,
        name: str,
        endpoint: str,
        topic: str,
        parse: Callable[[Sequence[Part]], M],
        camera_of: Callable[[M], str],
        *,
        bus: BusConfig | None = None,
        ctx: zmq.Context[Any] | None = None,
        on_message: Callable[[M], None] | None = None,
        on_reject: Callable[[str], None] | None = None,
    ) -> None:
        self.name = name
        self.endpoint = endpoint
        self.topic = topic
        self.received = 0
        self.rejected: dict[str, int] = {}
        self._camera = topic.split(".", 1)[1]
        self._parse = parse
        self._camera_of = camera_of
        self._bus = bus
        self._ctx = ctx or zmq.Context.instance()
        self._on_message = on_message
        self._on_reject = on_reject
        self._lock = threading.Lock()
        self._latest: M | None = None
        self._latest_at = 0.0  # time.monotonic() of arrival
        self._version = 0
        self._waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"web-feed-{name}", daemon=True)

    def start(self) -> LatestFeed[M]:
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(2.0)

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())

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

    def _reject(self, reason: str, detail: str) -> None:
        self.rejected[reason] = self.rejected.get(reason, 0) + 1
        if self._on_reject is not None:
            self._on_reject(reason)
        n = self.rejected_total
        if n <= 10 or n % 1000 == 0:
            log.warning("%s: rejected message (%s), %d so far: %s", self.name, reason, n, detail)

    def _run(self) -> None:
        sock = zbus.connect(
            self._ctx,
            zmq.SUB,
            self.endpoint,
            self._bus,
            subscribe=[self.topic.encode()],
            curve=True,
        )
        try:
            while not self._stop.is_set():
                if not sock.poll(100, zmq.POLLIN):
                    continue
                newest: M | None = None
                while True:  # drain: keep only the newest valid message
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
                    if self._camera_of(msg) != self._camera:
                        continue
                    newest = msg
                if newest is not None:
                    self._publish(newest)
        finally:
            sock.close(0)

    def _publish(self, msg: M) -> None:
        with self._lock:
            self._latest = msg
            self._latest_at = time.monotonic()
            self._version += 1
            waiters = list(self._waiters)
        if self._on_message is not None:
            self._on_message(msg)
        for loop, event in waiters:
            try:
                loop.call_soon_threadsafe(event.set)
            except RuntimeError:  # that loop is closed: its waiter is gone
                log.debug("%s: waiter's event loop is closed", self.name)


def annotated_feed(
    endpoint: str, camera: str, max_payload: int = DEFAULT_MAX_PAYLOAD, **kw: Any
) -> LatestFeed[AnnotatedMessage]:
    def parse(parts: Sequence[Part]) -> AnnotatedMessage:
        return AnnotatedMessage.from_parts(parts, max_payload)

    return LatestFeed("annotated", endpoint, f"annotated.{camera}", parse, lambda m: m.camera, **kw)


def tracks_feed(endpoint: str, camera: str, **kw: Any) -> LatestFeed[TracksMessage]:
    return LatestFeed(
        "tracks", endpoint, f"tracks.{camera}", TracksMessage.from_parts, lambda m: m.camera, **kw
    )
