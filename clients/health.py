"""Run health: what the launcher observes of its children, as one status line and one JSON file.

Reads, in a named thread, once per ``poll_s``:
- capture status, ``capture.<camera>`` on the frames PUB socket (one-part JSON header
  ``{"v":1, "camera", "t_ns", "stats":{frames, reconnects, stalls, fps, ...}}``);
- engine stats, control request ``{"cmd":"stats"}``;
- the web page, ``GET /healthz`` (any HTTP answer counts as up).

The launcher adds its own view of the children (pid, state, restarts) and writes everything to
the status file (``run.status_file``) every second, so that other processes (the web's
``/metrics``) can expose restarts without talking to the launcher. The file is replaced
atomically; its schema (``v`` 1)::

    {"v": 1, "t_ns": int, "camera": str, "url": str, "launcher_pid": int, "uptime_s": float,
     "children": {"capture"|"capture:NAME"|"engine"|"web": {"pid": int|null, "state": str, "ready": bool,
                  "restarts": int, "last_exit": int|null, "uptime_s": float|null}},
     "capture": {...capture stats...}|null, "cameras": {NAME: {...capture stats...}},
     "engine": {...engine stats...}|null}

With several cameras the children are ``capture:NAME`` (one per camera), ``engine`` and ``web``;
``capture`` is the first camera's status, ``cameras`` every camera's.

``state`` is one of ``starting`` (not ready yet), ``running``, ``suspended`` (stopped by a
signal such as SIGSTOP: not ready), ``wedged`` (killed by the progress watchdog or for not
becoming ready within its start timeout, about to be restarted), ``backoff`` (waiting to be
restarted), ``finished`` (ended cleanly, not restarted) or ``failed``; each child also has
``watchdog_restarts`` and ``start_timeouts``. The file is written mode 0600 and holds the
page URL without its ``?token=``.

Progress watchdog (``ProgressWatchdog``, after Frigate's): a ready child that has not answered
for ``run.watchdog_s`` (capture status, engine ``stats``, web ``/healthz``), or an engine whose
``frames_out`` has not moved for ``run.watchdog_s`` (or 4x its last frame time, whichever is
longer) while capture published frames, is wedged: the launcher kills and restarts it. An engine
that says it is busy loading a model (``busy_with``) is not judged on its output meanwhile.

A malformed capture status message is logged and counted (``malformed_status``), never raised.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zmq

from stream import bus as zbus
from stream.config import Config
from stream.wire import WireError, loads_json

log = logging.getLogger(__name__)

STATUS_VERSION = 1


@dataclass(frozen=True)
class ChildInfo:
    """The launcher's view of one child process."""

    name: str
    pid: int | None
    state: str
    ready: bool
    restarts: int
    last_exit: int | None
    uptime_s: float | None
    error: str | None = None  # why it failed for good (a camera among several)
    watchdog_restarts: int = 0
    start_timeouts: int = 0  # killed for not becoming ready within its start timeout

    def as_dict(self) -> dict[str, object]:
        return {
            "error": self.error,
            "pid": self.pid,
            "state": self.state,
            "ready": self.ready,
            "restarts": self.restarts,
            "watchdog_restarts": self.watchdog_restarts,
            "start_timeouts": self.start_timeouts,
            "last_exit": self.last_exit,
            "uptime_s": None if self.uptime_s is None else round(self.uptime_s, 1),
        }


@dataclass(frozen=True)
class Observed:
    """The newest capture status, engine stats and web answer, with when each arrived
    (``time.monotonic()``; None when never)."""

    capture: dict[str, object] | None = None  # of the first camera (one-camera runs: the camera)
    capture_at: float | None = None
    engine: dict[str, object] | None = None
    engine_at: float | None = None
    web_at: float | None = None
    malformed_status: int = 0
    # capture status by camera
    cameras: Mapping[str, dict[str, object]] = field(default_factory=dict)
    cameras_at: Mapping[str, float] = field(default_factory=dict)

    def seen_since(self, name: str, since: float) -> bool:
        """True when child ``name`` (``capture`` or ``capture:CAMERA``, ``engine``, ``web``)
        answered after ``since`` (monotonic)."""
        if name.startswith("capture:"):
            at = self.cameras_at.get(name.partition(":")[2])
        else:
            at = {"capture": self.capture_at, "engine": self.engine_at, "web": self.web_at}.get(
                name
            )
        return at is not None and at >= since


@dataclass
class _State:
    observed: Observed = field(default_factory=Observed)


class StatusCollector:
    """Polls capture status, engine stats and the web's ``/healthz`` in a background thread.

    ``snapshot()`` returns the newest ``Observed``; it never blocks on a slow child.
    """

    def __init__(
        self,
        cfg: Config,
        poll_s: float = 1.0,
        web_url: str | None = None,
        request_timeout_s: float = 1.0,
        ctx: zmq.Context[zmq.Socket[bytes]] | None = None,
    ) -> None:
        self.cfg = cfg
        self.poll_s = poll_s
        self.web_url = web_url
        self.request_timeout_s = request_timeout_s
        self._ctx = ctx or zmq.Context.instance()
        self._lock = threading.Lock()
        self._state = _State()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="status-collector", daemon=True)

    def start(self) -> StatusCollector:
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=self.request_timeout_s + 2.0)

    def __enter__(self) -> StatusCollector:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def snapshot(self) -> Observed:
        with self._lock:
            return self._state.observed

    def _update(self, **changes: object) -> None:
        with self._lock:
            old = self._state.observed
            self._state.observed = Observed(**{**old.__dict__, **changes})

    def _loop(self) -> None:
        # One SUB socket connected to every camera's frames endpoint, subscribed to the status
        # topic of each (a camera's status arrives only from its own capture).
        cameras = self.cfg.camera_settings()
        sub = zbus.connect(
            self._ctx,
            zmq.SUB,
            next(iter(cameras.values())).frames,
            self.cfg.bus,
            subscribe=[f"capture.{name}".encode() for name in cameras],
            rcvhwm=16 * len(cameras),
            curve=True,
        )
        for cam in list(cameras.values())[1:]:
            sub.connect(cam.frames)
        try:
            next_poll = time.monotonic()
            while not self._stop.is_set():
                wait_ms = max(0, int((next_poll - time.monotonic()) * 1000))
                parts = zbus.recv_multipart_timeout(sub, min(wait_ms, 200), copy=True)
                if parts is not None:
                    self._on_capture_status(parts, list(cameras))
                if time.monotonic() >= next_poll:
                    next_poll = time.monotonic() + self.poll_s
                    self._poll_engine()
                    self._poll_web()
        finally:
            sub.close(0)

    def _on_capture_status(self, parts: Sequence[bytes], cameras: list[str]) -> None:
        try:
            if len(parts) != 2:
                raise ValueError(f"expected 2 parts, got {len(parts)}")
            camera = bytes(parts[0]).decode("ascii").partition(".")[2]
            if camera not in cameras:
                raise ValueError(f"status of unknown camera {camera[:64]!r}")
            header = loads_json(bytes(parts[1]), "capture status")
            if not isinstance(header, dict) or not isinstance(header.get("stats"), dict):
                raise ValueError("header has no 'stats' object")
        except (ValueError, WireError) as e:
            n = self.snapshot().malformed_status + 1
            self._update(malformed_status=n)
            log.warning("malformed capture status message (%s), %d so far", e, n)
            return
        now = time.monotonic()
        old = self.snapshot()
        merged = {**old.cameras, camera: header["stats"]}
        changes: dict[str, object] = {
            "cameras": {n: merged[n] for n in cameras if n in merged},  # config order
            "cameras_at": {**old.cameras_at, camera: now},
        }
        if camera == cameras[0]:
            changes.update(capture=header["stats"], capture_at=now)
        self._update(**changes)

    def _poll_engine(self) -> None:
        try:
            reply = zbus.request(
                self.cfg.bus.control,
                {"cmd": "stats"},
                int(self.request_timeout_s * 1000),
                self.cfg.bus,
            )
        except zbus.BusError as e:
            log.debug("engine stats: %s", e)
            return
        except (ValueError, RecursionError, zmq.ZMQError) as e:
            log.warning("engine stats: bad reply: %s", str(e)[:200])
            return
        stats = reply.get("stats")
        if reply.get("ok") and isinstance(stats, dict):
            self._update(engine=stats, engine_at=time.monotonic())

    def _poll_web(self) -> None:
        if self.web_url is None:
            return
        try:
            with urllib.request.urlopen(
                self.web_url.rstrip("/") + "/healthz", timeout=self.request_timeout_s
            ):
                pass
        except urllib.error.HTTPError:
            pass  # an HTTP error answer still means the server is up
        except (urllib.error.URLError, OSError) as e:
            log.debug("web healthz: %s", e)
            return
        self._update(web_at=time.monotonic())


def _num(d: Mapping[str, object] | None, *path: str) -> float | None:
    node: object = d
    for key in path:
        if not isinstance(node, Mapping) or key not in node:
            return None
        node = node[key]
    return float(node) if isinstance(node, (int, float)) and not isinstance(node, bool) else None


def _fmt(v: float | None, spec: str = ".1f") -> str:
    return "-" if v is None else format(v, spec)


def _uptime(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def _capture_state(cap: Mapping[str, object]) -> str:
    """``reconnecting (attempt N), `` / ``waiting for camera (attempt N), `` while the camera is
    away (N: attempts so far in this run), nothing while it streams."""
    state, attempts = cap.get("state"), _num(cap, "reconnect_attempts")
    what = {"reconnecting": "reconnecting", "waiting": "waiting for camera"}.get(str(state))
    if what is None:
        return ""
    return f"{what} (attempt {max(1, int(attempts or 0))}), "


def status_line(
    observed: Observed, children: Mapping[str, ChildInfo], uptime_s: float, stale_s: float = 5.0
) -> str:
    """One line: capture fps/reconnects, engine fps in/out, objects, drops, latency, memory, restarts."""
    now = time.monotonic()

    def capture_part(cap: Mapping[str, object] | None) -> str:
        if cap is None:
            return "-"
        if cap.get("state") == "waiting":  # no frame yet: no rates to show
            return _capture_state(cap).removesuffix(", ")
        return (
            f"{_capture_state(cap)}{_fmt(_num(cap, 'fps'))} fps, "
            f"reconnects {_fmt(_num(cap, 'reconnects'), '.0f')}, "
            f"stalls {_fmt(_num(cap, 'stalls'), '.0f')}"
        )

    eng = (
        observed.engine
        if observed.engine_at is not None and now - observed.engine_at < stale_s
        else None
    )
    parts = []
    if len(observed.cameras) > 1 or (observed.cameras and observed.capture is None):
        fresh = {
            name: cap if now - observed.cameras_at.get(name, -1e9) < stale_s else None
            for name, cap in observed.cameras.items()
        }
        parts.append("capture " + "; ".join(f"{n} {capture_part(c)}" for n, c in fresh.items()))
    else:
        cap = (
            observed.capture
            if observed.capture_at is not None and now - observed.capture_at < stale_s
            else None
        )
        parts.append(f"capture {capture_part(cap)}")
    if eng is None:
        parts.append("engine -")
    else:
        parts.append(
            f"engine in {_fmt(_num(eng, 'fps_in'))} out {_fmt(_num(eng, 'fps_out'))} fps, "
            f"objects {_fmt(_num(eng, 'objects'), '.0f')}, dropped {_fmt(_num(eng, 'frames_dropped'), '.0f')}, "
            f"e2e {_fmt(_num(eng, 'latency_ms', 'end_to_end_ms'), '.0f')} ms, rss {_fmt(_num(eng, 'memory', 'rss_mb'), '.0f')} MB"
        )
    restarts = " ".join(f"{c.name} {c.restarts}" for c in children.values())
    watchdog = sum(c.watchdog_restarts for c in children.values())
    if watchdog:
        restarts += f", by watchdog {watchdog}"
    timeouts = sum(c.start_timeouts for c in children.values())
    if timeouts:
        restarts += f", start timeouts {timeouts}"
    other = [f"{c.name} {c.state}" for c in children.values() if c.state != "running"]
    parts.append(f"restarts {restarts}" + (f" ({', '.join(other)})" if other else ""))
    parts.append(f"up {_uptime(uptime_s)}")
    return " | ".join(parts)


def status_document(
    cfg: Config, observed: Observed, children: Mapping[str, ChildInfo], url: str, uptime_s: float
) -> dict[str, object]:
    """The status file's document; ``url`` goes in without its query (the token stays out)."""
    return {
        "v": STATUS_VERSION,
        "t_ns": time.time_ns(),
        "camera": cfg.camera,
        "url": url.split("?", 1)[0],
        "launcher_pid": os.getpid(),
        "uptime_s": round(uptime_s, 1),
        "children": {name: c.as_dict() for name, c in children.items()},
        "capture": observed.capture,
        "cameras": dict(observed.cameras),
        "engine": observed.engine,
    }


def write_status_file(path: Path, doc: Mapping[str, object]) -> None:
    """Replace ``path`` atomically with ``doc`` as JSON (readers never see half a file), mode
    0600: it shows pids, sources and figures to this user only."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps(doc))
    os.chmod(tmp, 0o600)  # a leftover temporary file of another mode is reused by os.open
    os.replace(tmp, path)


def read_status_file(path: Path) -> dict[str, Any] | None:
    """The launcher's status document, or None when there is none (not run by the launcher)
    or it cannot be read."""
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        log.warning("cannot read status file %s: %s", path, e)
        return None
    return doc if isinstance(doc, dict) and doc.get("v") == STATUS_VERSION else None


@dataclass
class _Progress:
    since: float  # the child's ready time this watch belongs to
    frames_out: float | None = None
    changed_at: float = 0.0
    capture_frames: float | None = None  # capture's frame count when frames_out last moved


class ProgressWatchdog:
    """Tells which ready children are wedged (see the module docstring), from what the
    ``StatusCollector`` observed. Pure logic: ``check`` is called with the times to judge."""

    def __init__(self, limit_s: float, frame_factor: float = 4.0) -> None:
        self.limit_s = limit_s
        self.frame_factor = frame_factor
        self._progress: dict[str, _Progress] = {}

    def check(self, name: str, ready_at: float, observed: Observed, now: float) -> str | None:
        """Why ``name`` (ready since ``ready_at``, monotonic) is wedged now, or None."""
        if name.startswith("capture:"):
            last = observed.cameras_at.get(name.partition(":")[2])
        else:
            at = {"capture": observed.capture_at, "engine": observed.engine_at}
            last = {**at, "web": observed.web_at}.get(name)
        if last is None or last < ready_at:
            last = ready_at
        if now - last > self.limit_s:
            return f"no answer for {now - last:.1f}s"
        if name == "engine":
            return self._engine_stalled(ready_at, observed, now)
        return None

    def _engine_stalled(self, ready_at: float, observed: Observed, now: float) -> str | None:
        eng = observed.engine if (observed.engine_at or 0.0) >= ready_at else None
        out = _num(eng, "frames_out")
        p = self._progress.get("engine")
        if p is None or p.since != ready_at:
            p = self._progress["engine"] = _Progress(ready_at)
        captures = observed.cameras.values() if observed.cameras else [observed.capture]
        cap_frames = sum(_num(c, "frames") or 0.0 for c in captures)
        if out is None:
            return None
        if out != p.frames_out:
            p.frames_out, p.changed_at, p.capture_frames = out, now, cap_frames
            return None
        if not out or (eng is not None and eng.get("busy_with")):
            p.changed_at, p.capture_frames = now, cap_frames  # not armed, or loading a model
            return None
        came_in = (cap_frames or 0.0) - (p.capture_frames or 0.0)
        if came_in <= 0:  # nothing to work on (or capture restarted): the clock starts later
            p.changed_at, p.capture_frames = now, cap_frames
            return None
        frame_s = (_num(eng, "latency_ms", "process_ms") or 0.0) / 1000.0
        limit = max(self.limit_s, self.frame_factor * frame_s)
        if now - p.changed_at > limit:
            return (
                f"published nothing for {now - p.changed_at:.1f}s while capture published "
                f"{came_in:.0f} frames"
            )
        return None
