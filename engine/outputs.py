"""What the engine publishes, built off the frame loop.

``to_tracks_message`` turns a ``FrameResult`` into the contract's tracks message (masks as COCO
RLE). ``TracksPublisher`` (thread) encodes and publishes one tracks message per processed frame
from a bounded queue whose policy is BLOCK: tracks are never dropped, a publisher that falls
behind slows the loop instead. ``AnnotatedPublisher`` (thread) renders and JPEG-encodes the
newest result of each camera only: policy LATEST per camera, older pending frames are dropped
and counted. Both serve every camera of the engine on one socket each (topics carry the camera).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

import cv2
import numpy as np
import zmq

from engine.pipeline import FrameResult
from engine.render import Renderer
from stream.wire import (
    AnnotatedMessage,
    TrackedObject,
    TracksMessage,
    confidence_of,
    encode_jpeg,
    encode_mask,
)

log = logging.getLogger(__name__)


def to_tracks_message(
    camera: str, r: FrameResult, t_publish_ns: int | None = None
) -> TracksMessage:
    objects = [
        TrackedObject.model_construct(
            id=o.id,
            label=o.label,
            score=round(float(o.score), 4),
            confidence=round(confidence_of(o.score), 4),
            box=[round(float(v), 2) for v in o.box],
            mask=encode_mask(o.mask),
            age=o.age,
            state=o.state,
        )
        for o in r.objects
    ]
    return TracksMessage.build(
        camera, r.seq, r.t_capture_ns, r.width, r.height, r.prompt, objects, t_publish_ns, r.epoch
    )


LOST_OUTLINE_BGR = (128, 128, 128)  # a lost track: a thin grey outline at its last box, no label


def render_result(renderer: Renderer, image: np.ndarray, r: FrameResult) -> np.ndarray:
    """The annotated frame: every object in view with its mask, box and ``#id label confidence``;
    a lost track (nothing of it in this frame) only as a thin grey outline where it was last seen,
    so no label is drawn where nothing is."""
    shown = [o for o in r.objects if o.state != "lost"]
    n = len(shown)
    boxes = np.array([o.box for o in shown], np.float32).reshape(n, 4)
    masks = np.stack([o.mask for o in shown]) if n else None
    out = renderer.draw(
        image,
        [o.id for o in shown],
        [o.label for o in shown],
        [confidence_of(o.score) for o in shown],
        boxes,
        masks,
    )
    for o in r.objects:
        if o.state == "lost" and o.box[2] > o.box[0] and o.box[3] > o.box[1]:
            x1, y1, x2, y2 = (round(v) for v in o.box)
            cv2.rectangle(out, (x1, y1), (x2, y2), LOST_OUTLINE_BGR, 1, cv2.LINE_AA)
    return out


class TracksPublisher:
    """Publishes tracks messages of every camera from its own thread (the socket is owned by
    that thread), in the order they are put."""

    def __init__(
        self,
        sock: zmq.Socket[Any],
        on_published: Callable[[str, FrameResult, np.ndarray, float], None] | None = None,
        maxsize: int = 8,
    ) -> None:
        self._sock = sock
        self._q: queue.Queue[tuple[str, FrameResult, np.ndarray] | None] = queue.Queue(
            maxsize=maxsize
        )
        self._on_published = on_published
        self.published: dict[str, int] = {}
        self.last_publish_ms = 0.0
        self.last_stage_ms: dict[str, float] = {}  # of the last message: rle_ms, json_send_ms
        self._thread = threading.Thread(target=self._run, name="tracks-publisher", daemon=True)
        self._thread.start()

    @property
    def alive(self) -> bool:
        """False once the publisher thread has ended (it died: nothing is published any more)."""
        return self._thread.is_alive()

    def put(
        self,
        camera: str,
        result: FrameResult,
        image: np.ndarray,
        stop: threading.Event | None = None,
    ) -> bool:
        """Queue one result (BLOCK policy: never drop a tracks message); False, without
        queueing, once ``stop`` is set or the publisher thread has ended (it died)."""
        while stop is None or not stop.is_set():
            if not self._thread.is_alive():
                return False
            try:
                self._q.put((camera, result, image), timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        while True:
            item = self._q.get()
            if item is None:
                return
            camera, result, image = item
            t0 = time.perf_counter()
            msg = to_tracks_message(camera, result)  # the masks' RLE encoding
            t1 = time.perf_counter()
            self._sock.send_multipart(msg.to_parts())  # JSON and the send
            self.published[camera] = self.published.get(camera, 0) + 1
            t2 = time.perf_counter()
            self.last_publish_ms = (t2 - t0) * 1e3
            self.last_stage_ms = {"rle_ms": (t1 - t0) * 1e3, "json_send_ms": (t2 - t1) * 1e3}
            if self._on_published is not None:
                self._on_published(camera, result, image, self.last_publish_ms)

    def close(self) -> None:
        try:
            self._q.put(None, timeout=2.0 if self._thread.is_alive() else 0.0)
        except queue.Full:
            log.warning(
                "tracks publisher did not drain in time; %d messages unsent", self._q.qsize()
            )
        self._thread.join(timeout=2.0)
        self._sock.close(0)


class AnnotatedPublisher:
    """Renders and publishes the newest result of each camera; a camera's result that arrives
    while its previous one still waits replaces it (counted in ``dropped``). Cameras are served
    in turn, so a busy camera cannot starve the others."""

    def __init__(self, sock: zmq.Socket[Any], renderer: Renderer) -> None:
        self._sock = sock
        self._renderer = renderer
        self._cond = threading.Condition()
        self._slots: dict[str, tuple[FrameResult, np.ndarray]] = {}  # insertion order = turn
        self._stop = False
        self.published: dict[str, int] = {}
        self.dropped: dict[str, int] = {}
        self.last_render_ms = 0.0
        self.last_stage_ms: dict[str, float] = {}  # of the last frame: render_ms, jpeg_ms
        self._thread = threading.Thread(target=self._run, name="annotated-publisher", daemon=True)
        self._thread.start()

    def offer(self, camera: str, result: FrameResult, image: np.ndarray) -> None:
        with self._cond:
            if camera in self._slots:
                self.dropped[camera] = self.dropped.get(camera, 0) + 1
            self._slots[camera] = (result, image)
            self._cond.notify()

    def forget(self, camera: str) -> None:
        """Drop a removed camera's pending frame."""
        with self._cond:
            self._slots.pop(camera, None)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._slots and not self._stop:
                    self._cond.wait()
                if self._stop:
                    return
                camera = next(iter(self._slots))
                result, image = self._slots.pop(camera)
            t0 = time.perf_counter()
            drawn = render_result(self._renderer, image, result)
            t1 = time.perf_counter()
            jpeg = encode_jpeg(drawn, self._renderer.jpeg_quality)
            self.last_stage_ms = {
                "render_ms": (t1 - t0) * 1e3,
                "jpeg_ms": (time.perf_counter() - t1) * 1e3,
            }
            msg = AnnotatedMessage(
                camera,
                result.seq,
                result.t_capture_ns,
                result.width,
                result.height,
                len(result.objects),
                jpeg,
            )
            self._sock.send_multipart(msg.to_parts())
            self.published[camera] = self.published.get(camera, 0) + 1
            self.last_render_ms = (time.perf_counter() - t0) * 1e3

    def close(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify()
        self._thread.join(timeout=2.0)
        self._sock.close(0)
