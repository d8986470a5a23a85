"""Streaming transformers video trackers (SAM 2.1, EdgeTAM, SAM 3 tracker) on the engine's seams.

:class:`HfVideoKernel` / :class:`HfVideoSession` implement ``engine.core.protocols.SegmenterKernel`` /
``SegmenterSession`` with the semantics of ``engine.segmenters.sam2`` (read its module docstring:
frame indices, pins, prompts, re-seeding, ``track``), on a transformers ``Sam2VideoModel``,
``EdgeTamVideoModel`` or ``Sam3TrackerVideoModel`` (``engine.models.video``).

transformers' own streaming (``model(inference_session, frame=...)``) keeps every frame's outputs
per object (mask logits at input resolution included) and runs objects one by one. Here, per
frame: the image encoder runs once over the newest frame of every session (``encode``); every
object of every session propagates in one batch (``track``): memory attention batched over
objects with the same memory layout, mask decoding and memory encoding over all of them. Per
object the state keeps its conditioning frame's memory and object pointer, the memories of the
last ``num_maskmem - 1`` frames and the object pointers of the last
``max_object_pointers_in_encoder - 1`` frames: what the model's memory selection reads
(``_gather_memory_frame_outputs``, ``_get_object_pointers``); everything older is freed.

The model's own methods do the work: ``get_image_features``, ``_single_frame_forward`` and
``_use_mask_as_output`` (prompts), ``memory_attention``, ``prompt_encoder`` + ``mask_decoder``
(tracking: the heads of ``_single_frame_forward``, applied per row, since that method picks the
best of several masks for a batch of one only), ``_encode_new_memory`` and
``_process_object_pointers``.

Exactness: on the same weights, input tensors and prompts, one object's masks and logits equal
those of transformers' inference session (streaming, or ``propagate_in_video_iterator`` on a
video at least ``max_object_pointers_in_encoder`` frames long), bit for bit; several objects,
batched, agree within float rounding (tests/test_transformers_video.py). Deliberate
differences, all about objects being independent and time being causal:

- an object added on frame k starts there (``propagate_in_video_iterator`` given the prompt
  beforehand also segments it on frames before k from its future prompt);
- a memory is encoded from its own object's mask only: transformers' SAM 2 / SAM 3 session
  encodes the memories of one frame in one batch with ``is_mask_from_pts`` true for all of them
  as soon as one object was prompted on that frame, so a tracked object's memory of the frame
  where another object was added is made from its binarised mask instead of its sigmoid;
- a re-seeded object restarts from its new prompt (the session would keep both prompts as
  conditioning frames).

Output masks are the low-resolution logits resized to the frame (bilinear), > 0: what
``post_process_masks`` returns. Memories are kept as the family keeps them (bf16 for SAM 2 and
SAM 3, as transformers stores them; EdgeTAM's perceiver latents in the compute dtype).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import ArrayLike

from engine.core.prompts import PointInputs, mask_box, mask_prompt
from engine.core.types import Image, Mask, SegmentOutput, SegmentPrompt
from engine.segmenters.session import (
    FrameFeatures,
    KernelFrames,
    StreamingSession,
    frame_mask,
    rows_feats,
)
from engine.segmenters.transformers_memory import HfObject, HfVideoMemory, MemoryItem

log = logging.getLogger(__name__)


class PromptOutput(Protocol):
    """What the model returns for a frame conditioned on a prompt alone (the fields read)."""

    pred_masks: torch.Tensor  # [1, 1, h, w] low-res mask logits
    high_res_masks: torch.Tensor
    object_score_logits: torch.Tensor
    object_pointer: torch.Tensor


class HfVideoKernel(HfVideoMemory, KernelFrames[HfObject]):
    """The model side, shared by every camera: weights, per-shape constants, preprocessing and
    the batched calls (see the module docstring). A session holds one camera's state."""

    def new_session(self, max_pinned_frames: int = 4) -> HfVideoSession:
        return HfVideoSession(self, max_pinned_frames)

    def _preprocess(self, image_bgr: Image) -> torch.Tensor:
        size = self.image_size
        rgb = torch.from_numpy(np.ascontiguousarray(image_bgr[..., ::-1])).permute(2, 0, 1)[None]
        if self.device.type == "cpu":
            small = F.interpolate(
                rgb, size=(size, size), mode="bilinear", antialias=True, align_corners=False
            )
            levels = small[0].reshape(3, -1).numpy()
            out = np.empty((3, size * size), dtype=np.float32)
            for c in range(3):
                np.take(self._lut[c], levels[c], out=out[c])
            return torch.from_numpy(out).view(1, 3, size, size)
        resized = F.interpolate(
            rgb.to(self.device).float(),
            size=(size, size),
            mode="bilinear",
            antialias=True,
            align_corners=False,
        )
        levels_t = resized.round_().clamp_(0, 255).long().view(3, -1)
        return torch.gather(self._lut_device, 1, levels_t).view(1, 3, size, size)

    def _encode_images(self, images: torch.Tensor) -> list[torch.Tensor]:
        images = images.to(self.device, dtype=self.model.dtype)
        with torch.inference_mode(), self.loaded.autocast():
            out = self.model.get_image_features(images, return_dict=True)
        if self._vision_pos is None:
            self._vision_pos = out.fpn_position_encoding[-1][:, :1].clone()
        return list(out.fpn_hidden_states)

    def _has_output(self, state: HfObject, frame_idx: int) -> bool:
        return state.last_frame == frame_idx

    # ------------------------------------------------------------------ prompts

    def _condition(
        self,
        frame: FrameFeatures,
        points: dict[str, torch.Tensor] | None,
        mask: torch.Tensor | None,
    ) -> PromptOutput:
        """The model on one frame from a prompt alone (an initial conditioning frame), as its
        ``_run_single_frame_inference`` runs it."""
        model = self.model
        high_res = self._high_res(frame.vision_feats, 1)
        out: PromptOutput
        if mask is not None:
            out = model._use_mask_as_output(self._pix(frame.vision_feats[-1]), high_res, mask)
            return out
        pix = self._pix(frame.vision_feats[-1] + model.no_memory_embedding)
        assert points is not None
        out = model._single_frame_forward(
            input_points=points["point_coords"],
            input_labels=points["point_labels"],
            image_embeddings=[*high_res, pix],
            multimask_output=model._use_multimask(True, points),
        )
        return out

    def condition(self, obj_id: int, frame: FrameFeatures, prompt: SegmentPrompt) -> HfObject:
        """A new object conditioned on ``frame`` from a prompt (checked first: a bad one raises
        PromptError)."""
        points_in, mask_in = self._prompt_inputs(frame, prompt)
        with torch.inference_mode(), self.loaded.autocast():
            out = self._condition(frame, points_in, mask_in)
            score = out.object_score_logits.reshape(1, 1, 1)
            memory = self._encode_memory(
                frame.vision_feats[-1], out.high_res_masks, score, prompt=True
            )
        return HfObject(
            obj_id=obj_id,
            cond_frame=frame.index,
            cond_memory=memory[0],
            cond_ptr=out.object_pointer.reshape(1, self.hidden).clone(),
            last_frame=frame.index,
            low_res=out.pred_masks.reshape(1, 1, *out.pred_masks.shape[-2:]).clone(),
            score=score.reshape(1, 1).clone(),
        )

    def _point_inputs(self, points: PointInputs, frame: FrameFeatures) -> dict[str, torch.Tensor]:
        # As Sam2VideoProcessor._normalize_coordinates: float32 coordinates scaled per axis.
        coords, labels = points
        xy = torch.tensor(coords, dtype=torch.float32)
        xy[..., 0] = xy[..., 0] * (self.image_size / frame.width)
        xy[..., 1] = xy[..., 1] * (self.image_size / frame.height)
        return {
            "point_coords": xy[None, None].to(self.device),
            "point_labels": torch.tensor(labels, dtype=torch.int64)[None, None].to(self.device),
        }

    def _mask_input(self, mask: ArrayLike, height: int, width: int) -> torch.Tensor:
        m = mask_prompt(mask, height, width, self.image_size, self.device)
        return m.to(self.model.dtype)

    def box_mask(self, frame: FrameFeatures, box: ArrayLike) -> Mask:
        """A single-frame mask (HxW bool) from a box, without memory."""
        points_in, _ = self._prompt_inputs(frame, SegmentPrompt(box=box))
        with torch.inference_mode(), self.loaded.autocast():
            out = self._condition(frame, points_in, None)
            logits = self._to_frame(out.pred_masks.reshape(1, 1, *out.pred_masks.shape[-2:]), frame)
        mask: Mask = frame_mask(logits)[0]
        return mask

    # ------------------------------------------------------------------ tracking

    def track(
        self, items: Sequence[tuple[StreamingSession[HfObject], int]]
    ) -> list[dict[int, SegmentOutput]]:
        """Propagate every object of every session without an output on its session's latest
        frame (``frame_idx`` must be that frame), in one batch; each session's outputs of all
        its objects on that frame, in order."""
        work = self._work(items)
        if any(w.todo for w in work):
            with torch.inference_mode(), self.loaded.autocast():
                self._propagate([(w.frame, o) for w in work for o in w.todo])
        results = []
        for w in work:
            for obj in w.session.objects.values():
                self._prune(obj, w.frame.index + 1)
            results.append(self.outputs(w.frame, self._present(w)))
        return results

    def _propagate(self, rows: list[tuple[FrameFeatures, HfObject]]) -> None:
        self._ptr_pos.clear()  # keyed by pointer offsets, which move every frame
        groups: dict[tuple[tuple[int, ...], int], list[MemoryItem]] = {}
        for frame, obj in rows:
            item = self._memory_inputs(frame, obj)
            groups.setdefault(item.layout, []).append(item)
        ordered: list[MemoryItem] = []
        pix_parts = []
        for group in groups.values():
            pix_parts.append(self._attend(group))
            ordered += group
        pix = pix_parts[0] if len(pix_parts) == 1 else torch.cat(pix_parts)
        frames = [it.frame for it in ordered]
        feats = rows_feats(frames)
        heads = self._heads(pix, self._high_res(feats, len(ordered)))
        memories = self._encode_memory(feats[-1], heads.high_res, heads.score, prompt=False)
        for i, it in enumerate(ordered):
            obj, index = it.obj, it.frame.index
            obj.memories[index] = memories[i]
            obj.ptrs[index] = heads.ptr[i : i + 1].clone()
            obj.last_frame = index
            obj.low_res = heads.low_res[i : i + 1].clone()
            obj.score = heads.score[i].reshape(1, 1).clone()

    # ------------------------------------------------------------------ outputs

    def outputs(self, frame: FrameFeatures, objects: list[HfObject]) -> dict[int, SegmentOutput]:
        """The objects' outputs on ``frame`` (their latest), masks at the frame's size."""
        if not objects:
            return {}
        low = torch.cat([o.low_res for o in objects if o.low_res is not None])
        scores = torch.cat([o.score for o in objects if o.score is not None]).float().cpu().numpy()
        with torch.inference_mode():
            masks = frame_mask(self._to_frame(low, frame))
        return {
            o.obj_id: SegmentOutput(o.obj_id, masks[i], float(scores[i, 0]), mask_box(masks[i]))
            for i, o in enumerate(objects)
        }

    def _to_frame(self, low_res: torch.Tensor, frame: FrameFeatures) -> torch.Tensor:
        """Mask logits at the frame's size, as ``post_process_masks`` resizes them."""
        return F.interpolate(
            low_res.float(), size=(frame.height, frame.width), mode="bilinear", align_corners=False
        )


class HfVideoSession(StreamingSession[HfObject]):
    """One camera's streaming state on a shared :class:`HfVideoKernel` (the semantics of
    ``engine.segmenters.sam2.Sam2Session``)."""

    kernel: HfVideoKernel

    def __init__(self, kernel: HfVideoKernel, max_pinned_frames: int = 4) -> None:
        super().__init__(kernel, max_pinned_frames)
