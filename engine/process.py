"""The engine process (``promptcam engine``).

Reads: ``frame.<camera>`` (latest-frame receiver: a slow engine skips frames, counted), the
``control`` REP socket, and optionally ``detections.<camera>`` from an external detector.
Publishes: ``tracks.<camera>`` (one message per processed frame, never dropped) and
``annotated.<camera>`` (newest result only; older ones dropped and counted).
Drops: frames that arrive while a frame is processed (``skipped``) or older than the staleness
budget (``stale``); malformed frames, detections and control requests (rejected, counted,
answered with an error where there is someone to answer).

The frame loop owns the models; control requests reach it through a bounded command queue and
are executed between frames, so nothing else ever touches model state.
"""

from __future__ import annotations

import argparse
import logging
import queue
import signal
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import psutil
import zmq

from engine.outputs import AnnotatedPublisher, TracksPublisher
from engine.pipeline import FrameInput, FrameResult, TrackingEngine
from engine.render import Renderer
from stream import bus as zbus
from stream.config import Config
from stream.errors import PromptcamError
from stream.receiver import LatestFrameReceiver
from stream.wire import (
    AddObject,
    DetectionsMessage,
    RemoveObject,
    Reset,
    SetPrompt,
    Stats,
    WireError,
    control_reply,
    now_ns,
    parse_control,
)

log = logging.getLogger(__name__)
CONTROL_DROP_BYTES = 1 << 20
Command = Callable[[TrackingEngine], dict[str, Any]]


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


class EngineProcess:
    """Frame loop + control server + publishers for one camera."""

    def __init__(
        self, cfg: Config, engine: TrackingEngine, stop: threading.Event | None = None
    ) -> None:
        self.cfg = cfg
        self.engine = engine
        self.stop = stop or threading.Event()
        self.ctx: zmq.Context[Any] = zmq.Context()
        self._commands: queue.Queue[tuple[Command, Future[dict[str, Any]]]] = queue.Queue(
            maxsize=64
        )
        self._stats_lock = threading.Lock()
        self._stats: dict[str, Any] = {}
        self.control_rejected: dict[str, int] = {}
        self.detections_rejected = 0
        self._fps_in = RateMeter()
        self._fps_out = RateMeter()
        self._latency: dict[str, float] = {}
        self._proc = psutil.Process()
        self._started = time.time()
        b = cfg.bus
        self.receiver = LatestFrameReceiver(
            b.frames, cfg.camera, b.staleness_ms, int(b.max_payload_mb * 2**20), b, self.ctx
        )
        tracks_sock = zbus.bind(self.ctx, zmq.PUB, b.tracks, b, sndhwm=100, curve=True)
        self.annotated: AnnotatedPublisher | None = None
        if cfg.engine.annotate:
            ann_sock = zbus.bind(self.ctx, zmq.PUB, b.annotated, b, sndhwm=4, curve=True)
            self.annotated = AnnotatedPublisher(
                ann_sock, cfg.camera, Renderer(jpeg_quality=cfg.engine.jpeg_quality)
            )
        self.tracks = TracksPublisher(tracks_sock, cfg.camera, self._on_published)
        # Requests up to MAX_CONTROL_BYTES are parsed; larger ones get an error reply; beyond
        # 1 MiB ZeroMQ drops them unread (and the peer's connection), so memory stays bounded.
        self._control_sock = zbus.bind(
            self.ctx, zmq.REP, b.control, b, maxmsgsize=CONTROL_DROP_BYTES
        )
        self._threads = [threading.Thread(target=self._control_loop, name="control", daemon=True)]
        if b.detections:
            self._threads.append(
                threading.Thread(target=self._detections_loop, name="detections", daemon=True)
            )

    # ------------------------------------------------------------------ publishing side

    def _on_published(self, result: FrameResult, image: Any, publish_ms: float) -> None:
        self._fps_out.tick()
        self._latency["publish_ms"] = publish_ms
        self._latency["end_to_end_ms"] = (now_ns() - result.t_capture_ns) / 1e6
        if self.annotated is not None:
            self.annotated.offer(result, image)

    # ------------------------------------------------------------------ control

    def _control_loop(self) -> None:
        sock = self._control_sock
        while not self.stop.is_set():
            if not sock.poll(100, zmq.POLLIN):
                continue
            parts = sock.recv_multipart()
            reply = self._handle_control(parts)
            sock.send(reply)

    def _reject(self, reason: str) -> None:
        self.control_rejected[reason] = self.control_rejected.get(reason, 0) + 1
        n = sum(self.control_rejected.values())
        if n <= 10 or n % 1000 == 0:
            log.warning("rejected control request (%s), %d so far", reason, n)

    def _handle_control(self, parts: list[bytes]) -> bytes:
        if len(parts) != 1:
            self._reject("bad_parts")
            return control_reply(
                False, error=f"request must be one JSON part, got {len(parts)} parts"
            )
        try:
            req = parse_control(parts[0])
        except WireError as e:
            self._reject(e.reason)
            return control_reply(False, error=str(e))
        if isinstance(req, Stats):
            return control_reply(True, stats=self.stats())
        cmd: Command
        if isinstance(req, SetPrompt):
            text = req.prompt

            def cmd(e: TrackingEngine) -> dict[str, Any]:
                return {"labels": self._set_prompt(e, text)}
        elif isinstance(req, AddObject):
            box, label = req.box, req.label

            def cmd(e: TrackingEngine) -> dict[str, Any]:
                return {"id": e.add_object(box, label)}
        elif isinstance(req, RemoveObject):
            tid = req.id

            def cmd(e: TrackingEngine) -> dict[str, Any]:
                e.remove_object(tid)
                return {}
        else:
            assert isinstance(req, Reset)

            def cmd(e: TrackingEngine) -> dict[str, Any]:
                e.reset()
                return {}

        fut: Future[dict[str, Any]] = Future()
        try:
            self._commands.put_nowait((cmd, fut))
        except queue.Full:
            self._reject("busy")
            return control_reply(False, error="engine busy: too many pending commands")
        try:
            fields = fut.result(timeout=30.0)
        except PromptcamError as e:
            self._reject("refused")
            return control_reply(False, error=str(e))
        except TimeoutError:
            return control_reply(False, error="engine did not execute the command within 30s")
        return control_reply(True, **fields)

    def _set_prompt(self, e: TrackingEngine, text: str) -> list[str]:
        if e.grounder is None:
            from engine.build import load_detector

            log.info("loading the detector for the first text prompt")
            e.set_grounder(load_detector(self.cfg))
        return e.set_prompt(text)

    def _run_commands(self) -> None:
        while True:
            try:
                cmd, fut = self._commands.get_nowait()
            except queue.Empty:
                return
            try:
                fut.set_result(cmd(self.engine))
            except PromptcamError as e:
                fut.set_exception(e)
            except Exception as e:  # keep the engine running; the requester gets the error
                log.exception("control command failed")
                fut.set_exception(PromptcamError(f"internal error: {e.__class__.__name__}: {e}"))

    # ------------------------------------------------------------------ external detections

    def _detections_loop(self) -> None:
        from engine.grounder import detections_from_message

        b = self.cfg.bus
        assert b.detections is not None
        sock = zbus.connect(
            self.ctx, zmq.SUB, b.detections, b, subscribe=[f"detections.{self.cfg.camera}".encode()]
        )
        try:
            while not self.stop.is_set():
                parts = zbus.recv_multipart_timeout(sock, 100, copy=True)
                if parts is None:
                    continue
                try:
                    msg = DetectionsMessage.from_parts(parts)
                except WireError as e:
                    self.detections_rejected += 1
                    log.warning("rejected detections message: %s", e)
                    continue
                seq = msg.header.seq

                def cmd(
                    e: TrackingEngine, m: DetectionsMessage = msg, s: int = seq
                ) -> dict[str, Any]:
                    e.add_external_detections(s, detections_from_message(m, e.labels))
                    return {}

                try:
                    self._commands.put_nowait((cmd, Future()))
                except queue.Full:
                    self.detections_rejected += 1
        finally:
            sock.close(0)

    # ------------------------------------------------------------------ stats

    def stats(self) -> dict[str, Any]:
        with self._stats_lock:
            s = dict(self._stats)
        rx = self.receiver.stats
        mem = self._proc.memory_info().rss / 2**20
        s.update(
            {
                "camera": self.cfg.camera,
                "uptime_s": round(time.time() - self._started, 1),
                "fps_in": round(self._fps_in.rate(), 2),
                "fps_out": round(self._fps_out.rate(), 2),
                "frames_in": rx.delivered,
                "frames_out": self.tracks.published,
                "frames_dropped": rx.skipped + rx.stale + rx.overrun,
                "frames_skipped": rx.skipped,
                "frames_stale": rx.stale,
                "frames_overrun": rx.overrun,
                "frames_rejected": rx.rejected_total,
                "control_rejected": sum(self.control_rejected.values()),
                "detections_rejected": self.detections_rejected,
                "annotated_published": self.annotated.published if self.annotated else 0,
                "annotated_dropped": self.annotated.dropped if self.annotated else 0,
                "latency_ms": {k: round(v, 2) for k, v in self._latency.items()},
                "memory": {"rss_mb": round(mem, 1), **_cuda_memory()},
            }
        )
        return s

    # ------------------------------------------------------------------ the loop

    def run(self, max_frames: int | None = None) -> int:
        self.receiver.start()
        for t in self._threads:
            t.start()
        log.info(
            "engine: frames from %s, tracks on %s, control on %s",
            self.cfg.bus.frames,
            self.cfg.bus.tracks,
            self.cfg.bus.control,
        )
        last_log = time.monotonic()
        processed = 0
        try:
            while not self.stop.is_set():
                self._run_commands()
                frame = self.receiver.get(timeout=0.05)
                if frame is None:
                    continue
                self._fps_in.tick()
                self._latency["capture_to_engine_ms"] = (now_ns() - frame.t_capture_ns) / 1e6
                try:
                    image = frame.image()
                except WireError as e:
                    log.warning("dropping undecodable frame %d: %s", frame.seq, e)
                    continue
                result = self.engine.process(FrameInput(frame.seq, frame.t_capture_ns, image))
                self._latency.update({k: v for k, v in result.timings_ms.items()})
                self._latency["grounding_ms"] = self.engine.counters.last_grounding_ms
                with self._stats_lock:
                    self._stats = self.engine.stats()
                self.tracks.put(result, image)
                processed += 1
                if max_frames is not None and processed >= max_frames:
                    break
                if time.monotonic() - last_log > self.cfg.engine.stats_every_s:
                    last_log = time.monotonic()
                    st = self.stats()
                    log.info(
                        "fps in %.1f out %.1f, objects %d, dropped %d, e2e %.0f ms",
                        st["fps_in"],
                        st["fps_out"],
                        st.get("objects", 0),
                        st["frames_dropped"],
                        st["latency_ms"].get("end_to_end_ms", 0.0),
                    )
        finally:
            self.close()
        return 0

    def close(self) -> None:
        self.stop.set()
        self.receiver.close()
        for t in self._threads:
            if t.is_alive():
                t.join(timeout=2.0)
        self.tracks.close()
        if self.annotated is not None:
            self.annotated.close()
        self._control_sock.close(0)
        self.engine.close()
        self.ctx.destroy(linger=0)


def _cuda_memory() -> dict[str, float]:
    try:
        import torch

        if torch.cuda.is_available():
            return {"cuda_allocated_mb": round(torch.cuda.memory_allocated() / 2**20, 1)}
    except ImportError:
        pass
    return {}


def main(cfg: Config, args: argparse.Namespace) -> int:
    from setproctitle import setproctitle

    from engine.build import build_engine

    setproctitle("promptcam: engine")
    stop = threading.Event()

    def _on_signal(signum: int, _frame: Any) -> None:
        log.info("signal %d: stopping", signum)
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    engine = build_engine(cfg, background_grounding=True)
    return EngineProcess(cfg, engine, stop).run()
