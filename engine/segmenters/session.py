"""What the streaming segmenter backends share: a session (one camera's frames, pins and
objects on a kernel) and the kernel's frame handling (checking, batching the image encoder over
several sessions, the work of one ``track`` call).

:class:`StreamingSession` implements ``engine.core.protocols.SegmenterSession`` once; a backend
gives it a kernel that satisfies :class:`SessionKernel` and an object state that satisfies
:class:`ObjectMemory` (``engine.segmenters.sam2``, ``engine.segmenters.transformers``; the
semantics of each call are in ``engine.segmenters.sam2``'s module docstring)."""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

import numpy as np
import torch
from numpy.typing import ArrayLike

from engine.core.prompts import PointInputs, check_frame, point_prompt
from engine.core.types import (
    Image,
    Mask,
    ObjectStateSize,
    PreparedFrame,
    SegmentOutput,
    SegmentPrompt,
    StateSize,
)
from stream.errors import RequestError

log = logging.getLogger(__name__)


def nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


@dataclass
class FrameFeatures:
    """Image features of one frame of one session (batch of one), flattened per level."""

    index: int
    height: int  # original frame size
    width: int
    vision_feats: list[torch.Tensor]  # per level [HW, 1, C]; the last is the lowest resolution

    def nbytes(self) -> int:
        return sum(nbytes(t) for t in self.vision_feats)


class ObjectMemory(Protocol):
    """One object's state in a session, as the session reads it."""

    @property
    def obj_id(self) -> int: ...

    def nbytes(self) -> int: ...

    def size(self) -> ObjectStateSize: ...

    def last_logits(self) -> torch.Tensor | None: ...


ObjT = TypeVar("ObjT", bound=ObjectMemory)


class SessionKernel(Protocol[ObjT]):
    """What a :class:`StreamingSession` asks of its kernel."""

    def encode(
        self, items: Sequence[tuple[StreamingSession[ObjT], Image | PreparedFrame]]
    ) -> list[int]: ...

    def track(
        self, items: Sequence[tuple[StreamingSession[ObjT], int]]
    ) -> list[dict[int, SegmentOutput]]: ...

    def prepare(self, image_bgr: Image) -> PreparedFrame: ...

    def condition(self, obj_id: int, frame: FrameFeatures, prompt: SegmentPrompt) -> ObjT: ...

    def outputs(self, frame: FrameFeatures, objects: list[ObjT]) -> dict[int, SegmentOutput]: ...

    def box_mask(self, frame: FrameFeatures, box: ArrayLike) -> Mask: ...


class StreamingSession(Generic[ObjT]):
    """One camera's streaming state on a shared kernel: its frame indices, latest and pinned
    frames' features, and its objects' memories."""

    def __init__(self, kernel: SessionKernel[ObjT], max_pinned_frames: int = 4) -> None:
        if max_pinned_frames < 0:
            raise ValueError("max_pinned_frames must be >= 0")
        self.kernel = kernel
        self.max_pinned_frames = max_pinned_frames
        self._next_index = 0
        self._latest: FrameFeatures | None = None
        self._pinned: OrderedDict[int, FrameFeatures] = OrderedDict()
        self._objects: dict[int, ObjT] = {}

    # ------------------------------------------------------------------ frames

    @property
    def object_ids(self) -> list[int]:
        return list(self._objects)

    @property
    def latest_frame(self) -> int | None:
        return None if self._latest is None else self._latest.index

    def prepare(self, image_bgr: Image) -> PreparedFrame:
        """Check one BGR uint8 frame (HxWx3) and turn it into model input; thread-safe."""
        return self.kernel.prepare(image_bgr)

    def add_frame(self, frame: Image | PreparedFrame) -> int:
        """Encode one frame (a BGR uint8 image, or one ``prepare`` made) once; return its index."""
        return self.kernel.encode([(self, frame)])[0]

    def set_latest(self, height: int, width: int, vision_feats: list[torch.Tensor]) -> int:
        """The kernel encoded a new frame of this session: it becomes the latest."""
        index = self._next_index
        self._next_index += 1
        self._latest = FrameFeatures(index, height, width, vision_feats)
        return index

    def pin(self, frame_idx: int) -> None:
        """Keep ``frame_idx``'s features for late prompts; the oldest pin is dropped past the bound."""
        frame = self.frame(frame_idx)
        if frame_idx in self._pinned or self.max_pinned_frames == 0:
            return
        self._pinned[frame_idx] = frame
        while len(self._pinned) > self.max_pinned_frames:
            dropped, _ = self._pinned.popitem(last=False)
            log.debug(
                "pinned frame %d dropped (max_pinned_frames=%d)", dropped, self.max_pinned_frames
            )

    def unpin(self, frame_idx: int) -> None:
        self._pinned.pop(frame_idx, None)

    def frame(self, frame_idx: int) -> FrameFeatures:
        """The latest or a pinned frame's features; PromptError for any other."""
        if self._latest is not None and frame_idx == self._latest.index:
            return self._latest
        frame = self._pinned.get(frame_idx)
        if frame is None:
            raise RequestError(
                f"frame {frame_idx} is not available (current frame: {self.latest_frame}, "
                f"pinned: {list(self._pinned)})"
            )
        return frame

    # ------------------------------------------------------------------ prompts

    def add_prompt(
        self,
        obj_id: int,
        frame_idx: int,
        *,
        box: ArrayLike | None = None,
        points: ArrayLike | None = None,
        point_labels: ArrayLike | None = None,
        mask: ArrayLike | None = None,
    ) -> SegmentOutput:
        """Condition ``obj_id`` on ``frame_idx`` (adds it, or re-seeds it from this prompt)."""
        frame = self.frame(frame_idx)
        prompt = SegmentPrompt(box, points, point_labels, mask)
        state = self.kernel.condition(obj_id, frame, prompt)
        if obj_id in self._objects:
            log.debug("object %d re-seeded on frame %d", obj_id, frame_idx)
        self._objects[obj_id] = state
        return self.kernel.outputs(frame, [state])[obj_id]

    def segment_box(self, frame_idx: int, box: ArrayLike) -> Mask:
        """A single-frame mask (HxW bool) from a box, without memory and without adding an object."""
        return self.kernel.box_mask(self.frame(frame_idx), box)

    def track(self, frame_idx: int) -> dict[int, SegmentOutput]:
        """Propagate all objects without an output on ``frame_idx`` (the latest); return all."""
        return self.kernel.track([(self, frame_idx)])[0]

    # ------------------------------------------------------------------ objects and state

    @property
    def objects(self) -> dict[int, ObjT]:
        """The objects' states, by id (the kernel's to read and update)."""
        return self._objects

    def last_logits(self, obj_id: int) -> torch.Tensor:
        """The low-res mask logits ([1, 1, h, w]) of ``obj_id``'s latest output (tests, debugging)."""
        state = self._objects.get(obj_id)
        logits = None if state is None else state.last_logits()
        if logits is None:
            raise RequestError(f"unknown object id {obj_id}")
        return logits

    def remove_object(self, obj_id: int) -> None:
        if obj_id not in self._objects:
            raise RequestError(f"unknown object id {obj_id} (known: {self.object_ids})")
        del self._objects[obj_id]

    def reset(self) -> None:
        """Drop every object and pinned frame; the current frame stays available for prompts."""
        self._objects.clear()
        self._pinned.clear()

    def close(self) -> None:
        """Free everything this session holds (its camera was removed)."""
        self.reset()
        self._latest = None

    def state_size(self) -> StateSize:
        objects = tuple(s.size() for s in self._objects.values())
        frames: dict[int, FrameFeatures] = dict(self._pinned)
        if self._latest is not None:
            frames[self._latest.index] = self._latest
        object_bytes = sum(s.nbytes() for s in self._objects.values())
        frame_bytes = sum(f.nbytes() for f in frames.values())
        return StateSize(
            objects, len(frames), len(self._pinned), object_bytes, frame_bytes,
            object_bytes + frame_bytes,
        )  # fmt: skip


@dataclass
class SessionWork(Generic[ObjT]):
    """One session's part of a batched propagation: its latest frame and the objects to move."""

    session: StreamingSession[ObjT]
    frame: FrameFeatures
    todo: list[ObjT]


class KernelFrames(ABC, Generic[ObjT]):
    """The frame side every kernel shares: ``prepare``, the batching of ``encode`` and the
    checks of ``track``. A backend gives ``_preprocess`` and ``_encode_images``."""

    device: torch.device

    @abstractmethod
    def _preprocess(self, image_bgr: Image) -> torch.Tensor:
        """A checked BGR frame as the model's [1, 3, S, S] input."""

    @abstractmethod
    def _encode_images(self, images: torch.Tensor) -> list[torch.Tensor]:
        """The image encoder over a batch: per level [HW, B, C] features."""

    @abstractmethod
    def _has_output(self, state: ObjT, frame_idx: int) -> bool:
        """Whether ``state`` has its output on ``frame_idx`` already."""

    @abstractmethod
    def _point_inputs(self, points: PointInputs, frame: FrameFeatures) -> dict[str, torch.Tensor]:
        """Checked point inputs (frame pixels) as the model's ``point_coords`` and
        ``point_labels``, the way its official pipeline makes them."""

    @abstractmethod
    def _mask_input(self, mask: ArrayLike, height: int, width: int) -> torch.Tensor:
        """A frame-sized mask prompt, checked, as the model's mask input."""

    def _prompt_inputs(
        self, frame: FrameFeatures, prompt: SegmentPrompt
    ) -> tuple[dict[str, torch.Tensor] | None, torch.Tensor | None]:
        """Check a prompt against ``frame`` (PromptError) and turn it into model inputs."""
        points = point_prompt(prompt, frame.width, frame.height)
        if points is None:
            assert prompt.mask is not None  # point_prompt returns None for a mask prompt only
            return None, self._mask_input(prompt.mask, frame.height, frame.width)
        return self._point_inputs(points, frame), None

    def prepare(self, image_bgr: Image) -> PreparedFrame:
        """Check one BGR uint8 frame (HxWx3) and turn it into model input; thread-safe."""
        height, width = check_frame(image_bgr)
        with torch.inference_mode():
            return PreparedFrame(self._preprocess(image_bgr), height, width)

    def encode(
        self, items: Sequence[tuple[StreamingSession[ObjT], Image | PreparedFrame]]
    ) -> list[int]:
        """Run the image encoder once over one new frame of each session (a BGR uint8 image or
        what ``prepare`` made of it); each becomes its session's latest frame. Returns the
        frame indices, in order. A session may appear once per call."""
        if not items:
            return []
        sessions = [s for s, _ in items]
        if len({id(s) for s in sessions}) != len(sessions):
            raise ValueError("encode() takes one frame per session")
        self._check_sessions(sessions)
        prepared = [f if isinstance(f, PreparedFrame) else self.prepare(f) for _, f in items]
        images = prepared[0].image if len(prepared) == 1 else torch.cat([p.image for p in prepared])
        feats = self._encode_images(images)
        out = []
        for i, (session, p) in enumerate(zip(sessions, prepared, strict=True)):
            # With several frames in the batch each session keeps its own contiguous copy, so
            # that a pinned frame does not hold the other cameras' features alive.
            own = feats if len(prepared) == 1 else [f[:, i : i + 1].contiguous() for f in feats]
            out.append(session.set_latest(p.height, p.width, own))
        return out

    def _check_sessions(self, sessions: Sequence[StreamingSession[ObjT]]) -> None:
        for s in sessions:
            kernel: object = s.kernel
            if kernel is not self:
                raise ValueError("session belongs to another kernel")

    def _work(self, items: Sequence[tuple[StreamingSession[ObjT], int]]) -> list[SessionWork[ObjT]]:
        """Each session's latest frame (``frame_idx`` must be it) and its objects without an
        output there yet."""
        work: list[SessionWork[ObjT]] = []
        for session, frame_idx in items:
            self._check_sessions([session])
            frame = session._latest
            if frame is None or frame_idx != frame.index:
                raise RequestError(
                    f"track() needs the latest frame ({session.latest_frame}), got {frame_idx}"
                )
            todo = [s for s in session.objects.values() if not self._has_output(s, frame_idx)]
            work.append(SessionWork(session, frame, todo))
        return work

    def _present(self, w: SessionWork[ObjT]) -> list[ObjT]:
        """The session's objects with an output on its latest frame."""
        return [s for s in w.session.objects.values() if self._has_output(s, w.frame.index)]


def rows_feats(frames: Sequence[FrameFeatures], levels: slice = slice(None)) -> list[torch.Tensor]:
    """Per level [HW, B, C] features for a batch whose row ``i`` is an object on
    ``frames[i]``: a view of one frame's features when every row shares it (one camera),
    else consecutive rows of one frame expanded and the runs concatenated."""
    runs: list[tuple[FrameFeatures, int]] = []
    for frame in frames:
        if runs and runs[-1][0] is frame:
            runs[-1] = (frame, runs[-1][1] + 1)
        else:
            runs.append((frame, 1))
    per_run = [[x.expand(-1, n, -1) for x in frame.vision_feats[levels]] for frame, n in runs]
    if len(per_run) == 1:
        return per_run[0]
    return [torch.cat(level, dim=1) for level in zip(*per_run, strict=True)]


def frame_mask(logits: torch.Tensor) -> np.ndarray:
    """Frame-sized logits [N, 1, H, W] as N HxW bool masks (> 0)."""
    return (logits > 0)[:, 0].cpu().numpy()
