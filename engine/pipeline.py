"""The tracking engine core: ground → segment → track, for one camera or many, a tick at a time.

``MultiCameraEngine.tick(frames)`` runs on the engine's frame loop (the "GPU loop") with the
newest frame of every camera that has one: one image-encoder call over all of them, one batched
propagation over every object of every camera, then each camera's bookkeeping
(``engine.camera.CameraTracker``), and ``FrameResult``s with raw masks. RLE encoding, JPEG
encoding and annotation happen elsewhere (``engine.service`` publisher threads). Each camera's
tracking is what it would be alone: its frame indices, memories, IDs, prompt and schedule are
its own; only the model calls are shared.

On a CPU kernel a tick's cameras are split into ``groups`` (default: torch's intra-op threads,
i.e. the cores), each run on a worker thread of its own with one torch thread
(``engine.tick_groups``): the groups keep every core busy as separate engines would, with one
copy of the weights, and each group's cameras are still batched. Each result's stage timings
are its group's. With in-line grounding (a detector called from the tick) a tick is one group.

Grounding runs either in line on each camera's scheduled frames (offline job: reproducible) or
in one ``GroundingWorker`` thread beside propagation, shared by every camera (live engine). When
the worker is idle, the cameras whose re-grounding is due are sent as one batch, most overdue
first (a prompt change first of all), at most ``max_ground_batch`` of them; the others stay due
and become more overdue, so no camera is starved. A result carries its camera and the ``seq`` of
the frame it was computed on; that camera matches it against its tracks *of that frame*.

``TrackingEngine`` is the one-camera facade (offline job, benchmarks, tests).
"""

from __future__ import annotations

import ctypes
import functools
import gc
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from supervision import Detections

from engine.camera import CameraTracker
from engine.camera_stats import CameraStats, EngineCounters
from engine.core.protocols import Detector, SegmenterKernel, SegmenterSession
from engine.core.types import FrameInput, FrameResult, ObjectResult, PreparedFrame
from engine.cues import mask_iou_of, sample_points
from engine.grounding import GroundingWorker, GroundJob, GroundResult
from engine.ids import IdAllocator, IdReservations, new_epoch
from engine.tick_groups import TickWorkers
from stream.config import EngineConfig
from stream.errors import RequestError

__all__ = [
    "CameraStats",
    "CameraTracker",
    "EngineCounters",
    "FrameInput",
    "FrameResult",
    "MultiCameraEngine",
    "ObjectResult",
    "TrackingEngine",
    "mask_iou_of",
    "sample_points",
]

log = logging.getLogger(__name__)

Manual = Sequence[tuple[Sequence[float], str]]
DEFAULT_GROUND_BATCH = 4


def release_memory(device: Any = None) -> None:
    """Give freed memory back: collect reference cycles (a camera's tracks, masks and memory
    bank refer to each other), empty torch's CUDA cache on a CUDA device, and ask glibc to
    return free heap pages of every arena (``malloc_trim``). Without the trim, 60 cameras added
    and removed left the engine at 2.1 GB from 328 MB: the pages stay in glibc's per-thread
    arenas, free but held."""
    gc.collect()
    if device is not None and getattr(device, "type", str(device)) == "cuda":
        import torch

        torch.cuda.empty_cache()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim() -> Any:
    """glibc's ``malloc_trim``, or None (another C library, another system)."""
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


def _default_groups(kernel: Any) -> int:
    """Camera groups per tick by default: torch's intra-op threads on a CPU kernel (each group
    on one), else 1 (on a GPU one batch over every camera is best)."""
    device = getattr(kernel, "device", None)
    if getattr(device, "type", None) != "cpu":
        return 1
    import torch

    return max(1, torch.get_num_threads())


class UnknownCameraError(RequestError):
    """A request names a camera the engine does not serve."""


class MultiCameraEngine:
    """Cameras sharing one segmenter kernel and one detector. Single-threaded: call every method
    from one thread (the engine loop); the live engine funnels control requests onto it."""

    def __init__(
        self,
        kernel: SegmenterKernel[Any],
        detector: Detector | None,
        *,
        background_grounding: bool,
        device: Any = None,
        max_ground_batch: int = DEFAULT_GROUND_BATCH,
        max_pinned_frames: int = 4,
        groups: int | None = None,
    ) -> None:
        """``groups``: how many groups of cameras a tick runs side by side, each on a worker
        thread with one torch intra-op thread (``engine.tick_groups``); None: on a CPU kernel
        as many as torch has intra-op threads, elsewhere 1 (one batch over every camera)."""
        if max_ground_batch < 1:
            raise ValueError("max_ground_batch must be >= 1")
        if groups is not None and groups < 1:
            raise ValueError("groups must be >= 1")
        self.kernel = kernel
        self.detector = detector
        self.background = background_grounding
        self.max_ground_batch = max_ground_batch
        self.max_pinned_frames = max_pinned_frames
        self._device = device
        self._cameras: dict[str, CameraTracker] = {}
        self.ids = IdReservations()  # each camera's IDs; engine.service persists them
        self.epoch = new_epoch()  # this engine start, carried by every result
        self._worker: GroundingWorker | None = None
        self.ground_batches = 0
        self.groups = _default_groups(kernel) if groups is None else groups
        self._group_workers: TickWorkers | None = None

    # ------------------------------------------------------------------ cameras

    @property
    def cameras(self) -> dict[str, CameraTracker]:
        return dict(self._cameras)

    def camera(self, name: str) -> CameraTracker:
        cam = self._cameras.get(name)
        if cam is None:
            known = ", ".join(self._cameras) or "none"
            raise UnknownCameraError(f"unknown camera {name!r} (cameras: {known})")
        return cam

    def add_camera(
        self,
        name: str,
        cfg: EngineConfig,
        session: SegmenterSession | None = None,
        *,
        first_id: int | None = None,
        id_limit: int | None = None,
    ) -> CameraTracker:
        """Start serving camera ``name`` (its prompt from ``cfg``); IDs continue above every ID
        a camera of that name had (in this run, or an earlier one whose reservations ``ids``
        carries: ``engine.ids``), at or above ``first_id``; with ``id_limit``, ``[first_id,
        id_limit)`` is a leased block (a fleet's) and IDs stay in the leased blocks."""
        if name in self._cameras:
            raise RequestError(f"camera {name!r} is already served")
        start = 1 if first_id is None else first_id
        if start < 1 or (id_limit is not None and id_limit <= start):
            raise RequestError(f"camera {name!r}: bad ID block [{start}, {id_limit})")
        if id_limit is not None:
            ids = IdAllocator(start, id_limit)
        else:
            ids = self.ids.allocator(name, start)
        if session is None:
            session = self.kernel.new_session(self.max_pinned_frames)
        cam = CameraTracker(name, cfg, session, self.detector, ids=ids, epoch=self.epoch)
        self._cameras[name] = cam
        return cam

    def remove_camera(self, name: str) -> None:
        """Stop serving ``name``: its tracks end and its memory is freed, and given back to
        the system (``release_memory``)."""
        cam = self.camera(name)
        if not cam.manager.id_allocator.leased:
            self.ids.release(name, cam.manager.next_id)
        cam.close()
        del self._cameras[name]
        del cam
        release_memory(self._device)

    def set_detector(self, detector: Detector) -> None:
        """Install the detector (loaded lazily on the first text prompt)."""
        self.detector = detector
        for cam in self._cameras.values():
            cam.set_detector(detector)

    # ------------------------------------------------------------------ the frame loop

    def tick(
        self, frames: Mapping[str, FrameInput], manual: Mapping[str, Manual] | None = None
    ) -> dict[str, FrameResult]:
        """Segment and track one frame of each camera in ``frames``; ``manual`` boxes (with
        labels) of a camera become new objects prompted on that very frame."""
        if not frames:
            return {}
        cams = [(self.camera(name), frame) for name, frame in frames.items()]
        late = self._collect_results()
        manual = manual or {}
        groups = self._tick_groups(len(cams))
        if groups <= 1:
            results = self._tick_cameras(cams, manual, late)
        else:
            if self._group_workers is None or self._group_workers.count < groups:
                if self._group_workers is not None:
                    self._group_workers.close()
                self._group_workers = TickWorkers(groups)
            parts = self._group_workers.run(
                [
                    functools.partial(self._tick_cameras, cams[g::groups], manual, late)
                    for g in range(groups)
                ]
            )
            merged = {name: r for part in parts for name, r in part.items()}
            results = {name: merged[name] for name in frames}
        if self.background:
            self._schedule_grounding([cam for cam, _ in cams], frames)
        return results

    def _tick_groups(self, cameras: int) -> int:
        """Groups for a tick of ``cameras`` cameras: one when grounding runs in line (a detector
        is then called from the tick, one camera at a time)."""
        if self.detector is not None and not self.background:
            return 1
        return max(1, min(self.groups, cameras))

    def _tick_cameras(
        self,
        cams: Sequence[tuple[CameraTracker, FrameInput]],
        manual: Mapping[str, Manual],
        late: Mapping[str, Sequence[GroundResult]],
    ) -> dict[str, FrameResult]:
        """One tick of ``cams``: one encoder call, one batched propagation, each camera's
        bookkeeping. Its own stage timings (on a group worker: this group's)."""
        t0 = time.perf_counter()
        idxs = self.kernel.encode(
            [(cam.session, f.image if f.prepared is None else f.prepared) for cam, f in cams]
        )
        t_enc = time.perf_counter()
        for (cam, frame), idx in zip(cams, idxs, strict=True):
            cam.begin(frame, idx, manual.get(cam.name, ()), late.get(cam.name, ()))
        outs = self.kernel.track(
            [(cam.session, idx) for (cam, _), idx in zip(cams, idxs, strict=True)]
        )
        t_prop = time.perf_counter()
        timings = {
            "encode_ms": (t_enc - t0) * 1e3,
            "propagate_ms": (t_prop - t_enc) * 1e3,
            "process_ms": (t_prop - t0) * 1e3,
            "cameras": float(len(cams)),
        }
        return {
            cam.name: cam.finish(frame, out, timings, inline_grounding=not self.background)
            for (cam, frame), out in zip(cams, outs, strict=True)
        }

    def _collect_results(self) -> dict[str, list[GroundResult]]:
        by_camera: dict[str, list[GroundResult]] = {}
        if self._worker is None:
            return by_camera
        for r in self._worker.results():
            if r.camera in self._cameras:
                by_camera.setdefault(r.camera, []).append(r)
            else:
                log.debug("grounding result for removed camera %s dropped", r.camera)
        return by_camera

    def _schedule_grounding(
        self, ticked: Sequence[CameraTracker], frames: Mapping[str, FrameInput]
    ) -> None:
        """Send the most overdue cameras of this tick to the worker, if it is idle."""
        if self.detector is None or (self._worker is not None and self._worker.busy):
            return
        due = [(cam.ground_overdue(), i, cam) for i, cam in enumerate(ticked)]
        due = sorted((d for d in due if d[0] > 0), key=lambda d: (-d[0], d[1]))
        if not due:
            return
        if self._worker is None:
            self._worker = GroundingWorker(self.detector, self._device)
        jobs: list[GroundJob] = [
            cam.ground_job(frames[cam.name]) for _, _, cam in due[: self.max_ground_batch]
        ]
        if self._worker.submit(jobs):
            self.ground_batches += 1
        else:
            for job in jobs:
                self.camera(job.camera).job_refused(job)

    @property
    def grounding_in_flight(self) -> bool:
        return self._worker is not None and self._worker.busy

    def wait_grounding_idle(self, timeout: float = 30.0) -> bool:
        return True if self._worker is None else self._worker.wait_idle(timeout)

    def close(self) -> None:
        if self._worker is not None:
            self._worker.close()
        if self._group_workers is not None:
            self._group_workers.close()
            self._group_workers = None


class TrackingEngine:
    """One camera on an engine of its own (offline job, benchmarks, tests): the API of
    :class:`engine.camera.CameraTracker` plus ``process`` (one tick)."""

    def __init__(
        self,
        cfg: EngineConfig,
        segmenter: Any,
        detector: Detector | None,
        *,
        background_grounding: bool,
        device: Any = None,
        camera: str = "cam0",
    ) -> None:
        """``segmenter``: a session of a kernel (``engine.segmenters.sam2.StreamingSegmenter`` is
        one with its own kernel)."""
        self.engine = MultiCameraEngine(
            segmenter.kernel, detector, background_grounding=background_grounding, device=device
        )
        self.tracker = self.engine.add_camera(camera, cfg, session=segmenter)
        self.cfg = cfg

    @property
    def seg(self) -> SegmenterSession:
        return self.tracker.session

    @property
    def manager(self) -> Any:
        return self.tracker.manager

    @property
    def counters(self) -> EngineCounters:
        return self.tracker.counters

    @property
    def grounder(self) -> Detector | None:
        return self.engine.detector

    @property
    def prompt(self) -> str:
        return self.tracker.prompt

    @property
    def labels(self) -> list[str]:
        return self.tracker.labels

    def set_grounder(self, detector: Detector) -> None:
        self.engine.set_detector(detector)

    def set_prompt(self, text: str) -> list[str]:
        return self.tracker.set_prompt(text)

    def add_object(self, box: Sequence[float], label: str = "object") -> int:
        return self.tracker.add_object(box, label)

    def remove_object(self, tid: int) -> None:
        self.tracker.remove_object(tid)

    def reset(self) -> None:
        self.tracker.reset()

    def add_external_detections(self, seq: int, detections: Detections) -> None:
        self.tracker.add_external_detections(seq, detections)

    def prepare(self, image_bgr: np.ndarray) -> PreparedFrame:
        """The model input made of a frame ahead of ``process`` (thread-safe; ``FrameInput``'s
        ``prepared``)."""
        return self.engine.kernel.prepare(image_bgr)

    def process(self, frame: FrameInput, manual: Manual = ()) -> FrameResult:
        """Segment and track one frame; ``manual`` boxes (with labels) become new objects
        prompted on this very frame, before propagation."""
        name = self.tracker.name
        return self.engine.tick({name: frame}, {name: manual})[name]

    def stats(self) -> dict[str, Any]:
        return self.tracker.stats().as_dict()

    def wait_grounding_idle(self, timeout: float = 30.0) -> bool:
        return self.engine.wait_grounding_idle(timeout)

    def close(self) -> None:
        self.engine.close()
