"""How one camera's tracks get (and lose) their segmenter objects: a track manager's plan is
applied on a frame (new and re-identified tracks seeded from their detection's mask, box, mask or
points as ``engine.seed_with`` says; removed ones freed; dormant ones put to sleep), with the
camera's counters kept. Used by ``engine.camera.CameraTracker``, on the engine loop."""

from __future__ import annotations

import logging

import numpy as np
from supervision import Detections

from engine.camera_stats import EngineCounters
from engine.core.protocols import SegmenterSession
from engine.core.types import Box, SegmentOutput
from engine.cues import sample_points
from engine.lifecycle.protocol import Lifecycle
from engine.track_manager import Plan
from stream.config import EngineConfig
from stream.errors import PromptError, RequestError

log = logging.getLogger(__name__)


class Seeder:
    """Starts, restarts, frees and puts to sleep one camera's segmenter objects."""

    def __init__(
        self,
        name: str,
        cfg: EngineConfig,
        session: SegmenterSession,
        manager: Lifecycle,
        counters: EngineCounters,
        last_box: dict[int, Box],
    ) -> None:
        self.name = name
        self.cfg = cfg
        self.session = session
        self.manager = manager
        self.counters = counters
        self._last_box = last_box  # the camera's: a freed track's last box goes with it

    def apply_plan(
        self,
        plan: Plan,
        frame_idx: int,
        outs: dict[int, SegmentOutput] | None,
        detections: Detections | None = None,
    ) -> None:
        """Apply ``plan`` on ``frame_idx``; a detection that carries a mask (SAM 3) seeds its
        track with that mask, the others with their box as ``seed_with`` says."""
        for tid in plan.removed:
            self.free(tid)
            if outs is not None:
                outs.pop(tid, None)
        for tid in plan.dormant:
            self.sleep(tid)
            if outs is not None:
                outs.pop(tid, None)
        masks = None if detections is None else detections.mask
        seeds = [(r.id, r.box, r.detection, "reseeded") for r in plan.reseed] + [
            (n.id, n.box, n.detection, "objects_created") for n in plan.new
        ]
        for tid, box, det, counter in seeds:
            mask = masks[det] if masks is not None and 0 <= det < len(masks) else None
            dormant = counter == "reseeded" and tid not in self.session.object_ids
            out = self.seed(tid, frame_idx, box, mask)
            if out is None:
                continue
            self.counters.reidentified += dormant
            setattr(self.counters, counter, getattr(self.counters, counter) + 1)
            if outs is not None:
                outs[tid] = out

    def seed(
        self, tid: int, frame_idx: int, box: Box, mask: np.ndarray | None = None
    ) -> SegmentOutput | None:
        """Start (or restart) object ``tid`` on ``frame_idx`` from the detection's mask where it
        has a non-empty one, else from its box as ``seed_with`` says."""
        try:
            if mask is not None and mask.any():
                return self.session.add_prompt(tid, frame_idx, mask=mask)
            mode = self.cfg.seed_with
            if mode == "box":
                return self.session.add_prompt(tid, frame_idx, box=box)
            mask = self.session.segment_box(frame_idx, box)
            if not mask.any():
                return self.session.add_prompt(tid, frame_idx, box=box)
            if mode == "mask":
                return self.session.add_prompt(tid, frame_idx, mask=mask)
            pts = sample_points(mask, 8, seed=tid)
            return self.session.add_prompt(
                tid, frame_idx, points=pts, point_labels=np.ones(len(pts), np.int32)
            )
        except (PromptError, RequestError) as e:  # a bad box, or its frame no longer held
            self.counters.seed_failures += 1
            log.warning(
                "camera %s: could not seed object %d from box %s: %s", self.name, tid, box, e
            )
            if tid in self.manager:
                self.manager.end(tid)
            self.free(tid)
            return None

    def free(self, tid: int) -> None:
        self._last_box.pop(tid, None)
        if tid in self.session.object_ids:
            self.session.remove_object(tid)
            self.counters.objects_ended += 1

    def sleep(self, tid: int) -> None:
        """A dormant track: its memory goes, the manager keeps it for re-identification."""
        if tid in self.session.object_ids:
            self.session.remove_object(tid)
        self.counters.objects_dormant += 1
