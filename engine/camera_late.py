"""Detections matched against the tracks of the frame they were computed on, not the newest one:
one camera's grounding (in line, or a background job whose result arrives frames later) and the
boxes of an external detector (``detections`` topic).

:class:`FrameHistory` keeps what that needs: each processed frame's observations of its tracks
(``HISTORY_FRAMES`` frames), the grounding jobs in flight (the frame's masks and image, its
segmenter frame pinned by the caller until the result), and the external detections waiting
for the next frame. Matching (``match``): appearance cues of the detections' boxes, the track
manager's plan for them, that plan applied by the camera's ``Seeder``. Used by
``engine.camera.CameraTracker``, on the engine loop.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Mapping

import numpy as np
from supervision import Detections

from engine.camera_seeding import Seeder
from engine.camera_stats import EngineCounters
from engine.core.protocols import SegmenterSession
from engine.core.types import SegmentOutput
from engine.cues import box_colours, mask_iou_of, white_of
from engine.grounding import GroundResult
from engine.lifecycle.protocol import Lifecycle
from engine.track_manager import Colour, Observation
from stream.config import EngineConfig

HISTORY_FRAMES = 256  # frames of per-object observations kept for matching late detections
EXTERNAL_QUEUE = 8  # external detections kept for the next frame (the oldest dropped first)


class FrameHistory:
    """One camera's recent frames as late detections need them (see the module docstring)."""

    def __init__(
        self,
        cfg: EngineConfig,
        session: SegmenterSession,
        manager: Lifecycle,
        seeder: Seeder,
        counters: EngineCounters,
    ) -> None:
        self.cfg = cfg
        self.session = session
        self.manager = manager
        self.seeder = seeder
        self.counters = counters
        self._observations: OrderedDict[int, dict[int, Observation]] = OrderedDict()
        # seq -> frame idx, masks, image of a grounding job in flight
        self._inflight: dict[int, tuple[int, dict[int, np.ndarray], np.ndarray]] = {}
        self._external: deque[tuple[int, Detections]] = deque(maxlen=EXTERNAL_QUEUE)

    # ------------------------------------------------------------------ frames

    def record(self, seq: int, observations: dict[int, Observation]) -> None:
        """Frame ``seq``'s observations of its tracks (the oldest frames beyond
        ``HISTORY_FRAMES`` are forgotten)."""
        self._observations[seq] = observations
        while len(self._observations) > HISTORY_FRAMES:
            self._observations.popitem(last=False)

    def observations(self, seq: int) -> dict[int, Observation] | None:
        """Frame ``seq``'s observations, or None when it is not (or no longer) kept."""
        return self._observations.get(seq)

    # ------------------------------------------------------------------ grounding jobs

    @property
    def in_flight(self) -> bool:
        return bool(self._inflight)

    def job_started(
        self, seq: int, frame_idx: int, masks: dict[int, np.ndarray], image: np.ndarray
    ) -> None:
        """A background grounding job on frame ``seq`` (segmenter frame ``frame_idx``, pinned by
        the caller) with the masks its tracks had there."""
        self._inflight[seq] = (frame_idx, masks, image)

    def job_refused(self, seq: int) -> None:
        self._inflight.pop(seq, None)

    def apply_result(self, r: GroundResult, epoch: int) -> None:
        """A background grounding result: matched against its frame's tracks, unless it was
        made before the camera's prompt changed or it was reset (``epoch``), its frame is no
        longer kept, or the detector failed (each counted). Its frame is unpinned."""
        pending = self._inflight.pop(r.seq, None)
        try:
            if pending is None or r.epoch != epoch:
                # Made before a prompt change or a reset: its frame and tracks are gone.
                self.counters.grounding_results_dropped += 1
                return
            if r.detections is None:
                self.counters.grounding_errors += 1
                return
            self.counters.groundings += 1
            self.counters.last_grounding_ms = r.elapsed_ms
            obs = self._observations.get(r.seq)
            if obs is None:
                self.counters.grounding_results_dropped += 1
                return
            _, masks, image = pending
            white = white_of(image, self.cfg.lifecycle.colour_space)
            self.match(r.seq, r.detections, obs, masks, image, white, r.frame_idx)
        finally:
            self.session.unpin(r.frame_idx)

    def match(
        self,
        seq: int,
        dets: Detections,
        obs: Mapping[int, Observation],
        masks: Mapping[int, np.ndarray],
        image: np.ndarray,
        white: Colour | None,
        frame_idx: int,
        outs: dict[int, SegmentOutput] | None = None,
    ) -> None:
        """Detections ``dets`` on frame ``seq`` (its ``image``, its tracks' ``obs`` and
        ``masks``) become the manager's plan, applied on segmenter frame ``frame_idx`` (``outs``:
        that frame's outputs, when it is the frame being finished)."""
        colours = box_colours(image, dets.xyxy, white)
        plan = self.manager.on_detections(seq, dets, obs, mask_iou_of(masks), colours)
        self.seeder.apply_plan(plan, frame_idx, outs, dets)

    # ------------------------------------------------------------------ external detections

    def queue_external(self, seq: int, detections: Detections) -> None:
        """Boxes from an external detector, computed on frame ``seq``: applied on the next
        frame (``apply_external``)."""
        self._external.append((seq, detections))

    def apply_external(self, frame_idx: int) -> None:
        """The external detections waiting, matched against the tracks of their own frames
        (one no longer kept is dropped, counted) and seeded on segmenter frame ``frame_idx``."""
        while self._external:
            seq, dets = self._external.popleft()
            obs = self._observations.get(seq)
            if obs is None:
                self.counters.grounding_results_dropped += 1
                continue
            self.seeder.apply_plan(
                self.manager.on_detections(seq, dets, obs), frame_idx, None, dets
            )

    def clear(self) -> None:
        """Forget every frame, job and waiting detection (a reset: what waited is counted as
        dropped; the caller unpins the frames)."""
        self.counters.grounding_results_dropped += len(self._external)
        self._external.clear()
        self._observations.clear()
        self._inflight.clear()
