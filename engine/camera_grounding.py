"""When one camera re-grounds: at once after a prompt change or a refused job, else when
``engine.reground_every_frames`` frames or ``engine.reground_every_s`` seconds have passed since
its last grounding, or ``engine.reground_after_retire_frames`` frames once a track retired with
its object maybe still in view. Seconds are the frames' capture times (``FrameInput.t_capture_ns``: a live
camera's clock, a file's own timeline), not the engine's clock: a file processed faster or slower
than real time is grounded at the same places, and a camera that delivers every 3rd frame is
grounded as often per second as one that delivers them all. A due grounding of a frame too small
to detect in is skipped (counted, said once). Used by ``engine.camera.CameraTracker``, on the
engine loop."""

from __future__ import annotations

import logging
import math

from engine.camera_stats import EngineCounters
from engine.detectors.base import MIN_DETECT_SIDE
from stream.config import EngineConfig

log = logging.getLogger(__name__)


class GroundingSchedule:
    """One camera's re-grounding schedule (see the module docstring)."""

    def __init__(self, name: str, cfg: EngineConfig, counters: EngineCounters) -> None:
        self.name = name
        self.cfg = cfg
        self.counters = counters
        self.due = False  # at once: a prompt changed or a job was refused
        self.frames_since = 0
        self._now_ns: int | None = None  # the newest frame's capture time
        self._last_ns: int | None = None  # the capture time of the frame last grounded
        self.retired_since = False  # a track retired since the last grounding (see retired())

    def frame(self, t_capture_ns: int) -> None:
        """A new frame of the camera, captured at ``t_capture_ns``. A time earlier than the last
        grounding's (a file that loops, a camera clock set back) starts the count afresh, as the
        first frame does."""
        self._now_ns = t_capture_ns
        if self._last_ns is None or t_capture_ns < self._last_ns:
            self._last_ns = t_capture_ns  # the first frame, or time went back: count from here

    def overdue(self, ready: bool, frame_size: tuple[int, int] | None) -> float:
        """How overdue the camera's re-grounding is: 0 when not due (or not ``ready``: no
        detector, no prompt, a job in flight), otherwise at least 1 (the schedule's multiple
        reached), infinite when due at once. ``frame_size``: the newest frame's (width,
        height)."""
        due = self._ratio() if ready else 0.0
        return 0.0 if due > 0 and self._skip_small_frame(frame_size) else due

    def retired(self) -> None:
        """A track retired with its object maybe still in view (drifted, missed): re-ground as
        soon as ``engine.reground_after_retire_frames`` frames have passed since the last
        grounding (at once if they have), if sooner than the schedule's next one."""
        self.retired_since = True

    def mark_grounded(self) -> None:
        self.due = False
        self.retired_since = False
        self.frames_since = 0
        self._last_ns = self._now_ns

    def _ratio(self) -> float:
        if self.due:
            return math.inf
        ratio = 0.0
        after = self.cfg.reground_after_retire_frames
        if self.retired_since and after > 0 and self.frames_since >= after:
            return 1.0
        n = self.cfg.reground_every_frames
        if n > 0:
            ratio = self.frames_since / n
        s = self.cfg.reground_every_s
        if s is not None and self._now_ns is not None and self._last_ns is not None:
            ratio = max(ratio, (self._now_ns - self._last_ns) / 1e9 / s)
        return ratio if ratio >= 1.0 else 0.0

    def _skip_small_frame(self, frame_size: tuple[int, int] | None) -> bool:
        if frame_size is None:
            return False
        w, h = frame_size
        if min(w, h) >= MIN_DETECT_SIDE:
            return False
        self.counters.grounding_skipped_small += 1
        self.mark_grounded()
        if self.counters.grounding_skipped_small == 1:
            log.warning(
                "camera %s: frames of %dx%d are under %d pixels a side: not grounded (counted in "
                "grounding_skipped_small); tracking goes on",
                self.name,
                w,
                h,
                MIN_DETECT_SIDE,
            )
        return True
