"""What the engine depends on: a segmenter (a shared model kernel with one session per camera)
and a detector. Backends implement these; the engine (``engine.pipeline``) and the per-camera
tracker (``engine.camera``) use nothing else of them.

* :class:`SegmenterKernel` — the model side, shared by every camera of an engine: weights and
  caches, the ``device`` it runs on, ``prepare`` (frame -> model input, thread-safe), ``encode``
  (one image-encoder call over the newest frame of several sessions) and ``track`` (one batched
  propagation over every object of several sessions). ``engine.segmenters.sam2.Sam2Kernel`` is
  the ``sam2`` (SAM2Base) backend, ``engine.segmenters.transformers.HfVideoKernel`` the
  transformers one.
* :class:`SegmenterSession` — one camera's bounded state on a kernel: frame indices, pinned
  frames, per-object memories; prompts (box, points, mask) condition an object on its latest
  or a pinned frame.
* :class:`Detector` — prompt + frames -> labelled boxes (and masks, where the family makes
  them). Stateless about prompts: a parsed :class:`DetectorPrompt` travels with every call, so
  one detector serves cameras with different prompts, and several frames can be detected in one
  call (``detect_batch``). The families are in ``engine/detectors/``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

import numpy as np
import supervision as sv
import torch
from numpy.typing import ArrayLike, NDArray

from engine.core.types import Image, Mask, PreparedFrame, SegmentOutput, StateSize

__all__ = ["Detector", "DetectorPrompt", "SegmenterKernel", "SegmenterSession"]


class SegmenterSession(Protocol):
    @property
    def object_ids(self) -> list[int]: ...

    @property
    def latest_frame(self) -> int | None: ...

    def pin(self, frame_idx: int) -> None: ...

    def unpin(self, frame_idx: int) -> None: ...

    def add_prompt(
        self,
        obj_id: int,
        frame_idx: int,
        *,
        box: ArrayLike | None = None,
        points: ArrayLike | None = None,
        point_labels: ArrayLike | None = None,
        mask: ArrayLike | None = None,
    ) -> SegmentOutput: ...

    def segment_box(self, frame_idx: int, box: ArrayLike) -> Mask: ...

    def remove_object(self, obj_id: int) -> None: ...

    def reset(self) -> None: ...

    def close(self) -> None: ...

    def state_size(self) -> StateSize: ...


S = TypeVar("S", bound=SegmenterSession)


class SegmenterKernel(Protocol[S]):
    @property
    def device(self) -> torch.device: ...

    def new_session(self, max_pinned_frames: int = 4) -> S: ...

    def prepare(self, image_bgr: Image) -> PreparedFrame: ...

    def encode(self, items: Sequence[tuple[S, Image | PreparedFrame]]) -> list[int]: ...

    def track(self, items: Sequence[tuple[S, int]]) -> list[dict[int, SegmentOutput]]: ...


@dataclass(frozen=True)
class DetectorPrompt:
    """A parsed prompt: immutable, shareable across threads and cameras.

    ``phrases`` are the labels detections carry; ``text`` is the canonical prompt text
    (``"person. red ball."``, what Grounding DINO reads verbatim); ``family`` names the detector
    family that parsed it ("" for a prompt built by hand). Families that prepare more (token
    spans, a task sentence) subclass this with typed, keyword-only fields. A detector given a
    prompt that another family (or no family) parsed parses its ``text`` again."""

    phrases: tuple[str, ...]
    text: str
    family: str = ""


class Detector(Protocol):
    """What the engine needs from a detector (``engine/detectors/base.py`` documents the
    detections every family returns)."""

    def parse_prompt(self, text: str) -> DetectorPrompt: ...

    def detect(self, image_bgr: NDArray[np.uint8], prompt: DetectorPrompt) -> sv.Detections: ...

    def detect_batch(
        self, images: Sequence[NDArray[np.uint8]], prompts: Sequence[DetectorPrompt]
    ) -> list[sv.Detections]: ...
