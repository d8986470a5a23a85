"""What each camera's banner says: ``live``, ``reconnecting (attempt N)``, ``waiting for
camera``, ``camera failed``, ``engine restarting`` or ``starting``, and the age of the newest
frame.

``SiteMonitor`` (one named thread for every camera of the web server) reads, once a second:
the camera list (a ``CameraLister``, see camera_list.py), the engine's ``stats``, and, when run
by ``promptcam run``, the launcher's status file (``run.status_file``: an engine child in
backoff is restarting; a camera's capture child that failed for good names its error); and all
the time the capture status of every listed camera (``capture.<camera>`` on that camera's frames
socket, ``stats.state`` = ``starting | streaming | reconnecting | waiting | stopped`` and
``reconnect_attempts``), connecting to the frames endpoint of a camera as it appears.
``camera_status`` is the pure decision; ``CameraMonitor`` feeds it for one camera.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Literal

import zmq

from clients.health import read_status_file
from clients.jsontypes import JsonObject, ZmqContext, ZmqSocket
from clients.web.camera_list import CameraInfo, CameraLister
from clients.web.feeds import LatestFeed
from stream import bus as zbus
from stream.config import Config
from stream.errors import PromptcamError
from stream.wire import AnnotatedMessage, TracksMessage

log = logging.getLogger(__name__)

CAPTURE_STALE_S = 3.5  # capture status comes once a second
ENGINE_STALE_S = 3.0  # stats are asked once a second, with a 1 s timeout
FRAME_STALE_S = 3.0
STATUS_FILE_STALE_S = 5.0  # the launcher writes it once a second
STARTUP_GRACE_S = 180.0  # an engine never seen is "starting" this long (loading models)

State = Literal["starting", "live", "reconnecting", "waiting", "engine_restarting", "stopped"]


@dataclass(frozen=True)
class CameraStatus:
    """The banner of one camera view, and what it was decided from."""

    camera: str
    state: State
    banner: str
    attempt: int | None
    frame_age_s: float | None
    capture_state: str | None
    last_error: str | None
    engine_answering: bool
    prompt: str | None
    waiting_for: str | None = None  # what the view waits for, in words (None: nothing, live)

    def as_dict(self) -> JsonObject:
        return asdict(self)


def waiting_for(
    state: State,
    *,
    engine_answering: bool,
    frame_age_s: float | None,
    attempt: int | None = None,
    error: str | None = None,
) -> str | None:
    """What a camera's view is waiting for, in words: the camera (no frames from it, source
    down) or the engine (starting, restarting, or frames come but no picture from it yet); None
    when it waits for nothing. The page shows it over the picture, the video's placeholder says
    it before the first picture."""
    if state == "engine_restarting":
        return "waiting for the engine: it is restarting"
    if state == "starting":
        if not engine_answering:
            return "waiting for the engine: it is starting (loading models)"
        return "waiting for the camera: it is starting"
    if state == "reconnecting":
        return f"waiting for the camera: reconnecting (attempt {attempt or 1})"
    if state == "waiting":
        if frame_age_s is None:
            return "waiting for the camera: no picture from it yet"
        return f"waiting for the camera: no picture from it for {frame_age_s:.0f} s"
    if state == "stopped":
        return f"the camera stopped: {error}" if error else "the camera stopped"
    if frame_age_s is None:  # live: the camera streams, the engine has sent no picture yet
        return "waiting for the engine: no picture from it yet"
    return None


def _engine_child_restarting(doc: JsonObject | None) -> bool | None:
    """From the launcher's status document: True when its engine child is restarting, False
    when it runs, None when it says nothing (no launcher, or just started)."""
    if doc is None:
        return None
    children = doc.get("children")
    child = children.get("engine") if isinstance(children, dict) else None
    if not isinstance(child, dict):
        return None
    state, restarts = child.get("state"), child.get("restarts")
    if state in ("backoff", "failed"):
        return True
    if state == "starting":
        return bool(isinstance(restarts, int) and restarts > 0) or None
    return False


def capture_child_error(doc: JsonObject | None, camera: str) -> str | None:
    """From the launcher's status document: the error of ``camera``'s capture child when it
    failed for good (a source that cannot work), else None."""
    children = (doc or {}).get("children")
    if not isinstance(children, dict):
        return None
    child = children.get(f"capture:{camera}")
    if child is None and (doc or {}).get("camera") == camera:
        child = children.get("capture")
    if not isinstance(child, dict) or child.get("state") != "failed":
        return None
    return str(child.get("error") or "the capture process failed")


def camera_status(
    camera: str,
    *,
    capture: JsonObject | None,
    capture_age_s: float | None,
    engine_age_s: float | None,
    engine_ever_answered: bool,
    launcher: JsonObject | None,
    frame_age_s: float | None,
    uptime_s: float,
    attempt_base: int = 0,
    prompt: str | None = None,
) -> CameraStatus:
    """The banner from what was observed (ages in seconds, None: never)."""
    answering = engine_age_s is not None and engine_age_s < ENGINE_STALE_S
    fresh_capture = (
        capture if capture_age_s is not None and capture_age_s < CAPTURE_STALE_S else None
    )
    cap_state = str(fresh_capture.get("state")) if fresh_capture else None
    last_error = (str(fresh_capture.get("last_error") or "") or None) if fresh_capture else None
    attempts = fresh_capture.get("reconnect_attempts") if fresh_capture else None
    attempt = (
        max(1, attempts - attempt_base)
        if isinstance(attempts, int) and cap_state in ("reconnecting", "waiting")
        else None
    )
    restarting = _engine_child_restarting(launcher)
    if restarting or not answering:
        grace_over = engine_ever_answered or uptime_s > STARTUP_GRACE_S
        state, banner = _ENGINE_RESTARTING if restarting or grace_over else ("starting", "starting")
        error = last_error
    else:
        state, banner, error = _capture_banner(
            camera, cap_state, attempt, launcher, frame_age_s, last_error
        )
    awaited = waiting_for(
        state, engine_answering=answering, frame_age_s=frame_age_s, attempt=attempt, error=error
    )
    return CameraStatus(
        camera, state, banner, attempt, frame_age_s, cap_state, error, answering, prompt, awaited
    )


_ENGINE_RESTARTING: tuple[State, str] = ("engine_restarting", "engine restarting")
_CAPTURE_BANNERS: dict[str, tuple[State, str]] = {
    "streaming": ("live", "live"),
    "waiting": ("waiting", "waiting for camera"),
    "starting": ("starting", "starting"),
    "stopped": ("stopped", "camera stopped"),
}


def _capture_banner(
    camera: str,
    cap_state: str | None,
    attempt: int | None,
    launcher: JsonObject | None,
    frame_age_s: float | None,
    last_error: str | None,
) -> tuple[State, str, str | None]:
    """State, banner and error of a camera while the engine answers: from its capture's
    state, else from the launcher (a capture that failed for good) or the frames' age."""
    failed = capture_child_error(launcher, camera)
    if failed is not None and cap_state is None:
        return "stopped", "camera failed", failed
    if cap_state == "reconnecting":
        return "reconnecting", f"reconnecting (attempt {attempt or 1})", last_error
    if cap_state in _CAPTURE_BANNERS:
        state, banner = _CAPTURE_BANNERS[cap_state]
        return state, banner, last_error
    # no capture status (capture down, or a source that is not promptcam's capture)
    if frame_age_s is not None and frame_age_s < FRAME_STALE_S:
        return "live", "live", last_error
    return "waiting", "waiting for camera", last_error


# --------------------------------------------------------------------------- the site


@dataclass(frozen=True)
class SiteView:
    """What the site monitor saw last (``time.monotonic()`` times; None: never)."""

    cameras: tuple[CameraInfo, ...] | None = None  # the lister's newest answer
    capture: Mapping[str, JsonObject] = field(default_factory=dict)  # status by camera
    capture_at: Mapping[str, float] = field(default_factory=dict)
    engine: JsonObject | None = None
    engine_at: float | None = None
    launcher: JsonObject | None = None  # the launcher's status file, when fresh
    malformed_status: int = 0


class SiteMonitor:
    """Observes the camera list, the engine, the launcher and every camera's capture status in
    one background thread; ``snapshot()`` never blocks on a slow engine."""

    def __init__(
        self,
        cfg: Config,
        lister: CameraLister,
        poll_s: float = 1.0,
        request_timeout_s: float = 1.0,
        ctx: ZmqContext | None = None,
    ) -> None:
        self.cfg = cfg
        self.lister = lister
        self.poll_s = poll_s
        self.request_timeout_s = request_timeout_s
        self._ctx = ctx or zmq.Context.instance()
        self._configured = {n: c.frames for n, c in cfg.camera_settings().items()}
        self._lock = threading.Lock()
        self._view = SiteView()
        self._unreachable: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="web-site-monitor", daemon=True)

    def start(self) -> SiteMonitor:
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2 * self.request_timeout_s + 2.0)

    def snapshot(self) -> SiteView:
        with self._lock:
            return self._view

    def _update(self, change: Callable[[SiteView], SiteView]) -> None:
        with self._lock:
            self._view = change(self._view)

    def cameras(self) -> list[CameraInfo]:
        """The cameras now: the lister's newest answer, or its initial list before one."""
        listed = self.snapshot().cameras
        return list(listed) if listed is not None else self.lister.initial()

    def _endpoints(self) -> set[str]:
        """The frames endpoints whose capture status is wanted: every listed camera's (the
        configured one when the list does not say)."""
        out: set[str] = set()
        for cam in self.cameras():
            frames = cam.frames or self._configured.get(cam.camera)
            if frames:
                out.add(frames)
        return out

    def _loop(self) -> None:
        sub: ZmqSocket | None = None  # made once there is a frames endpoint to read
        connected: set[str] = set()
        try:
            next_poll = time.monotonic()
            while not self._stop.is_set():
                sub, connected = self._reconnect(sub, connected)
                wait_ms = min(200, max(0, int((next_poll - time.monotonic()) * 1000)))
                if sub is None:
                    self._stop.wait(wait_ms / 1000)
                else:
                    parts = zbus.recv_multipart_timeout(sub, wait_ms, copy=True)
                    if parts is not None:
                        self._on_capture_status(parts)
                if time.monotonic() >= next_poll:
                    next_poll = time.monotonic() + self.poll_s
                    self._poll()
        finally:
            if sub is not None:
                sub.close(0)

    def _reconnect(
        self, sub: ZmqSocket | None, connected: set[str]
    ) -> tuple[ZmqSocket | None, set[str]]:
        """One SUB socket connected to the frames endpoint of every listed camera."""
        wanted = self._endpoints()
        now: set[str] = set()
        for endpoint in sorted(connected - wanted):
            assert sub is not None
            try:
                sub.disconnect(endpoint)
            except zmq.ZMQError as e:
                log.debug("capture status: disconnect %s: %s", endpoint, e)
        for endpoint in sorted(wanted):
            if endpoint in connected:
                now.add(endpoint)
                continue
            try:
                if sub is None:
                    sub = zbus.connect(
                        self._ctx,
                        zmq.SUB,
                        endpoint,
                        self.cfg.bus,
                        subscribe=[b"capture."],
                        rcvhwm=1000,
                        curve=True,
                    )
                else:
                    sub.connect(endpoint)
            except (PromptcamError, zmq.ZMQError) as e:
                if endpoint not in self._unreachable:  # said once, tried again every loop
                    self._unreachable.add(endpoint)
                    log.warning("capture status: cannot connect to %s: %s", endpoint, e)
                continue
            now.add(endpoint)
        return sub, now

    def _poll(self) -> None:
        self._poll_engine()
        cameras = self.lister.list_cameras()
        if cameras is not None:
            names = {c.camera for c in cameras}
            self._update(
                lambda old: replace(
                    old,
                    cameras=tuple(cameras),
                    capture={n: s for n, s in old.capture.items() if n in names},
                    capture_at={n: t for n, t in old.capture_at.items() if n in names},
                )
            )
        launcher = self._launcher_doc()
        self._update(lambda old: replace(old, launcher=launcher))

    def _poll_engine(self) -> None:
        try:
            reply = zbus.request(
                self.cfg.bus.control,
                {"cmd": "stats"},
                int(self.request_timeout_s * 1000),
                self.cfg.bus,
            )
        except PromptcamError as e:
            log.debug("engine stats: %s", e)
            return
        except (ValueError, zmq.ZMQError) as e:
            log.warning("engine stats: bad reply: %s", e)
            return
        stats = reply.get("stats")
        if reply.get("ok") and isinstance(stats, dict):
            at = time.monotonic()
            self._update(lambda old: replace(old, engine=stats, engine_at=at))

    def _launcher_doc(self) -> JsonObject | None:
        path: Path | None = self.cfg.run.status_file
        if path is None:
            return None
        doc = read_status_file(path)
        fresh = doc is not None and (time.time_ns() - int(doc.get("t_ns", 0))) / 1e9 < (
            STATUS_FILE_STALE_S
        )
        return doc if fresh else None

    def _on_capture_status(self, parts: Sequence[bytes]) -> None:
        try:
            if len(parts) != 2:
                raise ValueError(f"expected 2 parts, got {len(parts)}")
            camera = bytes(parts[0]).decode("ascii").partition(".")[2]
            header = json.loads(bytes(parts[1]))
            if not isinstance(header, dict) or not isinstance(header.get("stats"), dict):
                raise ValueError("header has no 'stats' object")
        except (ValueError, UnicodeDecodeError) as e:
            n = self.snapshot().malformed_status + 1
            self._update(lambda old: replace(old, malformed_status=n))
            if n <= 10 or n % 1000 == 0:
                log.warning("malformed capture status message (%s), %d so far", e, n)
            return
        if camera not in {c.camera for c in self.cameras()}:
            return  # another camera publishing on the same endpoint, or one just removed
        at = time.monotonic()
        self._update(
            lambda old: replace(
                old,
                capture={**old.capture, camera: header["stats"]},
                capture_at={**old.capture_at, camera: at},
            )
        )


class CameraMonitor:
    """One camera's banner, from the site monitor's view and the camera's own feeds."""

    def __init__(
        self,
        site: SiteMonitor,
        camera: str,
        annotated: LatestFeed[AnnotatedMessage],
        tracks: LatestFeed[TracksMessage],
    ) -> None:
        self.camera = camera
        self._site = site
        self._annotated = annotated
        self._tracks = tracks
        self._started = time.monotonic()
        self._outage_base: int | None = None

    def engine_stats(self, max_age_s: float = 2.0) -> JsonObject | None:
        """The engine's newest ``stats`` answer, if at most ``max_age_s`` old."""
        seen = self._site.snapshot()
        if seen.engine_at is None or time.monotonic() - seen.engine_at > max_age_s:
            return None
        return seen.engine

    def camera_stats(self, stats: JsonObject | None) -> JsonObject | None:
        """The figures of this camera in an engine ``stats`` answer: its entry under
        ``cameras`` over the process-wide ones (an engine of one camera: the same)."""
        if not isinstance(stats, dict):
            return None
        cams = stats.get("cameras")
        mine = cams.get(self.camera) if isinstance(cams, dict) else None
        return {**stats, **mine} if isinstance(mine, dict) else stats

    def capture(self) -> tuple[JsonObject | None, float | None]:
        """This camera's newest capture status and its age in seconds (None: never)."""
        seen = self._site.snapshot()
        at = seen.capture_at.get(self.camera)
        return seen.capture.get(self.camera), None if at is None else time.monotonic() - at

    def status(self) -> CameraStatus:
        now = time.monotonic()
        seen = self._site.snapshot()
        capture, capture_at = seen.capture.get(self.camera), seen.capture_at.get(self.camera)
        if capture is not None and capture.get("state") in ("reconnecting", "waiting"):
            if self._outage_base is None:
                attempts = capture.get("reconnect_attempts")
                self._outage_base = attempts if isinstance(attempts, int) else 0
        elif capture is not None:
            self._outage_base = None
        ann, _, _ = self._annotated.latest()
        frame_age = None if ann is None else max(0.0, (time.time_ns() - ann.t_capture_ns) / 1e9)
        return camera_status(
            self.camera,
            capture=capture,
            capture_age_s=None if capture_at is None else now - capture_at,
            engine_age_s=None if seen.engine_at is None else now - seen.engine_at,
            engine_ever_answered=seen.engine_at is not None,
            launcher=seen.launcher,
            frame_age_s=None if frame_age is None else round(frame_age, 3),
            uptime_s=now - self._started,
            attempt_base=self._outage_base or 0,
            prompt=self.prompt(seen, now),
        )

    def prompt(self, seen: SiteView, now: float) -> str | None:
        """The camera's prompt as the engine has it now: from whichever was observed last, the
        engine's ``stats`` answer (polled once a second) or the newest tracks message (every
        frame). So a prompt changed elsewhere (the CLI, another page, an engine restart) shows
        within a frame or a poll, and an older answer never hides a newer one."""
        trk, _, trk_age = self._tracks.latest()
        engine = self.camera_stats(seen.engine) if seen.engine_at is not None else None
        from_stats = engine.get("prompt") if engine is not None else None
        if not isinstance(from_stats, str):
            from_stats = None
        from_tracks = trk.header.prompt if trk is not None else None
        if from_stats is None or from_tracks is None:
            return from_stats if from_stats is not None else from_tracks
        assert seen.engine_at is not None
        stats_age = now - seen.engine_at
        return from_tracks if trk_age <= stats_age else from_stats
