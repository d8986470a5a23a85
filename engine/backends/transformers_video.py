"""Streaming transformers video trackers (SAM 2.1, EdgeTAM, SAM 3 tracker) on the engine's seams.

:class:`HfVideoKernel` / :class:`HfVideoSession` implement ``engine.protocols.SegmenterKernel`` /
``SegmenterSession`` with the semantics of ``engine.segmenter`` (read its module docstring:
frame indices, pins, prompts, re-seeding, ``track``), on a transformers ``Sam2VideoModel``,
``EdgeTamVideoModel`` or ``Sam3TrackerVideoModel`` (``engine.backends.video_models``).

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
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from engine.models.video import LoadedVideoModel
from engine.segmenter import (
    ObjectStateSize,
    PreparedFrame,
    SegmentOutput,
    StateSize,
    check_frame,
    mask_box,
    mask_prompt,
    point_prompt,
)
from stream.errors import PromptError

log = logging.getLogger(__name__)

NO_OBJ_SCORE = -1024.0  # transformers' logit for "no object" pixels


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


@dataclass
class _Frame:
    """Image features of one frame of one session (batch of one)."""

    index: int
    height: int
    width: int
    feats: list[torch.Tensor]  # per level [HW, 1, C], as get_image_features flattens them

    def nbytes(self) -> int:
        return sum(_nbytes(t) for t in self.feats)


@dataclass
class _Object:
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
        return sum(_nbytes(t) for t in held)


@dataclass
class _Item:
    """What one object attends to on one frame."""

    frame: _Frame
    obj: _Object
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


class HfVideoKernel:
    """The model side, shared by every camera: weights, per-shape constants, preprocessing and
    the batched calls (see the module docstring). A session holds one camera's state."""

    def __init__(self, loaded: LoadedVideoModel) -> None:
        self.loaded = loaded
        self.model: Any = loaded.model
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

    def new_session(self, max_pinned_frames: int = 4) -> HfVideoSession:
        return HfVideoSession(self, max_pinned_frames)

    # ------------------------------------------------------------------ frames

    def prepare(self, image_bgr: np.ndarray) -> PreparedFrame:
        """Check one BGR uint8 frame (HxWx3) and turn it into model input; thread-safe."""
        height, width = check_frame(image_bgr)
        with torch.inference_mode():
            return PreparedFrame(self._preprocess(image_bgr), height, width)

    def _preprocess(self, image_bgr: np.ndarray) -> torch.Tensor:
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

    def encode(
        self, items: Sequence[tuple[HfVideoSession, np.ndarray | PreparedFrame]]
    ) -> list[int]:
        """The image encoder once over one new frame of each session; each becomes its
        session's latest frame. Returns the frame indices, in order."""
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
        images = images.to(self.device, dtype=self.model.dtype)
        with torch.inference_mode(), self.loaded.autocast():
            out = self.model.get_image_features(images, return_dict=True)
        feats = list(out.fpn_hidden_states)
        if self._vision_pos is None:
            self._vision_pos = out.fpn_position_encoding[-1][:, :1].clone()
        indices = []
        for i, (session, p) in enumerate(zip(sessions, prepared, strict=True)):
            own = feats if len(prepared) == 1 else [f[:, i : i + 1].contiguous() for f in feats]
            indices.append(session._set_latest(p.height, p.width, own))
        return indices

    # ------------------------------------------------------------------ prompts

    def _high_res(self, feats: list[torch.Tensor], rows: int) -> list[torch.Tensor]:
        return [
            x.permute(1, 2, 0).reshape(rows, x.size(2), *s)
            for x, s in zip(feats[:-1], self.feat_sizes[:-1], strict=True)
        ]

    def _pix(self, feat: torch.Tensor) -> torch.Tensor:
        h, w = self.feat_sizes[-1]
        return feat.permute(1, 2, 0).reshape(feat.size(1), self.hidden, h, w)

    def _condition(
        self, frame: _Frame, points: dict[str, torch.Tensor] | None, mask: torch.Tensor | None
    ) -> Any:
        """The model on one frame from a prompt alone (an initial conditioning frame), as its
        ``_run_single_frame_inference`` runs it."""
        model = self.model
        high_res = self._high_res(frame.feats, 1)
        if mask is not None:
            return model._use_mask_as_output(self._pix(frame.feats[-1]), high_res, mask)
        pix = self._pix(frame.feats[-1] + model.no_memory_embedding)
        assert points is not None
        return model._single_frame_forward(
            input_points=points["point_coords"],
            input_labels=points["point_labels"],
            image_embeddings=[*high_res, pix],
            multimask_output=model._use_multimask(True, points),
        )

    def _conditioned(
        self,
        obj_id: int,
        frame: _Frame,
        points: dict[str, torch.Tensor] | None,
        mask: torch.Tensor | None,
    ) -> _Object:
        with torch.inference_mode(), self.loaded.autocast():
            out = self._condition(frame, points, mask)
            score = out.object_score_logits.reshape(1, 1, 1)
            memory = self._encode_memory(frame.feats[-1], out.high_res_masks, score, prompt=True)
        return _Object(
            obj_id=obj_id,
            cond_frame=frame.index,
            cond_memory=memory[0],
            cond_ptr=out.object_pointer.reshape(1, self.hidden).clone(),
            last_frame=frame.index,
            low_res=out.pred_masks.reshape(1, 1, *out.pred_masks.shape[-2:]).clone(),
            score=score.reshape(1, 1).clone(),
        )

    def _prompt_inputs(
        self, frame: _Frame, box: Any, points: Any, point_labels: Any, mask: Any
    ) -> tuple[dict[str, torch.Tensor] | None, torch.Tensor | None]:
        """Validate a prompt and turn it into model inputs as the family's processor does."""
        height, width = frame.height, frame.width
        prompt = point_prompt(box, points, point_labels, mask, width, height)
        if prompt is None:
            return None, self._mask_input(mask, height, width)
        coords, labels = prompt
        # As Sam2VideoProcessor._normalize_coordinates: float32 coordinates scaled per axis.
        xy = torch.tensor(coords, dtype=torch.float32)
        xy[..., 0] = xy[..., 0] * (self.image_size / width)
        xy[..., 1] = xy[..., 1] * (self.image_size / height)
        return {
            "point_coords": xy[None, None].to(self.device),
            "point_labels": torch.tensor(labels, dtype=torch.int64)[None, None].to(self.device),
        }, None

    def _mask_input(self, mask: Any, height: int, width: int) -> torch.Tensor:
        m = mask_prompt(mask, height, width, self.image_size, self.device)
        return m.to(self.model.dtype)

    # ------------------------------------------------------------------ tracking

    def track(self, items: Sequence[tuple[HfVideoSession, int]]) -> list[dict[int, SegmentOutput]]:
        """Propagate every object of every session without an output on its session's latest
        frame (``frame_idx`` must be that frame), in one batch; each session's outputs of all
        its objects on that frame, in order."""
        work: list[tuple[HfVideoSession, _Frame, list[_Object]]] = []
        for session, frame_idx in items:
            if session.kernel is not self:
                raise ValueError("session belongs to another kernel")
            frame = session._latest
            if frame is None or frame_idx != frame.index:
                raise PromptError(
                    f"track() needs the latest frame ({session.latest_frame}), got {frame_idx}"
                )
            todo = [o for o in session._objects.values() if o.last_frame != frame_idx]
            work.append((session, frame, todo))
        if any(todo for _, _, todo in work):
            with torch.inference_mode(), self.loaded.autocast():
                self._propagate([(f, o) for _, f, todo in work for o in todo])
        results = []
        for session, frame, _ in work:
            for obj in session._objects.values():
                self._prune(obj, frame.index + 1)
            present = [o for o in session._objects.values() if o.last_frame == frame.index]
            results.append(self._outputs(frame, present))
        return results

    def _propagate(self, rows: list[tuple[_Frame, _Object]]) -> None:
        self._ptr_pos.clear()  # keyed by pointer offsets, which move every frame
        groups: dict[tuple[tuple[int, ...], int], list[_Item]] = {}
        for frame, obj in rows:
            item = self._memory_inputs(frame, obj)
            groups.setdefault(item.layout, []).append(item)
        ordered: list[_Item] = []
        pix_parts = []
        for group in groups.values():
            pix_parts.append(self._attend(group))
            ordered += group
        pix = pix_parts[0] if len(pix_parts) == 1 else torch.cat(pix_parts)
        frames = [it.frame for it in ordered]
        feats = self._rows_feats(frames)
        heads = self._heads(pix, self._high_res(feats, len(ordered)))
        memories = self._encode_memory(feats[-1], heads.high_res, heads.score, prompt=False)
        for i, it in enumerate(ordered):
            obj, index = it.obj, it.frame.index
            obj.memories[index] = memories[i]
            obj.ptrs[index] = heads.ptr[i : i + 1].clone()
            obj.last_frame = index
            obj.low_res = heads.low_res[i : i + 1].clone()
            obj.score = heads.score[i].reshape(1, 1).clone()

    def _memory_inputs(self, frame: _Frame, obj: _Object) -> _Item:
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
        return _Item(frame, obj, spatial, tuple(offsets), ptrs)

    def _attend(self, group: list[_Item]) -> torch.Tensor:
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
        curr = self._rows_feats([it.frame for it in group], last_only=True)[0]
        assert self._vision_pos is not None
        extra = {"num_spatial_memory_tokens": len(group[0].spatial)}
        out = model.memory_attention(
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
        return self._memory_pos + self.model.memory_temporal_positional_encoding[offset - 1]

    def _pointer_tokens(self, it: _Item) -> tuple[torch.Tensor, torch.Tensor]:
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

    def _rows_feats(self, frames: Sequence[_Frame], last_only: bool = False) -> list[torch.Tensor]:
        """Per level [HW, B, C] features for a batch whose row ``i`` is an object on
        ``frames[i]`` (consecutive rows of one frame share a view of its features)."""
        runs: list[tuple[_Frame, int]] = []
        for frame in frames:
            if runs and runs[-1][0] is frame:
                runs[-1] = (frame, runs[-1][1] + 1)
            else:
                runs.append((frame, 1))
        levels = slice(-1, None) if last_only else slice(None)
        per_run = [[x.expand(-1, n, -1) for x in frame.feats[levels]] for frame, n in runs]
        if len(per_run) == 1:
            return per_run[0]
        return [torch.cat(level, dim=1) for level in zip(*per_run, strict=True)]

    def _prune(self, obj: _Object, next_frame: int) -> None:
        """Free what no frame from ``next_frame`` on can attend to."""
        oldest_mem = next_frame - (self.num_maskmem - 1)
        for t in [t for t in obj.memories if t < oldest_mem]:
            del obj.memories[t]
        oldest_ptr = next_frame - (self.max_ptrs - 1)
        for t in [t for t in obj.ptrs if t < oldest_ptr]:
            del obj.ptrs[t]

    # ------------------------------------------------------------------ outputs

    def _outputs(self, frame: _Frame, objects: list[_Object]) -> dict[int, SegmentOutput]:
        if not objects:
            return {}
        low = torch.cat([o.low_res for o in objects if o.low_res is not None])
        scores = torch.cat([o.score for o in objects if o.score is not None]).float().cpu().numpy()
        with torch.inference_mode():
            masks = (self._to_frame(low, frame) > 0)[:, 0].cpu().numpy()
        return {
            o.obj_id: SegmentOutput(o.obj_id, masks[i], float(scores[i, 0]), mask_box(masks[i]))
            for i, o in enumerate(objects)
        }

    def _to_frame(self, low_res: torch.Tensor, frame: _Frame) -> torch.Tensor:
        """Mask logits at the frame's size, as ``post_process_masks`` resizes them."""
        return F.interpolate(
            low_res.float(), size=(frame.height, frame.width), mode="bilinear", align_corners=False
        )


class HfVideoSession:
    """One camera's streaming state on a shared :class:`HfVideoKernel` (the semantics of
    ``engine.segmenter.Sam2Session``)."""

    def __init__(self, kernel: HfVideoKernel, max_pinned_frames: int = 4) -> None:
        if max_pinned_frames < 0:
            raise ValueError("max_pinned_frames must be >= 0")
        self.kernel = kernel
        self.max_pinned_frames = max_pinned_frames
        self._next_index = 0
        self._latest: _Frame | None = None
        self._pinned: OrderedDict[int, _Frame] = OrderedDict()
        self._objects: dict[int, _Object] = {}

    @property
    def object_ids(self) -> list[int]:
        return list(self._objects)

    @property
    def latest_frame(self) -> int | None:
        return None if self._latest is None else self._latest.index

    def prepare(self, image_bgr: np.ndarray) -> PreparedFrame:
        return self.kernel.prepare(image_bgr)

    def add_frame(self, frame: np.ndarray | PreparedFrame) -> int:
        """Encode one frame (a BGR uint8 image, or one ``prepare`` made) once; return its index."""
        return self.kernel.encode([(self, frame)])[0]

    def _set_latest(self, height: int, width: int, feats: list[torch.Tensor]) -> int:
        index = self._next_index
        self._next_index += 1
        self._latest = _Frame(index, height, width, feats)
        return index

    def pin(self, frame_idx: int) -> None:
        """Keep ``frame_idx``'s features for late prompts; the oldest pin goes past the bound."""
        frame = self._frame(frame_idx)
        if frame_idx in self._pinned or self.max_pinned_frames == 0:
            return
        self._pinned[frame_idx] = frame
        while len(self._pinned) > self.max_pinned_frames:
            self._pinned.popitem(last=False)

    def unpin(self, frame_idx: int) -> None:
        self._pinned.pop(frame_idx, None)

    def _frame(self, frame_idx: int) -> _Frame:
        if self._latest is not None and frame_idx == self._latest.index:
            return self._latest
        frame = self._pinned.get(frame_idx)
        if frame is None:
            raise PromptError(
                f"frame {frame_idx} is not available (current frame: {self.latest_frame}, "
                f"pinned: {list(self._pinned)})"
            )
        return frame

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
        """Condition ``obj_id`` on ``frame_idx`` (adds it, or re-seeds it from this prompt)."""
        frame = self._frame(frame_idx)
        points_in, mask_in = self.kernel._prompt_inputs(frame, box, points, point_labels, mask)
        obj = self.kernel._conditioned(obj_id, frame, points_in, mask_in)
        if obj_id in self._objects:
            log.debug("object %d re-seeded on frame %d", obj_id, frame_idx)
        self._objects[obj_id] = obj
        return self.kernel._outputs(frame, [obj])[obj_id]

    def segment_box(self, frame_idx: int, box: Any) -> np.ndarray:
        """A single-frame mask (HxW bool) from a box, without memory and without adding an object."""
        frame = self._frame(frame_idx)
        kernel = self.kernel
        points_in, _ = kernel._prompt_inputs(frame, box, None, None, None)
        with torch.inference_mode(), kernel.loaded.autocast():
            out = kernel._condition(frame, points_in, None)
            logits = kernel._to_frame(
                out.pred_masks.reshape(1, 1, *out.pred_masks.shape[-2:]), frame
            )
        return (logits[0, 0] > 0).cpu().numpy()

    def track(self, frame_idx: int) -> dict[int, SegmentOutput]:
        """Propagate all objects without an output on ``frame_idx`` (the latest); return all."""
        return self.kernel.track([(self, frame_idx)])[0]

    def last_logits(self, obj_id: int) -> torch.Tensor:
        """Low-res mask logits ([1, 1, h, w]) of ``obj_id``'s latest output (tests, debugging)."""
        obj = self._objects.get(obj_id)
        if obj is None or obj.low_res is None:
            raise PromptError(f"unknown object id {obj_id}")
        return obj.low_res

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
            ObjectStateSize(o.obj_id, 1, len(o.memories), len(o.ptrs))
            for o in self._objects.values()
        )
        frames: dict[int, _Frame] = dict(self._pinned)
        if self._latest is not None:
            frames[self._latest.index] = self._latest
        object_bytes = sum(o.nbytes() for o in self._objects.values())
        frame_bytes = sum(f.nbytes() for f in frames.values())
        return StateSize(
            objects, len(frames), len(self._pinned), object_bytes, frame_bytes,
            object_bytes + frame_bytes,
        )  # fmt: skip
