"""The engine's value types, shared by the segmenter backends, the per-camera tracker, the engine
loop, the offline runner and the clients: what a segmenter returns (:class:`SegmentOutput`,
:class:`StateSize`), a frame made into model input (:class:`PreparedFrame`), and a camera's frame
in and result out (:class:`FrameInput`, :class:`ObjectResult`, :class:`FrameResult`).

``Box`` is the one box type of the project. No backend is imported here (``engine.core`` depends on numpy and torch only)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from numpy.typing import ArrayLike, NDArray

from stream.boxes import Box

__all__ = [
    "Box",
    "FrameInput",
    "FrameResult",
    "Image",
    "Mask",
    "ObjectResult",
    "ObjectStateSize",
    "PreparedFrame",
    "SegmentOutput",
    "SegmentPrompt",
    "StateSize",
]

# Box: x1, y1, x2, y2 in pixels, the project's one box type (defined on the ground floor, in
# ``stream.boxes``, which cannot import the engine; the engine takes it from here).
Mask = NDArray[np.bool_]  # HxW bool at a frame's resolution
Image = NDArray[np.uint8]  # HxWx3 uint8 BGR


@dataclass(frozen=True)
class SegmentPrompt:
    """A segmenter prompt as given, in frame pixels: a box and/or points (with labels, 1 by
    default), or a mask (HxW); checked by ``engine.core.prompts``."""

    box: ArrayLike | None = None
    points: ArrayLike | None = None
    point_labels: ArrayLike | None = None
    mask: ArrayLike | None = None


@dataclass(frozen=True)
class SegmentOutput:
    """One object's result on one frame."""

    obj_id: int
    mask: Mask  # HxW bool at the original frame resolution
    score: float  # SAM 2 object score logit; < 0 means "object not present"
    box: Box | None  # xyxy pixel edges of the mask (x2 = last column + 1), None if empty
    embedding: NDArray[np.float32] | None = None  # the object pointer on this frame, [C]


@dataclass(frozen=True)
class ObjectStateSize:
    obj_id: int
    cond_frames: int  # conditioning memories held (rows of its conditioning memory tensor)
    memories: int  # non-conditioning spatial memories held
    obj_ptrs: int  # non-conditioning object pointers held


@dataclass(frozen=True)
class StateSize:
    """What a segmenter session holds, for stats and the memory-bound test."""

    objects: tuple[ObjectStateSize, ...]
    frames: int  # frames whose image features are held (current + pinned)
    pinned: int
    object_bytes: int  # tensors held in object state
    frame_bytes: int  # image features held
    total_bytes: int


@dataclass(frozen=True)
class PreparedFrame:
    """A frame turned into model input by a kernel's ``prepare`` (no model involved, so another
    thread can prepare the next frame while the model runs on this one)."""

    image: torch.Tensor  # [1, 3, S, S] float32, normalised, on the model's device
    height: int  # original frame size
    width: int


@dataclass(frozen=True)
class FrameInput:
    seq: int
    t_capture_ns: int
    image: Image  # HxWx3 uint8 BGR
    prepared: PreparedFrame | None = None  # the model input made of ``image`` ahead (``prepare``)


@dataclass(frozen=True)
class ObjectResult:
    id: int
    label: str
    score: float
    box: Box
    mask: Mask  # HxW bool
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
