"""The web process's figures: Prometheus metrics in their own registry, and rate meters.

Every per-camera series carries a ``camera`` label (CONTRACT v1.1): the web's own (viewers,
frames encoded and sent, latency, messages received) and, read at scrape time from what the
web observes, each camera's state, engine and capture figures (``promptcam_camera_*``). A
camera that goes away takes its series with it (``Metrics.forget``).
"""

from __future__ import annotations

import contextlib
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

CAMERA_STATES = ("starting", "live", "reconnecting", "waiting", "engine_restarting", "stopped")


class RateMeter:
    """Events per second over the last few seconds, from a monotonically growing count."""

    def __init__(self, window_s: float = 3.0) -> None:
        self._window = window_s
        self._samples: deque[tuple[float, int]] = deque(maxlen=64)

    def rate(self, count: int) -> float:
        now = time.monotonic()
        if not self._samples or now - self._samples[-1][0] >= 0.25:
            self._samples.append((now, count))
        while len(self._samples) > 2 and now - self._samples[1][0] >= self._window:
            self._samples.popleft()
        t0, c0 = self._samples[0]
        return (count - c0) / (now - t0) if now - t0 > 0.2 else 0.0


@dataclass(frozen=True)
class CameraFigures:
    """One camera's figures as the web sees them at a scrape (None: not known)."""

    camera: str
    state: str
    frame_age_s: float | None
    engine_fps_in: float | None
    engine_fps_out: float | None
    objects: int | None
    engine_frames_dropped: int | None
    capture_fps: float | None
    capture_reconnects: int | None


class CameraFiguresCollector(Collector):
    """``promptcam_camera_*`` series, from ``figures()`` at every scrape."""

    def __init__(self, figures: Callable[[], Sequence[CameraFigures]]) -> None:
        self._figures = figures

    def describe(self) -> list[Metric]:
        return []  # names are fixed; no collect() at registration

    def collect(self) -> Iterator[Metric]:
        figs = list(self._figures())
        state = GaugeMetricFamily(
            "promptcam_camera_state",
            "The camera's banner state (1 for the current one).",
            labels=["camera", "state"],
        )
        gauges = {
            "frame_age_s": GaugeMetricFamily(
                "promptcam_camera_frame_age_seconds",
                "Age of the camera's newest annotated frame.",
                labels=["camera"],
            ),
            "engine_fps_in": GaugeMetricFamily(
                "promptcam_camera_engine_fps_in",
                "Frames per second the engine takes of the camera.",
                labels=["camera"],
            ),
            "engine_fps_out": GaugeMetricFamily(
                "promptcam_camera_engine_fps_out",
                "Frames per second the engine publishes for the camera.",
                labels=["camera"],
            ),
            "objects": GaugeMetricFamily(
                "promptcam_camera_objects", "Objects tracked on the camera.", labels=["camera"]
            ),
            "capture_fps": GaugeMetricFamily(
                "promptcam_camera_capture_fps",
                "Frames per second the camera's capture publishes.",
                labels=["camera"],
            ),
        }
        counters = {
            "engine_frames_dropped": CounterMetricFamily(
                "promptcam_camera_engine_frames_dropped",
                "Frames of the camera the engine skipped (newer ones came), found stale or overrun.",
                labels=["camera"],
            ),
            "capture_reconnects": CounterMetricFamily(
                "promptcam_camera_capture_reconnects",
                "Reconnections of the camera's capture to its source.",
                labels=["camera"],
            ),
        }
        for f in figs:
            for s in CAMERA_STATES:
                state.add_metric([f.camera, s], 1.0 if f.state == s else 0.0)
            for key, family in gauges.items():
                value = getattr(f, key)
                if value is not None:
                    family.add_metric([f.camera], float(value))
            for key, cfamily in counters.items():
                value = getattr(f, key)
                if value is not None:
                    cfamily.add_metric([f.camera], float(value))
        yield state
        yield from gauges.values()
        yield from counters.values()


_CAM = ("camera",)
LIMITED_DOC = (
    "Clients held to a limit: viewers refused (web.max_viewers) or closed before they "
    "connected (web.connect_timeout_s), connections refused or evicted "
    "(web.max_connections), request bodies timed out, uploads aborted by the client."
)
LATENCY_BUCKETS_S = (0.01, 0.02, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0)


def _counter(
    registry: CollectorRegistry, name: str, documentation: str, label: str = "camera"
) -> Counter:
    """A counter with one label (by default ``camera``), in ``registry``."""
    return Counter(name, documentation, (label,), registry=registry)


class Metrics:
    """The web process's Prometheus metrics, in their own registry."""

    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.viewers = Gauge(
            "promptcam_web_viewers", "Connected WebRTC viewers of the camera.", _CAM, registry=r
        )
        self.frames_sent = _counter(
            r, "promptcam_web_frames_sent", "Encoded video frames handed to viewers."
        )
        self.frames_encoded = _counter(
            r,
            "promptcam_web_frames_encoded",
            "Video frames encoded (one shared encoder per camera, whatever the viewers).",
        )
        self.keyframes = _counter(
            r, "promptcam_web_keyframes_encoded", "Keyframes among the encoded frames."
        )
        self.packets_dropped = _counter(
            r,
            "promptcam_web_viewer_packets_dropped",
            "Encoded frames a viewer skipped (fell behind or joined: waits for a keyframe).",
        )
        self.annotated = _counter(
            r,
            "promptcam_web_annotated_frames_received",
            "Annotated frames received from the engine.",
        )
        self.tracks = _counter(
            r, "promptcam_web_tracks_received", "Tracks messages received from the engine."
        )
        self.latency = Histogram(
            "promptcam_web_frame_latency_seconds",
            "Capture to encoded frame handed to a viewer's sender.",
            _CAM,
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.per_camera: tuple[Gauge | Counter | Histogram, ...] = (
            self.viewers,
            self.frames_sent,
            self.frames_encoded,
            self.keyframes,
            self.packets_dropped,
            self.annotated,
            self.tracks,
            self.latency,
        )
        self.rejected = _counter(
            r, "promptcam_web_rejected_messages", "Malformed messages from the engine.", "reason"
        )
        self.request_errors = _counter(
            r, "promptcam_web_request_errors", "HTTP requests answered with an error.", "status"
        )
        self.limited = _counter(r, "promptcam_web_limited", LIMITED_DOC, "what")
        self.limited_n: dict[str, int] = {}

    def add_camera_figures(self, figures: Callable[[], Sequence[CameraFigures]]) -> None:
        """Expose ``promptcam_camera_*`` from ``figures()`` at every scrape."""
        self.registry.register(CameraFiguresCollector(figures))

    def forget(self, camera: str) -> None:
        """Drop every series of ``camera`` (it is no longer served)."""
        for metric in self.per_camera:
            with contextlib.suppress(KeyError):  # that series was never created
                metric.remove(camera)

    def limit(self, what: str) -> None:
        """Count one client held to a limit (``what``: viewers_refused, viewers_timed_out,
        connections_refused, connections_evicted, body_timeouts, uploads_aborted)."""
        self.limited.labels(what).inc()
        self.limited_n[what] = self.limited_n.get(what, 0) + 1
