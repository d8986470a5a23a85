"""One camera's tracking: its segmenter session, track manager, prompt and grounding schedule.

A :class:`CameraTracker` is the per-camera half of the engine (``engine.pipeline`` drives the
model calls shared by all cameras). Per processed frame the engine calls, in order:

1. ``begin(frame, idx, manual, results)`` after the image encoder ran on the camera's frame
   ``idx``: manual boxes become objects on this very frame, then late grounding results and
   external detections are matched against the tracks *of the frame they were computed on*
   (kept in a short history) and seeded before the frame propagates;
2. the shared kernel propagates every object of every camera (one batch);
3. ``finish(frame, outs)``: the track manager's bookkeeping (misses, ended tracks), the frame's
   history, in-line grounding when this camera grounds in line (the offline job), and the
   ``FrameResult`` with raw masks.

Background grounding is scheduled by the engine across cameras: ``ground_overdue()`` says how
overdue this camera is (0: not due), ``ground_job`` pins the frame and makes the job. A result is
dropped (counted) when the prompt changed or the camera was reset since its job was made.

Single-threaded: every method runs on the engine loop.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Mapping, Sequence

import numpy as np
from supervision import Detections

from engine.camera_grounding import GroundingSchedule
from engine.camera_late import FrameHistory
from engine.camera_seeding import Seeder
from engine.camera_stats import CameraStats, EngineCounters
from engine.core.protocols import Detector, DetectorPrompt, SegmenterSession
from engine.core.types import Box, FrameInput, FrameResult, ObjectResult, SegmentOutput
from engine.cues import mask_colour, mask_contained_of, mask_iou_of, white_of
from engine.grounding import GroundJob, GroundResult
from engine.ids import IdAllocator
from engine.lifecycle.embedder import Embedder, ObjectPointerEmbedder
from engine.lifecycle.protocol import Lifecycle, LifecycleFactory, default_lifecycle
from engine.lifecycle.states import EndReason
from engine.track_manager import Colour, Observation, Removal
from stream.boxes import clip_box
from stream.config import EngineConfig
from stream.errors import PromptError, RequestError

log = logging.getLogger(__name__)

# Retirements that leave the object in view but untracked: worth an early re-grounding.
RETIRE_IN_VIEW = frozenset({EndReason.DRIFTED, EndReason.MISSED})


def blank_output(out: SegmentOutput) -> SegmentOutput:
    """``out`` without its mask (a track whose mask is on another object this frame)."""
    return dataclasses.replace(out, mask=np.zeros_like(out.mask), box=None)


class CameraTracker:
    """Turns one camera's frames into tracked objects (see the module docstring)."""

    def __init__(
        self,
        name: str,
        cfg: EngineConfig,
        session: SegmenterSession,
        detector: Detector | None,
        *,
        first_id: int = 1,
        id_limit: int | None = None,
        ids: IdAllocator | None = None,
        epoch: str | None = None,
        lifecycle_factory: LifecycleFactory = default_lifecycle,
    ) -> None:
        """``ids``: where object IDs come from (default: ``first_id`` up, below ``id_limit``);
        ``epoch``: the engine start its results carry; ``lifecycle_factory``: makes the track
        lifecycle (``engine.lifecycle.protocol``; default: ``TrackManager``)."""
        self.name = name
        self.cfg = cfg
        self.session = session
        self.detector = detector
        self.epoch = epoch
        self.manager: Lifecycle = lifecycle_factory(
            cfg, first_id=first_id, id_limit=id_limit, ids=ids
        )
        self.counters = EngineCounters()
        self.embedder: Embedder = ObjectPointerEmbedder()
        self.prompt = ""
        self.labels: list[str] = []
        self._dprompt: DetectorPrompt | None = None
        self._epoch = 0  # bumped by a prompt change and by reset: older grounding is stale
        self._last_box: dict[int, Box] = {}
        self._schedule = GroundingSchedule(name, cfg, self.counters)
        self._seeder = Seeder(name, cfg, session, self.manager, self.counters, self._last_box)
        self.history = FrameHistory(cfg, session, self.manager, self._seeder, self.counters)
        self._current: tuple[int, int, int, int] | None = None  # seq, frame_idx, width, height
        self._last_masks: dict[int, np.ndarray] = {}
        if cfg.prompt.strip():
            self.set_prompt(cfg.prompt)

    # ------------------------------------------------------------------ prompts and control

    def set_detector(self, detector: Detector) -> None:
        self.detector = detector

    def set_prompt(self, text: str) -> list[str]:
        """New text prompt: tracks whose label left it end; re-grounding starts at once. An
        empty prompt clears it: every track from the detector ends, manual ones go on, and
        nothing is grounded until a prompt is set again."""
        parsed: DetectorPrompt | None = None
        labels: list[str] = []
        if text.strip():
            if self.detector is None:
                raise PromptError("no detector is loaded, so a text prompt cannot be used")
            parsed = self.detector.parse_prompt(text)
            labels = [p.rstrip(".").strip() for p in parsed.phrases]
        for tid in self.manager.set_labels(labels):
            self._seeder.free(tid)
        self._dprompt = parsed
        self.prompt = " ".join(f"{label}." for label in labels)
        self.labels = labels
        self._epoch += 1
        self._schedule.due = parsed is not None
        return labels

    def add_object(self, box: Sequence[float], label: str = "object") -> int:
        """Manual box prompt on the newest frame; returns the new object id."""
        if self._current is None:
            raise RequestError(f"camera {self.name}: no frame has been processed yet")
        seq, idx, w, h = self._current
        b = _check_box(box, w, h)
        tid = self.manager.add_manual(label, b, seq)
        try:
            self.session.add_prompt(tid, idx, box=b)
        except (PromptError, RequestError):
            self.manager.end(tid)
            raise
        self.counters.objects_created += 1
        self._last_box[tid] = b
        return tid

    def remove_object(self, tid: int) -> None:
        """Control ``remove_object``: a manual object ends; one the detector found is suppressed
        (still followed, so that re-grounding does not find it again as a new object, but no
        longer published) until it leaves the view, the prompt changes or the camera is reset."""
        if self.manager.remove(tid) is Removal.ENDED:
            self._seeder.free(tid)

    def reset(self) -> None:
        """End every track; grounding in flight or pending from before is discarded."""
        for tid in self.manager.reset():
            self._last_box.pop(tid, None)
        self.session.reset()
        self._epoch += 1
        self.history.clear()
        self._last_masks = {}

    def add_external_detections(self, seq: int, detections: Detections) -> None:
        """Boxes from an external detector, computed on frame ``seq``; applied on the next frame."""
        self.history.queue_external(seq, detections)

    # ------------------------------------------------------------------ the frame

    def begin(
        self,
        frame: FrameInput,
        idx: int,
        manual: Sequence[tuple[Sequence[float], str]] = (),
        results: Sequence[GroundResult] = (),
    ) -> None:
        """The camera's frame ``idx`` is encoded: prompt manual boxes on it, then apply late
        grounding results and external detections before it propagates."""
        h, w = frame.image.shape[:2]
        self._current = (frame.seq, idx, w, h)
        self._schedule.frame(frame.t_capture_ns)
        for box, label in manual:
            self.add_object(box, label)
        for r in results:
            self.history.apply_result(r, self._epoch)
        self.history.apply_external(idx)

    def finish(
        self,
        frame: FrameInput,
        outs: Mapping[int, SegmentOutput],
        timings_ms: Mapping[str, float],
        *,
        inline_grounding: bool = False,
    ) -> FrameResult:
        """After propagation: bookkeeping, in-line grounding if asked and due, the result."""
        t0 = time.perf_counter()
        current = dict(outs)
        white = white_of(frame.image, self.cfg.lifecycle.colour_space)
        obs = {
            tid: Observation(
                o.box,
                o.score,
                mask_colour(frame.image, o.mask, o.box, white),
                self.embedder.embed(o, frame.image),
            )
            for tid, o in current.items()
        }
        masks = {t: o.mask for t, o in current.items()}
        events = self.manager.on_frame(frame.seq, obs, mask_iou_of(masks), mask_contained_of(masks))
        hidden: set[int] = set()  # on another object while the duplicate or the drift rule decides
        for event in events:
            if event.kind in ("hidden", "off_colour"):
                hidden.add(event.id)
            if event.kind in ("dormant", "ended") and event.reason in RETIRE_IN_VIEW:
                self._schedule.retired()
            if event.kind in ("jumped", "off_colour"):  # on another object: not its box
                obs.pop(event.id, None)
            if event.kind == "jumped" and event.id in current:  # published without a mask
                current[event.id] = blank_output(current[event.id])
            elif event.kind == "dormant":
                self._seeder.sleep(event.id)
                current.pop(event.id, None)
            elif event.kind == "ended":
                if event.reason == "dormant":
                    self.counters.objects_ended += 1
                self._seeder.free(event.id)
                current.pop(event.id, None)
        lifecycle_ms = (time.perf_counter() - t0) * 1e3  # appearance cues and the track manager
        self.history.record(frame.seq, {tid: o for tid, o in obs.items() if tid in current})
        ground_ms = 0.0
        if inline_grounding and self.ground_overdue() > 0:
            ground_ms = self._ground_inline(frame, current, white)
        self._last_masks = {t: o.mask for t, o in current.items()}
        self._schedule.frames_since += 1
        result = self._result(frame, {t: o for t, o in current.items() if t not in hidden})
        timings = {
            **timings_ms,
            "ground_inline_ms": ground_ms,
            "lifecycle_ms": lifecycle_ms,
            "process_ms": timings_ms.get("process_ms", 0.0) + (time.perf_counter() - t0) * 1e3,
        }
        self.counters.frames += 1
        self.counters.last_timings_ms = timings
        return dataclasses.replace(result, timings_ms=timings)

    def _result(self, frame: FrameInput, outs: Mapping[int, SegmentOutput]) -> FrameResult:
        h, w = frame.image.shape[:2]
        objects: list[ObjectResult] = []
        for info in self.manager.tracks():
            out = outs.get(info.id)
            if out is None:
                continue
            if out.box is not None:
                self._last_box[info.id] = out.box
            box = out.box or self._last_box.get(info.id, (0.0, 0.0, 0.0, 0.0))
            obj = ObjectResult(
                info.id, info.label, float(out.score), box, out.mask, info.age, info.state
            )
            objects.append(obj)
        return FrameResult(
            frame.seq, frame.t_capture_ns, w, h, self.prompt, objects, {}, self.epoch
        )

    # ------------------------------------------------------------------ grounding

    def ground_overdue(self) -> float:
        """How overdue this camera's re-grounding is: 0 when not due, otherwise at least 1 (the
        schedule's multiple reached), infinite right after a prompt change. A due grounding of a
        frame too small to detect in is skipped instead (counted, said once)."""
        ready = self.detector is not None and self._dprompt is not None
        ready = ready and not self.history.in_flight
        size = None if self._current is None else (self._current[2], self._current[3])
        return self._schedule.overdue(ready, size)

    def ground_job(self, frame: FrameInput) -> GroundJob:
        """A background grounding job on the frame just finished (pinned until its result)."""
        assert self._dprompt is not None and self._current is not None
        seq, idx, _, _ = self._current
        self.session.pin(idx)
        self.history.job_started(seq, idx, self._last_masks, frame.image)
        self._schedule.mark_grounded()
        return GroundJob(self.name, seq, idx, frame.image, self._dprompt, self._epoch)

    def job_refused(self, job: GroundJob) -> None:
        """The worker did not take ``job``: due again on a later frame."""
        self.history.job_refused(job.seq)
        self.session.unpin(job.frame_idx)
        self._schedule.due = True

    @property
    def grounding_in_flight(self) -> bool:
        return self.history.in_flight

    def _ground_inline(
        self, frame: FrameInput, outs: dict[int, SegmentOutput], white: Colour | None
    ) -> float:
        assert self.detector is not None and self._dprompt is not None
        assert self._current is not None
        t0 = time.perf_counter()
        dets = self.detector.detect(frame.image, self._dprompt)
        self.counters.groundings += 1
        self._schedule.mark_grounded()
        obs = self.history.observations(frame.seq) or {}
        masks = {t: o.mask for t, o in outs.items()}
        self.history.match(frame.seq, dets, obs, masks, frame.image, white, self._current[1], outs)
        ms = (time.perf_counter() - t0) * 1e3
        self.counters.last_grounding_ms = ms
        return ms

    # ------------------------------------------------------------------ state

    def stats(self) -> CameraStats:
        suppressed = self.manager.suppressed_ids()
        return CameraStats(
            self.name,
            self.prompt,
            len(set(self.session.object_ids) - set(suppressed)),
            self.grounding_in_flight,
            EngineCounters(**dataclasses.asdict(self.counters)),
            suppressed=len(suppressed),
            next_id=self.manager.next_id,
            ids_left=self.manager.ids_left,
            ids_exhausted=self.manager.ids_exhausted,
        )

    def close(self) -> None:
        """Free everything this camera holds (its tracks end, its memory goes)."""
        self.manager.reset()
        self.session.close()
        self.history.clear()
        self._last_masks = {}


def _check_box(box: Sequence[float], w: int, h: int) -> Box:
    fitted = clip_box(box, w, h)
    if fitted.clipped:
        log.warning(
            "box %s extends beyond the %dx%d frame: clipped to %s",
            [float(v) for v in box],
            w,
            h,
            list(fitted.box),
        )
    return fitted.box
