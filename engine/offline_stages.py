"""The offline job's stages around the model, each on its own thread, so that decoding the next
frame and writing the last frame's outputs overlap the model's work on this one.

``FramePrefetch`` reads frames ahead of the model; ``OutputWriter`` writes each processed frame's
outputs (the tracks JSON line with its RLE masks, the annotated MP4 frame, the ROS 2 messages
of an MCAP file). Both queues hold
``DEPTH`` frames and BLOCK when full: no frame is dropped and the order is kept, so the job still
processes and writes every frame, in order; a slow stage makes the model wait rather than
memory grow. ``StageClock`` sums each stage's wall time, for the job's summary and the bench's
per-stage table.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Mapping
from typing import IO, Protocol

import numpy as np

from engine.core.types import FrameResult, PreparedFrame
from engine.outputs import render_result, to_tracks_message
from engine.render import Renderer
from stream.errors import EndOfStreamError
from stream.media import Mp4Writer
from stream.sources import FrameSource
from stream.wire import TracksMessage, encode_jpeg

log = logging.getLogger(__name__)

DEPTH = 2  # frames each stage's queue holds (decoded ahead / processed, not yet written)
_POLL_S = 0.1  # how often a blocked put looks at its stop flag


class StageClock:
    """Wall time per stage in milliseconds, summed over frames. Each stage is written by one
    thread only; ``means`` reads a snapshot."""

    def __init__(self) -> None:
        self._total: dict[str, float] = defaultdict(float)
        self._lock = threading.Lock()
        self.frames = 0

    def add(self, stage: str, ms: float) -> None:
        with self._lock:
            self._total[stage] += ms

    def add_all(
        self, timings: Mapping[str, float], skip: tuple[str, ...] = ("cameras", "process_ms")
    ) -> None:
        """Add each ``*_ms`` stage of ``timings`` (``process_ms``, the engine's total, is left out:
        its parts are there)."""
        with self._lock:
            for k, v in timings.items():
                if k not in skip:
                    self._total[k.removesuffix("_ms")] += v

    def means(self) -> dict[str, float]:
        """Mean milliseconds per frame of each stage."""
        with self._lock:
            n = max(1, self.frames)
            return {k: round(v / n, 3) for k, v in sorted(self._total.items())}


Prepared = tuple[np.ndarray, PreparedFrame | None]


class FramePrefetch:
    """Reads ``source`` on its own thread, ``DEPTH`` frames ahead, and turns each frame into
    model input there too (``prepare``: the kernel's thread-safe resize and normalisation), so
    that neither waits for the model. ``next`` returns (image, prepared) in order and None at
    the end of the stream; a read or prepare error is raised by ``next``."""

    def __init__(
        self,
        source: FrameSource,
        clock: StageClock,
        prepare: Callable[[np.ndarray], PreparedFrame] | None = None,
    ) -> None:
        self._source = source
        self._clock = clock
        self._prepare = prepare
        self._q: queue.Queue[Prepared | BaseException | None] = queue.Queue(maxsize=DEPTH)
        self._stop = threading.Event()
        self._done = False
        self._thread = threading.Thread(target=self._run, name="offline-decode", daemon=True)
        self._thread.start()

    def _put(self, item: Prepared | BaseException | None) -> bool:
        while not self._stop.is_set():
            try:
                self._q.put(item, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        while not self._stop.is_set():
            t0 = time.perf_counter()
            try:
                image = self._source.read()
                t1 = time.perf_counter()
                prepared = self._prepare(image) if self._prepare is not None else None
            except EndOfStreamError:
                self._put(None)
                return
            except BaseException as e:  # handed to the consumer, raised there
                self._put(e)
                return
            self._clock.add("decode", (t1 - t0) * 1e3)
            if self._prepare is not None:
                self._clock.add("prepare", (time.perf_counter() - t1) * 1e3)
            if not self._put((image, prepared)):
                return

    def next(self) -> Prepared | None:
        if self._done:
            return None
        item = self._q.get()
        if isinstance(item, BaseException):
            self._done = True
            raise item
        if item is None:
            self._done = True
        return item

    def close(self) -> None:
        """Stop reading ahead (the source may be closed after this returns)."""
        self._stop.set()
        self._thread.join()


class TracksSink(Protocol):
    """An output of tracks and annotated JPEGs (``clients.robots.mcap_out.McapFile``)."""

    def write_tracks(self, msg: TracksMessage) -> None: ...

    def write_jpeg(self, camera: str, t_capture_ns: int, jpeg: bytes | memoryview) -> None: ...

    def close(self) -> None: ...


class OutputWriter:
    """Writes every processed frame's outputs on its own thread, in order. ``put`` blocks while
    ``DEPTH`` frames wait; ``close`` writes what is queued, then raises the first write error.
    ``sink`` (``track --mcap``) gets each frame's tracks message and annotated JPEG."""

    def __init__(
        self,
        camera: str,
        renderer: Renderer,
        writer: Mp4Writer | None,
        jsonl: IO[str] | None,
        clock: StageClock,
        sink: TracksSink | None = None,
        jpeg_quality: int = 80,
    ) -> None:
        self._camera = camera
        self._renderer = renderer
        self._writer = writer
        self._jsonl = jsonl
        self._clock = clock
        self._sink = sink
        self._jpeg_quality = jpeg_quality
        self._q: queue.Queue[tuple[np.ndarray, FrameResult] | None] = queue.Queue(maxsize=DEPTH)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="offline-outputs", daemon=True)
        self._thread.start()

    def _write(self, image: np.ndarray, result: FrameResult) -> None:
        msg: TracksMessage | None = None
        if self._jsonl is not None or self._sink is not None:
            t0 = time.perf_counter()
            msg = to_tracks_message(self._camera, result, t_publish_ns=result.t_capture_ns)
            self._clock.add("rle", (time.perf_counter() - t0) * 1e3)
        if self._jsonl is not None and msg is not None:
            t1 = time.perf_counter()
            self._jsonl.write(msg.to_json() + "\n")
            self._clock.add("json", (time.perf_counter() - t1) * 1e3)
        frame: np.ndarray | None = None
        if self._writer is not None or self._sink is not None:
            t0 = time.perf_counter()
            frame = render_result(self._renderer, image, result)
            self._clock.add("render", (time.perf_counter() - t0) * 1e3)
        if self._writer is not None and frame is not None:
            t1 = time.perf_counter()
            self._writer.write(frame)
            self._clock.add("video_encode", (time.perf_counter() - t1) * 1e3)
        if self._sink is not None and msg is not None and frame is not None:
            t1 = time.perf_counter()
            self._sink.write_tracks(msg)
            jpeg = encode_jpeg(frame, self._jpeg_quality)
            self._sink.write_jpeg(self._camera, result.t_capture_ns, jpeg)
            self._clock.add("mcap", (time.perf_counter() - t1) * 1e3)

    def _run(self) -> None:
        while True:
            item = self._q.get()
            if item is None:
                return
            if self._error is not None:
                continue  # after a failed write, drain without writing
            try:
                self._write(*item)
            except BaseException as e:  # raised to the job by put/close
                self._error = e

    def put(self, image: np.ndarray, result: FrameResult) -> None:
        if self._error is not None:
            raise self._error
        self._q.put((image, result))

    def close(self) -> None:
        self._q.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error
