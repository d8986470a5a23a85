"""Latest-frame-wins receiver for the frames topic.

Reads: ``frame.<camera>`` on a SUB socket. A named thread drains the socket continuously and
keeps only the newest valid frame in a one-frame slot, so the ZeroMQ queue never fills with old
frames (a full SUB queue would drop the *newest*) and memory is one frame however slow the
consumer is. ``get()`` returns the newest frame not yet returned.

Drops, all counted in ``stats``: frames overwritten in the slot or lost upstream (``skipped``,
from ``seq`` gaps), frames older than the staleness budget when the consumer asks (``stale``),
malformed messages (``rejected``, by reason; logged, never raised), and shared-memory frames
whose slot was reused before they could be copied out (``overrun``). A connection that ZeroMQ
drops for good (a part over ``max_payload`` + 1 MiB) is connected again and counted
(``connection_drops``, see ``stream.bus.Subscription``). No input ends the drain thread; should
a bug end it anyway, the process's thread-death handler hears of it (``stream.threads``).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

import zmq

from stream import bus as zbus
from stream.config import BusConfig
from stream.counters import MessageCounters
from stream.shm import ShmOverrun, ShmReader
from stream.wire import DEFAULT_MAX_PAYLOAD, FrameMessage, WireError, now_ns

log = logging.getLogger(__name__)


@dataclass
class ReceiverStats(MessageCounters):
    stale: int = 0
    overrun: int = 0  # shared-memory frames whose slot was reused before they were copied out
    connection_drops: int = 0  # connections ZeroMQ closed for good (part over the size limit)


class LatestFrameReceiver:
    """Subscribe to one camera's frames and hand out only the newest one."""

    def __init__(
        self,
        endpoint: str,
        camera: str,
        staleness_ms: float | None = 1000.0,
        max_payload: int = DEFAULT_MAX_PAYLOAD,
        bus: BusConfig | None = None,
        ctx: zbus.Context | None = None,
        notify: threading.Event | None = None,
    ) -> None:
        """``notify``, when given, is set whenever a new frame lands in the slot (one event can
        wake a consumer of several receivers)."""
        self.endpoint = endpoint
        self._notify = notify
        self.camera = camera
        self.staleness_ns = None if staleness_ms is None else int(staleness_ms * 1e6)
        self.max_payload = max_payload
        self.stats = ReceiverStats()
        self._bus = bus
        self._ctx = ctx or zmq.Context.instance()
        self._shm = ShmReader()  # used when the capture sends payloads in shared memory
        self._cond = threading.Condition()
        self._slot: FrameMessage | None = None
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._drain, name=f"frame-receiver-{camera}", daemon=True
        )

    def start(self) -> LatestFrameReceiver:
        self._thread.start()
        self._ready.wait(5.0)
        if self._error is not None:
            raise self._error
        return self

    def __enter__(self) -> LatestFrameReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(2.0)

    def _reject(self, reason: str, detail: str) -> None:
        self.stats.reject(reason, detail, log, "frame message")

    def _drain(self) -> None:
        try:
            sub = zbus.Subscription(
                self._ctx,
                self.endpoint,
                self._bus,
                [f"frame.{self.camera}".encode()],
                maxmsgsize=self.max_payload + (1 << 20),  # ZeroMQ drops larger parts unread
                what="frames",
                curve=True,
            )
        except BaseException as e:  # surfaced to start()
            self._error = e
            self._ready.set()
            return
        self._ready.set()
        try:
            while not self._stop.is_set():
                readable = sub.poll(100)
                self.stats.connection_drops = sub.dropped
                if not readable:
                    continue
                # Drain everything pending; only the newest valid frame is kept.
                newest: FrameMessage | None = None
                while True:
                    try:
                        parts = sub.sock.recv_multipart(flags=zmq.NOBLOCK, copy=False)
                    except zmq.Again:
                        break
                    self.stats.received += 1
                    msg = self._parse(parts)
                    if msg is not None:
                        newest = msg
                if newest is not None:
                    with self._cond:
                        self._slot = newest
                        self._cond.notify_all()
                    if self._notify is not None:
                        self._notify.set()
        finally:
            sub.close()
            self._shm.close()

    def _parse(self, parts: list[zmq.Frame]) -> FrameMessage | None:
        """The frame in ``parts``, or None (rejected and counted, superseded, another camera)."""
        try:
            msg = FrameMessage.from_parts(parts, self.max_payload, self._shm)
        except WireError as e:
            self._reject(e.reason, str(e))
            return None
        except ShmOverrun:
            return None  # already superseded: counted in ``skipped`` by the seq gap
        except Exception as e:  # a parser bug must not end the thread: count it like bad input
            log.exception("frame message could not be checked")
            self._reject("internal", f"{e.__class__.__name__}: {e}")
            return None
        if msg.camera != self.camera:
            return None  # prefix match of another camera's topic (cam1 vs cam10)
        return msg

    def _account(self, msg: FrameMessage) -> None:
        if not self.stats.account_seq(msg.camera, msg.seq):
            log.info("camera %s: seq went back to %d (capture restarted)", self.camera, msg.seq)

    def get(self, timeout: float | None = 1.0) -> FrameMessage | None:
        """The newest frame not yet returned, waiting up to ``timeout`` seconds; None if none.
        The frame's payload is its own (a shared-memory payload is copied out of its slot)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._stop.is_set():
            with self._cond:
                msg = self._slot
                self._slot = None
                if msg is None:
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        return None
                    self._cond.wait(remaining if remaining is not None else 0.5)
                    continue
                self._account(msg)
            if self.staleness_ns is not None and now_ns() - msg.t_capture_ns > self.staleness_ns:
                self.stats.stale += 1
                continue
            try:
                msg = msg.owned()  # outside the lock: the drain thread goes on meanwhile
            except ShmOverrun:
                self.stats.overrun += 1
                continue
            self.stats.delivered += 1
            return msg
        return None
