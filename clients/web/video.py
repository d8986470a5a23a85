"""The live video: one source track per camera, shared by every viewer.

``AnnotatedVideoTrack.recv()`` returns the NEWEST annotated frame, paced at ``fps``: it never
queues, it skips every frame that arrived in between (counted as ``skipped``), and while no new
frame arrives it repeats the last one once a second (a placeholder before the first), so a
browser's video starts at once. JPEG decoding runs in the default executor, off the event loop.
Frames leave it as YUV 4:2:0 (converted once per camera, not per viewer). It only reads while
someone is watching.

``VideoHub`` fans the source out through ``MediaRelay`` with ``buffered=False``: every viewer
gets the newest frame when its encoder is ready for one, so a viewer that leaves or stalls holds
no queue and slows nobody. Each viewer is wrapped in ``ViewerTrack``, which counts frames and
observes capture → sent latency.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from fractions import Fraction

import av
import cv2
import numpy as np
from aiortc import MediaStreamTrack
from aiortc.contrib.media import MediaRelay
from aiortc.mediastreams import MediaStreamError

from clients.web.feeds import LatestFeed
from stream.wire import AnnotatedMessage, decode_jpeg

log = logging.getLogger(__name__)

VIDEO_CLOCK = 90_000
KEEPALIVE_S = 1.0


def placeholder(
    width: int = 640, height: int = 360, text: str = "waiting for the engine..."
) -> np.ndarray:
    img = np.zeros((height, width, 3), np.uint8)
    cv2.putText(
        img, text, (20, height // 2), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (200, 200, 200), 2, cv2.LINE_AA
    )
    return img


def bgr_to_i420(image: np.ndarray) -> np.ndarray:
    """BGR → planar YUV 4:2:0 (what the encoders take), cropped to even width and height."""
    h, w = image.shape[:2]
    return cv2.cvtColor(image[: h - h % 2, : w - w % 2], cv2.COLOR_BGR2YUV_I420)


def jpeg_to_i420(jpeg: bytes) -> np.ndarray:
    return bgr_to_i420(decode_jpeg(jpeg))


class AnnotatedVideoTrack(MediaStreamTrack):
    """Source track: the newest annotated frame of one camera, at most ``fps`` per second."""

    kind = "video"

    def __init__(self, feed: LatestFeed[AnnotatedMessage], fps: float) -> None:
        super().__init__()
        self._feed = feed
        self._period = 1.0 / fps
        self._t0 = time.monotonic()
        self._next_at = 0.0
        self._version = 0
        self._last: tuple[np.ndarray, int] | None = None  # (image, t_capture_ns)
        self._watched = asyncio.Event()
        self.t_capture_by_pts: OrderedDict[int, int] = OrderedDict()  # bounded: last 256
        self.produced = 0
        self.skipped = 0
        self.repeated = 0

    def set_watched(self, watched: bool) -> None:
        if watched:
            self._watched.set()
        else:
            self._watched.clear()

    async def recv(self) -> av.VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        await self._watched.wait()
        now = time.monotonic()
        if self._next_at > now:
            await asyncio.sleep(self._next_at - now)
        self._next_at = max(self._next_at + self._period, time.monotonic())
        msg, version = await self._feed.wait_newer(self._version, KEEPALIVE_S)
        if msg is not None:
            self.skipped += max(0, version - self._version - 1) if self._version else 0
            self._version = version
            jpeg = bytes(msg.jpeg)
            i420 = await asyncio.get_running_loop().run_in_executor(None, jpeg_to_i420, jpeg)
            self._last = (i420, msg.t_capture_ns)
        elif self._last is not None:
            self.repeated += 1
        else:
            self._last = (bgr_to_i420(placeholder()), 0)
        i420, t_capture_ns = self._last
        frame = av.VideoFrame.from_ndarray(i420, format="yuv420p")
        frame.pts = int((time.monotonic() - self._t0) * VIDEO_CLOCK)
        frame.time_base = Fraction(1, VIDEO_CLOCK)
        if t_capture_ns and msg is not None:
            self.t_capture_by_pts[frame.pts] = t_capture_ns
            while len(self.t_capture_by_pts) > 256:
                self.t_capture_by_pts.popitem(last=False)
        self.produced += 1
        return frame


class ViewerTrack(MediaStreamTrack):
    """One viewer's track: the relay proxy plus counters."""

    kind = "video"

    def __init__(
        self,
        proxy: MediaStreamTrack,
        source: AnnotatedVideoTrack,
        on_sent: Callable[[float | None], None],
        on_stop: Callable[[ViewerTrack], None],
    ) -> None:
        super().__init__()
        self._proxy = proxy
        self._source = source
        self._on_sent = on_sent
        self._on_stop = on_stop
        self.sent = 0

    async def recv(self) -> av.VideoFrame:
        shared = await self._proxy.recv()
        if not isinstance(shared, av.VideoFrame):
            raise MediaStreamError
        # Every viewer's encoder gets its own frame: encoders write to the frame they encode
        # (pts rebasing, picture type, a cached reformatter), which races when it is shared.
        frame = av.VideoFrame.from_ndarray(shared.to_ndarray(), format=shared.format.name)
        frame.pts, frame.time_base = shared.pts, shared.time_base
        self.sent += 1
        t_cap = self._source.t_capture_by_pts.get(frame.pts) if frame.pts is not None else None
        self._on_sent((time.time_ns() - t_cap) / 1e9 if t_cap else None)
        return frame

    def stop(self) -> None:
        if self.readyState == "live":
            super().stop()
            self._proxy.stop()
            self._on_stop(self)


class VideoHub:
    """One source track per camera, relayed to every viewer without buffering."""

    def __init__(
        self,
        feed: LatestFeed[AnnotatedMessage],
        fps: float,
        on_sent: Callable[[float | None], None],
    ) -> None:
        self._feed = feed
        self._fps = fps
        self._on_sent = on_sent
        self._relay = MediaRelay()
        self._source: AnnotatedVideoTrack | None = None
        self.viewers: set[ViewerTrack] = set()

    @property
    def source(self) -> AnnotatedVideoTrack | None:
        return self._source

    def subscribe(self) -> ViewerTrack:
        if self._source is None or self._source.readyState != "live":
            self._source = AnnotatedVideoTrack(self._feed, self._fps)
        proxy = self._relay.subscribe(self._source, buffered=False)
        viewer = ViewerTrack(proxy, self._source, self._on_sent, self._unsubscribe)
        self.viewers.add(viewer)
        self._source.set_watched(True)
        return viewer

    def _unsubscribe(self, viewer: ViewerTrack) -> None:
        self.viewers.discard(viewer)
        if not self.viewers and self._source is not None:
            self._source.set_watched(False)

    def close(self) -> None:
        for v in list(self.viewers):
            v.stop()
        if self._source is not None:
            self._source.stop()
