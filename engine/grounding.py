"""Grounding beside propagation: one detector thread shared by every camera of an engine.

The engine's frame loop hands the worker a batch of jobs (one frame of each camera whose
re-grounding is due, most overdue first) when it is idle, and collects the results on a later
tick; it never waits for the detector. One batch is in flight at a time; a batch offered while
one runs is refused (the loop tries again on a later tick, so a camera whose grounding is due
stays due and only grows more overdue). Results are bounded (one per job in flight) and carry
the camera, the frame's ``seq`` and frame index, so each camera matches them against its tracks
*of that frame* (``engine.camera``). On CUDA the detector runs on its own stream.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from supervision import Detections

from engine.core.protocols import Detector, DetectorPrompt

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GroundJob:
    camera: str
    seq: int
    frame_idx: int
    image: np.ndarray
    prompt: DetectorPrompt
    epoch: int  # the camera's prompt/reset generation the job was made in


@dataclass(frozen=True)
class GroundResult:
    camera: str
    seq: int
    frame_idx: int
    detections: Detections | None  # None: the detector failed on this frame (counted)
    epoch: int
    elapsed_ms: float  # of the whole batch the job was detected in
    batch: int  # jobs in that batch


class GroundingWorker:
    """Runs ``detector.detect_batch`` in its own thread (own CUDA stream on GPU)."""

    def __init__(self, detector: Detector, device: Any = None) -> None:
        self._detector = detector
        self._jobs: queue.Queue[list[GroundJob] | None] = queue.Queue(maxsize=1)
        self._results: queue.Queue[GroundResult] = queue.Queue()  # at most one batch's worth
        self._busy = threading.Event()
        self.errors = 0
        self.batches = 0
        self._stream = None
        if device is not None and getattr(device, "type", "cpu") == "cuda":
            import torch

            self._stream = torch.cuda.Stream(device=device)
        self._thread = threading.Thread(target=self._run, name="reground", daemon=True)
        self._thread.start()

    @property
    def busy(self) -> bool:
        return self._busy.is_set()

    def submit(self, jobs: Sequence[GroundJob]) -> bool:
        """Start detecting ``jobs`` as one batch; False (nothing taken) while a batch runs or
        results of the last one are still uncollected."""
        if not jobs or self._busy.is_set() or not self._results.empty():
            return False
        self._busy.set()
        self._jobs.put(list(jobs))
        return True

    def results(self) -> list[GroundResult]:
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

    def _detect(self, jobs: list[GroundJob]) -> list[Detections]:
        images = [j.image for j in jobs]
        prompts = [j.prompt for j in jobs]
        if self._stream is None:
            return self._detector.detect_batch(images, prompts)
        import torch

        with torch.cuda.stream(self._stream):
            dets = self._detector.detect_batch(images, prompts)
        self._stream.synchronize()
        return dets

    def _run(self) -> None:
        while True:
            jobs = self._jobs.get()
            if jobs is None:
                return
            t0 = time.perf_counter()
            found: Sequence[Detections | None]
            try:
                found = self._detect(jobs)
                if len(found) != len(jobs):
                    raise RuntimeError(
                        f"detector returned {len(found)} results for {len(jobs)} frames"
                    )
            except Exception:  # a detector fault must not kill tracking; counted and logged
                self.errors += 1
                log.exception(
                    "grounding failed on %s", ", ".join(f"{j.camera}#{j.seq}" for j in jobs)
                )
                found = [None] * len(jobs)
            elapsed = (time.perf_counter() - t0) * 1e3
            self.batches += 1
            for job, dets in zip(jobs, found, strict=True):
                self._results.put(
                    GroundResult(
                        job.camera, job.seq, job.frame_idx, dets, job.epoch, elapsed, len(jobs)
                    )
                )
            self._busy.clear()

    def close(self) -> None:
        with contextlib.suppress(queue.Full):
            self._jobs.put_nowait(None)
        self._thread.join(timeout=1.0)  # daemon thread: a detection still running is abandoned
