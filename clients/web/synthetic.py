"""A stand-in engine for the web client: generated annotated frames and tracks, and a control
socket, on the contract's topics. For tests, the output benchmark, and trying the page without
a GPU. It is not the engine: one moving box per phrase of the prompt, masks are the boxes;
``add_object`` boxes stay where they were drawn, ``remove_object`` and ``reset`` end them (IDs are
never reused), and ``reset`` also hides the prompt's boxes until the next ``set_prompt``.

Every frame carries its ``seq`` as a 32-block barcode in its top rows (``stamp``/``read_stamp``),
so a video receiver can tell which captured frame it got and measure latency from
``t_capture_ns`` after H.264 encoding.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import OrderedDict, deque
from typing import Any

import numpy as np
import zmq

from engine.render import Renderer
from stream import bus as zbus
from stream.config import Config
from stream.wire import (
    AnnotatedMessage,
    TrackedObject,
    TracksMessage,
    WireError,
    control_reply,
    encode_jpeg,
    encode_mask,
    parse_control,
)

log = logging.getLogger(__name__)

STAMP_BITS = 32
STAMP_ROWS = 16


def _checksum(value: int) -> int:
    return (value ^ (value >> 8) ^ (value >> 16) ^ 0x5A) & 0xFF


def stamp(image: np.ndarray, seq: int) -> None:
    """Write ``seq`` (24 bits + 8-bit check) as black/white blocks into the top rows, in place."""
    word = ((seq & 0xFFFFFF) << 8) | _checksum(seq & 0xFFFFFF)
    bw = image.shape[1] // STAMP_BITS
    for i in range(STAMP_BITS):
        bit = (word >> (STAMP_BITS - 1 - i)) & 1
        image[:STAMP_ROWS, i * bw : (i + 1) * bw] = 255 if bit else 0


def read_stamp(image: np.ndarray) -> int | None:
    """The ``seq`` written by ``stamp`` (from a decoded BGR or gray frame), None if unreadable."""
    gray = image if image.ndim == 2 else image.mean(axis=2)
    bw = gray.shape[1] // STAMP_BITS
    word = 0
    for i in range(STAMP_BITS):
        v = gray[
            STAMP_ROWS // 4 : 3 * STAMP_ROWS // 4, i * bw + bw // 4 : i * bw + 3 * bw // 4
        ].mean()
        word = (word << 1) | int(v > 128)
    seq, check = word >> 8, word & 0xFF
    return seq if _checksum(seq) == check else None


class SyntheticEngine:
    """Publishes ``annotated.<camera>`` and ``tracks.<camera>`` at ``fps`` and answers control."""

    def __init__(
        self,
        cfg: Config,
        *,
        fps: float = 20.0,
        width: int = 320,
        height: int = 240,
        ctx: zmq.Context[Any] | None = None,
    ) -> None:
        self.cfg = cfg
        self.camera = cfg.camera
        self.fps = fps
        self.width, self.height = width, height
        self.prompt = cfg.engine.prompt
        self.published = 0
        self.prompts_set = 0
        self.requests: deque[dict[str, Any]] = deque(maxlen=1000)  # newest valid requests
        self._manual: dict[int, tuple[str, list[float]]] = {}
        self._next_manual_id = 10_000
        self._prompt_hidden = False
        self._ctx = ctx or zmq.Context.instance()
        self._renderer = Renderer(jpeg_quality=85)
        self._t_capture: OrderedDict[int, int] = OrderedDict()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ann = zbus.bind(self._ctx, zmq.PUB, cfg.bus.annotated, cfg.bus)
        self._trk = zbus.bind(self._ctx, zmq.PUB, cfg.bus.tracks, cfg.bus)
        self._rep = zbus.bind(self._ctx, zmq.REP, cfg.bus.control, cfg.bus)
        self._threads = [
            threading.Thread(target=self._publish_loop, name="synthetic-publish", daemon=True),
            threading.Thread(target=self._control_loop, name="synthetic-control", daemon=True),
        ]

    def start(self) -> SyntheticEngine:
        for t in self._threads:
            t.start()
        return self

    def close(self) -> None:
        self._stop.set()
        for t in self._threads:
            if t.is_alive():
                t.join(5)
        for s in (self._ann, self._trk, self._rep):
            s.close(0)

    def __enter__(self) -> SyntheticEngine:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def t_capture_of(self, seq: int) -> int | None:
        with self._lock:
            return self._t_capture.get(seq)

    def labels(self) -> list[str]:
        return [p.strip() for p in self.prompt.split(".") if p.strip()][:8]

    def _objects(self, seq: int) -> tuple[list[int], list[str], np.ndarray]:
        labels = [] if self._prompt_hidden else self.labels()
        ids = [self.prompts_set * 100 + i + 1 for i in range(len(labels))]
        boxes: list[list[float]] = []
        w, h = self.width, self.height
        for i in range(len(labels)):
            bw, bh = w // 5, h // 4
            x = int((seq * (3 + i) + i * w // 3) % (w - bw))
            y = STAMP_ROWS + 4 + int((i * bh * 1.2) % (h - bh - STAMP_ROWS - 4))
            boxes.append([float(x), float(y), float(x + bw), float(y + bh)])
        with self._lock:
            manual = sorted(self._manual.items())
        for tid, (label, box) in manual:
            ids.append(tid)
            labels.append(label)
            boxes.append(box)
        return ids, labels, np.array(boxes, np.float32).reshape(-1, 4)

    def _control(self, req: Any) -> bytes:
        """The reply to one parsed control request (other than stats)."""
        if req.cmd == "set_prompt":
            self.prompt = req.prompt
            self.prompts_set += 1
            self._prompt_hidden = False
            return control_reply(True, labels=self.labels())
        if req.cmd == "add_object":
            x1, y1, x2, y2 = (float(v) for v in req.box)
            if (
                not (x2 > x1 and y2 > y1)
                or x2 <= 0
                or y2 <= 0
                or x1 >= self.width
                or y1 >= self.height
            ):
                return control_reply(False, error=f"box {req.box} has no area inside the frame")
            box = [
                max(0.0, x1),
                max(0.0, y1),
                min(float(self.width), x2),
                min(float(self.height), y2),
            ]
            with self._lock:
                tid = self._next_manual_id
                self._next_manual_id += 1
                self._manual[tid] = (req.label, box)
            return control_reply(True, id=tid)
        if req.cmd == "remove_object":
            with self._lock:
                found = self._manual.pop(req.id, None) is not None
            if not found:
                return control_reply(False, error=f"no tracked object with id {req.id}")
            return control_reply(True)
        if req.cmd != "reset":
            return control_reply(False, error=f"{req.cmd} is not supported by the synthetic engine")
        with self._lock:
            self._manual.clear()
        self._prompt_hidden = True
        return control_reply(True)

    def _publish_loop(self) -> None:
        period = 1.0 / self.fps
        next_at = time.monotonic()
        seq = 0
        rng = np.random.default_rng(0)
        background = rng.integers(30, 90, size=(self.height, self.width, 3), dtype=np.uint8)
        while not self._stop.is_set():
            t_capture = time.time_ns()
            ids, labels, boxes = self._objects(seq)
            masks = np.zeros((len(ids), self.height, self.width), bool)
            for k, (x1, y1, x2, y2) in enumerate(boxes.astype(int)):
                masks[k, y1:y2, x1:x2] = True
            image = self._renderer.draw(background, ids, labels, [0.9] * len(ids), boxes, masks)
            stamp(image, seq)
            objects = [
                TrackedObject.model_construct(
                    id=i,
                    label=lab,
                    score=0.9,
                    box=[float(v) for v in b],
                    mask=encode_mask(m),
                    age=seq,
                    state="tracked",
                )
                for i, lab, b, m in zip(ids, labels, boxes, masks, strict=True)
            ]
            with self._lock:
                self._t_capture[seq] = t_capture
                while len(self._t_capture) > 4096:
                    self._t_capture.popitem(last=False)
            tracks = TracksMessage.build(
                self.camera, seq, t_capture, self.width, self.height, self.prompt, objects
            )
            ann = AnnotatedMessage(
                self.camera,
                seq,
                t_capture,
                self.width,
                self.height,
                len(ids),
                encode_jpeg(image, 85),
            )
            self._trk.send_multipart(tracks.to_parts())
            self._ann.send_multipart(ann.to_parts())
            self.published += 1
            seq += 1
            next_at += period
            self._stop.wait(max(0.0, next_at - time.monotonic()))
            next_at = max(next_at, time.monotonic() - period)

    def _control_loop(self) -> None:
        while not self._stop.is_set():
            if not self._rep.poll(100, zmq.POLLIN):
                continue
            raw = self._rep.recv()
            try:
                req = parse_control(raw)
            except WireError as e:
                self._rep.send(control_reply(False, error=str(e)))
                continue
            self.requests.append(json.loads(raw))
            if req.cmd == "stats":
                stats = {
                    "fps_in": self.fps,
                    "fps_out": self.fps,
                    "frames_dropped": 0,
                    "objects": len(self.labels()) + len(self._manual),
                    "prompt": self.prompt,
                }
                self._rep.send(json.dumps({"ok": True, "stats": stats}).encode())
            else:
                self._rep.send(self._control(req))
