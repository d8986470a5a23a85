"""Every camera the web server shows, as a ``CameraChannel``: its annotated and tracks feeds,
its frame history (snapshots), its one shared video encoder with its viewers, its banner and
its figures.

``CameraChannels`` holds them by name and follows the camera list (``sync``, in the event
loop): a camera that appears gets a channel (subscribed on the two shared feed sockets; its
encoder runs only while someone watches it), one that goes away is closed (its viewers' peer
connections closed, its subscriptions and metrics series dropped).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field

from aiortc import RTCPeerConnection

from clients.web.camera_state import CameraMonitor, SiteMonitor
from clients.web.feeds import LatestFeed, TopicFeed
from clients.web.metrics import CameraFigures, Metrics, RateMeter
from clients.web.snapshots import FrameHistory
from clients.web.video import VideoHub
from stream.wire import AnnotatedMessage, TracksMessage

log = logging.getLogger(__name__)


@dataclass
class CameraCounts:
    """A camera's running counts in the web process (the rates and ``/api/stats`` read them)."""

    annotated: int = 0
    tracks: int = 0
    frames_sent: int = 0
    latencies: deque[float] = field(default_factory=lambda: deque(maxlen=300))


@dataclass
class CameraChannel:
    """What the web server serves for one camera."""

    name: str
    annotated: LatestFeed[AnnotatedMessage]
    tracks: LatestFeed[TracksMessage]
    history: FrameHistory
    hub: VideoHub
    monitor: CameraMonitor
    counts: CameraCounts
    pcs: set[RTCPeerConnection] = field(default_factory=set)
    rate_in: RateMeter = field(default_factory=RateMeter)
    rate_out: RateMeter = field(default_factory=RateMeter)
    rate_tracks: RateMeter = field(default_factory=RateMeter)
    closed: bool = False

    def figures(self) -> CameraFigures:
        """The camera's ``promptcam_camera_*`` figures now."""
        status = self.monitor.status()
        engine = self.monitor.camera_stats(self.monitor.engine_stats(max_age_s=5.0))
        capture, capture_age = self.monitor.capture()
        if capture_age is None or capture_age > 5.0:
            capture = None

        def num(d: dict[str, object] | None, key: str) -> float | None:
            v = (d or {}).get(key)
            return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None

        objects, dropped, reconnects = (
            num(engine, "objects"),
            num(engine, "frames_dropped"),
            num(capture, "reconnects"),
        )
        return CameraFigures(
            camera=self.name,
            state=status.state,
            frame_age_s=status.frame_age_s,
            engine_fps_in=num(engine, "fps_in"),
            engine_fps_out=num(engine, "fps_out"),
            objects=None if objects is None else int(objects),
            engine_frames_dropped=None if dropped is None else int(dropped),
            capture_fps=num(capture, "fps"),
            capture_reconnects=None if reconnects is None else int(reconnects),
        )


class CameraChannels:
    """The cameras served, by name, in display order."""

    def __init__(
        self,
        metrics: Metrics,
        annotated: TopicFeed[AnnotatedMessage],
        tracks: TopicFeed[TracksMessage],
        site: SiteMonitor,
        video_fps: float,
    ) -> None:
        self._metrics = metrics
        self._annotated = annotated
        self._tracks = tracks
        self._site = site
        self._video_fps = video_fps
        self._lock = threading.Lock()  # the feed threads look channels up
        self._channels: dict[str, CameraChannel] = {}
        self._closing: set[asyncio.Task[None]] = set()  # peer connections being closed

    # ------------------------------------------------------------------ lookup

    def get(self, name: str) -> CameraChannel | None:
        with self._lock:
            return self._channels.get(name)

    def names(self) -> list[str]:
        with self._lock:
            return list(self._channels)

    def __iter__(self) -> Iterator[CameraChannel]:
        with self._lock:
            return iter(list(self._channels.values()))

    def __len__(self) -> int:
        with self._lock:
            return len(self._channels)

    def only(self) -> CameraChannel | None:
        """The one camera, when exactly one is served."""
        with self._lock:
            return next(iter(self._channels.values())) if len(self._channels) == 1 else None

    def viewers(self) -> int:
        return sum(len(ch.pcs) for ch in self)

    def figures(self) -> list[CameraFigures]:
        """Every camera's ``promptcam_camera_*`` figures (at a scrape)."""
        return [ch.figures() for ch in self]

    # ------------------------------------------------------------------ feed callbacks

    def on_annotated(self, camera: str, msg: AnnotatedMessage) -> None:
        with self._lock:
            ch = self._channels.get(camera)
            if ch is None:
                return
            ch.counts.annotated += 1
            self._metrics.annotated.labels(camera).inc()
        ch.history.add_frame(msg)

    def on_tracks(self, camera: str, msg: TracksMessage) -> None:
        with self._lock:
            ch = self._channels.get(camera)
            if ch is None:
                return
            ch.counts.tracks += 1
            self._metrics.tracks.labels(camera).inc()
        ch.history.add_tracks(msg)

    # ------------------------------------------------------------------ following the list

    def _make(self, name: str) -> CameraChannel:
        m = self._metrics
        counts = CameraCounts()
        annotated = self._annotated.add(name)
        tracks = self._tracks.add(name)

        def on_sent(latency_s: float | None) -> None:
            counts.frames_sent += 1
            m.frames_sent.labels(name).inc()
            if latency_s is not None:
                m.latency.labels(name).observe(latency_s)
                counts.latencies.append(latency_s)

        def on_encoded(keyframe: bool) -> None:
            m.frames_encoded.labels(name).inc()
            if keyframe:
                m.keyframes.labels(name).inc()

        def on_dropped(n: int) -> None:
            m.packets_dropped.labels(name).inc(n)

        monitor = CameraMonitor(self._site, name, annotated, tracks)
        hub = VideoHub(
            annotated,
            self._video_fps,
            on_sent,
            on_encoded,
            on_dropped,
            placeholder_text=lambda: monitor.status().waiting_for,
        )
        m.viewers.labels(name).set(0)
        return CameraChannel(name, annotated, tracks, FrameHistory(), hub, monitor, counts)

    def sync(self, names: list[str]) -> tuple[list[str], list[str]]:
        """Serve exactly ``names`` (in that order): (added, removed). In the event loop."""
        wanted = list(dict.fromkeys(names))
        with self._lock:
            current = dict(self._channels)
        removed = [n for n in current if n not in wanted]
        added = [n for n in wanted if n not in current]
        for name in removed:
            self.close_channel(name)
        made = {name: self._make(name) for name in added}
        with self._lock:
            self._channels = {n: self._channels.get(n) or made[n] for n in wanted}
        if added or removed:
            log.info("cameras: %s (added %s, removed %s)", wanted, added or "-", removed or "-")
        return added, removed

    def close_channel(self, name: str) -> None:
        """Stop serving ``name``: its viewers are closed, its feeds and series dropped."""
        with self._lock:
            ch = self._channels.pop(name, None)
            if ch is None:
                return
            ch.closed = True
            self._metrics.forget(name)
        self._annotated.remove(name)
        self._tracks.remove(name)
        ch.hub.close()
        loop = asyncio.get_running_loop()
        for pc in list(ch.pcs):
            task = loop.create_task(pc.close())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)
        ch.pcs.clear()

    async def close(self) -> None:
        """Every channel's viewers and encoder (the server stops)."""
        for ch in self:
            for pc in list(ch.pcs):
                await pc.close()
            ch.pcs.clear()
            ch.hub.close()
