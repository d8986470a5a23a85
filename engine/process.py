"""The engine process (``promptcam engine``).

Reads: ``frame.<camera>`` (latest-frame receiver: a slow engine skips frames, counted), the
``control`` socket (a ROUTER: REQ and DEALER clients alike), and optionally
``detections.<camera>`` from an external detector.
Publishes: ``tracks.<camera>`` (one message per processed frame, never dropped) and
``annotated.<camera>`` (newest result only; older ones dropped and counted).
Drops: frames that arrive while a frame is processed (``skipped``) or older than the staleness
budget (``stale``); malformed frames, detections and control requests (rejected, counted,
answered with an error where there is someone to answer); detections beyond a queue of
``DETECTIONS_QUEUE`` (counted).

The frame loop owns the models; control commands reach it through a bounded queue and are
executed between frames, so nothing else ever touches model state. The control thread never
waits for them: it answers ``stats`` at once, keeps at most ``MAX_PENDING_COMMANDS`` commands
pending (beyond: an immediate "busy" error) and replies to each when the frame loop has run it,
so a crowd of clients cannot make ``stats`` unreachable. No input ends a reading thread; a thread
that ends anyway stops the process (``stream.threads``), which then exits non-zero.
Runtime state (prompt, manual objects) is kept in ``engine.state_file`` and restored at start
(``engine.state``).
"""

from __future__ import annotations

import argparse
import logging
import queue
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import psutil
import zmq

from engine.outputs import AnnotatedPublisher, TracksPublisher
from engine.pipeline import FrameInput, FrameResult, TrackingEngine
from engine.render import Renderer
from engine.state import EngineState, ManualObject, StateFile, snapshot
from stream import bus as zbus
from stream.config import Config
from stream.errors import PromptcamError
from stream.receiver import LatestFrameReceiver
from stream.threads import ThreadDeath
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
DETECTIONS_DROP_BYTES = 1 << 20
MAX_PENDING_COMMANDS = 64  # control commands queued or running; beyond: "busy" at once
COMMAND_TIMEOUT_S = 30.0
DETECTIONS_QUEUE = 8
STATE_SAVE_EVERY_S = 1.0
Command = Callable[[TrackingEngine], dict[str, Any]]


@dataclass
class _Pending:
    """A control command waiting for the frame loop, and where its reply goes."""

    envelope: list[bytes]
    future: Future[dict[str, Any]]
    deadline: float


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
        self,
        cfg: Config,
        engine: TrackingEngine,
        stop: threading.Event | None = None,
        restored: EngineState | None = None,
    ) -> None:
        self.cfg = cfg
        self.engine = engine
        self.stop = stop or threading.Event()
        self.ctx: zmq.Context[Any] = zmq.Context()
        self._commands: queue.Queue[tuple[Command, Future[dict[str, Any]]]] = queue.Queue(
            maxsize=MAX_PENDING_COMMANDS
        )
        self._detections: queue.Queue[Command] = queue.Queue(maxsize=DETECTIONS_QUEUE)
        self._pending: list[_Pending] = []  # control thread only
        self.control_pending_max = 0
        self.control_replies_dropped = 0
        self._busy_with: str | None = None  # a long step of the frame loop (loading a model)
        self._stats_lock = threading.Lock()
        self._stats: dict[str, Any] = {}
        self.control_rejected: dict[str, int] = {}
        self.detections_rejected = 0
        self.detections_dropped = 0
        self.detections_connection_drops = 0
        self.frames_undecodable = 0
        self._state_file = (
            StateFile(cfg.engine.state_file, cfg.camera) if cfg.engine.state_file else None
        )
        self._state = restored
        self._to_restore: Sequence[ManualObject] = restored.objects if restored else ()
        self._state_dirty = self._state_file is not None
        self._state_saved_at = 0.0
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
        # ROUTER, not REP: replies go out when their command has run, in any order.
        self._control_sock = zbus.bind(
            self.ctx, zmq.ROUTER, b.control, b, maxmsgsize=CONTROL_DROP_BYTES
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
            if sock.poll(10 if self._pending else 100, zmq.POLLIN):
                for _ in range(256):  # a bounded burst, then the replies that are due
                    try:
                        parts = sock.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    self._on_request(parts)
            self._answer_done()

    def _on_request(self, parts: list[bytes]) -> None:
        envelope, body = split_envelope(parts)
        try:
            outcome = self._handle_control(body)
        except Exception as e:  # a bug must not end the control thread: count it like bad input
            log.exception("control request could not be handled")
            self._reject("internal")
            outcome = control_reply(False, error=f"internal error: {e.__class__.__name__}")
        if isinstance(outcome, bytes):
            self._send_reply(envelope, outcome)
        else:
            self._pending.append(_Pending(envelope, outcome, time.monotonic() + COMMAND_TIMEOUT_S))
            self.control_pending_max = max(self.control_pending_max, len(self._pending))

    def _answer_done(self) -> None:
        now = time.monotonic()
        waiting: list[_Pending] = []
        for p in self._pending:
            if p.future.done():
                reply = self._reply_of(p.future)
            elif now > p.deadline and p.future.cancel():  # not started: it never will be
                reply = control_reply(
                    False, error=f"engine did not execute the command within {COMMAND_TIMEOUT_S:g}s"
                )
            else:
                waiting.append(p)
                continue
            self._send_reply(p.envelope, reply)
        self._pending = waiting

    def _reply_of(self, fut: Future[dict[str, Any]]) -> bytes:
        error = fut.exception()
        if error is not None:
            self._reject("refused")
            return control_reply(False, error=str(error))
        return control_reply(True, **fut.result())

    def _send_reply(self, envelope: list[bytes], reply: bytes) -> None:
        try:
            self._control_sock.send_multipart([*envelope, reply], zmq.NOBLOCK)
        except zmq.ZMQError:  # the client's queue is full (it does not read): its loss
            self.control_replies_dropped += 1

    def _reject(self, reason: str) -> None:
        self.control_rejected[reason] = self.control_rejected.get(reason, 0) + 1
        n = sum(self.control_rejected.values())
        if n <= 10 or n % 1000 == 0:
            log.warning("rejected control request (%s), %d so far", reason, n)

    def _handle_control(self, parts: list[bytes]) -> bytes | Future[dict[str, Any]]:
        """The reply to a request, or the future of the command that will make it."""
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
        if len(self._pending) >= MAX_PENDING_COMMANDS:
            self._reject("busy")
            return control_reply(False, error="engine busy: too many pending commands")
        try:
            self._commands.put_nowait((cmd, fut))
        except queue.Full:
            self._reject("busy")
            return control_reply(False, error="engine busy: too many pending commands")
        return fut

    def _set_prompt(self, e: TrackingEngine, text: str) -> list[str]:
        if e.grounder is None:
            from engine.build import load_detector

            log.info("loading the detector for the first text prompt")
            self._busy_with = "loading the detector"
            try:
                e.set_grounder(load_detector(self.cfg))
            finally:
                self._busy_with = None
        return e.set_prompt(text)

    def _run_commands(self) -> None:
        ran = False
        while True:
            try:
                cmd, fut = self._commands.get_nowait()
            except queue.Empty:
                break
            if not fut.set_running_or_notify_cancel():
                continue  # timed out while queued: its requester was told so
            ran = True
            try:
                fut.set_result(cmd(self.engine))
            except PromptcamError as e:
                fut.set_exception(e)
            except Exception as e:  # keep the engine running; the requester gets the error
                log.exception("control command failed")
                fut.set_exception(PromptcamError(f"internal error: {e.__class__.__name__}: {e}"))
        while True:
            try:
                det = self._detections.get_nowait()
            except queue.Empty:
                break
            try:
                det(self.engine)
            except Exception:  # counted; the frame loop goes on
                self.detections_rejected += 1
                log.exception("external detections could not be applied")
        if ran:
            self._state_dirty = True
            self._save_state()

    # ------------------------------------------------------------------ runtime state

    def _save_state(self) -> None:
        """Write the runtime state when a command changed it, else at most once a second while
        manual objects (whose boxes move) exist."""
        if self._state_file is None:
            return
        now = time.monotonic()
        if not self._state_dirty and (
            now - self._state_saved_at < STATE_SAVE_EVERY_S
            or not (self._state is not None and self._state.objects)
        ):
            return
        state = snapshot(self.engine.prompt, self.engine.manager.tracks(), self._state)
        if self._state_dirty or state != self._state:
            self._state_file.save(state)
        self._state = state
        self._state_dirty = False
        self._state_saved_at = now

    def _restore_objects(self) -> None:
        """Re-seed the manual objects of the state file on the first frame, from their boxes."""
        objects, self._to_restore = self._to_restore, ()
        restored = 0
        for o in objects:
            try:
                self.engine.add_object(o.box, o.label)
                restored += 1
            except PromptcamError as e:
                log.warning("manual object %d (%s) not restored: %s", o.id, o.label, e)
        log.info(
            "restored %d manual object(s) from %s, re-seeded from their last boxes",
            restored,
            self.cfg.engine.state_file,
        )
        self._state_dirty = True

    # ------------------------------------------------------------------ external detections

    def _detections_loop(self) -> None:
        b = self.cfg.bus
        assert b.detections is not None
        sub = zbus.Subscription(
            self.ctx,
            b.detections,
            b,
            [f"detections.{self.cfg.camera}".encode()],
            maxmsgsize=DETECTIONS_DROP_BYTES,
            what="detections",
        )
        try:
            while not self.stop.is_set():
                readable = sub.poll(100)
                self.detections_connection_drops = sub.dropped
                if not readable:
                    continue
                try:
                    parts = sub.sock.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    continue
                self._on_detections(parts)
        finally:
            sub.close()

    def _on_detections(self, parts: list[bytes]) -> None:
        from engine.grounder import detections_from_message

        try:
            msg = DetectionsMessage.from_parts(parts)
        except WireError as e:
            self._reject_detections(str(e))
            return
        except Exception as e:  # a parser bug must not end the thread: count it like bad input
            log.exception("detections message could not be checked")
            self._reject_detections(f"internal error: {e.__class__.__name__}")
            return
        seq = msg.header.seq

        def cmd(e: TrackingEngine, m: DetectionsMessage = msg, s: int = seq) -> dict[str, Any]:
            e.add_external_detections(s, detections_from_message(m, e.labels))
            return {}

        try:
            self._detections.put_nowait(cmd)
        except queue.Full:
            self.detections_dropped += 1

    def _reject_detections(self, why: str) -> None:
        self.detections_rejected += 1
        n = self.detections_rejected
        if n <= 10 or n % 1000 == 0:
            log.warning("rejected detections message, %d so far: %s", n, why)

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
                "frames_received": rx.received,
                "frames_in": rx.delivered,
                "frames_out": self.tracks.published,
                "frames_dropped": rx.skipped + rx.stale + rx.overrun,
                "frames_skipped": rx.skipped,
                "frames_stale": rx.stale,
                "frames_overrun": rx.overrun,
                "frames_rejected": rx.rejected_total + self.frames_undecodable,
                "frames_rejected_by_reason": {
                    **rx.rejected,
                    "undecodable": self.frames_undecodable,
                },
                "frames_connection_drops": rx.connection_drops,
                "control_rejected": sum(self.control_rejected.values()),
                "control_rejected_by_reason": dict(self.control_rejected),
                "control_pending": len(self._pending),
                "control_pending_max": self.control_pending_max,
                "control_replies_dropped": self.control_replies_dropped,
                "detections_rejected": self.detections_rejected,
                "detections_dropped": self.detections_dropped,
                "detections_connection_drops": self.detections_connection_drops,
                "busy_with": self._busy_with,
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
                    self.frames_undecodable += 1
                    if self.frames_undecodable <= 10 or self.frames_undecodable % 1000 == 0:
                        log.warning("dropping undecodable frame %d: %s", frame.seq, e)
                    continue
                result = self.engine.process(FrameInput(frame.seq, frame.t_capture_ns, image))
                if self._to_restore:
                    self._restore_objects()
                self._latency.update({k: v for k, v in result.timings_ms.items()})
                self._latency["grounding_ms"] = self.engine.counters.last_grounding_ms
                with self._stats_lock:
                    self._stats = self.engine.stats()
                if not self.tracks.put(result, image, self.stop):
                    break  # the publisher is gone (its death stops the process)
                self._save_state()
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


def split_envelope(parts: list[bytes]) -> tuple[list[bytes], list[bytes]]:
    """A ROUTER message as (routing envelope, request parts): up to the first empty delimiter
    part (REQ clients), else the peer's identity alone (DEALER clients that send none)."""
    for i, part in enumerate(parts[1:], start=1):
        if part == b"":
            return parts[: i + 1], parts[i + 1 :]
    return parts[:1], parts[1:]


def restore_state(cfg: Config) -> tuple[Config, EngineState | None]:
    """The config to start with (its prompt the kept one) and the kept state, if any."""
    if cfg.engine.state_file is None:
        return cfg, None
    state = StateFile(cfg.engine.state_file, cfg.camera).load()
    if state is None:
        return cfg, None
    log.info(
        "restoring %s from %s (the engine was restarted)", state.describe(), cfg.engine.state_file
    )
    engine_cfg = cfg.engine.model_copy(update={"prompt": state.prompt})
    return cfg.model_copy(update={"engine": engine_cfg}), state


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
    death = ThreadDeath(stop).install()
    cfg, restored = restore_state(cfg)
    engine = build_engine(cfg, background_grounding=True)
    return death.exit_code(EngineProcess(cfg, engine, stop, restored).run())
