"""``promptcam foxglove``: every camera on the bus, live in Foxglove (a Foxglove WebSocket).

Subscribes ``tracks.*`` (``bus.tracks``) and ``annotated.*`` (``bus.annotated``) and serves
``foxglove-sdk``'s WebSocket server (protocol ``foxglove.websocket.v1``) on ``foxglove.host``:
``foxglove.port`` (loopback, 8765 by default) with three channels per camera, the Foxglove
mapping (``clients.robots.foxglove_map``): ``/promptcam/<camera>/image``
(``foxglove.CompressedImage``, the annotated JPEG as it came), ``/detections``
(``foxglove.ImageAnnotations``) and ``/masks`` (``foxglove.RawImage`` label image), each message
logged at its capture time. A configured camera's channels exist from the start; a camera that
appears on the bus gets its channels (advertised to connected clients) with its first message,
up to ``foxglove.max_cameras``. A tracks message is mapped only while a client subscribes to
its detections or masks channel, a frame sent only while one subscribes to its image channel.
Each client has a queue of ``foxglove.backlog`` messages; a slow client loses its oldest ones.

Off loopback: foxglove-sdk's server cannot check a token (no hook sees a connection before it
is accepted), so a non-loopback ``foxglove.host`` is refused unless
``foxglove.allow_unauthenticated`` is set (``clients.robots.foxglove_config``). Bad messages
are logged (the first 10) and counted, never published; SIGINT/SIGTERM stop it cleanly.
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
import time
from dataclasses import dataclass, field
from enum import Enum
from types import FrameType

import foxglove
import zmq
from foxglove.channels import CompressedImageChannel, ImageAnnotationsChannel, RawImageChannel
from foxglove.websocket import WebSocketServer

from clients.jsontypes import ZmqContext
from clients.robots import foxglove_map as fm
from stream import bus as zbus
from stream.config import Config
from stream.errors import PromptcamError
from stream.wire import AnnotatedMessage, TracksMessage, WireError

log = logging.getLogger(__name__)
READY_LINE = "promptcam foxglove: serving"  # the launcher's readiness mark (clients/launcher.py)

MAX_LOGGED_REJECTIONS = 10


class FoxgloveError(PromptcamError):
    """The server cannot start (its port is taken, a bad address); one line."""


class ServerState(Enum):
    NEW = "new"
    SERVING = "serving"
    STOPPED = "stopped"


@dataclass
class BridgeStats:
    tracks: int = 0  # tracks messages received
    frames: int = 0  # annotated frames received
    published: dict[str, int] = field(default_factory=lambda: dict.fromkeys(fm.KINDS, 0))
    unwatched: int = 0  # messages no client subscribed to: not mapped, not sent
    rejected: dict[str, int] = field(default_factory=dict)


@dataclass
class _Channels:
    image: CompressedImageChannel
    annotations: ImageAnnotationsChannel
    mask: RawImageChannel

    def close(self) -> None:
        for ch in (self.image, self.annotations, self.mask):
            ch.close()


class FoxgloveBridge:
    """The bus to a Foxglove WebSocket server: ``start``, then ``run`` until ``stop`` is set."""

    def __init__(self, cfg: Config, ctx: ZmqContext | None = None) -> None:
        self.cfg = cfg
        self.stop = threading.Event()
        self.stats = BridgeStats()
        self.state = ServerState.NEW
        self._fctx = foxglove.Context()
        self._server: WebSocketServer | None = None
        self._cameras: dict[str, _Channels] = {}
        self._zctx = ctx or zmq.Context.instance()
        self._max_payload = int(cfg.bus.max_payload_mb * 2**20)

    @property
    def port(self) -> int:
        assert self._server is not None, "not started"
        return self._server.port

    def start(self) -> int:
        """Serve the WebSocket with every configured camera's channels; returns the port."""
        fc = self.cfg.foxglove
        try:
            self._server = foxglove.start_server(
                name="promptcam",
                host=fc.host,
                port=fc.port,
                context=self._fctx,
                message_backlog_size=fc.backlog,
            )
        except Exception as e:  # the SDK raises RuntimeError-like errors from Rust
            raise FoxgloveError(f"cannot serve on {fc.host}:{fc.port}: {e}") from None
        for camera in self.cfg.camera_settings():
            self._channels(camera)
        self.state = ServerState.SERVING
        return self._server.port

    def _channels(self, camera: str) -> _Channels | None:
        ch = self._cameras.get(camera)
        if ch is None:
            if len(self._cameras) >= self.cfg.foxglove.max_cameras:
                self._reject(
                    "too_many_cameras",
                    f"camera {camera!r} beyond foxglove.max_cameras="
                    f"{self.cfg.foxglove.max_cameras}: not published",
                )
                return None
            ch = _Channels(
                CompressedImageChannel(fm.topic(camera, fm.IMAGE), context=self._fctx),
                ImageAnnotationsChannel(fm.topic(camera, fm.DETECTIONS), context=self._fctx),
                RawImageChannel(fm.topic(camera, fm.MASKS), context=self._fctx),
            )
            self._cameras[camera] = ch
            log.info("camera %s: channels %s", camera, fm.topic(camera, "{image,detections,masks}"))
        return ch

    def _reject(self, reason: str, detail: str) -> None:
        rej = self.stats.rejected
        rej[reason] = rej.get(reason, 0) + 1
        if sum(rej.values()) <= MAX_LOGGED_REJECTIONS:
            log.warning("rejected message (%s): %s", reason, detail)

    def publish_tracks(self, msg: TracksMessage) -> None:
        """Map and log a tracks message (``WireError`` for one with no Foxglove form)."""
        self.stats.tracks += 1
        ch = self._channels(msg.camera)
        if ch is None:
            return
        if not (ch.annotations.has_sinks() or ch.mask.has_sinks()):
            self.stats.unwatched += 1
            return
        mapped = fm.map_tracks(msg)
        t = msg.header.t_capture_ns
        ch.annotations.log(mapped.annotations, log_time=t)
        ch.mask.log(mapped.mask, log_time=t)
        self.stats.published[fm.DETECTIONS] += 1
        self.stats.published[fm.MASKS] += 1

    def publish_frame(self, msg: AnnotatedMessage) -> None:
        """Log an annotated JPEG as it came (``WireError`` for a stamp with no Foxglove form)."""
        self.stats.frames += 1
        ch = self._channels(msg.camera)
        if ch is None:
            return
        if not ch.image.has_sinks():
            self.stats.unwatched += 1
            return
        ch.image.log(
            fm.compressed_image(msg.camera, msg.t_capture_ns, msg.jpeg), log_time=msg.t_capture_ns
        )
        self.stats.published[fm.IMAGE] += 1

    def run(self, duration: float | None = None) -> BridgeStats:
        """Subscribe and publish until ``stop`` is set (or ``duration`` seconds passed)."""
        deadline = None if duration is None else time.monotonic() + duration
        bus = self.cfg.bus
        ann = zbus.connect(
            self._zctx,
            zmq.SUB,
            bus.annotated,
            bus,
            subscribe=[b"annotated."],
            rcvhwm=50,
            maxmsgsize=self._max_payload + 2**16,
            curve=True,
        )
        trk = zbus.connect(
            self._zctx, zmq.SUB, bus.tracks, bus, subscribe=[b"tracks."], rcvhwm=1000, curve=True
        )
        poller = zmq.Poller()
        poller.register(ann, zmq.POLLIN)
        poller.register(trk, zmq.POLLIN)
        try:
            while not self.stop.is_set() and (deadline is None or time.monotonic() < deadline):
                for sock, _ in poller.poll(100):
                    parts = sock.recv_multipart(copy=True)
                    try:
                        if sock is ann:
                            self.publish_frame(
                                AnnotatedMessage.from_parts(parts, self._max_payload)
                            )
                        else:
                            self.publish_tracks(TracksMessage.from_parts(parts))
                    except WireError as e:
                        self._reject(e.reason, str(e))
        finally:
            ann.close(0)
            trk.close(0)
        return self.stats

    def close(self) -> None:
        """Stop serving (idempotent): clients are disconnected, channels closed."""
        if self.state is ServerState.STOPPED:
            return
        self.state = ServerState.STOPPED
        if self._server is not None:
            self._server.stop()
        for ch in self._cameras.values():
            ch.close()


def url_of(host: str, port: int) -> str:
    return f"ws://[{host}]:{port}" if ":" in host else f"ws://{host}:{port}"


def main(cfg: Config, args: argparse.Namespace) -> int:
    """``promptcam foxglove [--host H] [--port P] [--allow-unauthenticated]``."""
    from setproctitle import setproctitle

    setproctitle("promptcam: foxglove")
    bridge = FoxgloveBridge(cfg)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("signal %d: stopping the Foxglove server", signum)
        bridge.stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    port = bridge.start()
    try:
        print(
            f"{READY_LINE} {url_of(cfg.foxglove.host, port)} (Foxglove: Open "
            f"connection > Foxglove WebSocket); cameras: {', '.join(cfg.camera_settings())}",
            flush=True,
        )
        stats = bridge.run(getattr(args, "duration", None))
    finally:
        bridge.close()
    rejected = ""
    if stats.rejected:
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(stats.rejected.items()))
        rejected = f"; rejected {sum(stats.rejected.values())} messages ({reasons})"
    sent = ", ".join(f"{k} {v}" for k, v in stats.published.items())
    print(
        f"promptcam foxglove: {stats.tracks} tracks messages, {stats.frames} frames received; "
        f"published {sent}{rejected}",
        flush=True,
    )
    return 0
