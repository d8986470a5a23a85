"""The engine process's stats board: the frame loop refreshes it (every tick, and every 50 ms
while no frame comes); the control thread answers ``stats`` and ``cameras`` from it at once,
with the other threads' counters, uptime and memory as of the moment it answers.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import psutil

from engine.outputs import AnnotatedPublisher, TracksPublisher
from engine.pipeline import MultiCameraEngine
from engine.service.commands import Reply
from engine.service.control import ControlServer
from engine.service.detections import DetectionsInput
from engine.service.feeds import CameraFeeds
from engine.service.stats import CameraProcessStats, ControlCounters, EngineStats, MemoryStats


class StatsBoard:
    """The latest ``EngineStats`` of the engine process (see the module docstring)."""

    def __init__(
        self,
        engine: MultiCameraEngine,
        feeds: CameraFeeds,
        publishers: tuple[TracksPublisher, AnnotatedPublisher | None],
        control: ControlServer,
        detections: DetectionsInput,
        busy_with: Callable[[], str | None],
    ) -> None:
        """``busy_with``: the long step the frame loop is in (loading a model), if any."""
        self._engine = engine
        self._feeds = feeds
        self._tracks, self._annotated = publishers
        self._control = control
        self._detections = detections
        self._busy_with = busy_with
        self.latency_ms: dict[str, float] = {}  # the last frame's model and publish times
        self._lock = threading.Lock()
        self._proc = psutil.Process()
        self._started = time.time()
        self._snapshot = self._collect()

    def _stage_latency(self) -> dict[str, float]:
        """The last frame's time per stage (ms): the model's (encode, propagate, lifecycle,
        grounding) and the publishers' (RLE, JSON and send, render, JPEG), with the latencies."""
        out = dict(self.latency_ms)
        out.update(self._tracks.last_stage_ms)
        if self._annotated is not None:
            out.update(self._annotated.last_stage_ms)
        return out

    def _collect(self) -> EngineStats:
        cams = {
            feed.name: CameraProcessStats.of(
                feed, self._engine.camera(feed.name).stats(), self._annotated
            )
            for feed in self._feeds
        }
        latency = {k: round(v, 2) for k, v in self._stage_latency().items()}
        return self._as_of_now(cams, self._engine.ground_batches, latency, _cuda_memory())

    def refresh(self) -> None:
        """Take the loop's figures now (loop thread)."""
        snapshot = self._collect()
        with self._lock:
            self._snapshot = snapshot

    def _as_of_now(
        self,
        cameras: dict[str, CameraProcessStats],
        ground_batches: int,
        latency_ms: dict[str, float],
        cuda_mb: float | None,
    ) -> EngineStats:
        """The loop's figures with the other threads' counters, uptime and memory as of now."""
        c, d = self._control, self._detections
        counters = ControlCounters(
            control_rejected_by_reason=dict(c.rejected),
            control_pending=c.pending,
            control_pending_max=c.pending_max,
            control_replies_dropped=c.replies_dropped,
            detections_dropped=d.dropped,
            detections_connection_drops=d.connection_drops,
            busy_with=self._busy_with(),
        )
        return EngineStats(
            uptime_s=round(time.time() - self._started, 1),
            cameras=cameras,
            control_rejected=sum(c.rejected.values()),
            detections_rejected=d.rejected,
            ground_batches=ground_batches,
            control=counters,
            latency_ms=latency_ms,
            memory=MemoryStats(
                rss_mb=round(self._proc.memory_info().rss / 2**20, 1), cuda_allocated_mb=cuda_mb
            ),
        )

    def latest(self) -> EngineStats:
        """The loop's last snapshot (any thread)."""
        with self._lock:
            return self._snapshot

    def stats(self) -> dict[str, Any]:
        """The control ``stats`` reply (wire form): the loop's last snapshot of the cameras,
        with the counters of the other threads, uptime and memory as of now."""
        snap = self.latest()
        now = self._as_of_now(
            snap.cameras, snap.ground_batches, snap.latency_ms, snap.memory.cuda_allocated_mb
        )
        return now.model_dump(mode="json")

    def camera_list(self) -> list[Reply]:
        """The control ``cameras`` reply (wire form)."""
        return [c.model_dump(mode="json") for c in self.latest().camera_list()]


def _cuda_memory() -> float | None:
    try:
        import torch

        if torch.cuda.is_available():
            return round(torch.cuda.memory_allocated() / 2**20, 1)
    except ImportError:
        pass
    return None
