"""The camera feeds of the engine process: one latest-frame receiver per camera, and its rates.

Each feed hands the frame loop only the newest frame of its camera (a slow engine skips frames,
counted by the receiver); any receiver's new frame wakes the loop through one shared event.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from enum import Enum

import zmq

from engine.pipeline import FrameInput
from engine.state import ManualObject
from stream.config import BusConfig
from stream.errors import RequestError
from stream.receiver import LatestFrameReceiver
from stream.wire import WireError, now_ns

log = logging.getLogger(__name__)
STALLED_AFTER_S = 5.0  # a camera with no frame for this long is reported "stalled"
FRAME_WAIT_S = 0.05  # how long the loop waits for a first new frame before it looks round


class FeedState(str, Enum):
    """A camera feed as ``stats`` and ``cameras`` report it."""

    WAITING = "waiting"  # no frame yet
    LIVE = "live"
    STALLED = "stalled"  # no frame for STALLED_AFTER_S


class RateMeter:
    """Events per second over a sliding window."""

    def __init__(self, window_s: float = 5.0) -> None:
        self._t: deque[float] = deque()
        self._window = window_s

    def tick(self) -> None:
        now = time.monotonic()
        self._t.append(now)
        while self._t and now - self._t[0] > self._window:
            self._t.popleft()

    def rate(self) -> float:
        now = time.monotonic()
        while self._t and now - self._t[0] > self._window:
            self._t.popleft()
        if len(self._t) < 2:
            return 0.0
        return (len(self._t) - 1) / max(1e-6, self._t[-1] - self._t[0])


@dataclass
class CameraFeed:
    """One camera of the engine process: where its frames come from, and its rates."""

    name: str
    frames: str  # endpoint
    receiver: LatestFrameReceiver
    fps_in: RateMeter = field(default_factory=RateMeter)
    fps_out: RateMeter = field(default_factory=RateMeter)
    latency_ms: dict[str, float] = field(default_factory=dict)
    last_frame_at: float | None = None  # time.monotonic() of the last frame taken
    published: int = 0
    undecodable: int = 0  # frames whose JPEG could not be decoded (counted as rejected)
    to_restore: Sequence[ManualObject] = ()  # manual objects to re-seed on the first frame

    def state(self) -> FeedState:
        if self.last_frame_at is None:
            return FeedState.WAITING
        stalled = time.monotonic() - self.last_frame_at > STALLED_AFTER_S
        return FeedState.STALLED if stalled else FeedState.LIVE

    def take(self) -> FrameInput | None:
        """The newest new frame (decoded), if any; an undecodable one is counted and dropped."""
        msg = self.receiver.get(timeout=0)
        if msg is None:
            return None
        self.fps_in.tick()
        self.last_frame_at = time.monotonic()
        self.latency_ms["capture_to_engine_ms"] = (now_ns() - msg.t_capture_ns) / 1e6
        try:
            image = msg.image()
        except WireError as e:
            self.undecodable += 1
            if self.undecodable <= 10 or self.undecodable % 1000 == 0:
                log.warning("camera %s: dropping undecodable frame %d: %s", self.name, msg.seq, e)
            return None
        return FrameInput(msg.seq, msg.t_capture_ns, image)


class CameraFeeds:
    """Every camera the engine process serves, by name, in the order they were added."""

    def __init__(self, bus: BusConfig, ctx: zmq.Context[zmq.Socket[bytes]]) -> None:
        self._bus = bus
        self._ctx = ctx
        self._feeds: dict[str, CameraFeed] = {}
        self.frame_ready = threading.Event()  # set by any camera's receiver on a new frame

    def open(self, name: str, frames: str) -> CameraFeed:
        """A new feed for camera ``name`` from ``frames`` (not started, not served yet)."""
        b = self._bus
        receiver = LatestFrameReceiver(
            frames,
            name,
            b.staleness_ms,
            int(b.max_payload_mb * 2**20),
            b,
            self._ctx,
            notify=self.frame_ready,
        )
        return CameraFeed(name, frames, receiver)

    def add(self, feed: CameraFeed) -> None:
        self._feeds[feed.name] = feed

    def pop(self, name: str) -> CameraFeed:
        return self._feeds.pop(name)

    def get(self, name: str) -> CameraFeed | None:
        return self._feeds.get(name)

    def __getitem__(self, name: str) -> CameraFeed:
        return self._feeds[name]

    def __contains__(self, name: object) -> bool:
        return name in self._feeds

    def __iter__(self) -> Iterator[CameraFeed]:
        return iter(list(self._feeds.values()))

    def __len__(self) -> int:
        return len(self._feeds)

    @property
    def names(self) -> list[str]:
        return list(self._feeds)

    def known(self) -> str:
        """The served cameras for an error message."""
        return ", ".join(self._feeds) or "none"

    def require(self, name: str) -> None:
        """Refuse a camera the engine does not serve, naming those it does (CONTRACT v1.1)."""
        if name not in self._feeds:
            raise RequestError(f"unknown camera {name!r} (cameras: {self.known()})")

    def newest(self) -> dict[str, FrameInput]:
        """The newest new frame of every camera that has one (decoded); waits up to
        ``FRAME_WAIT_S`` for the first."""
        if not self.frame_ready.wait(FRAME_WAIT_S):
            return {}
        self.frame_ready.clear()
        frames: dict[str, FrameInput] = {}
        for feed in self:
            frame = feed.take()
            if frame is not None:
                frames[feed.name] = frame
        return frames

    def start(self) -> None:
        for feed in self:
            feed.receiver.start()

    def close(self) -> None:
        for feed in self:
            feed.receiver.close()
