"""What the engine depends on: a segmenter (a shared model kernel with one session per camera)
and a detector. Backends implement these; the engine (``engine.pipeline``) and the per-camera
tracker (``engine.camera``) use nothing else of them.

* :class:`SegmenterKernel` — the model side, shared by every camera of an engine: weights and
  caches, ``prepare`` (frame -> model input, thread-safe), ``encode`` (one image-encoder call over
  the newest frame of several sessions) and ``track`` (one batched propagation over every object
  of several sessions). ``engine.segmenter.Sam2Kernel`` is the ``sam2`` (SAM2Base) backend.
* :class:`SegmenterSession` — one camera's bounded state on a kernel: frame indices, pinned
  frames, per-object memories; prompts (box, points, mask) condition an object on its latest
  or a pinned frame.
* :class:`Detector` — prompt + frames -> labelled boxes (and masks, where the family makes
  them). Stateless about prompts: a parsed :class:`DetectorPrompt` travels with every call, so
  one detector serves cameras with different prompts, and several frames can be detected in one
  call (``detect_batch``). Defined with the families in ``engine/detectors/base.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, TypeVar

import numpy as np

from engine.detectors.base import Detector, DetectorPrompt
from engine.segmenter import PreparedFrame, SegmentOutput, StateSize

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
        box: Any = None,
        points: Any = None,
        point_labels: Any = None,
        mask: Any = None,
    ) -> SegmentOutput: ...

    def segment_box(self, frame_idx: int, box: Any) -> np.ndarray: ...

    def remove_object(self, obj_id: int) -> None: ...

    def reset(self) -> None: ...

    def close(self) -> None: ...

    def state_size(self) -> StateSize: ...


S = TypeVar("S", bound=SegmenterSession)


class SegmenterKernel(Protocol[S]):
    def new_session(self, max_pinned_frames: int = 4) -> S: ...

    def prepare(self, image_bgr: np.ndarray) -> PreparedFrame: ...

    def encode(self, items: Sequence[tuple[S, np.ndarray | PreparedFrame]]) -> list[int]: ...

    def track(self, items: Sequence[tuple[S, int]]) -> list[dict[int, SegmentOutput]]: ...
