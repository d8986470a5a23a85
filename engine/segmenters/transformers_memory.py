"""Memory of the streaming transformers video trackers (SAM 2.1, EdgeTAM, SAM 3 tracker): what
an object attends to on a frame, memory attention batched over objects with one memory layout,
the SAM heads per row, memory encoding, and the pruning that keeps the state bounded.
:class:`HfVideoMemory` holds the weights and per-shape constants; ``engine.segmenters.transformers
.HfVideoKernel`` builds the frames, prompts and propagation on it."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from engine.core.types import ObjectStateSize
from engine.models.video import LoadedVideoModel
from engine.segmenters.session import FrameFeatures, nbytes, rows_feats

NO_OBJ_SCORE = -1024.0  # transformers' logit for "no object" pixels


@dataclass
class HfObject:
    """One object's memory: its conditioning frame and a bounded window of recent frames."""

    obj_id: int
    cond_frame: int
    cond_memory: torch.Tensor  # [N, 1, mem_dim] memory tokens
    cond_ptr: torch.Tensor  # [1, hidden]
    memories: dict[int, torch.Tensor] = field(default_factory=dict)  # frame -> [N, 1, mem_dim]
    ptrs: dict[int, torch.Tensor] = field(default_factory=dict)  # frame -> [1, hidden]
    last_frame: int = -1
    low_res: torch.Tensor | None = None  # [1, 1, h, w] mask logits of last_frame
    score: torch.Tensor | None = None  # [1, 1] object score logit of last_frame

    def nbytes(self) -> int:
        held = [self.cond_memory, self.cond_ptr, *self.memories.values(), *self.ptrs.values()]
        held += [t for t in (self.low_res, self.score) if t is not None]
        return sum(nbytes(t) for t in held)

    def size(self) -> ObjectStateSize:
        return ObjectStateSize(self.obj_id, 1, len(self.memories), len(self.ptrs))

    def last_logits(self) -> torch.Tensor | None:
        return self.low_res


@dataclass
class MemoryItem:
    """What one object attends to on one frame."""

    frame: FrameFeatures
    obj: HfObject
    spatial: list[tuple[int, torch.Tensor]]  # (temporal offset, memory), the model's order
    ptr_offsets: tuple[int, ...]
    ptrs: list[torch.Tensor]

    @property
    def layout(self) -> tuple[tuple[int, ...], int]:
        return tuple(t for t, _ in self.spatial), len(self.ptrs)


@dataclass
class _Heads:
    """The SAM heads' results for a batch of rows."""

    low_res: torch.Tensor  # [B, 1, h, w]
    high_res: torch.Tensor  # [B, 1, S, S]
    ptr: torch.Tensor  # [B, hidden]
    score: torch.Tensor  # [B, 1, 1]


class HfVideoMemory:
    """The weights, per-shape constants and memory of a transformers video tracker (see the
    module docstring)."""

    def __init__(self, loaded: LoadedVideoModel) -> None:
        self.loaded = loaded
        self.model = loaded.model
        self.family = loaded.family
        self.device = loaded.device
        self.image_size = loaded.image_size
        config = self.model.config
        self.num_maskmem = int(config.num_maskmem)
        self.max_ptrs = int(config.max_object_pointers_in_encoder)
        self.hidden = int(self.model.hidden_dim)
        self.mem_dim = int(self.model.mem_dim)
        self.feat_sizes = [tuple(s) for s in self.model.backbone_feature_sizes]
        self._lut = loaded.preprocessing.lut()
        self._lut_device = torch.from_numpy(self._lut).to(self.device)
        self._vision_pos: torch.Tensor | None = None  # [HW, 1, C] of the lowest level
        self._memory_pos: torch.Tensor | None = None  # [N, 1, mem_dim]
        self._image_pe: torch.Tensor | None = None  # [1, C, h, w]
        self._ptr_pos: dict[tuple[int, ...], torch.Tensor] = {}

    def _high_res(self, feats: list[torch.Tensor], rows: int) -> list[torch.Tensor]:
        return [
            x.permute(1, 2, 0).reshape(rows, x.size(2), *s)
            for x, s in zip(feats[:-1], self.feat_sizes[:-1], strict=True)
        ]

    def _pix(self, feat: torch.Tensor) -> torch.Tensor:
        h, w = self.feat_sizes[-1]
        return feat.permute(1, 2, 0).reshape(feat.size(1), self.hidden, h, w)

    def _memory_inputs(self, frame: FrameFeatures, obj: HfObject) -> MemoryItem:
        """What ``obj`` attends to on ``frame``, in the model's order: the conditioning memory
        (offset 0), then the previous frames' memories from the oldest (``num_maskmem - 1``
        frames back) to the newest; its pointer (if not in the future) and those of the last
        ``max_object_pointers_in_encoder - 1`` frames."""
        t = frame.index
        spatial = [(0, obj.cond_memory)]
        for offset in range(self.num_maskmem - 1, 0, -1):
            mem = obj.memories.get(t - offset)
            if mem is not None:
                spatial.append((offset, mem))
        offsets: list[int] = []
        ptrs: list[torch.Tensor] = []
        if obj.cond_frame <= t:
            offsets.append(t - obj.cond_frame)
            ptrs.append(obj.cond_ptr)
        for d in range(1, self.max_ptrs):
            if t - d < 0:
                break
            ptr = obj.ptrs.get(t - d)
            if ptr is not None:
                offsets.append(d)
                ptrs.append(ptr)
        return MemoryItem(frame, obj, spatial, tuple(offsets), ptrs)

    def _attend(self, group: list[MemoryItem]) -> torch.Tensor:
        """Memory attention over objects with one memory layout, as one batch -> [G, C, h, w]."""
        model = self.model
        batch = len(group)
        dtype = self.model.dtype
        mems, poses = [], []
        n_ptr_tokens = 0
        for it in group:
            parts = [m for _, m in it.spatial]
            pos = [self._spatial_pos(t) for t, _ in it.spatial]
            if it.ptrs:
                ptr_tokens, ptr_pos = self._pointer_tokens(it)
                parts.append(ptr_tokens)
                pos.append(ptr_pos)
                n_ptr_tokens = ptr_tokens.shape[0]
            mem = torch.cat(
                [p.to(dtype) if self.family.memory_to_compute_dtype else p for p in parts]
            )
            mems.append(mem[:, 0])
            poses.append(torch.cat(pos)[:, 0])
        # [B, N, C] contiguous handed over as the [N, B, C] view the module transposes back.
        memory = torch.stack(mems).transpose(0, 1)
        memory_pos = torch.stack(poses).transpose(0, 1)
        curr = rows_feats([it.frame for it in group], levels=slice(-1, None))[0]
        assert self._vision_pos is not None
        extra = {"num_spatial_memory_tokens": len(group[0].spatial)}
        out: torch.Tensor = model.memory_attention(
            current_vision_features=curr,
            memory=memory,
            current_vision_position_embeddings=self._vision_pos.expand(-1, batch, -1),
            memory_posision_embeddings=memory_pos,
            num_object_pointer_tokens=n_ptr_tokens,
            **(extra if self.family.counts_spatial_memories else {}),
        )
        h, w = self.feat_sizes[-1]
        # [1, B, HW, C] -> [B, C, h, w]
        return out[0].transpose(1, 2).reshape(batch, self.hidden, h, w)

    def _spatial_pos(self, offset: int) -> torch.Tensor:
        assert self._memory_pos is not None
        temporal: torch.Tensor = self.model.memory_temporal_positional_encoding[offset - 1]
        return self._memory_pos + temporal

    def _pointer_tokens(self, it: MemoryItem) -> tuple[torch.Tensor, torch.Tensor]:
        """An object's pointers as memory tokens with their temporal encoding ([P', 1, mem_dim]
        each; a pointer wider than mem_dim is split into hidden / mem_dim tokens)."""
        pos = self._ptr_pos.get(it.ptr_offsets)
        if pos is None:
            _, pos = self.model._process_object_pointers(
                list(it.ptr_offsets), it.ptrs, self.max_ptrs, 1, self.hidden, self.device
            )
            self._ptr_pos[it.ptr_offsets] = pos
        ptrs = torch.stack(it.ptrs)  # [P, 1, hidden]
        if self.mem_dim < self.hidden:
            splits = self.hidden // self.mem_dim
            ptrs = ptrs.reshape(-1, 1, splits, self.mem_dim).permute(0, 2, 1, 3).flatten(0, 1)
        return ptrs, pos

    def _heads(self, pix: torch.Tensor, high_res: list[torch.Tensor]) -> _Heads:
        """The SAM heads of ``_single_frame_forward`` (no prompt), per row of a batch."""
        model = self.model
        batch = pix.shape[0]
        if self._image_pe is None:
            self._image_pe = model.get_image_wide_positional_embeddings()
        points = torch.zeros(batch, 1, 1, 2, dtype=pix.dtype, device=pix.device)
        labels = -torch.ones(batch, 1, 1, dtype=torch.int32, device=pix.device)
        sparse, dense = model.prompt_encoder(
            input_points=points, input_labels=labels, input_boxes=None, input_masks=None
        )
        multimask = model._use_multimask(False, None)
        low_multi, iou, tokens, scores = model.mask_decoder(
            image_embeddings=pix,
            image_positional_embeddings=self._image_pe.repeat(batch, 1, 1, 1),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask,
            high_resolution_features=high_res,
        )
        appearing = scores > 0  # [B, 1, 1]
        low_multi = torch.where(appearing[:, None, None], low_multi, NO_OBJ_SCORE)
        high_multi = (
            F.interpolate(
                low_multi.squeeze(1).float(),
                size=(self.image_size, self.image_size),
                mode="bilinear",
                align_corners=False,
            )
            .unsqueeze(1)
            .to(low_multi.dtype)
        )
        token = tokens[:, :, 0]
        if multimask:
            rows = torch.arange(batch, device=pix.device)
            best = torch.argmax(iou, dim=-1)[:, 0]
            low, high = low_multi[rows, 0, best][:, None], high_multi[rows, 0, best][:, None]
            if tokens.size(2) > 1:
                token = tokens[rows, 0, best][:, None]
        else:
            low, high = low_multi[:, :, 0], high_multi[:, :, 0]
        ptr = model.object_pointer_proj(token)
        lam = appearing.to(ptr.dtype)
        ptr = lam * ptr + (1 - lam) * model.no_object_pointer
        return _Heads(low, high, ptr.reshape(batch, self.hidden), scores)

    def _encode_memory(
        self, feat: torch.Tensor, high_res: torch.Tensor, scores: torch.Tensor, *, prompt: bool
    ) -> list[torch.Tensor]:
        """Memory tokens of a batch of rows, one [N, 1, mem_dim] per row, kept as the family
        keeps them."""
        features, pos = self.model._encode_new_memory(
            current_vision_feats=feat,
            pred_masks_high_res=high_res,
            object_score_logits=scores,
            is_mask_from_pts=prompt,
        )
        if self.family.memory_batch_first:  # [B, N, C] -> [N, B, C]
            features, pos = features.transpose(0, 1), pos.transpose(0, 1)
        if self._memory_pos is None:
            self._memory_pos = pos[:, :1].clone()
        return [features[:, i : i + 1].clone() for i in range(features.shape[1])]

    def _prune(self, obj: HfObject, next_frame: int) -> None:
        """Free what no frame from ``next_frame`` on can attend to."""
        oldest_mem = next_frame - (self.num_maskmem - 1)
        for t in [t for t in obj.memories if t < oldest_mem]:
            del obj.memories[t]
        oldest_ptr = next_frame - (self.max_ptrs - 1)
        for t in [t for t in obj.ptrs if t < oldest_ptr]:
            del obj.ptrs[t]
