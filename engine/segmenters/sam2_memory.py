"""Memory of streaming SAM 2 (the ``sam2`` package's ``SAM2Base``): what an object attends to
on a frame (its conditioning memory, a window of recent memories, its object pointers, in the
official order), memory attention batched over objects with one memory layout, memory encoding,
and the pruning that keeps the state bounded. :class:`Sam2Memory` holds the weights and the
per-shape constants; ``engine.segmenters.sam2.Sam2Kernel`` builds the frames, prompts and
propagation on it."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from engine.core.types import ObjectStateSize
from engine.models.sam2 import LoadedSam2
from engine.segmenters.session import FrameFeatures, nbytes, rows_feats

IMG_MEAN = (0.485, 0.456, 0.406)
IMG_STD = (0.229, 0.224, 0.225)


@dataclass
class LastOutput:
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
    last: LastOutput | None = None

    def nbytes(self) -> int:
        n = nbytes(self.cond_memory) + nbytes(self.cond_ptr)
        n += sum(nbytes(t) for t in self.memories.values())
        n += sum(nbytes(t) for t in self.obj_ptrs.values())
        if self.last is not None:
            n += nbytes(self.last.low_res_logits) + nbytes(self.last.score)
        return n

    def size(self) -> ObjectStateSize:
        return ObjectStateSize(
            self.obj_id, int(self.cond_memory.shape[0]), len(self.memories), len(self.obj_ptrs)
        )

    def last_logits(self) -> torch.Tensor | None:
        return None if self.last is None else self.last.low_res_logits


@dataclass
class MemoryInputs:
    """What one object attends to on one frame, before batching."""

    state: ObjectState
    spatial: list[tuple[int, torch.Tensor]]  # (t_pos, memory) in the official order
    ptr_positions: tuple[int, ...]
    ptrs: list[torch.Tensor]

    @property
    def layout(self) -> tuple[tuple[int, ...], int]:
        return tuple(t for t, _ in self.spatial), len(self.ptrs)


class Sam2Memory:
    """The weights, the per-shape constants and the memory of streaming SAM 2 (see the module
    docstring)."""

    def __init__(self, loaded: LoadedSam2) -> None:
        self.loaded = loaded
        self.model = loaded.model
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

    def _memory_inputs(self, state: ObjectState, frame_idx: int) -> MemoryInputs:
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
        return MemoryInputs(state, spatial, tuple(positions), ptrs)

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
        self, entries: list[tuple[FrameFeatures, MemoryInputs]], hidden: int, h: int, w: int
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
        curr = rows_feats([frame for frame, _ in entries], levels=slice(-1, None))[0]
        curr_pos = self._vision_pos[-1].expand(-1, batch, -1)
        out: torch.Tensor = model.memory_attention(
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

    def _pointer_tokens(self, it: MemoryInputs) -> tuple[torch.Tensor, torch.Tensor, int]:
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


def _normalisation_lut() -> np.ndarray:
    """[3, 256] float32: the official normalisation of every uint8 level, per RGB channel."""
    levels = torch.from_numpy(np.arange(256) / 255.0).to(torch.float32)
    mean = torch.tensor(IMG_MEAN, dtype=torch.float32)[:, None]
    std = torch.tensor(IMG_STD, dtype=torch.float32)[:, None]
    lut: np.ndarray = ((levels[None, :] - mean) / std).numpy()
    return lut
