"""The live video: one H.264 encoder per camera, its packets shared by every viewer.

``LiveEncoder`` reads the NEWEST annotated frame of its camera, paced at ``fps``: it never
queues, it skips every frame that arrived in between (counted as ``skipped``), and while no new
frame arrives it repeats the last one once a second (before the first, a placeholder that says
what the camera's view waits for: the camera or the engine), so a browser's video starts at
once. JPEG decoding, BGR → YUV 4:2:0 and the H.264 encode (PyAV
``libx264``: baseline profile, ``preset=ultrafast``, ``tune=zerolatency``, Annex B with SPS/PPS
before every keyframe) run once per camera in the default executor, off the event loop. It only
encodes while someone is watching.

Every encoded ``av.Packet`` (pts in the 90 kHz RTP video clock) is fanned out to the viewers'
``ViewerTrack``: aiortc's ``RTCRtpSender`` only packetizes a packet that a track's ``recv()``
returns (``H264Encoder.pack``), it does not encode it again, so the cost per viewer is RTP and
SRTP only. With inter-frame coding a viewer cannot skip packets at will: each viewer holds at
most ``MAX_QUEUED`` packets; on overflow it drops its queue and every packet until the next
keyframe (counted in ``dropped``), and a new viewer starts at a keyframe. So a viewer that
leaves or stalls holds no growing queue and costs the others nothing. Keyframes come when a
viewer joins, when a receiver asks (PLI/FIR, see ``ViewerTrack.request_keyframe``) and every
``KEYFRAME_EVERY_S`` as a safety net; forced ones at most every ``MIN_KEYFRAME_GAP_S``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction

import av
import cv2
import numpy as np
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError
from av.video.stream import VideoStream

from clients.web.feeds import LatestFeed
from stream.wire import AnnotatedMessage, decode_jpeg

log = logging.getLogger(__name__)

VIDEO_CLOCK = 90_000
VIDEO_TIME_BASE = Fraction(1, VIDEO_CLOCK)
KEEPALIVE_S = 1.0
KEYFRAME_EVERY_S = 2.0
MIN_KEYFRAME_GAP_S = 0.2
MAX_QUEUED = 3


PLACEHOLDER_TEXT = "no picture yet"


def placeholder(width: int = 640, height: int = 360, text: str = PLACEHOLDER_TEXT) -> np.ndarray:
    """The picture shown before the camera's first: ``text`` (what it waits for), on as many
    lines as it needs, as large as fits."""
    img = np.zeros((height, width, 3), np.uint8)
    lines = [ln.strip() for ln in text.replace(": ", ":\n").splitlines() if ln.strip()][:4]
    font, thickness = cv2.FONT_HERSHEY_SIMPLEX, 2
    widest = max((cv2.getTextSize(ln, font, 1.0, thickness)[0][0] for ln in lines), default=1)
    scale = max(0.4, min(1.0, (width - 40) / max(1, widest)))
    step = int(40 * scale)
    y = height // 2 - step * (len(lines) - 1) // 2
    for ln in lines:
        cv2.putText(img, ln, (20, y), font, scale, (200, 200, 200), thickness, cv2.LINE_AA)
        y += step
    return img


def bgr_to_i420(image: np.ndarray) -> np.ndarray:
    """BGR → planar YUV 4:2:0 (what the encoder takes), cropped to even width and height."""
    h, w = image.shape[:2]
    return cv2.cvtColor(image[: h - h % 2, : w - w % 2], cv2.COLOR_BGR2YUV_I420)


def jpeg_to_i420(jpeg: bytes) -> np.ndarray:
    return bgr_to_i420(decode_jpeg(jpeg))


def default_bitrate(width: int, height: int, fps: float) -> int:
    """0.03 bit per pixel, between 1 and 3 Mbit/s: the range aiortc's own H.264 encoder keeps
    to (one shared encoder cannot follow each receiver's bandwidth estimate)."""
    return int(min(3_000_000, max(1_000_000, 0.03 * width * height * fps)))


class H264Stream:
    """A libx264 encoder that browsers decode (constrained baseline, packetization-mode 1).

    Not thread-safe: one caller at a time (``LiveEncoder`` awaits each encode). The codec is
    rebuilt when the frame size changes; its first frame is then a keyframe anyway.
    """

    def __init__(self, fps: float) -> None:
        self._fps = fps
        self._codec: av.VideoCodecContext | None = None

    def _open(self, width: int, height: int) -> av.VideoCodecContext:
        codec = av.CodecContext.create("libx264", "w")
        assert isinstance(codec, av.VideoCodecContext)
        codec.width, codec.height = width, height
        codec.pix_fmt = "yuv420p"
        codec.time_base = VIDEO_TIME_BASE
        codec.framerate = Fraction(round(self._fps * 1000), 1000)
        codec.bit_rate = default_bitrate(width, height, self._fps)
        codec.gop_size = int(4 * KEYFRAME_EVERY_S * self._fps)  # ours come first
        codec.profile = "Baseline"
        codec.options = {
            "preset": "ultrafast",
            "tune": "zerolatency",
            "level": "31",  # what aiortc negotiates (profile-level-id 42e01f / 42001f)
            "forced-idr": "1",
        }
        log.info("H.264 encoder %dx%d at %d kbit/s", width, height, codec.bit_rate // 1000)
        return codec

    def encode(self, i420: np.ndarray, pts: int, keyframe: bool) -> list[av.Packet[VideoStream]]:
        frame = av.VideoFrame.from_ndarray(i420, format="yuv420p")
        if (
            self._codec is None
            or self._codec.width != frame.width
            or self._codec.height != frame.height
        ):
            self._codec = self._open(frame.width, frame.height)
        frame.pts = pts
        frame.time_base = VIDEO_TIME_BASE
        frame.pict_type = (
            av.video.frame.PictureType.I if keyframe else av.video.frame.PictureType.NONE
        )
        packets = list(self._codec.encode(frame))
        for p in packets:  # what aiortc's H264Encoder.pack reads: 90 kHz pts
            p.pts = pts
            p.time_base = VIDEO_TIME_BASE
        return packets


@dataclass(frozen=True)
class Encoded:
    packet: av.Packet[VideoStream]
    keyframe: bool
    t_capture_ns: int  # 0: a repeat or the placeholder


class ViewerTrack(MediaStreamTrack):
    """One viewer: the shared encoder's packets, at most ``MAX_QUEUED`` of them queued.

    ``recv()`` returns ``av.Packet``: aiortc packetizes it without encoding.
    """

    kind = "video"

    def __init__(
        self,
        encoder: LiveEncoder,
        on_sent: Callable[[float | None], None],
        on_dropped: Callable[[int], None],
        on_stop: Callable[[ViewerTrack], None],
    ) -> None:
        super().__init__()
        self._encoder = encoder
        self._on_sent = on_sent
        self._on_dropped = on_dropped
        self._on_stop = on_stop
        self._queue: deque[Encoded] = deque()
        self._ready = asyncio.Event()
        self._need_keyframe = True
        self.sent = 0
        self.dropped = 0

    def request_keyframe(self) -> None:
        """A receiver lost the picture (PLI/FIR) or has just connected: keyframe for all."""
        self._encoder.request_keyframe()

    def _drop(self, n: int) -> None:
        if n:
            self.dropped += n
            self._on_dropped(n)

    def offer(self, enc: Encoded) -> None:
        """Called by the encoder with each packet, in order. Never blocks, never grows."""
        if self.readyState != "live":
            return
        if enc.keyframe:
            # a keyframe decodes on its own: whatever is still queued is only older
            self._drop(len(self._queue))
            self._queue.clear()
            self._need_keyframe = False
        elif self._need_keyframe:
            self._drop(1)
            return
        elif len(self._queue) >= MAX_QUEUED:
            self._drop(len(self._queue) + 1)
            self._queue.clear()
            self._need_keyframe = True
            log.debug("viewer %x fell behind: waiting for the next keyframe", id(self))
            return
        self._queue.append(enc)
        self._ready.set()

    async def recv(self) -> av.Packet[VideoStream]:
        while not self._queue:
            if self.readyState != "live":
                raise MediaStreamError
            self._ready.clear()
            await self._ready.wait()
        if self.readyState != "live":
            raise MediaStreamError
        enc = self._queue.popleft()
        self.sent += 1
        self._on_sent((time.time_ns() - enc.t_capture_ns) / 1e9 if enc.t_capture_ns else None)
        return enc.packet

    def stop(self) -> None:
        if self.readyState == "live":
            super().stop()
            self._queue.clear()
            self._ready.set()
            self._on_stop(self)


class LiveEncoder:
    """The one encoder of one camera: newest frame, at most ``fps`` per second, to all viewers."""

    def __init__(
        self,
        feed: LatestFeed[AnnotatedMessage],
        fps: float,
        on_encoded: Callable[[bool], None] | None = None,
        placeholder_text: Callable[[], str | None] | None = None,
    ) -> None:
        self._feed = feed
        self._placeholder_text = placeholder_text or (lambda: None)
        self._placeholder: tuple[str, np.ndarray] | None = None  # shown now: (its text, I420)
        self._period = 1.0 / fps
        self._stream = H264Stream(fps)
        self._on_encoded = on_encoded
        self._t0 = time.monotonic()
        self._version = 0
        self._last: np.ndarray | None = None
        self._last_pts = -1
        self._last_keyframe = -float("inf")
        self._keyframe_wanted = True
        self._watched = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.viewers: set[ViewerTrack] = set()
        self.encoded = 0
        self.keyframes = 0
        self.skipped = 0
        self.repeated = 0

    def request_keyframe(self) -> None:
        self._keyframe_wanted = True

    @property
    def active(self) -> bool:
        """True while it encodes: someone is watching."""
        return self._watched.is_set() and self._task is not None and not self._task.done()

    def add(self, viewer: ViewerTrack) -> None:
        self.viewers.add(viewer)
        self.request_keyframe()
        self._watched.set()
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())
            self._task.add_done_callback(self._ended)

    @staticmethod
    def _ended(task: asyncio.Task[None]) -> None:
        if not task.cancelled() and (e := task.exception()) is not None:
            log.error("the video encoder stopped: %r (restarts with the next viewer)", e)

    def remove(self, viewer: ViewerTrack) -> None:
        self.viewers.discard(viewer)
        if not self.viewers:
            self._watched.clear()

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()

    def _keyframe_due(self, now: float) -> bool:
        since = now - self._last_keyframe
        return since >= KEYFRAME_EVERY_S or (self._keyframe_wanted and since >= MIN_KEYFRAME_GAP_S)

    def _encode(
        self, jpeg: bytes | None, pts: int, keyframe: bool
    ) -> tuple[np.ndarray, list[av.Packet[VideoStream]]]:
        if jpeg is not None:
            i420 = jpeg_to_i420(jpeg)
            self._placeholder = None
        elif self._last is not None and self._placeholder is None:
            i420 = self._last
        else:
            i420 = self.placeholder_i420()
        return i420, self._stream.encode(i420, pts, keyframe)

    def placeholder_i420(self) -> np.ndarray:
        """The placeholder picture (before the first frame), saying what the camera's view waits
        for now (the camera or the engine): made again when that changes."""
        text = self._placeholder_text() or PLACEHOLDER_TEXT
        if self._placeholder is None or self._placeholder[0] != text:
            self._placeholder = (text, bgr_to_i420(placeholder(text=text)))
        return self._placeholder[1]

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_at = 0.0
        while True:
            await self._watched.wait()
            now = time.monotonic()
            if next_at > now:
                await asyncio.sleep(next_at - now)
            next_at = max(next_at + self._period, time.monotonic())
            msg, version = await self._feed.wait_newer(self._version, KEEPALIVE_S)
            if not self.viewers:
                continue
            jpeg: bytes | None = None
            t_capture_ns = 0
            if msg is not None:
                self.skipped += max(0, version - self._version - 1) if self._version else 0
                self._version = version
                jpeg, t_capture_ns = bytes(msg.jpeg), msg.t_capture_ns
            elif self._last is not None:
                self.repeated += 1
            now = time.monotonic()
            keyframe = self._keyframe_due(now)
            pts = max(self._last_pts + 1, int((now - self._t0) * VIDEO_CLOCK))
            try:
                i420, packets = await loop.run_in_executor(None, self._encode, jpeg, pts, keyframe)
            except (av.FFmpegError, ValueError) as e:
                log.warning("video frame not encoded: %s", e)
                continue
            self._last, self._last_pts = i420, pts
            if keyframe:
                self._keyframe_wanted = False
                self._last_keyframe = now
            self.encoded += 1
            for packet in packets:
                enc = Encoded(packet, bool(packet.is_keyframe), t_capture_ns)
                if enc.keyframe:
                    self.keyframes += 1
                if self._on_encoded is not None:
                    self._on_encoded(enc.keyframe)
                for viewer in list(self.viewers):
                    viewer.offer(enc)


class VideoHub:
    """One camera's shared encoder, fanned out to that camera's viewers (the web server has
    one hub per camera it shows)."""

    def __init__(
        self,
        feed: LatestFeed[AnnotatedMessage],
        fps: float,
        on_sent: Callable[[float | None], None],
        on_encoded: Callable[[bool], None] | None = None,
        on_dropped: Callable[[int], None] | None = None,
        placeholder_text: Callable[[], str | None] | None = None,
    ) -> None:
        self._on_sent = on_sent
        self._on_dropped = on_dropped or (lambda n: None)
        self.encoder = LiveEncoder(feed, fps, on_encoded, placeholder_text)

    @property
    def viewers(self) -> set[ViewerTrack]:
        return self.encoder.viewers

    def subscribe(self) -> ViewerTrack:
        viewer = ViewerTrack(self.encoder, self._on_sent, self._on_dropped, self.encoder.remove)
        self.encoder.add(viewer)
        return viewer

    def close(self) -> None:
        for v in list(self.viewers):
            v.stop()
        self.encoder.close()
