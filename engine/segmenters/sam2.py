"""Streaming SAM 2: one frame at a time, memory per object, all objects in one batch, bounded state.

Built on the official ``sam2`` package's ``SAM2Base`` (``forward_image``,
``_prepare_backbone_features``, ``track_step``, ``memory_attention``, ``_forward_sam_heads``,
``_encode_new_memory``), not on ``SAM2VideoPredictor``, which loads the whole video up front and
keeps every frame's outputs.

How the engine drives it, per frame::

    idx = seg.add_frame(image_bgr)          # image encoder, once per frame
    seg.add_prompt(obj_id, idx, box=...)    # optional: objects prompted on this frame
    outs = seg.track(idx)                   # every other object, batched -> {obj_id: SegmentOutput}
    seg.add_prompt(new_id, idx, box=...)    # optional: new detections on this frame, or on a
                                            # pinned earlier frame (late, from a grounding thread)

Semantics:
- ``add_frame`` preprocesses exactly as the official predictor (PIL resize to the model's square
  input, /255, ImageNet mean/std), runs the image encoder and returns a frame index that grows by
  one per call (also across ``reset``). Features of the previous frame are freed unless pinned.
  ``prepare`` does the preprocessing alone (thread-safe); ``add_frame`` takes its result too.
  With ``models.preprocess: device`` (the CUDA default) the resize runs on the model's device
  instead, within one grey level of PIL's.
- Memory attention of one memory layout runs as one batch, and so does memory encoding; on CPU
  the batches are cut so that one call's per-object tensors stay under ``CPU_BATCH_BYTES`` (big
  batches lose the caches there).
- ``add_prompt`` conditions an object on the current frame or a pinned one, from a box and/or
  points (original-frame pixels) or a mask (HxW bool). A new ``obj_id`` adds an object; an
  existing one is re-seeded: its memory is dropped and it restarts from this prompt under the
  same id. Its memory is encoded at once. Bad prompts raise ``PromptError``, state unchanged.
- ``track(idx)`` (``idx`` must be the latest frame) propagates every object that has no output on
  ``idx`` yet: memory attention runs batched over objects with the same memory layout (one batch in
  steady state; objects still filling their memory form their own groups), mask decoding and memory
  encoding run in one batch over all objects. It returns the outputs of all objects on ``idx``.
  An object prompted on a pinned earlier frame ``p`` propagates from ``p`` (its conditioning
  frame); the frames between ``p`` and the current one are not revisited.
- Per object the state keeps its conditioning frame's memory and object pointer, the non-
  conditioning memories that the next frame can attend to (``num_maskmem - 1``) and the last
  ``max_obj_ptrs_in_encoder - 1`` object pointers; older ones are freed. ``state_size`` reports it.

Exactness: on the same weights, frames and prompts, masks equal those of the official
``SAM2VideoPredictor.propagate_in_video`` (memories stored in bf16 like the official predictor).
Two deliberate differences from the official predictor, both about time: ``num_frames`` is
unbounded (the official caps the object pointers at the video length, so compare on videos at
least ``max_obj_ptrs_in_encoder`` frames long), and an object added on frame k starts there,
while the official predictor also segments it on frames before k using its future prompt.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TypedDict

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import ArrayLike, NDArray
from PIL import Image as PILImage

from engine.core.prompts import PointInputs, mask_box, mask_prompt
from engine.core.types import Image, Mask, SegmentOutput, SegmentPrompt
from engine.models.sam2 import LoadedSam2
from engine.segmenters.sam2_memory import (
    LastOutput,
    MemoryInputs,
    ObjectState,
    Sam2Memory,
)
from engine.segmenters.session import (
    FrameFeatures,
    KernelFrames,
    SessionWork,
    StreamingSession,
    frame_mask,
    rows_feats,
)

log = logging.getLogger(__name__)


class TrackStepOutput(TypedDict):
    """What ``SAM2Base.track_step`` returns (the fields read)."""

    pred_masks: torch.Tensor  # [1, 1, S/4, S/4] low-res mask logits
    object_score_logits: torch.Tensor  # [1, 1]
    obj_ptr: torch.Tensor  # [1, hidden_dim]


# Stands in for the official predictor's video length: pointers are capped by
# max_obj_ptrs_in_encoder only.
UNBOUNDED_FRAMES = 1 << 40
# On CPU, objects per memory-attention / memory-encoding call are capped so that one call's
# per-object tensors stay under this many bytes (see Sam2Kernel._attention_chunk).
# Hiera-T at 512 px (7.4 MiB of attention, 4 MiB of encoding per object) then runs one object
# per call: 9 % faster than two per call (16 MiB), in lockstep over 9 frames with 16 objects.
CPU_BATCH_BYTES = 4 << 20


class Sam2Kernel(Sam2Memory, KernelFrames[ObjectState]):
    """The model side of streaming SAM 2, shared by every camera: weights, per-shape constants,
    preprocessing, and the batched calls. ``encode`` runs the image encoder once over the newest
    frame of several sessions; ``track`` propagates every object of several sessions in one
    batch. A session (:class:`Sam2Session`) holds one camera's frames and objects."""

    def new_session(self, max_pinned_frames: int = 4) -> Sam2Session:
        return Sam2Session(self, max_pinned_frames)

    # ------------------------------------------------------------------ frames

    def _encode_images(self, images: torch.Tensor) -> list[torch.Tensor]:
        with torch.inference_mode(), self.loaded.autocast():
            backbone_out = self.model.forward_image(images)
            _, vision_feats, vision_pos, feat_sizes = self.model._prepare_backbone_features(
                backbone_out
            )
        if self._vision_pos is None:
            self._vision_pos = [p[:, :1] for p in vision_pos]
            self._feat_sizes = [tuple(s) for s in feat_sizes]
        return list(vision_feats)

    def _has_output(self, state: ObjectState, frame_idx: int) -> bool:
        return state.last is not None and state.last.frame_idx == frame_idx

    def _preprocess(self, image_bgr: Image) -> torch.Tensor:
        # Same values as sam2.utils.misc._load_img_as_tensor + load_video_frames (PIL resize to the
        # square input, float64 / 255 cast to float32, minus mean, divided by std in float32),
        # through a per-channel lookup table of those 256 values (``_normalisation_lut``): the
        # result is bit-identical and 4-5x cheaper than the arithmetic. Resizing works per channel,
        # so BGR->RGB is folded into the table lookup.
        size = self.image_size
        if self.loaded.preprocess == "device":
            return self._preprocess_on_device(image_bgr)
        small = np.asarray(PILImage.fromarray(np.ascontiguousarray(image_bgr)).resize((size, size)))
        if self.device.type == "cpu":
            out = np.empty((3, size, size), dtype=np.float32)
            for c in range(3):
                np.take(self._lut[c], small[..., 2 - c], out=out[c])
            return torch.from_numpy(out).unsqueeze(0)
        levels = torch.from_numpy(small).to(self.device, non_blocking=True)
        levels = levels.permute(2, 0, 1).flip(0).reshape(3, -1).long()
        return self._normalise(levels)

    def _normalise(self, levels: torch.Tensor) -> torch.Tensor:
        """Grey levels (3, H*W, RGB order, int64) through the normalisation lookup table, as the
        model's (1, 3, size, size) input."""
        size = self.image_size
        return torch.gather(self._lut_device, 1, levels).view(1, 3, size, size)

    def _preprocess_on_device(self, image_bgr: Image) -> torch.Tensor:
        """The frame resized where the model runs (``models.preprocess: device``): antialiased
        bicubic as PIL's, rounded to grey levels as PIL's uint8 output, then the same lookup
        table. Within one grey level of the PIL path on natural images (not bit-exact); on CUDA
        it takes the CPU resize (~10 ms for 720p -> 1024 px) off the frame loop. On the CPU the
        uint8 frame is resized as it is (torch's vectorised uint8 kernel, on the HxWxC memory
        seen as channels-last): 768x576 -> 128 px in 0.5 ms against PIL's 3.5 ms."""
        size = self.image_size
        if self.device.type == "cpu":
            bgr = torch.from_numpy(np.ascontiguousarray(image_bgr)).permute(2, 0, 1).unsqueeze(0)
            small = F.interpolate(
                bgr, size=(size, size), mode="bicubic", antialias=True, align_corners=False
            )
            levels = small[0].flip(0).reshape(3, -1).long()
            return self._normalise(levels)
        frame = torch.from_numpy(np.ascontiguousarray(image_bgr)).to(self.device)
        rgb = frame.permute(2, 0, 1).flip(0).unsqueeze(0).float()
        resized = F.interpolate(
            rgb, size=(size, size), mode="bicubic", antialias=True, align_corners=False
        )
        levels = resized.round_().clamp_(0, 255).long().view(3, -1)
        return self._normalise(levels)

    # ------------------------------------------------------------------ prompts

    def _condition(
        self,
        frame: FrameFeatures,
        point_inputs: dict[str, torch.Tensor] | None,
        mask_inputs: torch.Tensor | None,
    ) -> TrackStepOutput:
        """SAM on one frame from a prompt, as an initial conditioning frame (no memory)."""
        feats = self._batched_feats(frame, 1)
        assert self._feat_sizes is not None
        out: TrackStepOutput = self.model.track_step(
            frame_idx=frame.index,
            is_init_cond_frame=True,
            current_vision_feats=feats,
            current_vision_pos_embeds=self._batched_pos(1),
            feat_sizes=self._feat_sizes,
            point_inputs=point_inputs,
            mask_inputs=mask_inputs,
            output_dict={"cond_frame_outputs": {}, "non_cond_frame_outputs": {}},
            num_frames=UNBOUNDED_FRAMES,
            run_mem_encoder=False,
        )
        return out

    def condition(self, obj_id: int, frame: FrameFeatures, prompt: SegmentPrompt) -> ObjectState:
        """A new object state conditioned on ``frame`` from a prompt (checked first: a bad one
        raises PromptError)."""
        point_inputs, mask_inputs = self._prompt_inputs(frame, prompt)
        with torch.inference_mode(), self.loaded.autocast():
            out = self._condition(frame, point_inputs, mask_inputs)
            # As the official propagate_in_video_preflight: re-encode from the low-res logits,
            # as a mask coming from the user's prompt.
            high_res = F.interpolate(
                out["pred_masks"],
                size=(self.image_size, self.image_size),
                mode="bilinear",
                align_corners=False,
            )
            feats = self._batched_feats(frame, 1)
            memory, _ = self._encode_memory(
                feats, high_res, out["object_score_logits"], from_prompt=True
            )
        return ObjectState(
            obj_id=obj_id,
            cond_frame=frame.index,
            cond_memory=memory,
            cond_ptr=out["obj_ptr"].clone(),
            last=LastOutput(
                frame.index, out["pred_masks"].clone(), out["object_score_logits"].clone()
            ),
        )

    def _point_inputs(self, points: PointInputs, frame: FrameFeatures) -> dict[str, torch.Tensor]:
        # As the official predictor: coordinates normalised by the frame size, then scaled.
        coords, labels = points
        pts_t = torch.tensor(coords, dtype=torch.float32)
        pts_t = pts_t / torch.tensor([frame.width, frame.height])
        pts_t = pts_t * self.image_size
        return {
            "point_coords": pts_t.unsqueeze(0).to(self.device),
            "point_labels": torch.tensor(labels, dtype=torch.int32).unsqueeze(0).to(self.device),
        }

    def _mask_input(self, mask: ArrayLike, height: int, width: int) -> torch.Tensor:
        return mask_prompt(mask, height, width, self.image_size, self.device)

    def box_mask(self, frame: FrameFeatures, box: ArrayLike) -> Mask:
        """A single-frame mask (HxW bool) from a box, without memory."""
        point_inputs, _ = self._prompt_inputs(frame, SegmentPrompt(box=box))
        with torch.inference_mode(), self.loaded.autocast():
            out = self._condition(frame, point_inputs, None)
            logits = self._to_frame_res(out["pred_masks"], frame)
        mask: Mask = frame_mask(logits)[0]
        return mask

    # ------------------------------------------------------------------ tracking

    def track(
        self, items: Sequence[tuple[StreamingSession[ObjectState], int]]
    ) -> list[dict[int, SegmentOutput]]:
        """Propagate every object of every session that has no output on its session's latest
        frame (``frame_idx`` must be that frame), all in one batch; return each session's
        outputs of all its objects on that frame, in order."""
        work = self._work(items)
        if any(w.todo for w in work):
            with torch.inference_mode(), self.loaded.autocast():
                self._propagate([w for w in work if w.todo])
        results = []
        for w in work:
            for state in w.session.objects.values():
                self._prune(state, w.frame.index + 1)
            results.append(self.outputs(w.frame, self._present(w)))
        return results

    def _propagate(self, work: list[SessionWork[ObjectState]]) -> None:
        assert self._feat_sizes is not None and self._vision_pos is not None
        model = self.model
        hidden = model.hidden_dim
        h, w = self._feat_sizes[-1]
        self._ptr_pos_cache.clear()  # keyed by pointer positions, which shift every frame
        # Objects of every session, grouped by memory layout (same tokens, so one attention call).
        groups: dict[tuple[tuple[int, ...], int], list[tuple[FrameFeatures, MemoryInputs]]] = {}
        for wk in work:
            for state in wk.todo:
                item = self._memory_inputs(state, wk.frame.index)
                groups.setdefault(item.layout, []).append((wk.frame, item))
        ordered: list[tuple[FrameFeatures, ObjectState]] = []
        pix_parts: list[torch.Tensor] = []
        for entries in groups.values():
            chunk = self._attention_chunk(entries[0][1], hidden)
            for start in range(0, len(entries), chunk):
                part = entries[start : start + chunk]
                pix_parts.append(self._attend(part, hidden, h, w))
                ordered += [(frame, it.state) for frame, it in part]
        pix_feat = pix_parts[0] if len(pix_parts) == 1 else torch.cat(pix_parts, dim=0)
        batch = len(ordered)
        frames = [frame for frame, _ in ordered]
        feats = rows_feats(frames)
        high_res_features = [
            x.permute(1, 2, 0).view(x.size(1), x.size(2), *s)
            for x, s in zip(feats[:-1], self._feat_sizes[:-1], strict=True)
        ]
        sam = model._forward_sam_heads(
            backbone_features=pix_feat,
            point_inputs=None,
            mask_inputs=None,
            high_res_features=high_res_features,
            multimask_output=model._use_multimask(False, None),
        )
        _, _, _, low_res, high_res, obj_ptr, scores = sam
        # Memory encoding, batched too, and cut on CPU like the attention: the fuser's 4x-wide
        # pointwise layers dominate its per-object bytes (Hiera-T 512 px, 16 objects: 830 ms in
        # one call, 552 ms in calls of 4).
        chunk = self._cpu_chunk(h * w * hidden * 4 * 4)
        parts = [
            self._encode_memory(
                rows_feats(frames[start : start + chunk]),
                high_res[start : start + chunk],
                scores[start : start + chunk],
                from_prompt=False,
            )[0]
            for start in range(0, batch, chunk)
        ]
        memories = parts[0] if len(parts) == 1 else torch.cat(parts, dim=0)
        for i, (frame, state) in enumerate(ordered):
            state.memories[frame.index] = memories[i : i + 1].clone()
            state.obj_ptrs[frame.index] = obj_ptr[i : i + 1].clone()
            state.last = LastOutput(
                frame.index, low_res[i : i + 1].clone(), scores[i : i + 1].clone()
            )

    def _attention_chunk(self, item: MemoryInputs, hidden: int) -> int:
        """How many objects of one memory layout attend in one call.

        On CUDA: all of them. On CPU the attention's per-object tensors ([memory tokens, hidden]
        float32) of a large batch outgrow the caches and the allocator's reuse (every call then
        faults fresh pages in): Hiera-T at 512 px, 16 objects in one call took 8.5 s against
        5.7 s one by one, in copies, RoPE products and ReLUs, and two per call was still 9 %
        slower than one. Batches stay under ``CPU_BATCH_BYTES``; small models (tiny-random:
        0.23 MiB per object) keep one batch up to 17 objects.
        """
        tokens = sum(m.shape[-2] * m.shape[-1] for _, m in item.spatial)
        tokens += len(item.ptrs) * max(1, hidden // self.model.mem_dim)
        return self._cpu_chunk(tokens * hidden * 4)

    def _cpu_chunk(self, bytes_per_object: int) -> int:
        """Objects per call for a step whose per-object tensors take ``bytes_per_object``: all of
        them on CUDA, on CPU as many as fit in ``CPU_BATCH_BYTES``."""
        if self.device.type != "cpu":
            return 1 << 30
        return max(1, CPU_BATCH_BYTES // max(1, bytes_per_object))

    def _to_frame_res(self, low_res: torch.Tensor, frame: FrameFeatures) -> torch.Tensor:
        # As SAM2VideoPredictor._get_orig_video_res_output.
        if low_res.shape[-2:] == (frame.height, frame.width):
            return low_res.float()
        return F.interpolate(
            low_res.float(), size=(frame.height, frame.width), mode="bilinear", align_corners=False
        )

    # ------------------------------------------------------------------ outputs

    def outputs(self, frame: FrameFeatures, states: list[ObjectState]) -> dict[int, SegmentOutput]:
        """The objects' outputs on ``frame`` (their latest), masks at the frame's size."""
        if not states:
            return {}
        results = [s.last for s in states]
        assert all(r is not None for r in results)
        low_res = torch.cat([r.low_res_logits for r in results if r is not None], dim=0)
        scores = torch.cat([r.score for r in results if r is not None], dim=0).float().cpu().numpy()
        with torch.inference_mode():
            masks = frame_mask(self._to_frame_res(low_res, frame))
        pointers = _pointers(states, frame)
        return {
            s.obj_id: SegmentOutput(
                s.obj_id, masks[i], float(scores[i, 0]), mask_box(masks[i]), pointers[i]
            )
            for i, s in enumerate(states)
        }


class Sam2Session(StreamingSession[ObjectState]):
    """One camera's streaming state on a shared :class:`Sam2Kernel` (see the module docstring
    for the semantics of each call)."""

    kernel: Sam2Kernel

    def __init__(self, kernel: Sam2Kernel, max_pinned_frames: int = 4) -> None:
        super().__init__(kernel, max_pinned_frames)


class StreamingSegmenter(Sam2Session):
    """Streaming SAM 2 over one camera: a session on a kernel of its own (the one-camera facade;
    see the module docstring for the API's semantics)."""

    def __init__(self, loaded: LoadedSam2, max_pinned_frames: int = 4) -> None:
        super().__init__(Sam2Kernel(loaded), max_pinned_frames)
        self.loaded = loaded
        self.model = loaded.model
        self.device = loaded.device
        self.image_size = self.kernel.image_size


def _pointers(states: Sequence[ObjectState], frame: FrameFeatures) -> NDArray[np.float32]:
    """Each state's object pointer on ``frame`` (its prompt's on the frame it was prompted), for
    appearance (``engine.lifecycle.embedder``): already computed; one copy off the device for
    every object, [N, C] floats."""
    ptrs = [s.obj_ptrs.get(frame.index, s.cond_ptr).detach().reshape(1, -1) for s in states]
    out: NDArray[np.float32] = torch.cat(ptrs, dim=0).float().cpu().numpy()
    return out
