"""The engine process (``promptcam engine``): every configured camera through one model.

Reads: ``frame.<camera>`` of each camera (one latest-frame receiver per camera: a slow engine
skips frames, counted per camera), the ``control`` socket (a ROUTER: REQ and DEALER clients
alike), and optionally ``detections.<camera>`` from an external detector.
Publishes: ``tracks.<camera>`` (one message per processed frame of a camera, never dropped) and
``annotated.<camera>`` (newest result per camera only; older ones dropped and counted), every
camera on the same two sockets.
Drops: frames that arrive while a tick is processed (``skipped``) or older than the staleness
budget (``stale``); malformed frames, detections and control requests (rejected, counted,
answered with an error where there is someone to answer); detections beyond a queue of
``DETECTIONS_QUEUE`` (counted).

Each tick takes the newest frame of every camera that has a new one, so every camera is served
once per tick whatever its rate (a 30 fps camera cannot starve a 5 fps one), and a camera
whose source stopped is simply not in the tick. The frame loop owns the models; control
requests reach it through a bounded command queue and run between ticks, so nothing else ever
touches model state. Cameras can be added and removed at runtime (``add_camera`` /
``remove_camera``). The control thread never waits for a command: it answers ``stats`` and
``cameras`` at once, keeps at most ``MAX_PENDING_COMMANDS`` commands pending (beyond: an
immediate "busy" error) and replies to each when the loop has run it, so a crowd of clients
cannot make ``stats`` unreachable. No input ends a reading thread; a thread that ends anyway
stops the process (``stream.threads``), which then exits non-zero. Each camera's runtime state
(prompt, manual objects) is kept in ``engine.state_file`` and restored at start
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
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import psutil
import zmq

from engine.camera import CameraTracker
from engine.camera_stats import CameraStats
from engine.outputs import AnnotatedPublisher, TracksPublisher
from engine.pipeline import FrameInput, FrameResult, MultiCameraEngine, TrackingEngine
from engine.render import Renderer
from engine.state import EngineState, KeptState, ManualObject, StateFile, snapshot
from stream import bus as zbus
from stream.config import Config, EngineConfig
from stream.errors import PromptcamError, PromptError
from stream.receiver import LatestFrameReceiver
from stream.threads import ThreadDeath
from stream.wire import (
    AddCamera,
    AddObject,
    Cameras,
    ControlCommand,
    DetectionsMessage,
    LeaseIds,
    RemoveCamera,
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
STALLED_AFTER_S = 5.0  # a camera with no frame for this long is reported "stalled"
Command = Callable[["EngineProcess"], dict[str, Any]]


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

    def state(self) -> str:
        """``waiting`` (no frame yet), ``live``, or ``stalled`` (no frame for a while)."""
        if self.last_frame_at is None:
            return "waiting"
        return "stalled" if time.monotonic() - self.last_frame_at > STALLED_AFTER_S else "live"


@dataclass(frozen=True)
class CameraProcessStats:
    """One camera as the engine process sees it (control ``stats`` → ``cameras.<name>``)."""

    camera: str
    state: str
    frames: str
    fps_in: float
    fps_out: float
    frames_in: int
    frames_out: int
    frames_skipped: int
    frames_stale: int
    frames_overrun: int
    frames_rejected: int
    frames_received: int
    frames_rejected_by_reason: dict[str, int]
    frames_connection_drops: int
    annotated_published: int
    annotated_dropped: int
    latency_ms: dict[str, float]
    tracking: CameraStats

    @property
    def frames_dropped(self) -> int:
        return self.frames_skipped + self.frames_stale + self.frames_overrun

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        del d["tracking"]
        return {**self.tracking.as_dict(), **d, "frames_dropped": self.frames_dropped}


@dataclass(frozen=True)
class EngineStats:
    """The whole engine process (control ``stats``); ``as_dict`` is the wire form: v1's flat
    fields (sums over cameras; with one camera, that camera's figures) plus ``cameras``."""

    uptime_s: float
    cameras: dict[str, CameraProcessStats]
    control_rejected: int
    detections_rejected: int
    ground_batches: int
    control: dict[str, Any]  # the control thread's and detection thread's counters, busy_with
    latency_ms: dict[str, float]
    rss_mb: float
    cuda: dict[str, float]

    def as_dict(self) -> dict[str, Any]:
        cams = list(self.cameras.values())
        flat: dict[str, Any] = {}
        if len(cams) == 1:
            flat = cams[0].as_dict()
        else:
            keys = (
                "fps_in",
                "fps_out",
                "frames_in",
                "frames_out",
                "frames_skipped",
                "frames_stale",
                "frames_overrun",
                "frames_rejected",
                "frames_received",
                "frames_connection_drops",
                "annotated_published",
                "annotated_dropped",
                "frames_dropped",
                "objects",
                "suppressed",
            )
            per = [c.as_dict() for c in cams]
            flat = {k: round(sum(p[k] for p in per), 2) for k in keys}
            by_reason: dict[str, int] = {}
            for p in per:
                for reason, n in p["frames_rejected_by_reason"].items():
                    by_reason[reason] = by_reason.get(reason, 0) + n
            flat["frames_rejected_by_reason"] = by_reason
        flat.pop("frames", None)
        flat.pop("state", None)
        flat.pop("camera", None)
        if len(cams) == 1:
            flat["camera"] = cams[0].camera
        flat.update(
            {
                "uptime_s": self.uptime_s,
                "control_rejected": self.control_rejected,
                "detections_rejected": self.detections_rejected,
                "ground_batches": self.ground_batches,
                **self.control,
                "latency_ms": dict(self.latency_ms),
                "memory": {"rss_mb": self.rss_mb, **self.cuda},
                "cameras": {c.camera: c.as_dict() for c in cams},
            }
        )
        return flat


class EngineProcess:
    """Frame loop + control server + publishers for every camera of the engine."""

    def __init__(
        self,
        cfg: Config,
        engine: MultiCameraEngine | TrackingEngine,
        stop: threading.Event | None = None,
        restored: Mapping[str, EngineState] | None = None,
        *,
        ctx: zmq.Context[Any] | None = None,
        serve_configured: bool = True,
        state_file: StateFile | None = None,
        kept_ids: Mapping[str, int] | None = None,
    ) -> None:
        """``ctx``: the ZeroMQ context to use (e.g. one with a ZAP authenticator; the caller
        destroys it), default a context of its own. ``serve_configured``: add every camera of
        ``cfg`` to ``engine``; False serves only the cameras ``engine`` already has (none: a
        fleet engine, cameras added with ``add_camera``). ``state_file``: ``engine.state_file``
        already locked and read (``restored``, ``kept_ids``: what it held); without it, the
        engine locks and reads ``engine.state_file`` itself."""
        self.cfg = cfg
        self.engine = engine.engine if isinstance(engine, TrackingEngine) else engine
        self.stop = stop or threading.Event()
        self._own_ctx = ctx is None
        self.ctx: zmq.Context[Any] = zmq.Context() if ctx is None else ctx
        self._commands: queue.Queue[tuple[Command, Future[dict[str, Any]]]] = queue.Queue(
            maxsize=MAX_PENDING_COMMANDS
        )
        self._detections: queue.Queue[Command] = queue.Queue(maxsize=DETECTIONS_QUEUE)
        self._pending: list[_Pending] = []  # control thread only
        self.control_pending_max = 0
        self.control_replies_dropped = 0
        self._busy_with: str | None = None  # a long step of the frame loop (loading a model)
        self._stats_lock = threading.Lock()
        self._stats: EngineStats | None = None
        self.control_rejected: dict[str, int] = {}
        self.detections_rejected = 0
        self.detections_dropped = 0
        self.detections_connection_drops = 0
        path = cfg.engine.state_file
        if state_file is None and path is not None:
            state_file = StateFile(path)
            state_file.lock()
            if restored is None and kept_ids is None:
                kept = state_file.load()
                restored, kept_ids = kept.cameras, kept.ids
        self._state_file = state_file
        self._state: dict[str, EngineState] = dict(restored or {})
        self._state_dirty = self._state_file is not None
        self._state_saved_at = 0.0
        self._state_failed = False  # the last write failed: retried at most once a second
        if self._state_file is not None:
            self.engine.ids.attach(kept_ids or {}, self._persist_ids)
        self._latency: dict[str, float] = {}
        self._proc = psutil.Process()
        self._started = time.time()
        self._frame_ready = threading.Event()  # set by any camera's receiver on a new frame
        self._feeds: dict[str, CameraFeed] = {}
        settings = cfg.camera_settings()
        for name, cam in settings.items():
            if serve_configured and name not in self.engine.cameras:
                self.engine.add_camera(name, cam.engine)
        for name in self.engine.cameras:
            if name not in settings:
                raise PromptError(f"engine camera {name!r} is not in the configuration")
            self._feeds[name] = self._feed(name, settings[name].frames)
        self._restore(restored or {})
        b = cfg.bus
        tracks_sock = zbus.bind(self.ctx, zmq.PUB, b.tracks, b, sndhwm=100, curve=True)
        self.annotated: AnnotatedPublisher | None = None
        if cfg.engine.annotate:
            ann_sock = zbus.bind(self.ctx, zmq.PUB, b.annotated, b, sndhwm=4, curve=True)
            self.annotated = AnnotatedPublisher(
                ann_sock, Renderer(jpeg_quality=cfg.engine.jpeg_quality)
            )
        self.tracks = TracksPublisher(tracks_sock, self._on_published)
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
        self._publish_stats()

    @property
    def cameras(self) -> list[str]:
        return list(self._feeds)

    def _feed(self, name: str, frames: str) -> CameraFeed:
        b = self.cfg.bus
        receiver = LatestFrameReceiver(
            frames,
            name,
            b.staleness_ms,
            int(b.max_payload_mb * 2**20),
            b,
            self.ctx,
            notify=self._frame_ready,
        )
        return CameraFeed(name, frames, receiver)

    # ------------------------------------------------------------------ publishing side

    def _on_published(
        self, camera: str, result: FrameResult, image: Any, publish_ms: float
    ) -> None:
        feed = self._feeds.get(camera)
        if feed is not None:
            feed.fps_out.tick()
            feed.published += 1
            feed.latency_ms["publish_ms"] = publish_ms
            feed.latency_ms["end_to_end_ms"] = (now_ns() - result.t_capture_ns) / 1e6
            if self.annotated is not None:
                self.annotated.offer(camera, result, image)
        self._latency["publish_ms"] = publish_ms
        self._latency["end_to_end_ms"] = (now_ns() - result.t_capture_ns) / 1e6

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

    def handle_request(self, raw: bytes) -> bytes:
        """Answer one control request (JSON bytes) as the control socket would; callable from
        any thread (what needs the models runs on the loop; this waits for it)."""
        outcome = self._handle_control([raw])
        if isinstance(outcome, bytes):
            return outcome
        try:
            outcome.result(timeout=COMMAND_TIMEOUT_S)
        except TimeoutError:
            if outcome.cancel():  # not started: it never will be
                return control_reply(
                    False, error=f"engine did not execute the command within {COMMAND_TIMEOUT_S:g}s"
                )
            outcome.exception()  # running: its result comes
        except PromptcamError:
            pass  # the reply says it
        return self._reply_of(outcome)

    def call(self, cmd: Command, timeout: float = COMMAND_TIMEOUT_S) -> dict[str, Any]:
        """Run ``cmd(self)`` on the frame loop, between ticks, and return its result; raises
        what it raises (``PromptcamError``), or ``TimeoutError``."""
        fut: Future[dict[str, Any]] = Future()
        try:
            self._commands.put((cmd, fut), timeout=timeout)
        except queue.Full:
            raise PromptcamError("engine busy: too many pending commands") from None
        return fut.result(timeout=timeout)

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
        if isinstance(req, Cameras):
            return control_reply(True, cameras=self.camera_list())
        if len(self._pending) >= MAX_PENDING_COMMANDS:
            self._reject("busy")
            return control_reply(False, error="engine busy: too many pending commands")
        fut: Future[dict[str, Any]] = Future()
        try:
            self._commands.put_nowait((_command(req), fut))
        except queue.Full:
            self._reject("busy")
            return control_reply(False, error="engine busy: too many pending commands")
        return fut

    def tracker(self, camera: str | None) -> CameraTracker:
        """The camera a request addresses: named, or the only one."""
        if camera is None:
            if len(self._feeds) == 1:
                return self.engine.camera(next(iter(self._feeds)))
            known = ", ".join(self._feeds) or "none"
            raise PromptError(
                f"this engine serves several cameras ({known}): the request must name one in 'camera'"
            )
        if camera not in self._feeds:
            known = ", ".join(self._feeds) or "none"
            raise PromptError(f"unknown camera {camera!r} (cameras: {known})")
        return self.engine.camera(camera)

    def set_prompt(self, camera: str | None, text: str) -> list[str]:
        cam = self.tracker(camera)
        if self.engine.detector is None:
            log.info("loading the detector for the first text prompt")
            self._load_detector()
        return cam.set_prompt(text)

    def _load_detector(self) -> None:
        from engine.build import load_detector

        self._busy_with = "loading the detector"
        try:
            self.engine.set_detector(load_detector(self.cfg))
        finally:
            self._busy_with = None

    def add_camera(
        self,
        name: str,
        frames: str,
        prompt: str | None,
        *,
        engine: EngineConfig | None = None,
        first_id: int | None = None,
        id_limit: int | None = None,
    ) -> None:
        """Serve camera ``name`` from ``frames`` (runs on the loop) with the engine settings
        ``engine`` (default: the engine section), its text prompt replaced by ``prompt`` when
        given; ``first_id``/``id_limit``: the block its object IDs come from."""
        if name in self._feeds:
            raise PromptError(f"camera {name!r} is already served")
        limit = self.cfg.engine.max_cameras
        if len(self._feeds) >= limit:
            raise PromptError(
                f"this engine serves {len(self._feeds)} cameras, its engine.max_cameras={limit}: "
                "remove one first"
            )
        base = self.cfg.engine if engine is None else engine
        engine_cfg = base if prompt is None else _with_prompt(base, prompt)
        if engine_cfg.prompt.strip() and self.engine.detector is None:
            self._load_detector()
        feed = self._feed(name, frames)
        try:
            feed.receiver.start()
        except Exception as e:
            feed.receiver.close()
            raise PromptError(f"cannot subscribe to {frames}: {e}") from None
        try:
            self.engine.add_camera(name, engine_cfg, first_id=first_id, id_limit=id_limit)
        except PromptcamError:
            feed.receiver.close()
            raise
        self._feeds[name] = feed
        log.info("camera %s added: frames from %s", name, frames)

    def lease_ids(self, name: str, first_id: int, id_limit: int) -> None:
        """Queue a further block of IDs for camera ``name`` (runs on the loop)."""
        self.tracker(name).manager.add_id_block(first_id, id_limit)

    def remove_camera(self, name: str) -> None:
        """Stop serving ``name``: its tracks end, its memory is freed, its topics stop."""
        if name not in self._feeds:
            known = ", ".join(self._feeds) or "none"
            raise PromptError(f"unknown camera {name!r} (cameras: {known})")
        feed = self._feeds.pop(name)
        feed.receiver.close()
        self.engine.remove_camera(name)
        if self.annotated is not None:
            self.annotated.forget(name)
        log.info("camera %s removed", name)

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
                result = cmd(self)
                self._publish_stats()  # a reply's effect shows in the next stats/cameras
                fut.set_result(result)
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
                det(self)
            except Exception:  # counted; the frame loop goes on
                self.detections_rejected += 1
                log.exception("external detections could not be applied")
        if ran:
            self._state_dirty = True
            self._save_state()

    def _stage_latency(self) -> dict[str, float]:
        """The last frame's time per stage (ms): the model's (encode, propagate, lifecycle,
        grounding) and the publishers' (RLE, JSON and send, render, JPEG), with the latencies."""
        out = dict(self._latency)
        out.update(self.tracks.last_stage_ms)
        if self.annotated is not None:
            out.update(self.annotated.last_stage_ms)
        return out

    # ------------------------------------------------------------------ runtime state

    def _restore(self, restored: Mapping[str, EngineState]) -> None:
        """Each configured camera's kept prompt now, its manual objects on its first frame."""
        for name, state in restored.items():
            feed = self._feeds.get(name)
            if feed is None:
                log.info("kept state of camera %s not restored: not configured", name)
                continue
            cam = self.engine.camera(name)
            log.info(
                "camera %s: restoring %s from %s (the engine was restarted)",
                name,
                state.describe(),
                self.cfg.engine.state_file,
            )
            if state.prompt.strip() and state.prompt != cam.prompt:
                try:
                    self.set_prompt(name, state.prompt)
                except PromptcamError as e:
                    log.warning("camera %s: kept prompt %r not restored: %s", name, state.prompt, e)
            feed.to_restore = state.objects

    def _restore_objects(self, name: str, feed: CameraFeed) -> None:
        objects, feed.to_restore = feed.to_restore, ()
        cam = self.engine.camera(name)
        restored = 0
        for o in objects:
            try:
                cam.add_object(o.box, o.label)
                restored += 1
            except PromptcamError as e:
                log.warning(
                    "camera %s: manual object %d (%s) not restored: %s", name, o.id, o.label, e
                )
        log.info(
            "camera %s: restored %d manual object(s), re-seeded from their last boxes",
            name,
            restored,
        )
        self._state_dirty = True

    def _persist_ids(self) -> bool:
        """Write the ID reservations now (with the state as last written): an ID block is used
        only once this returns (``engine.ids``)."""
        assert self._state_file is not None
        ok = self._state_file.save(self._state, self.engine.ids.as_dict())
        self._state_failed = not ok
        return ok

    def _camera_state(self, name: str, feed: CameraFeed) -> EngineState:
        """A camera's state now; manual objects still waiting for its first frame are kept."""
        cam = self.engine.camera(name)
        st = snapshot(cam.prompt, cam.manager.tracks(), self._state.get(name))
        if feed.to_restore:
            st = EngineState(st.prompt, (*feed.to_restore, *st.objects))
        return st

    def _save_state(self) -> None:
        """Write the runtime state when a command changed it, else at most once a second while
        manual objects (whose boxes move) exist or the last write failed."""
        if self._state_file is None:
            return
        now = time.monotonic()
        moving = any(s.objects for s in self._state.values()) or self._state_failed
        if not self._state_dirty and (
            now - self._state_saved_at < STATE_SAVE_EVERY_S or not moving
        ):
            return
        state = {name: self._camera_state(name, feed) for name, feed in self._feeds.items()}
        if self._state_dirty or self._state_failed or state != self._state:
            self._state_failed = not self._state_file.save(state, self.engine.ids.as_dict())
        self._state = state
        self._state_dirty = False
        self._state_saved_at = now

    # ------------------------------------------------------------------ external detections

    def _detections_loop(self) -> None:
        b = self.cfg.bus
        assert b.detections is not None
        sub = zbus.Subscription(
            self.ctx,
            b.detections,
            b,
            [b"detections."],
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
        camera, seq = msg.header.camera, msg.header.seq

        def cmd(
            p: EngineProcess, m: DetectionsMessage = msg, c: str = camera, s: int = seq
        ) -> dict[str, Any]:
            if c not in p._feeds:
                p.detections_rejected += 1
                return {}
            cam = p.engine.camera(c)
            cam.add_external_detections(s, detections_from_message(m, cam.labels))
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

    def _publish_stats(self) -> None:
        """Refresh the snapshot the control thread answers ``stats`` from (loop thread)."""
        cams: dict[str, CameraProcessStats] = {}
        ann = self.annotated
        for name, feed in self._feeds.items():
            rx = feed.receiver.stats
            cams[name] = CameraProcessStats(
                camera=name,
                state=feed.state(),
                frames=feed.frames,
                fps_in=round(feed.fps_in.rate(), 2),
                fps_out=round(feed.fps_out.rate(), 2),
                frames_in=rx.delivered,
                frames_out=feed.published,
                frames_skipped=rx.skipped,
                frames_stale=rx.stale,
                frames_overrun=rx.overrun,
                frames_rejected=rx.rejected_total + feed.undecodable,
                frames_received=rx.received,
                frames_rejected_by_reason={**rx.rejected, "undecodable": feed.undecodable},
                frames_connection_drops=rx.connection_drops,
                annotated_published=ann.published.get(name, 0) if ann else 0,
                annotated_dropped=ann.dropped.get(name, 0) if ann else 0,
                latency_ms={k: round(v, 2) for k, v in feed.latency_ms.items()},
                tracking=self.engine.camera(name).stats(),
            )
        snapshot = EngineStats(
            uptime_s=round(time.time() - self._started, 1),
            cameras=cams,
            control_rejected=sum(self.control_rejected.values()),
            detections_rejected=self.detections_rejected,
            ground_batches=self.engine.ground_batches,
            control=self._control_counters(),
            latency_ms={k: round(v, 2) for k, v in self._stage_latency().items()},
            rss_mb=round(self._proc.memory_info().rss / 2**20, 1),
            cuda=_cuda_memory(),
        )
        with self._stats_lock:
            self._stats = snapshot

    def _control_counters(self) -> dict[str, Any]:
        return {
            "control_rejected_by_reason": dict(self.control_rejected),
            "control_pending": len(self._pending),
            "control_pending_max": self.control_pending_max,
            "control_replies_dropped": self.control_replies_dropped,
            "detections_dropped": self.detections_dropped,
            "detections_connection_drops": self.detections_connection_drops,
            "busy_with": self._busy_with,
        }

    def engine_stats(self) -> EngineStats:
        with self._stats_lock:
            assert self._stats is not None
            return self._stats

    def stats(self) -> dict[str, Any]:
        """The control ``stats`` reply: the loop's latest snapshot of the cameras (refreshed
        every tick, and every 50 ms while no frame comes), with the counters of the other
        threads, uptime and memory as of now."""
        snap = self.engine_stats()
        return replace(
            snap,
            uptime_s=round(time.time() - self._started, 1),
            control_rejected=sum(self.control_rejected.values()),
            detections_rejected=self.detections_rejected,
            control=self._control_counters(),
            rss_mb=round(self._proc.memory_info().rss / 2**20, 1),
        ).as_dict()

    def camera_list(self) -> list[dict[str, Any]]:
        """The control ``cameras`` reply."""
        return [
            {
                "camera": name,
                "state": c.state,
                "fps": c.fps_out,
                "objects": c.tracking.objects,
                "prompt": c.tracking.prompt,
                "frames": c.frames,
            }
            for name, c in self.engine_stats().cameras.items()
        ]

    # ------------------------------------------------------------------ the loop

    def _newest_frames(self) -> dict[str, FrameInput]:
        """The newest new frame of every camera that has one (decoded); waits up to 50 ms for
        the first."""
        if not self._frame_ready.wait(0.05):
            return {}
        self._frame_ready.clear()
        frames: dict[str, FrameInput] = {}
        for name, feed in self._feeds.items():
            msg = feed.receiver.get(timeout=0)
            if msg is None:
                continue
            feed.fps_in.tick()
            feed.last_frame_at = time.monotonic()
            feed.latency_ms["capture_to_engine_ms"] = (now_ns() - msg.t_capture_ns) / 1e6
            try:
                image = msg.image()
            except WireError as e:
                feed.undecodable += 1
                if feed.undecodable <= 10 or feed.undecodable % 1000 == 0:
                    log.warning("camera %s: dropping undecodable frame %d: %s", name, msg.seq, e)
                continue
            frames[name] = FrameInput(msg.seq, msg.t_capture_ns, image)
        return frames

    def run(self, max_frames: int | None = None) -> int:
        """Serve until stopped (or until ``max_frames`` ticks)."""
        for feed in self._feeds.values():
            feed.receiver.start()
        for t in self._threads:
            t.start()
        log.info(
            "engine: cameras %s, tracks on %s, control on %s",
            ", ".join(f"{f.name} <- {f.frames}" for f in self._feeds.values()),
            self.cfg.bus.tracks,
            self.cfg.bus.control,
        )
        last_log = time.monotonic()
        processed = 0
        try:
            while not self.stop.is_set():
                self._run_commands()
                frames = self._newest_frames()
                if not frames:
                    self._publish_stats()
                    continue
                results = self.engine.tick(frames)
                published = True
                for name, result in results.items():
                    feed = self._feeds[name]
                    if feed.to_restore:
                        self._restore_objects(name, feed)
                    feed.latency_ms.update(result.timings_ms)
                    feed.latency_ms["grounding_ms"] = self.engine.camera(
                        name
                    ).counters.last_grounding_ms
                    published = published and self.tracks.put(
                        name, result, frames[name].image, self.stop
                    )
                if not published:
                    break  # the publisher is gone (its death stops the process)
                any_result = next(iter(results.values()))
                self._latency.update(any_result.timings_ms)
                self._publish_stats()
                self._save_state()
                processed += 1
                if max_frames is not None and processed >= max_frames:
                    break
                if time.monotonic() - last_log > self.cfg.engine.stats_every_s:
                    last_log = time.monotonic()
                    self._log_stats()
        finally:
            self.close()
        return 0

    def _log_stats(self) -> None:
        st = self.stats()
        log.info(
            "fps in %.1f out %.1f, cameras %d, objects %d, dropped %d, e2e %.0f ms",
            st["fps_in"],
            st["fps_out"],
            len(st["cameras"]),
            st.get("objects", 0),
            st["frames_dropped"],
            st["latency_ms"].get("end_to_end_ms", 0.0),
        )

    def close(self) -> None:
        self.stop.set()
        for feed in self._feeds.values():
            feed.receiver.close()
        for t in self._threads:
            if t.is_alive():
                t.join(timeout=2.0)
        self.tracks.close()
        if self.annotated is not None:
            self.annotated.close()
        self._control_sock.close(0)
        self.engine.close()
        if self._state_file is not None:
            self._state_file.unlock()
        if self._own_ctx:
            self.ctx.destroy(linger=0)


def split_envelope(parts: list[bytes]) -> tuple[list[bytes], list[bytes]]:
    """A ROUTER message as (routing envelope, request parts): up to the first empty delimiter
    part (REQ clients), else the peer's identity alone (DEALER clients that send none)."""
    for i, part in enumerate(parts[1:], start=1):
        if part == b"":
            return parts[: i + 1], parts[i + 1 :]
    return parts[:1], parts[1:]


def _with_prompt(cfg: EngineConfig, prompt: str) -> EngineConfig:
    return EngineConfig.model_validate({**cfg.model_dump(), "prompt": prompt})


def _command(req: ControlCommand) -> Command:
    """The loop-thread action of a control request (every request but stats/cameras)."""
    if isinstance(req, SetPrompt):
        return lambda p: {"labels": p.set_prompt(req.camera, req.prompt)}
    if isinstance(req, AddObject):
        return lambda p: {"id": p.tracker(req.camera).add_object(req.box, req.label)}
    if isinstance(req, RemoveObject):

        def remove(p: EngineProcess) -> dict[str, Any]:
            p.tracker(req.camera).remove_object(req.id)
            return {}

        return remove
    if isinstance(req, Reset):

        def reset(p: EngineProcess) -> dict[str, Any]:
            p.tracker(req.camera).reset()
            return {}

        return reset
    if isinstance(req, AddCamera):

        def add(p: EngineProcess) -> dict[str, Any]:
            p.add_camera(
                req.camera, req.frames, req.prompt, first_id=req.first_id, id_limit=req.id_limit
            )
            return {}

        return add
    if isinstance(req, LeaseIds):

        def lease(p: EngineProcess) -> dict[str, Any]:
            p.lease_ids(req.camera, req.first_id, req.id_limit)
            return {}

        return lease
    assert isinstance(req, RemoveCamera)

    def remove_camera(p: EngineProcess) -> dict[str, Any]:
        p.remove_camera(req.camera)
        return {}

    return remove_camera


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

    from engine.build import build_multi_engine

    setproctitle("promptcam: engine")
    stop = threading.Event()

    def _on_signal(signum: int, _frame: Any) -> None:
        log.info("signal %d: stopping", signum)
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    death = ThreadDeath(stop).install()
    state = None
    kept = KeptState()
    if cfg.engine.state_file is not None:  # before the models load: a second engine stops here
        state = StateFile(cfg.engine.state_file)
        state.lock()
        kept = state.load()
    engine = build_multi_engine(cfg)
    proc = EngineProcess(cfg, engine, stop, kept.cameras, state_file=state, kept_ids=kept.ids)
    return death.exit_code(proc.run())
