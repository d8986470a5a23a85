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
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from engine.models.sam2 import LoadedSam2
from stream.errors import PromptError

log = logging.getLogger(__name__)

Box = tuple[float, float, float, float]
IMG_MEAN = (0.485, 0.456, 0.406)
IMG_STD = (0.229, 0.224, 0.225)
# Stands in for the official predictor's video length: pointers are capped by
# max_obj_ptrs_in_encoder only.
UNBOUNDED_FRAMES = 1 << 40
# On CPU, objects per memory-attention / memory-encoding call are capped so that one call's
# per-object tensors stay under this many bytes (see StreamingSegmenter._attention_chunk).
# Hiera-T at 512 px (7.4 MiB of attention, 4 MiB of encoding per object) then runs one object
# per call: 9 % faster than two per call (16 MiB), in lockstep over 9 frames with 16 objects.
CPU_BATCH_BYTES = 4 << 20


@dataclass(frozen=True)
class SegmentOutput:
    """One object's result on one frame."""

    obj_id: int
    mask: np.ndarray  # HxW bool at the original frame resolution
    score: float  # SAM 2 object score logit; < 0 means "object not present"
    box: Box | None  # xyxy pixel edges of the mask (x2 = last column + 1), None if empty
    embedding: np.ndarray | None = None  # SAM 2's object pointer on this frame, float32 [C]


@dataclass(frozen=True)
class ObjectStateSize:
    obj_id: int
    cond_frames: int  # conditioning memories held (rows of its conditioning memory tensor)
    memories: int  # non-conditioning spatial memories held
    obj_ptrs: int  # non-conditioning object pointers held


@dataclass(frozen=True)
class StateSize:
    """What the segmenter holds, for stats and the memory-bound test."""

    objects: tuple[ObjectStateSize, ...]
    frames: int  # frames whose image features are held (current + pinned)
    pinned: int
    object_bytes: int  # tensors held in object state
    frame_bytes: int  # image features held
    total_bytes: int


@dataclass(frozen=True)
class PreparedFrame:
    """A frame turned into model input by ``StreamingSegmenter.prepare`` (no model involved, so
    another thread can prepare the next frame while the model runs on this one)."""

    image: torch.Tensor  # [1, 3, S, S] float32, normalised, on the model's device
    height: int  # original frame size
    width: int


@dataclass
class FrameFeatures:
    """Image features of one frame (batch of one), as ``_prepare_backbone_features`` flattens them."""

    index: int
    height: int  # original frame size
    width: int
    vision_feats: list[torch.Tensor]  # per level [HW, 1, C]; the last is the lowest resolution

    def nbytes(self) -> int:
        return sum(_nbytes(t) for t in self.vision_feats)


@dataclass
class FrameResult:
    """An object's raw output on one frame (kept for the latest frame only)."""

    frame_idx: int
    low_res_logits: torch.Tensor  # [1, 1, S/4, S/4] mask logits
    score: torch.Tensor  # [1, 1] object score logit


@dataclass
class ObjectState:
    """Memory of one object: its conditioning frame plus a bounded window of recent frames."""

    obj_id: int
    cond_frame: int
    cond_memory: torch.Tensor  # [1, mem_dim, h, w], stored in bf16 like the official predictor
    cond_ptr: torch.Tensor  # [1, hidden_dim]
    memories: dict[int, torch.Tensor] = field(default_factory=dict)  # frame -> spatial memory
    obj_ptrs: dict[int, torch.Tensor] = field(default_factory=dict)  # frame -> object pointer
    last: FrameResult | None = None

    def nbytes(self) -> int:
        n = _nbytes(self.cond_memory) + _nbytes(self.cond_ptr)
        n += sum(_nbytes(t) for t in self.memories.values())
        n += sum(_nbytes(t) for t in self.obj_ptrs.values())
        if self.last is not None:
            n += _nbytes(self.last.low_res_logits) + _nbytes(self.last.score)
        return n


@dataclass
class _MemoryInputs:
    """What one object attends to on one frame, before batching."""

    state: ObjectState
    spatial: list[tuple[int, torch.Tensor]]  # (t_pos, memory) in the official order
    ptr_positions: tuple[int, ...]
    ptrs: list[torch.Tensor]

    @property
    def layout(self) -> tuple[tuple[int, ...], int]:
        return tuple(t for t, _ in self.spatial), len(self.ptrs)


@dataclass
class _Work:
    """One session's part of a batched propagation: its frame and the objects to propagate."""

    session: Sam2Session
    frame: FrameFeatures
    todo: list[ObjectState]


class Sam2Kernel:
    """The model side of streaming SAM 2, shared by every camera: weights, per-shape constants,
    preprocessing, and the batched calls. ``encode`` runs the image encoder once over the newest
    frame of several sessions; ``track`` propagates every object of several sessions in one
    batch. A session (:class:`Sam2Session`) holds one camera's frames and objects."""

    def __init__(self, loaded: LoadedSam2) -> None:
        self.loaded = loaded
        self.model: Any = loaded.model
        self.device = loaded.device
        self.image_size = int(self.model.image_size)
        self._lut = _normalisation_lut()
        self._lut_device = torch.from_numpy(self._lut).to(self.device)
        # Constant across frames, objects and cameras (shape-dependent only), computed once.
        self._vision_pos: list[torch.Tensor] | None = None  # per level [HW, 1, C]
        self._feat_sizes: list[tuple[int, int]] | None = None
        self._maskmem_pos: torch.Tensor | None = None  # [1, mem_dim, h, w]
        self._mem_pos_by_tpos: dict[int, torch.Tensor] = {}
        self._ptr_pos_cache: dict[tuple[int, ...], torch.Tensor] = {}

    def new_session(self, max_pinned_frames: int = 4) -> Sam2Session:
        return Sam2Session(self, max_pinned_frames)

    # ------------------------------------------------------------------ frames

    def prepare(self, image_bgr: np.ndarray) -> PreparedFrame:
        """Check one BGR uint8 frame (HxWx3) and turn it into model input; thread-safe."""
        height, width = check_frame(image_bgr)
        with torch.inference_mode():
            return PreparedFrame(self._preprocess(image_bgr), height, width)

    def encode(self, items: Sequence[tuple[Sam2Session, np.ndarray | PreparedFrame]]) -> list[int]:
        """Run the image encoder once over one new frame of each session (a BGR uint8 image or
        what ``prepare`` made of it); each becomes its session's latest frame. Returns the
        frame indices, in order. A session may appear once per call."""
        if not items:
            return []
        sessions = [s for s, _ in items]
        if len({id(s) for s in sessions}) != len(sessions):
            raise ValueError("encode() takes one frame per session")
        for s in sessions:
            if s.kernel is not self:
                raise ValueError("session belongs to another kernel")
        prepared = [f if isinstance(f, PreparedFrame) else self.prepare(f) for _, f in items]
        images = prepared[0].image if len(prepared) == 1 else torch.cat([p.image for p in prepared])
        with torch.inference_mode(), self.loaded.autocast():
            backbone_out = self.model.forward_image(images)
            _, vision_feats, vision_pos, feat_sizes = self.model._prepare_backbone_features(
                backbone_out
            )
        if self._vision_pos is None:
            self._vision_pos = [p[:, :1] for p in vision_pos]
            self._feat_sizes = [tuple(s) for s in feat_sizes]
        out = []
        for i, (session, p) in enumerate(zip(sessions, prepared, strict=True)):
            # With several frames in the batch each session keeps its own contiguous copy, so
            # that a pinned frame does not hold the other cameras' features alive.
            feats = (
                list(vision_feats)
                if len(prepared) == 1
                else [f[:, i : i + 1].contiguous() for f in vision_feats]
            )
            out.append(session._set_latest(p.height, p.width, feats))
        return out

    def _preprocess(self, image_bgr: np.ndarray) -> torch.Tensor:
        # Same values as sam2.utils.misc._load_img_as_tensor + load_video_frames (PIL resize to the
        # square input, float64 / 255 cast to float32, minus mean, divided by std in float32),
        # through a per-channel lookup table of those 256 values (``_normalisation_lut``): the
        # result is bit-identical and 4-5x cheaper than the arithmetic. Resizing works per channel,
        # so BGR->RGB is folded into the table lookup.
        size = self.image_size
        if self.loaded.preprocess == "device":
            return self._preprocess_on_device(image_bgr)
        small = np.asarray(Image.fromarray(np.ascontiguousarray(image_bgr)).resize((size, size)))
        if self.device.type == "cpu":
            out = np.empty((3, size, size), dtype=np.float32)
            for c in range(3):
                np.take(self._lut[c], small[..., 2 - c], out=out[c])
            return torch.from_numpy(out).unsqueeze(0)
        levels = torch.from_numpy(small).to(self.device, non_blocking=True)
        levels = levels.permute(2, 0, 1).flip(0).reshape(3, -1).long()
        return torch.gather(self._lut_device, 1, levels).view(1, 3, size, size)

    def _preprocess_on_device(self, image_bgr: np.ndarray) -> torch.Tensor:
        """The frame resized where the model runs (``models.preprocess: device``): antialiased
        bicubic as PIL's, rounded to grey levels as PIL's uint8 output, then the same lookup
        table. Within one grey level of the PIL path on natural images (not bit-exact); on CUDA
        it takes the CPU resize (~10 ms for 720p -> 1024 px) off the frame loop."""
        size = self.image_size
        frame = torch.from_numpy(np.ascontiguousarray(image_bgr)).to(self.device)
        rgb = frame.permute(2, 0, 1).flip(0).unsqueeze(0).float()
        resized = F.interpolate(
            rgb, size=(size, size), mode="bicubic", antialias=True, align_corners=False
        )
        levels = resized.round_().clamp_(0, 255).long().view(3, -1)
        return torch.gather(self._lut_device, 1, levels).view(1, 3, size, size)

    # ------------------------------------------------------------------ prompts

    def _condition(
        self,
        frame: FrameFeatures,
        point_inputs: dict[str, torch.Tensor] | None,
        mask_inputs: torch.Tensor | None,
    ) -> dict[str, Any]:
        """SAM on one frame from a prompt, as an initial conditioning frame (no memory)."""
        feats = self._batched_feats(frame, 1)
        assert self._feat_sizes is not None
        out: dict[str, Any] = self.model.track_step(
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

    def _conditioned_state(
        self, obj_id: int, frame: FrameFeatures, point_inputs: Any, mask_inputs: Any
    ) -> ObjectState:
        """A new object state conditioned on ``frame`` from a validated prompt."""
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
            last=FrameResult(
                frame.index, out["pred_masks"].clone(), out["object_score_logits"].clone()
            ),
        )

    def _prompt_inputs(
        self, frame: FrameFeatures, box: Any, points: Any, point_labels: Any, mask: Any
    ) -> tuple[dict[str, torch.Tensor] | None, torch.Tensor | None]:
        """Validate a prompt and turn it into SAM 2 inputs the way the official predictor does."""
        height, width = frame.height, frame.width
        prompt = point_prompt(box, points, point_labels, mask, width, height)
        if prompt is None:
            return None, self._mask_input(mask, height, width)
        coords, labels = prompt
        pts_t = torch.tensor(coords, dtype=torch.float32)
        pts_t = pts_t / torch.tensor([width, height])
        pts_t = pts_t * self.image_size
        return {
            "point_coords": pts_t.unsqueeze(0).to(self.device),
            "point_labels": torch.tensor(labels, dtype=torch.int32).unsqueeze(0).to(self.device),
        }, None

    def _mask_input(self, mask: Any, height: int, width: int) -> torch.Tensor:
        return mask_prompt(mask, height, width, self.image_size, self.device)

    # ------------------------------------------------------------------ tracking

    def track(self, items: Sequence[tuple[Sam2Session, int]]) -> list[dict[int, SegmentOutput]]:
        """Propagate every object of every session that has no output on its session's latest
        frame (``frame_idx`` must be that frame), all in one batch; return each session's
        outputs of all its objects on that frame, in order."""
        work: list[_Work] = []
        for session, frame_idx in items:
            if session.kernel is not self:
                raise ValueError("session belongs to another kernel")
            frame = session._latest
            if frame is None or frame_idx != frame.index:
                raise PromptError(
                    f"track() needs the latest frame ({session.latest_frame}), got {frame_idx}"
                )
            todo = [
                s
                for s in session._objects.values()
                if s.last is None or s.last.frame_idx != frame_idx
            ]
            work.append(_Work(session, frame, todo))
        if any(w.todo for w in work):
            with torch.inference_mode(), self.loaded.autocast():
                self._propagate([w for w in work if w.todo])
        results = []
        for w in work:
            for state in w.session._objects.values():
                self._prune(state, w.frame.index + 1)
            present = [
                s
                for s in w.session._objects.values()
                if s.last is not None and s.last.frame_idx == w.frame.index
            ]
            results.append(self._outputs(w.frame, present))
        return results

    def _propagate(self, work: list[_Work]) -> None:
        assert self._feat_sizes is not None and self._vision_pos is not None
        model = self.model
        hidden = model.hidden_dim
        h, w = self._feat_sizes[-1]
        self._ptr_pos_cache.clear()  # keyed by pointer positions, which shift every frame
        # Objects of every session, grouped by memory layout (same tokens, so one attention call).
        groups: dict[tuple[tuple[int, ...], int], list[tuple[FrameFeatures, _MemoryInputs]]] = {}
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
        feats = self._rows_feats(frames)
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
                self._rows_feats(frames[start : start + chunk]),
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
            state.last = FrameResult(
                frame.index, low_res[i : i + 1].clone(), scores[i : i + 1].clone()
            )

    def _attention_chunk(self, item: _MemoryInputs, hidden: int) -> int:
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

    def _memory_inputs(self, state: ObjectState, frame_idx: int) -> _MemoryInputs:
        """The memories and pointers ``state`` attends to on ``frame_idx``, in the official order
        (``SAM2Base._prepare_memory_conditioned_features`` with one conditioning frame)."""
        model = self.model
        spatial: list[tuple[int, torch.Tensor]] = [(0, state.cond_memory)]
        for t_pos, t in self._memory_frames(frame_idx):
            mem = state.memories.get(t)
            if mem is not None:
                spatial.append((t_pos, mem))
        positions: list[int] = []
        ptrs: list[torch.Tensor] = []
        if model.use_obj_ptrs_in_encoder:
            if not model.only_obj_ptrs_in_the_past_for_eval or state.cond_frame <= frame_idx:
                d = frame_idx - state.cond_frame
                positions.append(d if model.use_signed_tpos_enc_to_obj_ptrs else abs(d))
                ptrs.append(state.cond_ptr)
            for t_diff in range(1, model.max_obj_ptrs_in_encoder):
                t = frame_idx - t_diff
                if t < 0:
                    break
                ptr = state.obj_ptrs.get(t)
                if ptr is not None:
                    positions.append(t_diff)
                    ptrs.append(ptr)
        return _MemoryInputs(state, spatial, tuple(positions), ptrs)

    def _memory_frames(self, frame_idx: int) -> list[tuple[int, int]]:
        """(t_pos, frame) of the non-conditioning memories that ``frame_idx`` attends to."""
        model = self.model
        stride = model.memory_temporal_stride_for_eval
        frames = []
        for t_pos in range(1, model.num_maskmem):
            t_rel = model.num_maskmem - t_pos
            if t_rel == 1:
                prev = frame_idx - 1
            else:
                prev = ((frame_idx - 2) // stride) * stride - (t_rel - 2) * stride
            frames.append((t_pos, prev))
        return frames

    def _attend(
        self, entries: list[tuple[FrameFeatures, _MemoryInputs]], hidden: int, h: int, w: int
    ) -> torch.Tensor:
        """Memory attention for objects with one memory layout (of one or several sessions'
        frames), as one batch -> [G, C, h, w]."""
        assert self._vision_pos is not None
        model = self.model
        batch = len(entries)
        mems: list[torch.Tensor] = []
        poses: list[torch.Tensor] = []
        num_ptr_tokens = 0
        for _, it in entries:
            to_cat = [m.flatten(2).permute(2, 0, 1) for _, m in it.spatial]
            to_cat_pos = [self._spatial_pos(t_pos) for t_pos, _ in it.spatial]
            if it.ptrs:
                ptrs, pos, num_ptr_tokens = self._pointer_tokens(it)
                to_cat.append(ptrs)
                to_cat_pos.append(pos)
            mems.append(torch.cat(to_cat, dim=0)[:, 0])
            poses.append(torch.cat(to_cat_pos, dim=0)[:, 0])
        # [B, N, C] contiguous, handed over as the [N, B, C] view the module expects: it
        # transposes back to batch-first, so its projections read contiguous rows (a [N, B, C]
        # concatenation costs a strided copy per layer: ~15 % of Hiera-T's attention on CPU).
        memory = torch.stack(mems, dim=0).transpose(0, 1)
        memory_pos = torch.stack(poses, dim=0).transpose(0, 1)
        curr = self._rows_feats([frame for frame, _ in entries], levels=slice(-1, None))[0]
        curr_pos = self._vision_pos[-1].expand(-1, batch, -1)
        out = model.memory_attention(
            curr=[curr],
            curr_pos=[curr_pos],
            memory=memory,
            memory_pos=memory_pos,
            num_obj_ptr_tokens=num_ptr_tokens,
        )
        return out.permute(1, 2, 0).view(batch, hidden, h, w)

    def _spatial_pos(self, t_pos: int) -> torch.Tensor:
        """Spatial + temporal position encoding of a memory at ``t_pos`` ([hw, 1, mem_dim])."""
        cached = self._mem_pos_by_tpos.get(t_pos)
        if cached is None:
            assert self._maskmem_pos is not None
            model = self.model
            enc = self._maskmem_pos.flatten(2).permute(2, 0, 1)
            cached = enc + model.maskmem_tpos_enc[model.num_maskmem - t_pos - 1]
            self._mem_pos_by_tpos[t_pos] = cached
        return cached

    def _pointer_tokens(self, it: _MemoryInputs) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Object pointers as memory tokens and their temporal encoding ([P, 1, mem_dim] each)."""
        model = self.model
        hidden, mem_dim = model.hidden_dim, model.mem_dim
        obj_ptrs = torch.stack(it.ptrs, dim=0)  # [P, 1, C]
        obj_pos = self._ptr_pos_cache.get(it.ptr_positions)
        if obj_pos is None:
            if model.add_tpos_enc_to_obj_ptrs:
                from sam2.modeling.sam2_utils import get_1d_sine_pe

                t_diff_max = model.max_obj_ptrs_in_encoder - 1
                tpos_dim = hidden if model.proj_tpos_enc_in_obj_ptrs else mem_dim
                pos = torch.tensor(it.ptr_positions).to(device=self.device, non_blocking=True)
                pos = get_1d_sine_pe(pos / t_diff_max, dim=tpos_dim)
                pos = model.obj_ptr_tpos_proj(pos)
                obj_pos = pos.unsqueeze(1).expand(-1, 1, mem_dim)
            else:
                obj_pos = obj_ptrs.new_zeros(len(it.ptr_positions), 1, mem_dim)
            if mem_dim < hidden:
                obj_pos = obj_pos.repeat_interleave(hidden // mem_dim, dim=0)
            self._ptr_pos_cache[it.ptr_positions] = obj_pos
        if mem_dim < hidden:
            obj_ptrs = obj_ptrs.reshape(-1, 1, hidden // mem_dim, mem_dim)
            obj_ptrs = obj_ptrs.permute(0, 2, 1, 3).flatten(0, 1)
        return obj_ptrs, obj_pos, obj_ptrs.shape[0]

    def _encode_memory(
        self,
        feats: list[torch.Tensor],
        high_res: torch.Tensor,
        scores: torch.Tensor,
        *,
        from_prompt: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        assert self._feat_sizes is not None
        maskmem, maskmem_pos = self.model._encode_new_memory(
            current_vision_feats=feats,
            feat_sizes=self._feat_sizes,
            pred_masks_high_res=high_res,
            object_score_logits=scores,
            is_mask_from_pts=from_prompt,
        )
        if self._maskmem_pos is None:
            self._maskmem_pos = maskmem_pos[-1][0:1].clone()
        # Stored in bf16, as the official predictor stores its memories.
        return maskmem.to(torch.bfloat16), maskmem_pos[-1]

    def _batched_feats(self, frame: FrameFeatures, batch: int) -> list[torch.Tensor]:
        return [x.expand(-1, batch, -1) for x in frame.vision_feats]

    def _batched_pos(self, batch: int) -> list[torch.Tensor]:
        assert self._vision_pos is not None
        return [x.expand(-1, batch, -1) for x in self._vision_pos]

    def _prune(self, state: ObjectState, next_frame: int) -> None:
        """Free what no frame from ``next_frame`` on can attend to."""
        oldest_mem = min((t for _, t in self._memory_frames(next_frame)), default=next_frame)
        for t in [t for t in state.memories if t < oldest_mem]:
            del state.memories[t]
        oldest_ptr = next_frame - (self.model.max_obj_ptrs_in_encoder - 1)
        for t in [t for t in state.obj_ptrs if t < oldest_ptr]:
            del state.obj_ptrs[t]

    # ------------------------------------------------------------------ outputs

    def _to_frame_res(self, low_res: torch.Tensor, frame: FrameFeatures) -> torch.Tensor:
        # As SAM2VideoPredictor._get_orig_video_res_output.
        if low_res.shape[-2:] == (frame.height, frame.width):
            return low_res.float()
        return F.interpolate(
            low_res.float(), size=(frame.height, frame.width), mode="bilinear", align_corners=False
        )

    def _outputs(self, frame: FrameFeatures, states: list[ObjectState]) -> dict[int, SegmentOutput]:
        if not states:
            return {}
        results = [s.last for s in states]
        assert all(r is not None for r in results)
        low_res = torch.cat([r.low_res_logits for r in results if r is not None], dim=0)
        scores = torch.cat([r.score for r in results if r is not None], dim=0).float().cpu().numpy()
        with torch.inference_mode():
            masks = (self._to_frame_res(low_res, frame) > 0)[:, 0].cpu().numpy()
        pointers = _pointers(states, frame)
        return {
            s.obj_id: SegmentOutput(
                s.obj_id, masks[i], float(scores[i, 0]), mask_box(masks[i]), pointers[i]
            )
            for i, s in enumerate(states)
        }

    def _rows_feats(
        self, frames: Sequence[FrameFeatures], levels: slice = slice(None)
    ) -> list[torch.Tensor]:
        """Per level [HW, B, C] features for a batch whose row ``i`` is an object on
        ``frames[i]``: a view of one frame's features when every row shares it (one camera),
        else consecutive rows of one frame expanded and the runs concatenated."""
        runs: list[tuple[FrameFeatures, int]] = []
        for frame in frames:
            if runs and runs[-1][0] is frame:
                runs[-1] = (frame, runs[-1][1] + 1)
            else:
                runs.append((frame, 1))
        if len(runs) == 1:
            return self._batched_feats(runs[0][0], runs[0][1])[levels]
        per_run = [self._batched_feats(frame, n)[levels] for frame, n in runs]
        return [torch.cat(level, dim=1) for level in zip(*per_run, strict=True)]


class Sam2Session:
    """One camera's streaming state on a shared :class:`Sam2Kernel`: its frame indices, latest
    and pinned frames' features, and its objects' memories (see the module docstring for the
    semantics of each call)."""

    def __init__(self, kernel: Sam2Kernel, max_pinned_frames: int = 4) -> None:
        if max_pinned_frames < 0:
            raise ValueError("max_pinned_frames must be >= 0")
        self.kernel = kernel
        self.max_pinned_frames = max_pinned_frames
        self._next_index = 0
        self._latest: FrameFeatures | None = None
        self._pinned: OrderedDict[int, FrameFeatures] = OrderedDict()
        self._objects: dict[int, ObjectState] = {}

    # ------------------------------------------------------------------ frames

    @property
    def object_ids(self) -> list[int]:
        return list(self._objects)

    @property
    def latest_frame(self) -> int | None:
        return None if self._latest is None else self._latest.index

    def add_frame(self, frame: np.ndarray | PreparedFrame) -> int:
        """Encode one frame (a BGR uint8 image, or one ``prepare`` made) once; return its index."""
        return self.kernel.encode([(self, frame)])[0]

    def _set_latest(self, height: int, width: int, vision_feats: list[torch.Tensor]) -> int:
        index = self._next_index
        self._next_index += 1
        self._latest = FrameFeatures(index, height, width, vision_feats)
        return index

    def pin(self, frame_idx: int) -> None:
        """Keep ``frame_idx``'s features for late prompts; the oldest pin is dropped past the bound."""
        frame = self._frame(frame_idx)
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

    def _frame(self, frame_idx: int) -> FrameFeatures:
        if self._latest is not None and frame_idx == self._latest.index:
            return self._latest
        frame = self._pinned.get(frame_idx)
        if frame is None:
            raise PromptError(
                f"frame {frame_idx} is not available (current frame: {self.latest_frame}, pinned: {list(self._pinned)})"
            )
        return frame

    # ------------------------------------------------------------------ prompts

    def add_prompt(
        self,
        obj_id: int,
        frame_idx: int,
        *,
        box: Any = None,
        points: Any = None,
        point_labels: Any = None,
        mask: Any = None,
    ) -> SegmentOutput:
        """Condition ``obj_id`` on ``frame_idx`` (adds it, or re-seeds it); see the module docstring."""
        frame = self._frame(frame_idx)
        point_inputs, mask_inputs = self.kernel._prompt_inputs(
            frame, box, points, point_labels, mask
        )
        state = self.kernel._conditioned_state(obj_id, frame, point_inputs, mask_inputs)
        if obj_id in self._objects:
            log.debug("object %d re-seeded on frame %d", obj_id, frame_idx)
        self._objects[obj_id] = state
        return self.kernel._outputs(frame, [state])[obj_id]

    def segment_box(self, frame_idx: int, box: Any) -> np.ndarray:
        """A single-frame mask (HxW bool) from a box, without memory and without adding an object."""
        frame = self._frame(frame_idx)
        kernel = self.kernel
        point_inputs, _ = kernel._prompt_inputs(frame, box, None, None, None)
        with torch.inference_mode(), kernel.loaded.autocast():
            out = kernel._condition(frame, point_inputs, None)
            logits = kernel._to_frame_res(out["pred_masks"], frame)
        return (logits[0, 0] > 0).cpu().numpy()

    def track(self, frame_idx: int) -> dict[int, SegmentOutput]:
        """Propagate all objects without an output on ``frame_idx`` (the latest frame); return all."""
        return self.kernel.track([(self, frame_idx)])[0]

    # ------------------------------------------------------------------ objects and state

    def last_logits(self, obj_id: int) -> torch.Tensor:
        """The low-res mask logits ([1, 1, S/4, S/4]) of ``obj_id``'s latest output (tests, debugging)."""
        state = self._objects.get(obj_id)
        if state is None or state.last is None:
            raise PromptError(f"unknown object id {obj_id}")
        return state.last.low_res_logits

    def remove_object(self, obj_id: int) -> None:
        if obj_id not in self._objects:
            raise PromptError(f"unknown object id {obj_id} (known: {self.object_ids})")
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
        objects = tuple(
            ObjectStateSize(s.obj_id, int(s.cond_memory.shape[0]), len(s.memories), len(s.obj_ptrs))
            for s in self._objects.values()
        )
        frames: dict[int, FrameFeatures] = dict(self._pinned)
        if self._latest is not None:
            frames[self._latest.index] = self._latest
        object_bytes = sum(s.nbytes() for s in self._objects.values())
        frame_bytes = sum(f.nbytes() for f in frames.values())
        return StateSize(
            objects,
            len(frames),
            len(self._pinned),
            object_bytes,
            frame_bytes,
            object_bytes + frame_bytes,
        )


class StreamingSegmenter(Sam2Session):
    """Streaming SAM 2 over one camera: a session on a kernel of its own (the one-camera facade;
    see the module docstring for the API's semantics)."""

    def __init__(self, loaded: LoadedSam2, max_pinned_frames: int = 4) -> None:
        super().__init__(Sam2Kernel(loaded), max_pinned_frames)
        self.loaded = loaded
        self.model: Any = loaded.model
        self.device = loaded.device
        self.image_size = self.kernel.image_size

    def prepare(self, image_bgr: np.ndarray) -> PreparedFrame:
        """Check one BGR uint8 frame (HxWx3) and turn it into model input; thread-safe."""
        return self.kernel.prepare(image_bgr)


def _normalisation_lut() -> np.ndarray:
    """[3, 256] float32: the official normalisation of every uint8 level, per RGB channel."""
    levels = torch.from_numpy(np.arange(256) / 255.0).to(torch.float32)
    mean = torch.tensor(IMG_MEAN, dtype=torch.float32)[:, None]
    std = torch.tensor(IMG_STD, dtype=torch.float32)[:, None]
    lut: np.ndarray = ((levels[None, :] - mean) / std).numpy()
    return lut


def _pointers(states: Sequence[ObjectState], frame: FrameFeatures) -> np.ndarray:
    """Each state's object pointer on ``frame`` (its prompt's on the frame it was prompted), for
    appearance (``engine.lifecycle.embedder``): already computed; one copy off the device for
    every object, [N, C] floats."""
    ptrs = [s.obj_ptrs.get(frame.index, s.cond_ptr).detach().reshape(1, -1) for s in states]
    return torch.cat(ptrs, dim=0).float().cpu().numpy()


def mask_box(mask: np.ndarray) -> Box | None:
    """xyxy pixel edges of a boolean mask, None if empty."""
    cols = np.flatnonzero(mask.any(axis=0))
    if cols.size == 0:
        return None
    rows = np.flatnonzero(mask.any(axis=1))
    return (float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1))


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def check_frame(image_bgr: Any) -> tuple[int, int]:
    """The (height, width) of a BGR uint8 frame (HxWx3); ValueError for anything else."""
    if not isinstance(image_bgr, np.ndarray) or image_bgr.ndim != 3 or image_bgr.shape[2] != 3:
        got = getattr(image_bgr, "shape", type(image_bgr).__name__)
        raise ValueError(f"expected an HxWx3 BGR image, got {got}")
    if image_bgr.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got {image_bgr.dtype}")
    return int(image_bgr.shape[0]), int(image_bgr.shape[1])


def mask_prompt(
    mask: Any, height: int, width: int, size: int, device: torch.device
) -> torch.Tensor:
    """A frame-sized mask prompt, checked, as a [1, 1, size, size] float 0/1 tensor on
    ``device`` (area-antialiased bilinear resize, then >= 0.5); one-line PromptError."""
    arr = np.asarray(mask)
    if arr.shape != (height, width):
        raise PromptError(f"mask must be {height}x{width} (the frame size), got shape {arr.shape}")
    if arr.dtype != np.bool_:
        arr = arr > 0
    if not arr.any():
        raise PromptError("mask prompt is empty")
    m = torch.from_numpy(arr)[None, None].float().to(device)
    if (height, width) != (size, size):
        m = F.interpolate(
            m, size=(size, size), align_corners=False, mode="bilinear", antialias=True
        )
        m = (m >= 0.5).float()
    return m


def point_prompt(
    box: Any, points: Any, point_labels: Any, mask: Any, width: int, height: int
) -> tuple[list[list[float]], list[int]] | None:
    """A prompt checked against a ``width`` x ``height`` frame, as SAM 2's point inputs in frame
    pixels: the box's corners (labels 2, 3) then the points; None for a mask prompt (checked by
    the caller's model). One-line :class:`PromptError` for a bad or contradictory prompt."""
    if mask is not None:
        if box is not None or points is not None:
            raise PromptError("give either a mask or a box/points prompt, not both")
        return None
    if box is None and points is None:
        raise PromptError("a prompt needs a box, points or a mask")
    coords: list[list[float]] = []
    labels: list[int] = []
    if box is not None:
        x1, y1, x2, y2 = _validate_box(box, width, height)
        coords += [[x1, y1], [x2, y2]]
        labels += [2, 3]
    if points is not None:
        pts, lbl = _validate_points(points, point_labels, width, height)
        coords += pts
        labels += lbl
    elif point_labels is not None:
        raise PromptError("point_labels given without points")
    return coords, labels


def _validate_box(box: Any, width: int, height: int) -> Box:
    try:
        arr = np.asarray(box, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise PromptError(f"box must be 4 numbers x1,y1,x2,y2, got {box!r}") from None
    if arr.shape != (4,):
        raise PromptError(f"box must be 4 numbers x1,y1,x2,y2, got {arr.size}")
    if not np.isfinite(arr).all():
        raise PromptError(f"box has non-finite coordinates: {arr.tolist()}")
    x1, y1, x2, y2 = (float(v) for v in arr)
    if x2 <= x1 or y2 <= y1:
        raise PromptError(f"box has zero or negative area: {[x1, y1, x2, y2]}")
    if x2 <= 0 or y2 <= 0 or x1 >= width or y1 >= height:
        raise PromptError(f"box {[x1, y1, x2, y2]} is outside the {width}x{height} frame")
    x1, x2 = max(x1, 0.0), min(x2, float(width))
    y1, y2 = max(y1, 0.0), min(y2, float(height))
    return x1, y1, x2, y2


def _validate_points(
    points: Any, labels: Any, width: int, height: int
) -> tuple[list[list[float]], list[int]]:
    try:
        pts = np.asarray(points, dtype=np.float64)
    except (TypeError, ValueError):
        raise PromptError("points must be an Nx2 array of x,y pixels") from None
    if pts.ndim != 2 or pts.shape[1] != 2 or pts.shape[0] == 0:
        raise PromptError(f"points must be an Nx2 array of x,y pixels, got shape {pts.shape}")
    if not np.isfinite(pts).all():
        raise PromptError("points have non-finite coordinates")
    if (
        (pts[:, 0] < 0).any()
        or (pts[:, 0] > width).any()
        or (pts[:, 1] < 0).any()
        or (pts[:, 1] > height).any()
    ):
        raise PromptError(f"points are outside the {width}x{height} frame")
    if labels is None:
        lbl = np.ones(len(pts), dtype=np.int64)
    else:
        lbl = np.asarray(labels).reshape(-1)
        if lbl.shape != (len(pts),) or not np.isin(lbl, (0, 1)).all():
            raise PromptError(
                f"point_labels must be {len(pts)} values of 1 (positive) or 0 (negative)"
            )
    return pts.tolist(), [int(v) for v in lbl]
