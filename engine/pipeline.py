"""The tracking engine core: ground → segment → track for one camera, one frame at a time.

``TrackingEngine.process(frame)`` runs on the engine's frame loop (the "GPU loop"): the image
encoder once, every object propagated in one batch, the track manager's bookkeeping, and the
application of grounding results. It returns a ``FrameResult`` with raw masks; RLE encoding,
JPEG encoding and annotation happen elsewhere (``engine.process`` publisher threads).

Grounding runs either in line on its scheduled frames (offline job: reproducible) or in a
``RegroundWorker`` thread beside propagation (live engine). A background result carries the
``seq`` of the frame it was computed on; it is matched against the tracks *of that frame*
(kept in a short history) and new objects are prompted on that (pinned) frame, so a slow
detector never stalls the loop and never seeds a box on the wrong frame.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np
from supervision import Detections

from engine.grounder import Grounder
from engine.segmenter import SegmentOutput, StreamingSegmenter
from engine.track_manager import Observation, Plan, TrackManager
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


class DetectionSource(Protocol):
    def detect(self, image_bgr: np.ndarray) -> Detections: ...


@dataclass
class _GroundJob:
    seq: int
    frame_idx: int
    image: np.ndarray
    prompt_version: int


@dataclass
class _GroundResult:
    seq: int
    frame_idx: int
    detections: Detections | None  # None: the detector failed on this frame (counted)
    prompt_version: int
    elapsed_ms: float


class RegroundWorker:
    """Runs the detector in its own thread (own CUDA stream on GPU). One job in flight at a time;
    a job offered while one runs is refused (the scheduler tries again on a later frame)."""

    def __init__(self, detector: DetectionSource, device: Any = None) -> None:
        self._detector = detector
        self._jobs: queue.Queue[_GroundJob | None] = queue.Queue(maxsize=1)
        self._results: queue.Queue[_GroundResult] = queue.Queue(maxsize=4)
        self._busy = threading.Event()
        self.errors = 0
        self._stream = None
        if device is not None and getattr(device, "type", "cpu") == "cuda":
            import torch

            self._stream = torch.cuda.Stream(device=device)
        self._thread = threading.Thread(target=self._run, name="reground", daemon=True)
        self._thread.start()

    @property
    def busy(self) -> bool:
        return self._busy.is_set()

    def submit(self, job: _GroundJob) -> bool:
        if self._busy.is_set():
            return False
        self._busy.set()
        self._jobs.put(job)
        return True

    def results(self) -> list[_GroundResult]:
        out = []
        while True:
            try:
                out.append(self._results.get_nowait())
            except queue.Empty:
                return out

    def wait_idle(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self._busy.is_set() and time.monotonic() < deadline:
            time.sleep(0.005)
        return not self._busy.is_set()

    def _detect(self, image: np.ndarray) -> Detections:
        if self._stream is None:
            return self._detector.detect(image)
        import torch

        with torch.cuda.stream(self._stream):
            dets = self._detector.detect(image)
        self._stream.synchronize()
        return dets

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            t0 = time.perf_counter()
            dets: Detections | None
            try:
                dets = self._detect(job.image)
            except Exception:  # a detector fault must not kill tracking; it is counted and logged
                self.errors += 1
                log.exception("grounding failed on frame %d", job.seq)
                dets = None
            self._results.put(
                _GroundResult(
                    job.seq,
                    job.frame_idx,
                    dets,
                    job.prompt_version,
                    (time.perf_counter() - t0) * 1e3,
                )
            )
            self._busy.clear()

    def close(self) -> None:
        with contextlib.suppress(queue.Full):
            self._jobs.put_nowait(None)
        self._thread.join(timeout=1.0)  # daemon thread: a detection still running is abandoned


@dataclass
class EngineCounters:
    frames: int = 0
    groundings: int = 0
    grounding_errors: int = 0
    grounding_results_dropped: int = 0
    objects_created: int = 0
    objects_ended: int = 0
    reseeded: int = 0
    seed_failures: int = 0
    last_grounding_ms: float = 0.0
    last_timings_ms: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {k: (dict(v) if isinstance(v, dict) else v) for k, v in self.__dict__.items()}


class TrackingEngine:
    """Turns frames into tracked objects. Single-threaded: call every method from one thread
    (the engine loop); the live engine funnels control requests onto that thread."""

    def __init__(
        self,
        cfg: EngineConfig,
        segmenter: StreamingSegmenter,
        grounder: Grounder | None,
        *,
        background_grounding: bool,
        device: Any = None,
    ) -> None:
        self.cfg = cfg
        self.seg = segmenter
        self.grounder = grounder
        self.manager = TrackManager(cfg)
        self.counters = EngineCounters()
        self.prompt = ""
        self.labels: list[str] = []
        self._prompt_version = 0
        self._ground_due = False
        self._frames_since_ground = 0
        self._last_ground_t = time.monotonic()
        self._history: OrderedDict[int, dict[int, Observation]] = OrderedDict()
        self._last_box: dict[int, Box] = {}
        self._current: tuple[int, int, int, int] | None = None  # seq, frame_idx, width, height
        self._pending_external: deque[tuple[int, Detections]] = deque(maxlen=8)
        self._ground_masks: dict[
            int, dict[int, np.ndarray]
        ] = {}  # seq -> masks, while its grounding is in flight
        self._device = device
        self._worker: RegroundWorker | None = None
        self._background = background_grounding
        if cfg.prompt.strip():
            self.set_prompt(cfg.prompt)

    # ------------------------------------------------------------------ prompts and control

    def set_grounder(self, grounder: Grounder) -> None:
        self.grounder = grounder

    def set_prompt(self, text: str) -> list[str]:
        """New text prompt: tracks whose label left it end; re-grounding starts at once."""
        if self.grounder is None:
            raise PromptError("no detector is loaded, so a text prompt cannot be used")
        phrases = self.grounder.set_prompt(text)
        labels = [p.rstrip(".").strip() for p in phrases]
        for tid in self.manager.set_labels(labels):
            self._free(tid)
        self.prompt = " ".join(f"{label}." for label in labels)
        self.labels = labels
        self._prompt_version += 1
        self._ground_due = True
        return labels

    def add_object(self, box: Sequence[float], label: str = "object") -> int:
        """Manual box prompt on the newest frame; returns the new object id."""
        if self._current is None:
            raise PromptError("no frame has been processed yet")
        seq, idx, w, h = self._current
        b = self._check_box(box, w, h)
        tid = self.manager.add_manual(label, b, seq)
        try:
            self.seg.add_prompt(tid, idx, box=b)
        except PromptError:
            self.manager.remove(tid)
            raise
        self.counters.objects_created += 1
        self._last_box[tid] = b
        return tid

    def remove_object(self, tid: int) -> None:
        self.manager.remove(tid)
        self._free(tid)

    def reset(self) -> None:
        """End every track. Grounding results from before (in flight, or external detections
        not applied yet) are discarded, counted in ``grounding_results_dropped``: the frames
        they were computed on are gone."""
        for tid in self.manager.reset():
            self._last_box.pop(tid, None)
        self.seg.reset()
        self._history.clear()
        self._ground_masks.clear()
        self.counters.grounding_results_dropped += len(self._pending_external)
        self._pending_external.clear()
        self._prompt_version += 1  # a result in flight no longer applies (dropped, counted)

    def add_external_detections(self, seq: int, detections: Detections) -> None:
        """Boxes from an external detector, computed on frame ``seq``; applied on the next frame."""
        self._pending_external.append((seq, detections))

    @staticmethod
    def _check_box(box: Sequence[float], w: int, h: int) -> Box:
        if len(box) != 4 or not all(np.isfinite(v) for v in box):
            raise PromptError(f"box must be 4 finite numbers, got {list(box)}")
        x1, y1, x2, y2 = (float(v) for v in box)
        if not (x2 > x1 and y2 > y1):
            raise PromptError(f"box {[x1, y1, x2, y2]} has zero or negative area")
        if x2 <= 0 or y2 <= 0 or x1 >= w or y1 >= h:
            raise PromptError(f"box {[x1, y1, x2, y2]} lies outside the {w}x{h} frame")
        return (max(0.0, x1), max(0.0, y1), min(float(w), x2), min(float(h), y2))

    # ------------------------------------------------------------------ the frame loop

    def process(
        self, frame: FrameInput, manual: Sequence[tuple[Sequence[float], str]] = ()
    ) -> FrameResult:
        """Segment and track one frame. ``manual`` boxes (with labels) become new objects
        prompted on this very frame, before propagation."""
        t0 = time.perf_counter()
        image = frame.image
        h, w = image.shape[:2]
        idx = self.seg.add_frame(image)
        self._current = (frame.seq, idx, w, h)
        t_enc = time.perf_counter()
        for box, label in manual:
            self.add_object(box, label)

        # Late results from the background detector and external detections: matched against
        # the tracks of the frame they were computed on, seeded before this frame propagates.
        if self._worker is not None:
            for r in self._worker.results():
                self._apply_ground_result(r)
        while self._pending_external:
            seq, dets = self._pending_external.popleft()
            obs = self._history.get(seq)
            if obs is None:
                self.counters.grounding_results_dropped += 1
                continue
            self._apply_plan(self.manager.on_detections(seq, dets, obs), idx, None)

        outs = dict(self.seg.track(idx))
        t_prop = time.perf_counter()
        obs = {tid: Observation(o.box, o.score) for tid, o in outs.items()}
        for event in self.manager.on_frame(frame.seq, obs):
            if event.kind == "ended":
                self._free(event.id)
                outs.pop(event.id, None)
        self._history[frame.seq] = {tid: o for tid, o in obs.items() if tid in outs}
        while len(self._history) > HISTORY_FRAMES:
            self._history.popitem(last=False)

        ground_ms = 0.0
        if self._grounding_due():
            if self._background:
                self._submit_background(frame.seq, idx, image, {t: o.mask for t, o in outs.items()})
            else:
                tg = time.perf_counter()
                assert self.grounder is not None
                dets = self.grounder.detect(image)
                self.counters.groundings += 1
                self._mark_grounded()
                plan = self.manager.on_detections(
                    frame.seq,
                    dets,
                    self._history[frame.seq],
                    mask_iou_of({t: o.mask for t, o in outs.items()}),
                )
                self._apply_plan(plan, idx, outs)
                ground_ms = (time.perf_counter() - tg) * 1e3
                self.counters.last_grounding_ms = ground_ms
        self._frames_since_ground += 1

        result = self._result(frame, w, h, outs)
        t_end = time.perf_counter()
        timings = {
            "encode_ms": (t_enc - t0) * 1e3,
            "propagate_ms": (t_prop - t_enc) * 1e3,
            "ground_inline_ms": ground_ms,
            "process_ms": (t_end - t0) * 1e3,
        }
        self.counters.frames += 1
        self.counters.last_timings_ms = timings
        return FrameResult(
            result.seq, result.t_capture_ns, w, h, self.prompt, result.objects, timings
        )

    def _result(
        self, frame: FrameInput, w: int, h: int, outs: Mapping[int, SegmentOutput]
    ) -> FrameResult:
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
        return FrameResult(frame.seq, frame.t_capture_ns, w, h, self.prompt, objects, {})

    # ------------------------------------------------------------------ grounding

    def _grounding_due(self) -> bool:
        if self.grounder is None or not self.labels:
            return False
        if self._worker is not None and self._worker.busy:
            return False
        if self._ground_due:
            return True
        n = self.cfg.reground_every_frames
        if n > 0 and self._frames_since_ground >= n:
            return True
        s = self.cfg.reground_every_s
        return s is not None and time.monotonic() - self._last_ground_t >= s

    def _mark_grounded(self) -> None:
        self._ground_due = False
        self._frames_since_ground = 0
        self._last_ground_t = time.monotonic()

    def _submit_background(
        self, seq: int, idx: int, image: np.ndarray, masks: dict[int, np.ndarray]
    ) -> None:
        assert self.grounder is not None
        if self._worker is None:
            self._worker = RegroundWorker(self.grounder, self._device)
        self.seg.pin(idx)
        if self._worker.submit(_GroundJob(seq, idx, image, self._prompt_version)):
            self._ground_masks[seq] = masks
            self._mark_grounded()
        else:
            self.seg.unpin(idx)

    def _apply_ground_result(self, r: _GroundResult) -> None:
        masks = self._ground_masks.pop(r.seq, {})
        try:
            if r.detections is None:
                self.counters.grounding_errors += 1
                return
            self.counters.groundings += 1
            self.counters.last_grounding_ms = r.elapsed_ms
            obs = self._history.get(r.seq)
            if r.prompt_version != self._prompt_version or obs is None:
                self.counters.grounding_results_dropped += 1
                return
            self._apply_plan(
                self.manager.on_detections(r.seq, r.detections, obs, mask_iou_of(masks)),
                r.frame_idx,
                None,
            )
        finally:
            self.seg.unpin(r.frame_idx)

    def _apply_plan(
        self, plan: Plan, frame_idx: int, outs: dict[int, SegmentOutput] | None
    ) -> None:
        for tid in plan.removed:
            self._free(tid)
            if outs is not None:
                outs.pop(tid, None)
        seeds = [(r.id, r.box, "reseeded") for r in plan.reseed] + [
            (n.id, n.box, "objects_created") for n in plan.new
        ]
        for tid, box, counter in seeds:
            out = self._seed(tid, frame_idx, box)
            if out is None:
                continue
            setattr(self.counters, counter, getattr(self.counters, counter) + 1)
            if outs is not None:
                outs[tid] = out

    def _seed(self, tid: int, frame_idx: int, box: Box) -> SegmentOutput | None:
        """Start (or restart) object ``tid`` on ``frame_idx`` from a detection box, as ``seed_with`` says."""
        try:
            mode = self.cfg.seed_with
            if mode == "box":
                return self.seg.add_prompt(tid, frame_idx, box=box)
            mask = self.seg.segment_box(frame_idx, box)
            if not mask.any():
                return self.seg.add_prompt(tid, frame_idx, box=box)
            if mode == "mask":
                return self.seg.add_prompt(tid, frame_idx, mask=mask)
            pts = sample_points(mask, 8, seed=tid)
            return self.seg.add_prompt(
                tid, frame_idx, points=pts, point_labels=np.ones(len(pts), np.int32)
            )
        except PromptError as e:
            self.counters.seed_failures += 1
            log.warning("could not seed object %d from box %s: %s", tid, box, e)
            if tid in self.manager:
                self.manager.remove(tid)
            self._free(tid)
            return None

    def _free(self, tid: int) -> None:
        self._last_box.pop(tid, None)
        if tid in self.seg.object_ids:
            self.seg.remove_object(tid)
            self.counters.objects_ended += 1

    def wait_grounding_idle(self, timeout: float = 30.0) -> bool:
        return True if self._worker is None else self._worker.wait_idle(timeout)

    def stats(self) -> dict[str, Any]:
        return {
            **self.counters.as_dict(),
            "prompt": self.prompt,
            "objects": len(self.seg.object_ids),
            "grounding_in_flight": bool(self._worker is not None and self._worker.busy),
        }

    def close(self) -> None:
        if self._worker is not None:
            self._worker.close()


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


def sample_points(mask: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """``n`` (x, y) points drawn uniformly inside ``mask`` (deterministic for a seed), as the
    reference Grounded SAM 2 pipeline seeds with points."""
    ys, xs = np.nonzero(mask)
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(xs), size=min(n, len(xs)), replace=False)
    return np.stack([xs[pick], ys[pick]], axis=1).astype(np.float32)
