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

import logging
import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Literal

import numpy as np
from supervision import Detections

from engine.detectors.base import MIN_DETECT_SIDE
from engine.grounding import GroundJob, GroundResult
from engine.ids import IdAllocator
from engine.lifecycle.embedder import Embedder, ObjectPointerEmbedder
from engine.lifecycle.protocol import Lifecycle, LifecycleFactory, default_lifecycle
from engine.protocols import Detector, DetectorPrompt, SegmenterSession
from engine.segmenter import PreparedFrame, SegmentOutput
from engine.track_manager import Colour, Observation, Plan, Removal
from stream.boxes import clip_box
from stream.config import EngineConfig
from stream.errors import PromptError

log = logging.getLogger(__name__)

Box = tuple[float, float, float, float]
HISTORY_FRAMES = 256  # frames of per-object observations kept for matching late detections


@dataclass(frozen=True)
class FrameInput:
    seq: int
    t_capture_ns: int
    image: np.ndarray  # HxWx3 uint8 BGR
    prepared: PreparedFrame | None = None  # the model input made of ``image`` ahead (``prepare``)


@dataclass(frozen=True)
class ObjectResult:
    id: int
    label: str
    score: float
    box: Box
    mask: np.ndarray  # HxW bool
    age: int
    state: Literal["new", "tracked", "lost"]


@dataclass(frozen=True)
class FrameResult:
    seq: int
    t_capture_ns: int
    width: int
    height: int
    prompt: str
    objects: list[ObjectResult]
    timings_ms: dict[str, float]
    epoch: str | None = None  # the engine start that produced it (tracks header ``epoch``)


@dataclass
class EngineCounters:
    frames: int = 0
    groundings: int = 0
    grounding_errors: int = 0
    grounding_skipped_small: int = 0  # due groundings of frames under MIN_DETECT_SIDE a side
    grounding_results_dropped: int = 0
    objects_created: int = 0
    objects_ended: int = 0
    objects_dormant: int = 0  # tracks put to sleep (memory freed) for re-identification
    reidentified: int = 0  # dormant or lost tracks re-prompted from a detection under their ID
    reseeded: int = 0
    seed_failures: int = 0
    last_grounding_ms: float = 0.0
    last_timings_ms: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class CameraStats:
    """One camera's tracking figures (the engine process adds transport and rates)."""

    camera: str
    prompt: str
    objects: int  # objects followed and published (suppressed ones not counted)
    grounding_in_flight: bool
    counters: EngineCounters
    suppressed: int = 0  # objects removed by the user, followed silently until they leave
    next_id: int = 1  # the ID the next object gets
    ids_left: int | None = None  # in the leased ID blocks (None: not leased)
    ids_exhausted: int = 0  # objects not created because no leased ID was left

    def as_dict(self) -> dict[str, object]:
        """The flat form of the control ``stats`` reply (counters at top level)."""
        return {
            **asdict(self.counters),
            "prompt": self.prompt,
            "objects": self.objects,
            "suppressed": self.suppressed,
            "grounding_in_flight": self.grounding_in_flight,
            "next_id": self.next_id,
            "ids_left": self.ids_left,
            "ids_exhausted": self.ids_exhausted,
        }


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
        self._ground_due = False
        self._frames_since_ground = 0
        self._last_ground_t = time.monotonic()
        self._history: OrderedDict[int, dict[int, Observation]] = OrderedDict()
        self._last_box: dict[int, Box] = {}
        self._current: tuple[int, int, int, int] | None = None  # seq, frame_idx, width, height
        self._pending_external: deque[tuple[int, Detections]] = deque(maxlen=8)
        # seq -> frame idx, masks, image of a grounding job in flight
        self._inflight: dict[int, tuple[int, dict[int, np.ndarray], np.ndarray]] = {}
        self._last_masks: dict[int, np.ndarray] = {}
        if cfg.prompt.strip():
            self.set_prompt(cfg.prompt)

    # ------------------------------------------------------------------ prompts and control

    def set_detector(self, detector: Detector) -> None:
        self.detector = detector

    def set_prompt(self, text: str) -> list[str]:
        """New text prompt: tracks whose label left it end; re-grounding starts at once."""
        if self.detector is None:
            raise PromptError("no detector is loaded, so a text prompt cannot be used")
        parsed = self.detector.parse_prompt(text)
        labels = [p.rstrip(".").strip() for p in parsed.phrases]
        for tid in self.manager.set_labels(labels):
            self._free(tid)
        self._dprompt = parsed
        self.prompt = " ".join(f"{label}." for label in labels)
        self.labels = labels
        self._epoch += 1
        self._ground_due = True
        return labels

    def add_object(self, box: Sequence[float], label: str = "object") -> int:
        """Manual box prompt on the newest frame; returns the new object id."""
        if self._current is None:
            raise PromptError(f"camera {self.name}: no frame has been processed yet")
        seq, idx, w, h = self._current
        b = _check_box(box, w, h)
        tid = self.manager.add_manual(label, b, seq)
        try:
            self.session.add_prompt(tid, idx, box=b)
        except PromptError:
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
            self._free(tid)

    def reset(self) -> None:
        """End every track; grounding in flight or pending from before is discarded."""
        for tid in self.manager.reset():
            self._last_box.pop(tid, None)
        self.session.reset()
        self._epoch += 1
        self._history.clear()
        self.counters.grounding_results_dropped += len(self._pending_external)  # counted
        self._pending_external.clear()
        self._inflight.clear()
        self._last_masks = {}

    def add_external_detections(self, seq: int, detections: Detections) -> None:
        """Boxes from an external detector, computed on frame ``seq``; applied on the next frame."""
        self._pending_external.append((seq, detections))

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
        for box, label in manual:
            self.add_object(box, label)
        for r in results:
            self._apply_ground_result(r)
        while self._pending_external:
            seq, dets = self._pending_external.popleft()
            obs = self._history.get(seq)
            if obs is None:
                self.counters.grounding_results_dropped += 1
                continue
            self._apply_plan(self.manager.on_detections(seq, dets, obs), idx, None, dets)

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
        obs = {
            tid: Observation(
                o.box,
                o.score,
                mask_colour(frame.image, o.mask, o.box),
                self.embedder.embed(o, frame.image),
            )
            for tid, o in current.items()
        }
        masks = {t: o.mask for t, o in current.items()}
        for event in self.manager.on_frame(frame.seq, obs, mask_iou_of(masks)):
            if event.kind == "dormant":
                self._sleep(event.id)
                current.pop(event.id, None)
            elif event.kind == "ended":
                if event.reason == "dormant":
                    self.counters.objects_ended += 1
                self._free(event.id)
                current.pop(event.id, None)
        lifecycle_ms = (time.perf_counter() - t0) * 1e3  # appearance cues and the track manager
        self._history[frame.seq] = {tid: o for tid, o in obs.items() if tid in current}
        while len(self._history) > HISTORY_FRAMES:
            self._history.popitem(last=False)
        ground_ms = 0.0
        if inline_grounding and self.ground_overdue() > 0:
            ground_ms = self._ground_inline(frame, current)
        self._last_masks = {t: o.mask for t, o in current.items()}
        self._frames_since_ground += 1
        result = self._result(frame, current)
        timings = {
            **timings_ms,
            "ground_inline_ms": ground_ms,
            "lifecycle_ms": lifecycle_ms,
            "process_ms": timings_ms.get("process_ms", 0.0) + (time.perf_counter() - t0) * 1e3,
        }
        self.counters.frames += 1
        self.counters.last_timings_ms = timings
        return FrameResult(
            result.seq, result.t_capture_ns, result.width, result.height, self.prompt,
            result.objects, timings, self.epoch,
        )  # fmt: skip

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
            objects.append(
                ObjectResult(
                    info.id, info.label, float(out.score), box, out.mask, info.age, info.state
                )
            )
        return FrameResult(
            frame.seq, frame.t_capture_ns, w, h, self.prompt, objects, {}, self.epoch
        )

    # ------------------------------------------------------------------ grounding

    def ground_overdue(self) -> float:
        """How overdue this camera's re-grounding is: 0 when not due, otherwise at least 1 (the
        schedule's multiple reached), infinite right after a prompt change. A due grounding of a
        frame too small to detect in is skipped instead (counted, said once)."""
        due = self._overdue()
        return 0.0 if due > 0 and self._skip_small_frame() else due

    def _skip_small_frame(self) -> bool:
        if self._current is None:
            return False
        _, _, w, h = self._current
        if min(w, h) >= MIN_DETECT_SIDE:
            return False
        self.counters.grounding_skipped_small += 1
        self._mark_grounded()
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

    def _overdue(self) -> float:
        if self.detector is None or self._dprompt is None or self._inflight:
            return 0.0
        if self._ground_due:
            return math.inf
        ratio = 0.0
        n = self.cfg.reground_every_frames
        if n > 0:
            ratio = self._frames_since_ground / n
        s = self.cfg.reground_every_s
        if s is not None:
            ratio = max(ratio, (time.monotonic() - self._last_ground_t) / s)
        return ratio if ratio >= 1.0 else 0.0

    def ground_job(self, frame: FrameInput) -> GroundJob:
        """A background grounding job on the frame just finished (pinned until its result)."""
        assert self._dprompt is not None and self._current is not None
        seq, idx, _, _ = self._current
        self.session.pin(idx)
        self._inflight[seq] = (idx, self._last_masks, frame.image)
        self._mark_grounded()
        return GroundJob(self.name, seq, idx, frame.image, self._dprompt, self._epoch)

    def job_refused(self, job: GroundJob) -> None:
        """The worker did not take ``job``: due again on a later frame."""
        self._inflight.pop(job.seq, None)
        self.session.unpin(job.frame_idx)
        self._ground_due = True

    @property
    def grounding_in_flight(self) -> bool:
        return bool(self._inflight)

    def _mark_grounded(self) -> None:
        self._ground_due = False
        self._frames_since_ground = 0
        self._last_ground_t = time.monotonic()

    def _ground_inline(self, frame: FrameInput, outs: dict[int, SegmentOutput]) -> float:
        assert self.detector is not None and self._dprompt is not None
        assert self._current is not None
        t0 = time.perf_counter()
        dets = self.detector.detect(frame.image, self._dprompt)
        self.counters.groundings += 1
        self._mark_grounded()
        plan = self.manager.on_detections(
            frame.seq,
            dets,
            self._history[frame.seq],
            mask_iou_of({t: o.mask for t, o in outs.items()}),
            box_colours(frame.image, dets.xyxy),
        )
        self._apply_plan(plan, self._current[1], outs, dets)
        ms = (time.perf_counter() - t0) * 1e3
        self.counters.last_grounding_ms = ms
        return ms

    def _apply_ground_result(self, r: GroundResult) -> None:
        pending = self._inflight.pop(r.seq, None)
        if pending is None or r.epoch != self._epoch:
            # Made before a prompt change or a reset: its frame and tracks are gone.
            self.counters.grounding_results_dropped += 1
            self.session.unpin(r.frame_idx)
            return
        _, masks, image = pending
        try:
            if r.detections is None:
                self.counters.grounding_errors += 1
                return
            self.counters.groundings += 1
            self.counters.last_grounding_ms = r.elapsed_ms
            obs = self._history.get(r.seq)
            if obs is None:
                self.counters.grounding_results_dropped += 1
                return
            self._apply_plan(
                self.manager.on_detections(
                    r.seq,
                    r.detections,
                    obs,
                    mask_iou_of(masks),
                    box_colours(image, r.detections.xyxy),
                ),
                r.frame_idx,
                None,
                r.detections,
            )
        finally:
            self.session.unpin(r.frame_idx)

    def _apply_plan(
        self,
        plan: Plan,
        frame_idx: int,
        outs: dict[int, SegmentOutput] | None,
        detections: Detections | None = None,
    ) -> None:
        """Apply ``plan`` on ``frame_idx``; a detection that carries a mask (SAM 3) seeds its
        track with that mask, the others with their box as ``seed_with`` says."""
        for tid in plan.removed:
            self._free(tid)
            if outs is not None:
                outs.pop(tid, None)
        for tid in plan.dormant:
            self._sleep(tid)
            if outs is not None:
                outs.pop(tid, None)
        masks = None if detections is None else detections.mask
        seeds = [(r.id, r.box, r.detection, "reseeded") for r in plan.reseed] + [
            (n.id, n.box, n.detection, "objects_created") for n in plan.new
        ]
        for tid, box, det, counter in seeds:
            mask = masks[det] if masks is not None and 0 <= det < len(masks) else None
            dormant = counter == "reseeded" and tid not in self.session.object_ids
            out = self._seed(tid, frame_idx, box, mask)
            if out is None:
                continue
            self.counters.reidentified += dormant
            setattr(self.counters, counter, getattr(self.counters, counter) + 1)
            if outs is not None:
                outs[tid] = out

    def _seed(
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
        except PromptError as e:
            self.counters.seed_failures += 1
            log.warning(
                "camera %s: could not seed object %d from box %s: %s", self.name, tid, box, e
            )
            if tid in self.manager:
                self.manager.end(tid)
            self._free(tid)
            return None

    def _free(self, tid: int) -> None:
        self._last_box.pop(tid, None)
        if tid in self.session.object_ids:
            self.session.remove_object(tid)
            self.counters.objects_ended += 1

    def _sleep(self, tid: int) -> None:
        """A dormant track: its memory goes, the manager keeps it for re-identification."""
        if tid in self.session.object_ids:
            self.session.remove_object(tid)
        self.counters.objects_dormant += 1

    # ------------------------------------------------------------------ state

    def stats(self) -> CameraStats:
        suppressed = self.manager.suppressed_ids()
        return CameraStats(
            self.name,
            self.prompt,
            len(set(self.session.object_ids) - set(suppressed)),
            self.grounding_in_flight,
            EngineCounters(**{**asdict(self.counters)}),
            suppressed=len(suppressed),
            next_id=self.manager.next_id,
            ids_left=self.manager.ids_left,
            ids_exhausted=self.manager.ids_exhausted,
        )

    def close(self) -> None:
        """Free everything this camera holds (its tracks end, its memory goes)."""
        self.manager.reset()
        self.session.close()
        self._history.clear()
        self._inflight.clear()
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


def mask_iou_of(masks: Mapping[int, np.ndarray]) -> Callable[[int, int], float]:
    """IoU of two tracks' masks on one frame, for the track manager's merge decision; a track
    without a mask there counts as overlapping (the box rule alone decides)."""

    def iou(a: int, b: int) -> float:
        ma, mb = masks.get(a), masks.get(b)
        if ma is None or mb is None:
            return 1.0
        union = np.count_nonzero(ma | mb)
        return float(np.count_nonzero(ma & mb)) / union if union else 0.0

    return iou


COLOUR_SAMPLES = 4096  # pixels a mean colour is taken over at most (a regular grid over the box)


def mask_colour(image: np.ndarray, mask: np.ndarray, box: Box | None) -> Colour | None:
    """Mean colour (b, g, r in [0, 1]) of ``image`` inside ``mask`` (within its ``box``), for
    re-identification; None for an empty mask. The mean is taken on a regular grid of at most
    ``COLOUR_SAMPLES`` pixels of the box, so its cost is bounded per object whatever its size
    (a full-resolution mean cost 6 ms per object per frame on a 300x300 object)."""
    if box is None:
        return None
    x1, y1, x2, y2 = (max(0, int(v)) for v in box)
    area = max(0, x2 - x1) * max(0, y2 - y1)
    step = max(1, int(np.ceil(np.sqrt(area / COLOUR_SAMPLES))))
    m = mask[y1:y2:step, x1:x2:step]
    if not m.any():
        m = mask[y1:y2, x1:x2]  # a thin mask the grid missed: every pixel of it
        if not m.any():
            return None
        step = 1
    mean = image[y1:y2:step, x1:x2:step][m].mean(axis=0) / 255.0
    return (float(mean[0]), float(mean[1]), float(mean[2]))


def box_colours(image: np.ndarray, xyxy: np.ndarray) -> list[Colour | None]:
    """Mean colour of each box's central half (inside a ball or a box, off the background)."""
    h, w = image.shape[:2]
    out: list[Colour | None] = []
    for x1, y1, x2, y2 in np.asarray(xyxy, dtype=np.float64).reshape(-1, 4):
        if not np.isfinite([x1, y1, x2, y2]).all():
            out.append(None)
            continue
        cx, cy, hw, hh = (x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) / 4, (y2 - y1) / 4
        a, b = max(0, int(cx - hw)), min(w, int(np.ceil(cx + hw)))
        c, d = max(0, int(cy - hh)), min(h, int(np.ceil(cy + hh)))
        if b <= a or d <= c:
            out.append(None)
            continue
        mean = image[c:d, a:b].reshape(-1, 3).mean(axis=0) / 255.0
        out.append((float(mean[0]), float(mean[1]), float(mean[2])))
    return out


def sample_points(mask: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """``n`` (x, y) points drawn uniformly inside ``mask`` (deterministic for a seed), as the
    reference Grounded SAM 2 pipeline seeds with points."""
    ys, xs = np.nonzero(mask)
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(xs), size=min(n, len(xs)), replace=False)
    return np.stack([xs[pick], ys[pick]], axis=1).astype(np.float32)
