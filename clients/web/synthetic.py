"""A stand-in engine for the web client: generated annotated frames and tracks, and a control
socket, on the contract's topics. For tests, the output benchmark, and trying the page without
a GPU. It is not the engine: one moving box per phrase of each camera's prompt, masks are the boxes;
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
from dataclasses import dataclass, field

import numpy as np
import zmq

from clients.jsontypes import JsonObject, ZmqContext
from engine.render import Renderer
from stream import bus as zbus
from stream.config import Config
from stream.wire import (
    AddCamera,
    AddObject,
    AnnotatedMessage,
    ControlCommand,
    RemoveCamera,
    RemoveObject,
    Reset,
    SetPrompt,
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


@dataclass
class _Camera:
    """One camera of the stand-in engine: its prompt, drawn objects and frame counter."""

    name: str
    prompt: str
    background: np.ndarray
    prompts_set: int = 0
    seq: int = 0
    prompt_hidden: bool = False
    manual: dict[int, tuple[str, list[float]]] = field(default_factory=dict)
    next_manual_id: int = 10_000
    t_capture: OrderedDict[int, int] = field(default_factory=OrderedDict)

    def labels(self) -> list[str]:
        return [p.strip() for p in self.prompt.split(".") if p.strip()][:8]


class SyntheticEngine:
    """Publishes ``annotated.<camera>`` and ``tracks.<camera>`` at ``fps`` for every camera of
        the configuration (or ``cameras``) and answers control as the engine does (v1.1: requests
        name their camera when there are several; ``cameras``, ``add_camera``, ``remove_camera``;
        an added camera's frames endpoint is not read: its frames are generated too). The cameras in
    ``silent`` publish nothing."""

    def __init__(
        self,
        cfg: Config,
        *,
        fps: float = 20.0,
        width: int = 320,
        height: int = 240,
        cameras: list[str] | None = None,
        silent: list[str] | None = None,
        ctx: ZmqContext | None = None,
    ) -> None:
        self.cfg = cfg
        # cameras served (control, stats) that publish no frame: as a camera whose source is
        # down or has sent nothing yet
        self.silent: set[str] = set(silent or [])
        self.fps = fps
        self.width, self.height = width, height
        self.published = 0
        self.requests: deque[JsonObject] = deque(maxlen=1000)  # newest valid requests
        self._ctx = ctx or zmq.Context.instance()
        self._renderer = Renderer(jpeg_quality=85)
        self._lock = threading.Lock()
        self._cameras: dict[str, _Camera] = {}
        self._added = 0
        settings = cfg.camera_settings()
        for name in cameras if cameras is not None else list(settings):
            cam = settings.get(name)
            self._add(name, cam.engine.prompt if cam is not None else cfg.engine.prompt)
        self.camera = next(iter(self._cameras), cfg.camera)  # the first camera
        self._stop = threading.Event()
        # encrypted where the config has CURVE keys, as the engine's (engine/service/loop.py)
        self._ann = zbus.bind(self._ctx, zmq.PUB, cfg.bus.annotated, cfg.bus, curve=True)
        self._trk = zbus.bind(self._ctx, zmq.PUB, cfg.bus.tracks, cfg.bus, curve=True)
        self._rep = zbus.bind(self._ctx, zmq.REP, cfg.bus.control, cfg.bus)
        self._threads = [
            threading.Thread(target=self._publish_loop, name="synthetic-publish", daemon=True),
            threading.Thread(target=self._control_loop, name="synthetic-control", daemon=True),
        ]

    def _add(self, name: str, prompt: str) -> None:
        rng = np.random.default_rng(self._added)
        base = rng.integers(30, 90, size=(self.height, self.width, 3), dtype=np.uint8)
        tint = np.array(((self._added * 67) % 60, (self._added * 29) % 60, 0), np.uint8)
        self._added += 1
        self._cameras[name] = _Camera(name, prompt, base + tint)

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

    @property
    def cameras(self) -> list[str]:
        with self._lock:
            return list(self._cameras)

    def prompt_of(self, camera: str) -> str:
        with self._lock:
            return self._cameras[camera].prompt

    @property
    def prompt(self) -> str:
        """The first camera's prompt."""
        return self.prompt_of(self.camera)

    def t_capture_of(self, seq: int, camera: str | None = None) -> int | None:
        with self._lock:
            cam = self._cameras.get(camera or self.camera)
            return None if cam is None else cam.t_capture.get(seq)

    def labels(self, camera: str | None = None) -> list[str]:
        with self._lock:
            return self._cameras[camera or self.camera].labels()

    def _objects(self, cam: _Camera) -> tuple[list[int], list[str], np.ndarray]:
        labels = [] if cam.prompt_hidden else cam.labels()
        ids = [cam.prompts_set * 100 + i + 1 for i in range(len(labels))]
        boxes: list[list[float]] = []
        w, h, seq = self.width, self.height, cam.seq
        for i in range(len(labels)):
            bw, bh = w // 5, h // 4
            x = int((seq * (3 + i) + i * w // 3) % (w - bw))
            y = STAMP_ROWS + 4 + int((i * bh * 1.2) % (h - bh - STAMP_ROWS - 4))
            boxes.append([float(x), float(y), float(x + bw), float(y + bh)])
        for tid, (label, box) in sorted(cam.manual.items()):
            ids.append(tid)
            labels.append(label)
            boxes.append(box)
        return ids, labels, np.array(boxes, np.float32).reshape(-1, 4)

    def _camera_of(self, name: str | None) -> _Camera | str:
        """The camera a request addresses, or the error reply's text."""
        known = ", ".join(self._cameras) or "none"
        if name is None:
            if len(self._cameras) == 1:
                return next(iter(self._cameras.values()))
            return f"this engine serves several cameras ({known}): the request must name one in 'camera'"
        cam = self._cameras.get(name)
        return cam if cam is not None else f"unknown camera {name!r} (cameras: {known})"

    def _control(self, req: ControlCommand) -> bytes:
        """The reply to one parsed control request (other than stats and cameras)."""
        with self._lock:
            if isinstance(req, AddCamera):
                if req.camera in self._cameras:
                    return control_reply(False, error=f"camera {req.camera!r} is already served")
                self._add(req.camera, req.prompt if req.prompt is not None else "")
                return control_reply(True)
            if isinstance(req, RemoveCamera):
                if self._cameras.pop(req.camera, None) is None:
                    return control_reply(False, error=f"unknown camera {req.camera!r}")
                return control_reply(True)
            cam = self._camera_of(req.camera)
            if isinstance(cam, str):
                return control_reply(False, error=cam)
            return self._camera_control(cam, req)

    def _camera_control(self, cam: _Camera, req: ControlCommand) -> bytes:
        if isinstance(req, SetPrompt):
            cam.prompt = req.prompt
            cam.prompts_set += 1
            cam.prompt_hidden = False
            return control_reply(True, labels=cam.labels())
        if isinstance(req, AddObject):
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
            tid = cam.next_manual_id
            cam.next_manual_id += 1
            cam.manual[tid] = (req.label, box)
            return control_reply(True, id=tid)
        if isinstance(req, RemoveObject):
            if cam.manual.pop(req.id, None) is None:
                return control_reply(False, error=f"no tracked object with id {req.id}")
            return control_reply(True)
        if not isinstance(req, Reset):
            return control_reply(False, error=f"{req.cmd} is not supported by the synthetic engine")
        cam.manual.clear()
        cam.prompt_hidden = True
        return control_reply(True)

    def _frame(self, cam: _Camera) -> tuple[TracksMessage, AnnotatedMessage]:
        """The next frame of ``cam`` (under the lock: its objects are read)."""
        t_capture = time.time_ns()
        seq = cam.seq
        ids, labels, boxes = self._objects(cam)
        masks = np.zeros((len(ids), self.height, self.width), bool)
        for k, (x1, y1, x2, y2) in enumerate(boxes.astype(int)):
            masks[k, y1:y2, x1:x2] = True
        image = self._renderer.draw(cam.background, ids, labels, [0.9] * len(ids), boxes, masks)
        stamp(image, seq)
        objects = [
            TrackedObject.model_construct(
                id=i,
                label=lab,
                score=0.9,
                confidence=0.9,
                box=[float(v) for v in b],
                mask=encode_mask(m),
                age=seq,
                state="tracked",
            )
            for i, lab, b, m in zip(ids, labels, boxes, masks, strict=True)
        ]
        cam.t_capture[seq] = t_capture
        while len(cam.t_capture) > 4096:
            cam.t_capture.popitem(last=False)
        cam.seq += 1
        tracks = TracksMessage.build(
            cam.name, seq, t_capture, self.width, self.height, cam.prompt, objects
        )
        ann = AnnotatedMessage(
            cam.name, seq, t_capture, self.width, self.height, len(ids), encode_jpeg(image, 85)
        )
        return tracks, ann

    def _publish_loop(self) -> None:
        period = 1.0 / self.fps
        next_at = time.monotonic()
        while not self._stop.is_set():
            with self._lock:
                cams = list(self._cameras.values())
            for cam in cams:
                if cam.name in self.silent:
                    continue
                with self._lock:
                    tracks, ann = self._frame(cam)
                self._trk.send_multipart(tracks.to_parts())
                self._ann.send_multipart(ann.to_parts())
            self.published += 1
            next_at += period
            self._stop.wait(max(0.0, next_at - time.monotonic()))
            next_at = max(next_at, time.monotonic() - period)

    def _stats(self) -> JsonObject:
        with self._lock:
            objects = {name: len(c.labels()) + len(c.manual) for name, c in self._cameras.items()}
            per: dict[str, JsonObject] = {
                name: {
                    "camera": name,
                    "fps_in": 0.0 if name in self.silent else self.fps,
                    "fps_out": 0.0 if name in self.silent else self.fps,
                    "frames_dropped": 0,
                    "objects": objects[name],
                    "prompt": c.prompt,
                }
                for name, c in self._cameras.items()
            }
        first: JsonObject = next(iter(per.values()), {})
        flat = (
            first
            if len(per) == 1
            else {
                "fps_in": self.fps * len(per),
                "fps_out": self.fps * len(per),
                "frames_dropped": 0,
                "objects": sum(objects.values()),
            }
        )
        return {**flat, "cameras": per}

    def _camera_list(self) -> list[JsonObject]:
        with self._lock:
            return [
                {
                    "camera": name,
                    "state": "live",
                    "fps": self.fps,
                    "objects": len(c.labels()) + len(c.manual),
                    "prompt": c.prompt,
                    "frames": None,
                }
                for name, c in self._cameras.items()
            ]

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
                self._rep.send(json.dumps({"ok": True, "stats": self._stats()}).encode())
            elif req.cmd == "cameras":
                self._rep.send(control_reply(True, cameras=self._camera_list()))
            else:
                self._rep.send(self._control(req))
