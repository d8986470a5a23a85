"""The web process's figures: Prometheus metrics in their own registry, and rate meters."""

from __future__ import annotations

import time
from collections import deque

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


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


class Metrics:
    """The web process's Prometheus metrics, in their own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.viewers = Gauge("promptcam_web_viewers", "Connected WebRTC viewers.", registry=r)
        self.frames_sent = Counter(
            "promptcam_web_frames_sent", "Encoded video frames handed to viewers.", registry=r
        )
        self.frames_encoded = Counter(
            "promptcam_web_frames_encoded",
            "Video frames encoded (one shared encoder per camera, whatever the viewers).",
            registry=r,
        )
        self.keyframes = Counter(
            "promptcam_web_keyframes_encoded", "Keyframes among the encoded frames.", registry=r
        )
        self.packets_dropped = Counter(
            "promptcam_web_viewer_packets_dropped",
            "Encoded frames a viewer skipped (fell behind or joined: waits for a keyframe).",
            registry=r,
        )
        self.annotated = Counter(
            "promptcam_web_annotated_frames_received",
            "Annotated frames received from the engine.",
            registry=r,
        )
        self.tracks = Counter(
            "promptcam_web_tracks_received", "Tracks messages received from the engine.", registry=r
        )
        self.rejected = Counter(
            "promptcam_web_rejected_messages",
            "Malformed messages from the engine.",
            ["reason"],
            registry=r,
        )
        self.request_errors = Counter(
            "promptcam_web_request_errors",
            "HTTP requests answered with an error.",
            ["status"],
            registry=r,
        )
        self.limited = Counter(
            "promptcam_web_limited",
            "Clients held to a limit: viewers refused (web.max_viewers) or closed before they "
            "connected (web.connect_timeout_s), connections refused or evicted "
            "(web.max_connections), request bodies timed out, uploads aborted by the client.",
            ["what"],
            registry=r,
        )
        self.latency = Histogram(
            "promptcam_web_frame_latency_seconds",
            "Capture to encoded frame handed to a viewer's sender.",
            buckets=(0.01, 0.02, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0),
            registry=r,
        )
        self.frames_sent_n = 0
        self.frames_encoded_n = 0
        self.annotated_n = 0
        self.tracks_n = 0
        self.latencies: deque[float] = deque(maxlen=300)
        self.limited_n: dict[str, int] = {}

    def limit(self, what: str) -> None:
        """Count one client held to a limit (``what``: viewers_refused, viewers_timed_out,
        connections_refused, connections_evicted, body_timeouts, uploads_aborted)."""
        self.limited.labels(what).inc()
        self.limited_n[what] = self.limited_n.get(what, 0) + 1
