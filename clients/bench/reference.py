"""The reference Grounded SAM 2 strategy, for the quality benchmark: what the public
Grounded-SAM-2 "tracking with continuous id" demo does, on promptcam's models.

Over a video of N frames (a directory of JPEGs that the official ``SAM2VideoPredictor`` loads
in ``init_state``), every ``step`` (20) frames:

1. the detector (the same ``Grounder`` promptcam uses) looks at the segment's first frame;
2. each detected box becomes a mask on that frame (the demo uses ``SAM2ImagePredictor``, which
   needs torchvision; here the official video predictor's own box prompt on that frame gives
   the single-frame SAM mask from the same weights and heads);
3. new masks get IDs by greedy matching against the previous segment's masks on that frame: the
   first previous object whose mask IoU exceeds ``iou_threshold`` (0.8) lends its ID, otherwise
   a new ID is counted up;
4. the predictor's state is reset, the masks are added (``add_new_mask``) and propagated for
   ``step`` frames (``propagate_in_video``); the segment's last frame is the next one's first.

A segment whose first frame has no detection is skipped (no output there), as in the demo.
"""

from __future__ import annotations

import contextlib
import io
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import supervision as sv
import torch

from engine.grounder import Grounder
from engine.pipeline import FrameResult, ObjectResult

log = logging.getLogger(__name__)

STEP = 20
IOU_THRESHOLD = 0.8


@dataclass
class _Object:
    id: int
    label: str
    score: float
    mask: np.ndarray  # HxW bool on the segment's first frame


def _mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    return float(sv.mask_iou_batch(a[None], b[None])[0, 0])  # 0 for two empty masks


def _box(mask: np.ndarray) -> tuple[float, float, float, float]:
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return (0.0, 0.0, 0.0, 0.0)
    return (float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1))


@contextlib.contextmanager
def _quiet_progress() -> Iterator[None]:
    """The official predictor draws tqdm bars on stderr (frame loading, each propagation); keep
    the bench's output clean (log handlers hold the real stderr and still print)."""
    with contextlib.redirect_stderr(io.StringIO()):
        yield


@dataclass(frozen=True)
class ReferenceRun:
    results: list[FrameResult]
    seconds: float  # detection, prompting and propagation (init_state's frame loading excluded)


class GroundedSam2Reference:
    """The strategy of the module docstring over one video (see ``run``)."""

    def __init__(
        self,
        predictor: Any,
        grounder: Grounder,
        step: int = STEP,
        iou_threshold: float = IOU_THRESHOLD,
    ) -> None:
        if step < 1:
            raise ValueError(f"step must be >= 1, got {step}")
        self.predictor = predictor
        self.grounder = grounder
        self.step = step
        self.iou_threshold = iou_threshold

    def run(self, video_dir: Path, images: list[np.ndarray]) -> ReferenceRun:
        """Track over ``video_dir`` (JPEG frames, loaded by the predictor) whose decoded frames
        are ``images`` (what the detector sees); one ``FrameResult`` per frame."""
        n = len(images)
        h, w = images[0].shape[:2]
        per_frame: list[list[ObjectResult]] = [[] for _ in range(n)]
        prompt = self.grounder.prompt
        with _quiet_progress():
            state = self.predictor.init_state(video_path=str(video_dir), offload_video_to_cpu=True)
            t0 = time.perf_counter()
            previous: list[_Object] = []
            count = 0
            for start in range(0, n, self.step):
                new = self._detect(state, start, images[start])
                if not new:
                    log.debug("reference: no detection on frame %d, segment skipped", start)
                    continue
                count = self._match(new, previous, count)
                previous = self._propagate(state, start, new, per_frame, (h, w))
            seconds = time.perf_counter() - t0
        results = [
            FrameResult(i, int(i * 1e9 / 15), w, h, prompt, per_frame[i], {}) for i in range(n)
        ]
        return ReferenceRun(results, seconds)

    def _detect(self, state: Any, frame_idx: int, image: np.ndarray) -> list[_Object]:
        dets = self.grounder.detect(image)
        self.predictor.reset_state(state)
        out: list[_Object] = []
        for k in range(len(dets)):
            box = np.asarray(dets.xyxy[k], np.float32)
            _, ids, masks = self.predictor.add_new_points_or_box(state, frame_idx, k, box=box)
            mask = (masks[list(ids).index(k), 0] > 0).cpu().numpy()
            if mask.any():
                label = str(dets.data["label"][k])
                score = float(dets.confidence[k]) if dets.confidence is not None else 1.0
                out.append(_Object(-1, label, score, mask))
        self.predictor.reset_state(state)
        return out

    def _match(self, new: list[_Object], previous: list[_Object], count: int) -> int:
        """Greedy IDs (see step 3): returns the updated object count."""
        for obj in new:
            for prev in previous:
                if _mask_iou(obj.mask, prev.mask) > self.iou_threshold:
                    obj.id = prev.id
                    break
            else:
                count += 1
                obj.id = count
        return count

    def _propagate(
        self,
        state: Any,
        start: int,
        new: list[_Object],
        per_frame: list[list[ObjectResult]],
        size: tuple[int, int],
    ) -> list[_Object]:
        objects = {o.id: o for o in new}  # a repeated ID keeps its last mask, as in the demo
        for oid, o in objects.items():
            self.predictor.add_new_mask(state, start, oid, torch.from_numpy(o.mask))
        last: list[_Object] = []
        for frame_idx, obj_ids, logits in self.predictor.propagate_in_video(
            state, start_frame_idx=start, max_frame_num_to_track=self.step
        ):
            results, last = [], []
            for i, oid in enumerate(obj_ids):
                mask = (logits[i, 0] > 0).cpu().numpy()
                o = objects[int(oid)]
                last.append(_Object(int(oid), o.label, o.score, mask))
                if mask.any():
                    results.append(
                        ObjectResult(
                            int(oid),
                            o.label,
                            o.score,
                            _box(mask),
                            mask,
                            frame_idx - start,
                            "tracked",
                        )
                    )
            per_frame[frame_idx] = results
        return last
