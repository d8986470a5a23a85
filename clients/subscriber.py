"""Typed client for the ``tracks.<camera>`` topic: per-frame object IDs, labels, boxes and masks.

Reads: ``tracks.<camera>`` (all cameras when ``camera`` is None) on a SUB socket. Every
message is validated with ``TracksMessage.from_parts``; a malformed one is logged and counted
in ``stats.rejected`` (by reason), never raised. Masks stay COCO RLE until you ask for them:
``obj.decode_mask()`` returns an HxW bool numpy array.

Delivery: ZeroMQ PUB/SUB. A subscriber that connects late misses everything published before
its subscription reached the engine (usually a few milliseconds after ``connect``), and a
subscriber that falls far behind loses messages at the high-water mark (``rcvhwm``). If the
engine restarts, the socket reconnects by itself; ``seq`` then starts again, which
``stats.seq_resets`` counts. Gaps in ``seq`` (frames the engine skipped, or messages lost here)
are counted in ``stats.skipped``.

Example (a robot that follows the biggest "person")::

    from clients.subscriber import TracksSubscriber

    with TracksSubscriber("tcp://127.0.0.1:5551", camera="cam0") as sub:
        for msg in sub:                      # blocks; Ctrl-C to stop
            people = [o for o in msg.header.objects if o.label == "person"]
            if not people:
                continue
            target = max(people, key=lambda o: (o.box[2] - o.box[0]) * (o.box[3] - o.box[1]))
            mask = target.decode_mask()      # (height, width) bool numpy array
            ys, xs = mask.nonzero()
            latency_ms = (time.time_ns() - msg.header.t_capture_ns) / 1e6
            steer_towards(xs.mean() / msg.header.width, latency_ms)

Use ``sub.recv(timeout=0.5)`` instead of iterating when your loop must do other work.

Typed frames: ``sub.frames()`` / ``sub.recv_frame()`` yield ``Frame``s (``clients.frames``:
ids, labels, boxes, confidence, stamp, seq, masks decoded lazily as numpy arrays), and
``TimeSync`` pairs frames of several cameras (or with your own sensor) by stamp or seq;
docs/robots.md has the example.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Iterator

import zmq

from clients.frames import Frame, Obj, SyncStats, TimeSync
from stream import bus as zbus
from stream.config import BusConfig, Config
from stream.counters import MessageCounters
from stream.wire import TracksMessage, WireError

log = logging.getLogger(__name__)

__all__ = ["Frame", "Obj", "SubscriberStats", "SyncStats", "TimeSync", "TracksSubscriber"]


SubscriberStats = MessageCounters  # received, delivered, skipped (seq gaps), seq_resets, rejected


class TracksSubscriber:
    """Subscribe to tracks messages of one camera (or all) and yield ``TracksMessage``s.

    Use as a context manager; iterate (blocking) or call ``recv(timeout)``. Not thread-safe:
    use one subscriber per thread.
    """

    def __init__(
        self,
        endpoint: str = "tcp://127.0.0.1:5551",
        camera: str | None = None,
        *,
        bus: BusConfig | None = None,
        ctx: zmq.Context[zmq.Socket[bytes]] | None = None,
        rcvhwm: int = 100,
    ) -> None:
        self.endpoint = endpoint
        self.camera = camera
        self.stats = SubscriberStats()
        self._bus = bus
        self._ctx = ctx or zmq.Context.instance()
        self._rcvhwm = rcvhwm
        self._sock: zmq.Socket[bytes] | None = None

    # -- lifecycle
    def open(self) -> TracksSubscriber:
        if self._sock is None:
            prefix = b"tracks." + (self.camera.encode() if self.camera else b"")
            self._sock = zbus.connect(
                self._ctx,
                zmq.SUB,
                self.endpoint,
                self._bus,
                subscribe=[prefix],
                rcvhwm=self._rcvhwm,
                curve=True,
            )
        return self

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close(0)
            self._sock = None

    def __enter__(self) -> TracksSubscriber:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- receiving
    def _reject(self, reason: str, detail: str) -> None:
        self.stats.reject(reason, detail, log, "tracks message")

    def _account(self, msg: TracksMessage) -> None:
        self.stats.account_seq(msg.camera, msg.header.seq)

    def recv(self, timeout: float | None = 1.0) -> TracksMessage | None:
        """The next valid message, or None if none arrives within ``timeout`` seconds
        (``None``: wait forever)."""
        sock = self.open()._sock
        assert sock is not None
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            wait_ms = (
                None if deadline is None else max(0, int((deadline - time.monotonic()) * 1000))
            )
            if not sock.poll(wait_ms, zmq.POLLIN):
                return None
            parts = sock.recv_multipart(copy=True)
            self.stats.received += 1
            try:
                msg = TracksMessage.from_parts(parts)
            except WireError as e:
                self._reject(e.reason, str(e))
                continue
            if self.camera is not None and msg.camera != self.camera:
                continue  # prefix match of another camera (cam1 vs cam10)
            self._account(msg)
            self.stats.delivered += 1
            return msg

    def recv_frame(self, timeout: float | None = 1.0) -> Frame | None:
        """``recv`` as a typed ``Frame`` (masks decoded when first read)."""
        msg = self.recv(timeout)
        return None if msg is None else Frame.from_message(msg)

    def frames(self, count: int | None = None, timeout: float | None = None) -> Iterator[Frame]:
        """Typed frames: ``count`` of them (None: forever), ending early when none arrives
        within ``timeout`` seconds (None: wait forever)."""
        n = 0
        while count is None or n < count:
            frame = self.recv_frame(timeout)
            if frame is None:
                return
            n += 1
            yield frame

    def __iter__(self) -> Iterator[TracksMessage]:
        while True:
            msg = self.recv(timeout=None)
            if msg is not None:
                yield msg


def main(cfg: Config, args: argparse.Namespace) -> int:
    """``promptcam subscribe``: one JSON tracks header per line on stdout."""
    endpoint = args.endpoint or cfg.bus.tracks
    # Without --camera every camera's tracks (CONTRACT: ``subscribe [--camera NAME]``); with it,
    # that camera only, also one the config's mapping does not name (added at run time).
    camera = cfg.camera if getattr(args, "camera", None) else None
    count: int | None = args.count
    timeout: float | None = args.timeout
    n = 0
    with TracksSubscriber(endpoint, camera, bus=cfg.bus) as sub:
        while count is None or n < count:
            msg = sub.recv(timeout=timeout)
            if msg is None:
                sys.stderr.write(
                    f"promptcam subscribe: error: no tracks message from {endpoint} (camera {camera or 'any'}) "
                    f"within {timeout:g}s (is the engine running?)\n"
                )
                return 1
            sys.stdout.write(msg.to_json() + "\n")
            sys.stdout.flush()
            n += 1
    if sub.stats.rejected_total:
        log.warning("%d malformed messages were skipped", sub.stats.rejected_total)
    return 0
