"""What the page's camera banner says: ``live``, ``reconnecting (attempt N)``, ``waiting for
camera``, ``engine restarting`` or ``starting``, and the age of the newest frame.

Reads, through ``clients.health.StatusCollector`` (a named thread): the capture status
(``capture.<camera>`` on the frames socket, ``stats.state`` = ``starting | streaming |
reconnecting | waiting | stopped`` and ``reconnect_attempts``) and the engine's ``stats``
answers (once a second); when run by ``promptcam run``, also the launcher's status file
(``run.status_file``: an engine child in backoff is restarting). ``camera_status`` is the pure
decision, ``CameraMonitor`` feeds it.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from clients.health import StatusCollector, read_status_file
from clients.web.feeds import LatestFeed
from stream.config import Config
from stream.wire import AnnotatedMessage, TracksMessage

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

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _engine_child_restarting(doc: dict[str, Any] | None) -> bool | None:
    """From the launcher's status document: True when its engine child is restarting, False
    when it runs, None when it says nothing (no launcher, or just started)."""
    if doc is None:
        return None
    child = (doc.get("children") or {}).get("engine")
    if not isinstance(child, dict):
        return None
    state, restarts = child.get("state"), child.get("restarts")
    if state in ("backoff", "failed"):
        return True
    if state == "starting":
        return bool(isinstance(restarts, int) and restarts > 0) or None
    return False


def camera_status(
    camera: str,
    *,
    capture: dict[str, Any] | None,
    capture_age_s: float | None,
    engine_age_s: float | None,
    engine_ever_answered: bool,
    launcher: dict[str, Any] | None,
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

    def status(state: State, banner: str) -> CameraStatus:
        return CameraStatus(
            camera, state, banner, attempt, frame_age_s, cap_state, last_error, answering, prompt
        )

    restarting = _engine_child_restarting(launcher)
    if restarting:
        return status("engine_restarting", "engine restarting")
    if not answering:
        if engine_ever_answered or uptime_s > STARTUP_GRACE_S:
            return status("engine_restarting", "engine restarting")
        return status("starting", "starting")
    if cap_state == "streaming":
        return status("live", "live")
    if cap_state == "reconnecting":
        return status("reconnecting", f"reconnecting (attempt {attempt or 1})")
    if cap_state == "waiting":
        return status("waiting", "waiting for camera")
    if cap_state == "starting":
        return status("starting", "starting")
    if cap_state == "stopped":
        return status("stopped", "camera stopped")
    # no capture status (capture down, or a source that is not promptcam's capture)
    if frame_age_s is not None and frame_age_s < FRAME_STALE_S:
        return status("live", "live")
    return status("waiting", "waiting for camera")


class CameraMonitor:
    """Observes one camera's capture, the engine and the launcher; ``status()`` decides."""

    def __init__(
        self,
        cfg: Config,
        camera: str,
        annotated: LatestFeed[AnnotatedMessage],
        tracks: LatestFeed[TracksMessage],
        poll_s: float = 1.0,
    ) -> None:
        self.camera = camera
        self._annotated = annotated
        self._tracks = tracks
        self._collector = StatusCollector(
            cfg.model_copy(update={"camera": camera}), poll_s=poll_s, request_timeout_s=1.0
        )
        self._status_file: Path | None = cfg.run.status_file
        self._launcher: dict[str, Any] | None = None
        self._launcher_read_at = -math.inf
        self._started = time.monotonic()
        self._outage_base: int | None = None

    def start(self) -> CameraMonitor:
        self._collector.start()
        return self

    def close(self) -> None:
        self._collector.close()

    def engine_stats(self, max_age_s: float = 2.0) -> dict[str, Any] | None:
        """The engine's newest ``stats`` answer, if at most ``max_age_s`` old."""
        seen = self._collector.snapshot()
        if seen.engine_at is None or time.monotonic() - seen.engine_at > max_age_s:
            return None
        return seen.engine

    def camera_stats(self, stats: dict[str, Any] | None) -> dict[str, Any] | None:
        """The figures of this camera in an engine ``stats`` answer: its entry under
        ``cameras`` over the process-wide ones (an engine of one camera: the same)."""
        if not isinstance(stats, dict):
            return None
        cams = stats.get("cameras")
        mine = cams.get(self.camera) if isinstance(cams, dict) else None
        return {**stats, **mine} if isinstance(mine, dict) else stats

    def _launcher_doc(self, now: float) -> dict[str, Any] | None:
        if self._status_file is None:
            return None
        if now - self._launcher_read_at >= 1.0:
            self._launcher_read_at = now
            doc = read_status_file(self._status_file)
            fresh = doc is not None and (time.time_ns() - int(doc.get("t_ns", 0))) / 1e9 < (
                STATUS_FILE_STALE_S
            )
            self._launcher = doc if fresh else None
        return self._launcher

    def status(self) -> CameraStatus:
        now = time.monotonic()
        seen = self._collector.snapshot()
        capture, capture_at = seen.capture, seen.capture_at
        if self.camera in seen.cameras:  # the collector follows every camera of the config
            capture, capture_at = seen.cameras[self.camera], seen.cameras_at.get(self.camera)
        if capture is not None and capture.get("state") in ("reconnecting", "waiting"):
            if self._outage_base is None:
                attempts = capture.get("reconnect_attempts")
                self._outage_base = attempts if isinstance(attempts, int) else 0
        elif capture is not None:
            self._outage_base = None
        ann, _, _ = self._annotated.latest()
        frame_age = None if ann is None else max(0.0, (time.time_ns() - ann.t_capture_ns) / 1e9)
        trk, _, _ = self._tracks.latest()
        engine = self.camera_stats(seen.engine) if seen.engine_at is not None else None
        prompt = engine.get("prompt") if engine is not None else None
        if not isinstance(prompt, str):
            prompt = trk.header.prompt if trk is not None else None
        return camera_status(
            self.camera,
            capture=capture,
            capture_age_s=None if capture_at is None else now - capture_at,
            engine_age_s=None if seen.engine_at is None else now - seen.engine_at,
            engine_ever_answered=seen.engine_at is not None,
            launcher=self._launcher_doc(now),
            frame_age_s=None if frame_age is None else round(frame_age, 3),
            uptime_s=now - self._started,
            attempt_base=self._outage_base or 0,
            prompt=prompt,
        )
