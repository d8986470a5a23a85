"""External detections into the engine process: ``detections.<camera>`` from an external
detector (``bus.detections``), read on their own thread and applied by the frame loop.

Malformed messages are rejected and counted; messages beyond a queue of ``DETECTIONS_QUEUE``
are dropped and counted; detections for a camera the engine does not serve are rejected.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Container

import zmq

from engine.pipeline import MultiCameraEngine
from stream import bus as zbus
from stream.config import BusConfig
from stream.wire import DetectionsMessage, WireError

log = logging.getLogger(__name__)
DETECTIONS_DROP_BYTES = 1 << 20
DETECTIONS_QUEUE = 8


class DetectionsInput:
    """The detections subscriber (``serve``, its thread) and the queue the loop drains."""

    def __init__(self, ctx: zmq.Context[zmq.Socket[bytes]], bus: BusConfig) -> None:
        self._ctx = ctx
        self._bus = bus
        self._queue: queue.Queue[DetectionsMessage] = queue.Queue(maxsize=DETECTIONS_QUEUE)
        self.rejected = 0
        self.dropped = 0
        self.connection_drops = 0

    def serve(self, stop: threading.Event) -> None:
        """The detections thread: subscribe to ``bus.detections`` and queue what comes."""
        b = self._bus
        assert b.detections is not None
        sub = zbus.Subscription(
            self._ctx,
            b.detections,
            b,
            [b"detections."],
            maxmsgsize=DETECTIONS_DROP_BYTES,
            what="detections",
        )
        try:
            while not stop.is_set():
                readable = sub.poll(100)
                self.connection_drops = sub.dropped
                if not readable:
                    continue
                try:
                    parts = sub.sock.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    continue
                self.on_message(parts)
        finally:
            sub.close()

    def on_message(self, parts: list[bytes]) -> None:
        try:
            msg = DetectionsMessage.from_parts(parts)
        except WireError as e:
            self._reject(str(e))
            return
        except Exception as e:  # a parser bug must not end the thread: count it like bad input
            log.exception("detections message could not be checked")
            self._reject(f"internal error: {e.__class__.__name__}")
            return
        try:
            self._queue.put_nowait(msg)
        except queue.Full:
            self.dropped += 1

    def _reject(self, why: str) -> None:
        self.rejected += 1
        n = self.rejected
        if n <= 10 or n % 1000 == 0:
            log.warning("rejected detections message, %d so far: %s", n, why)

    def apply_queued(self, engine: MultiCameraEngine, served: Container[str]) -> None:
        """Hand the queued detections to their cameras (frame loop, between ticks)."""
        from engine.grounder import detections_from_message  # supervision: only when used

        while True:
            try:
                msg = self._queue.get_nowait()
            except queue.Empty:
                return
            camera = msg.header.camera
            if camera not in served:
                self.rejected += 1
                continue
            try:
                cam = engine.camera(camera)
                cam.add_external_detections(
                    msg.header.seq, detections_from_message(msg, cam.labels)
                )
            except Exception:  # counted; the frame loop goes on
                self.rejected += 1
                log.exception("external detections could not be applied")
