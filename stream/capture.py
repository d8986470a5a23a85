"""Capture process (``promptcam capture``): one video source onto the ZeroMQ frame bus.

Reads: the source named by ``source.uri`` (webcam, RTSP/HTTP, video file, image directory or
``demo``) in a reader thread per connection, so a hung read never blocks the process.

Publishes, on a PUB socket bound to ``bus.frames``:
- ``frame.<camera>``: one message per captured frame (CONTRACT.md); ``seq`` grows by one per
  frame and keeps growing across reconnects.
- ``capture.<camera>``: once a second, one JSON part
  ``{"v":1, "camera":str, "t_ns":int, "stats":{...}}`` with the ``CaptureStats`` counters.

Drops: frames a subscriber is too slow for are dropped by the PUB socket beyond ``bus.sndhwm``
(publishing never blocks); frames still coming from a connection that was given up; frames
larger than ``bus.max_payload_mb`` (receivers would refuse them, and ZeroMQ would drop their
connection): counted in ``oversized``, logged, their ``seq`` skipped. A source that declares
frames over ``source.max_pixels`` is refused before decoding: a file at start (one line), a
camera or stream counted in ``too_large``, logged and retried with backoff.

Recovers: a live source (camera, network) that fails, or stalls (no frame for
``source.stall_timeout_s``), is reopened forever with exponential backoff and jitter; so is one
that is not up yet when capture starts (state ``waiting`` until it first opens). What cannot get
better is a one-line error at start: a malformed URL, a missing file, a bad webcam index, a
broken file. A file ends with exit 0 (unless ``source.loop``). SIGINT/SIGTERM stop it cleanly.
"""

from __future__ import annotations

import argparse
import json
import logging
import queue
import random
import signal
import threading
import time
from dataclasses import asdict, dataclass
from types import FrameType
from typing import Any

import numpy as np
import setproctitle
import zmq

from stream import bus as zbus
from stream.config import Config
from stream.errors import EndOfStreamError, PromptcamError, SourceConnectionError, SourceError
from stream.shm import ShmError, ShmRing
from stream.sources import SourceTooLargeError, open_source, redact_url
from stream.threads import ThreadDeath
from stream.wire import SCHEMA_VERSION, FrameMessage

log = logging.getLogger(__name__)

STATUS_EVERY_S = 1.0
READER_QUEUE = 2  # frames buffered between the reader thread and the publisher


@dataclass
class CaptureStats:
    """Counters of one capture run, published in ``capture.<camera>`` status messages."""

    frames: int = 0
    fps: float = 0.0
    reconnects: int = 0  # successful re-opens after a failure or stall
    reconnect_attempts: int = 0  # opens tried after a failure (also while waiting at start)
    stalls: int = 0
    read_errors: int = 0
    oversized: int = 0  # frames over bus.max_payload_mb, not published
    too_large: int = 0  # opens or frames refused: a size over source.max_pixels (not decoded)
    # starting | waiting (not opened yet, retrying) | streaming | reconnecting | stopped
    state: str = "starting"
    source: str = ""
    last_error: str = ""
    payload: str = "inline"  # inline | shm (bus.frames_shm) | inline (shm failed: why)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Backoff:
    """Exponential backoff: ``initial`` doubling up to ``maximum``, each delay jittered down by
    up to ``jitter`` (a fraction) so many cameras do not retry in lockstep."""

    def __init__(
        self, initial: float, maximum: float, jitter: float = 0.25, rng: random.Random | None = None
    ) -> None:
        self.initial = initial
        self.maximum = max(initial, maximum)
        self.jitter = jitter
        self.failures = 0
        self._rng = rng or random.Random()

    def next(self) -> float:
        base = min(self.maximum, self.initial * 2.0 ** min(self.failures, 60))
        self.failures += 1
        return base * (1.0 - self.jitter * self._rng.random())

    def reset(self) -> None:
        self.failures = 0


@dataclass(frozen=True)
class _Opened:
    description: str
    live: bool


@dataclass(frozen=True)
class _Frame:
    image: np.ndarray
    t_capture_ns: int


@dataclass(frozen=True)
class _Failed:
    error: Exception


_Event = _Opened | _Frame | _Failed


class _Reader(threading.Thread):
    """Opens the source once and reads it into a small queue until halted or it fails."""

    def __init__(self, cfg: Config, attempt: int) -> None:
        super().__init__(name=f"capture-reader-{cfg.camera}-{attempt}", daemon=True)
        self.cfg = cfg
        self.events: queue.Queue[_Event] = queue.Queue(maxsize=READER_QUEUE)
        self.started_at = time.monotonic()
        self._halt = threading.Event()

    def halt(self) -> None:
        self._halt.set()

    def _put(self, event: _Event) -> bool:
        while not self._halt.is_set():
            try:
                self.events.put(event, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def run(self) -> None:
        try:
            source = open_source(self.cfg.source.uri, self.cfg.source)
        except Exception as e:  # handed to the publisher thread, which decides
            self._put(_Failed(e))
            return
        try:
            if not self._put(_Opened(source.describe(), source.live)):
                return
            while not self._halt.is_set():
                image = source.read()
                if not self._put(_Frame(image, time.time_ns())):
                    return
        except Exception as e:  # handed to the publisher thread, which decides
            self._put(_Failed(e))
        finally:
            source.close()


class Capture:
    """Publishes frames of ``cfg.source.uri`` on ``cfg.bus.frames`` until stopped or the source ends."""

    def __init__(
        self, cfg: Config, stop: threading.Event | None = None, ctx: zbus.Context | None = None
    ) -> None:
        self.cfg = cfg
        self.stop = stop or threading.Event()
        self.stats = CaptureStats(source=redact_url(cfg.source.uri))
        self._ctx = ctx or zmq.Context.instance()
        self._backoff = Backoff(cfg.source.reconnect_initial_s, cfg.source.reconnect_max_s)
        self._seq = 0
        self._reader: _Reader | None = None
        self._abandoned: list[_Reader] = []
        self._opened_once = False
        self._live = False
        self._last_frame = time.monotonic()
        self._retry_at = 0.0
        self._fps_mark = (time.monotonic(), 0)
        self._ring: ShmRing | None = None
        self._shm = cfg.bus.frames_shm
        self._max_payload = int(cfg.bus.max_payload_mb * 2**20)

    # ----------------------------------------------------------------- main loop

    def run(self, max_frames: int | None = None) -> int:
        """Capture until stopped, ``max_frames`` frames, or the end of a finite source; returns 0."""
        sock = zbus.bind(
            self._ctx,
            zmq.PUB,
            self.cfg.bus.frames,
            self.cfg.bus,
            sndhwm=self.cfg.bus.sndhwm,
            curve=True,
        )
        log.debug(
            "capture %s: %s -> %s",
            self.cfg.camera,
            redact_url(self.cfg.source.uri),
            self.cfg.bus.frames,
        )
        try:
            return self._loop(sock, max_frames)
        finally:
            self.stats.state = "stopped"
            self._publish_status(sock, time.monotonic())
            self._shutdown_readers()
            sock.close(0)
            if self._ring is not None:
                self._ring.close()
            if self._opened_once:
                log.info("camera %s: stopped after %d frames", self.cfg.camera, self.stats.frames)

    def _loop(self, sock: zbus.Socket, max_frames: int | None) -> int:
        self._reader = self._start_reader()
        next_status = time.monotonic()
        while not self.stop.is_set():
            now = time.monotonic()
            if now >= next_status:
                self._publish_status(sock, now)
                next_status = now + STATUS_EVERY_S
            reader = self._reader
            if reader is None:  # waiting to reconnect
                if now < self._retry_at:
                    self.stop.wait(min(self._retry_at, next_status) - now)
                else:
                    self.stats.reconnect_attempts += 1
                    log.info(
                        "camera %s: %s %s (attempt %d)",
                        self.cfg.camera,
                        "reconnecting to" if self._opened_once else "trying",
                        redact_url(self.cfg.source.uri),
                        self._backoff.failures,
                    )
                    self._reader = self._start_reader()
                continue
            try:
                event = reader.events.get(timeout=max(0.0, min(0.1, next_status - now)))
            except queue.Empty:
                self._check_stall(now)
                continue
            if isinstance(event, _Frame):
                self._publish_frame(sock, event)
                if max_frames is not None and self.stats.frames >= max_frames:
                    return 0
            elif isinstance(event, _Opened):
                self._on_opened(event)
            elif self._on_failed(event.error):
                return 0
        return 0

    def _start_reader(self) -> _Reader:
        reader = _Reader(self.cfg, self.stats.reconnect_attempts)
        reader.start()
        self._last_frame = time.monotonic()
        return reader

    def _give_up_reader(self, reason: str) -> None:
        """Drop the current connection (its thread ends on its own) and schedule a retry."""
        if self._reader is not None:
            self._reader.halt()
            self._abandoned = [r for r in self._abandoned if r.is_alive()]
            self._abandoned.append(self._reader)
            self._reader = None
        delay = self._backoff.next()
        self._retry_at = time.monotonic() + delay
        self.stats.state = "reconnecting" if self._opened_once else "waiting"
        self.stats.last_error = reason
        log.warning(
            "camera %s: %s; %s %s in %.1fs",
            self.cfg.camera,
            reason,
            "reconnecting to" if self._opened_once else "waiting for the camera, trying",
            redact_url(self.cfg.source.uri),
            delay,
        )

    def _shutdown_readers(self) -> None:
        readers = [*self._abandoned, *([self._reader] if self._reader else [])]
        for r in readers:
            r.halt()
        deadline = time.monotonic() + 1.0
        for r in readers:
            r.join(max(0.0, deadline - time.monotonic()))
            if r.is_alive():
                log.debug("reader %s still blocked in a read; left to its timeout", r.name)
        self._reader = None

    # ----------------------------------------------------------------- events

    def _on_opened(self, event: _Opened) -> None:
        if self._opened_once:
            self.stats.reconnects += 1
            log.info("camera %s: reconnected to %s", self.cfg.camera, event.description)
        else:
            log.info(
                "camera %s: opened %s, publishing on %s",
                self.cfg.camera,
                event.description,
                self.cfg.bus.frames,
            )
        self._opened_once = True
        self._live = event.live
        self._last_frame = time.monotonic()
        self.stats.state = "streaming"
        self.stats.source = event.description

    def _on_failed(self, error: Exception) -> bool:
        """Handle a reader failure; True when capture should end normally."""
        if isinstance(error, EndOfStreamError):
            log.info("camera %s: %s", self.cfg.camera, error)
            return True
        if isinstance(error, SourceTooLargeError):
            self.stats.too_large += 1
            if not error.live:
                raise error  # a file or image that declares huge frames: one line at start
            # A camera or stream sending frames over source.max_pixels: refused undecoded,
            # counted, and tried again with backoff (its settings may change).
            self._give_up_reader(str(error))
            return False
        if not isinstance(error, SourceError):
            if not (self._opened_once and self._live):
                raise error  # a bug, not a source problem: let it surface
            # A live stream's bytes made the decoder fail in a way it does not name: the stream
            # is what is wrong, so drop the connection and open it again, as for a read error.
            self.stats.read_errors += 1
            if self.stats.read_errors <= 10 or self.stats.read_errors % 1000 == 0:
                log.error("camera %s: reading failed", self.cfg.camera, exc_info=error)
            self._give_up_reader(f"reading failed: {error.__class__.__name__}: {error}"[:200])
            return False
        if not self._opened_once and isinstance(error, SourceConnectionError):
            self._give_up_reader(str(error))  # not up yet: wait for it, as for a drop
            return False
        if not self._opened_once or not self._live:
            raise error  # cannot get better (bad URL, missing file) or a broken file: one line
        self.stats.read_errors += 1
        self._give_up_reader(str(error))
        return False

    def _check_stall(self, now: float) -> None:
        reader = self._reader
        src = self.cfg.source
        if reader is not None and not self._opened_once:
            # Backstop for an open that ignores its own timeout: keep waiting for the camera.
            if now - reader.started_at > src.open_timeout_s + src.stall_timeout_s:
                self._give_up_reader(
                    f"cannot open {redact_url(src.uri)}: no answer within {src.open_timeout_s:g}s"
                )
            return
        if reader is None or not self._live:
            return
        opening = self.stats.state != "streaming"
        limit = src.open_timeout_s + src.stall_timeout_s if opening else src.stall_timeout_s
        if now - self._last_frame > limit:
            self.stats.stalls += 1
            what = "opening" if opening else "no frame"
            self._give_up_reader(f"stall: {what} for {now - self._last_frame:.1f}s")

    # ----------------------------------------------------------------- publishing

    def _publish_frame(self, sock: zbus.Socket, event: _Frame) -> None:
        src = self.cfg.source
        if event.image.nbytes > self._max_payload:
            self._refuse_oversized(event.image)
            return
        msg = FrameMessage.from_image(
            self.cfg.camera,
            self._seq,
            event.image,
            t_capture_ns=event.t_capture_ns,
            encoding=src.encoding,
            jpeg_quality=src.jpeg_quality,
        )
        if self._shm and msg.encoding == "bgr8":
            msg = self._in_shm(msg)
        sock.send_multipart(msg.to_parts(), copy=False)
        self._seq += 1
        self.stats.frames += 1
        self._last_frame = time.monotonic()
        if self.stats.state != "streaming":
            self.stats.state = "streaming"
        self._backoff.reset()

    def _refuse_oversized(self, image: np.ndarray) -> None:
        """A frame no receiver takes: counted, its ``seq`` skipped (the source itself works)."""
        self._seq += 1
        self.stats.oversized += 1
        self._last_frame = time.monotonic()
        self._backoff.reset()
        h, w = image.shape[:2]
        self.stats.last_error = (
            f"frames of {w}x{h} ({image.nbytes / 2**20:.1f} MiB) are over "
            f"bus.max_payload_mb={self.cfg.bus.max_payload_mb:g}: not published"
        )
        if self.stats.oversized == 1 or self.stats.oversized % 1000 == 0:
            log.error(
                "camera %s: %s (%d so far); raise bus.max_payload_mb",
                self.cfg.camera,
                self.stats.last_error,
                self.stats.oversized,
            )

    def _in_shm(self, msg: FrameMessage) -> FrameMessage:
        """``msg`` written into the shared-memory ring, made (again) for this frame size; if the
        ring cannot be made, frames go inline from then on (logged once, shown in the status)."""
        nbytes = msg.width * msg.height * 3
        if self._ring is None or self._ring.slot_bytes != nbytes:
            if self._ring is not None:
                self._ring.close()
                self._ring = None
            try:
                self._ring = ShmRing(self.cfg.camera, nbytes, self.cfg.bus.shm_slots)
            except ShmError as e:
                log.warning("camera %s: %s; sending frames inline", self.cfg.camera, e)
                self._shm = False
                self.stats.payload = f"inline (shm failed: {e})"
                return msg
            log.info(
                "camera %s: frame payloads in shared memory %s (%d slots of %dx%d)",
                self.cfg.camera,
                self._ring.path,
                self._ring.slots,
                msg.width,
                msg.height,
            )
            self.stats.payload = "shm"
        return msg.to_shm(self._ring)

    def _publish_status(self, sock: zbus.Socket, now: float) -> None:
        t0, n0 = self._fps_mark
        if now - t0 >= 0.5:
            self.stats.fps = round((self.stats.frames - n0) / (now - t0), 2)
            self._fps_mark = (now, self.stats.frames)
        header = {
            "v": SCHEMA_VERSION,
            "camera": self.cfg.camera,
            "t_ns": time.time_ns(),
            "stats": self.stats.as_dict(),
        }
        sock.send_multipart(
            [
                f"capture.{self.cfg.camera}".encode(),
                json.dumps(header, separators=(",", ":")).encode(),
            ]
        )


def main(cfg: Config, args: argparse.Namespace) -> int:
    """``promptcam capture``: run until SIGINT/SIGTERM, ``--max-frames`` or the end of a file."""
    setproctitle.setproctitle("promptcam: capture")
    max_frames: int | None = getattr(args, "max_frames", None)
    if max_frames is not None and max_frames < 1:
        raise PromptcamError(f"--max-frames must be at least 1, got {max_frames}")
    cfg.check_frame_size()
    stop = threading.Event()
    death = ThreadDeath(stop).install()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("capture: %s, stopping", signal.Signals(signum).name)
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        return death.exit_code(Capture(cfg, stop).run(max_frames=max_frames))
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
