"""Training the demo SAM 2 on short clips of generated scenes, with the ``sam2`` package's modules.

Training starts on single images (``Sam2Schedule.image_steps``: the prompt -> mask map, as SAM
2 is trained on images before videos), then goes on with clips. One clip step: a few clips
(frames of one scene each) go through the image encoder in one batch;
every chosen object is prompted on its clip's first frame (a jittered box, or one click inside
it) and then followed frame by frame through the memory path (memory attention over the
conditioning frame's and recent frames' memories and object pointers, mask decoder, memory
encoder), exactly the calls ``SAM2Base.track_step`` makes, with gradients through the whole
clip. Losses per object and frame, as in the SAM 2 paper: focal (x20) + dice on the best of
the predicted masks, L1 between predicted and actual IoU of every mask, and binary cross-entropy
of the object score against "visible in this frame"; frames where the object is hidden or gone
supervise the object score only.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from engine.training.loop import Checkpoint, OnLog, run_steps
from engine.training.samples import FRAME_SIZES, Clip, clip_sample
from stream.backdrops import TRAINING_KINDS

if TYPE_CHECKING:
    from sam2.modeling.sam2_base import SAM2Base

log = logging.getLogger(__name__)

IMG_MEAN = np.array((0.485, 0.456, 0.406), np.float32)
IMG_STD = np.array((0.229, 0.224, 0.225), np.float32)
FOCAL_WEIGHT = 20.0
BOX_JITTER = 0.08  # standard deviation of box corner noise, as a share of the box side


@dataclass(frozen=True)
class Sam2Schedule:
    steps: int
    clips: int  # clips per step
    frames: int  # frames per clip
    objects: int  # most objects followed per clip
    lr: float
    warmup: int
    weight_decay: float = 0.01
    clip_grad: float = 1.0
    click_share: float = 0.2  # steps prompted with one click instead of a box
    log_every: int = 25
    # The first ``image_steps`` of ``steps`` are single frames (no memory), ``image_clips``
    # images of up to ``image_objects`` prompted objects each: how SAM 2 itself is trained on
    # images before videos. Learning the prompt -> mask map there is several times faster than
    # in clips, where the first frame is the only prompted one (measured: after 800 image steps
    # the prompted frame's IoU was 0.4-0.8; after 1,250 clip steps 0.0-0.3).
    image_steps: int = 0
    image_clips: int = 4
    image_objects: int = 6
    augment: float = 0.0  # share of clips seen under a random camera look (training.augment)
    backdrops: tuple[str, ...] = TRAINING_KINDS  # the looks' backdrop kinds (stream.backdrops)

    def phase(self, step: int) -> Sam2Schedule:
        """The batch shape of ``step``: an image step or a clip step."""
        if step < self.image_steps:
            return replace(self, clips=self.image_clips, frames=1, objects=self.image_objects)
        return self


@dataclass
class ClipBatch:
    """Model inputs of one step: ``images`` [clips*frames, 3, S, S] (clip-major), ``masks``
    [objects, frames, S, S] float targets, ``present`` [objects, frames], ``clip_of`` [objects],
    and the first-frame prompts as SAM 2 point inputs (box corners or one click)."""

    images: torch.Tensor
    masks: torch.Tensor
    present: torch.Tensor
    clip_of: torch.Tensor
    frames: int
    point_coords: torch.Tensor  # [objects, P, 2] in model pixels
    point_labels: torch.Tensor  # [objects, P]


def model_input(image_bgr: np.ndarray, size: int) -> np.ndarray:
    """[3, S, S] float32, as the engine prepares frames: PIL resize to the square input, /255,
    ImageNet mean and std, RGB."""
    rgb = np.ascontiguousarray(image_bgr[:, :, ::-1])
    small = np.asarray(Image.fromarray(rgb).resize((size, size)), np.float32) / 255.0
    return np.ascontiguousarray(((small - IMG_MEAN) / IMG_STD).transpose(2, 0, 1))


def _target(mask: np.ndarray, size: int) -> np.ndarray:
    """A frame-resolution mask at the model's input resolution (area-weighted, then >= 0.5)."""
    small = cv2.resize(mask.astype(np.float32), (size, size), interpolation=cv2.INTER_AREA)
    return (small >= 0.5).astype(np.float32)


def _prompt(
    clip: Clip, k: int, size: int, click: bool, rng: np.random.Generator
) -> tuple[list[list[float]], list[int]]:
    h, w = clip.masks.shape[2:]
    sx, sy = size / w, size / h
    if click:
        ys, xs = np.nonzero(clip.masks[k, 0])
        j = int(rng.integers(len(xs)))
        return [[(xs[j] + 0.5) * sx, (ys[j] + 0.5) * sy]], [1]
    x1, y1, x2, y2 = (float(v) for v in clip.boxes[k])
    bw, bh = x2 - x1, y2 - y1
    noise = rng.normal(0.0, BOX_JITTER, 4) * np.array([bw, bh, bw, bh])
    x1, y1, x2, y2 = x1 + noise[0], y1 + noise[1], x2 + noise[2], y2 + noise[3]
    x1, x2 = sorted((min(max(x1, 0.0), w), min(max(x2, 0.0), w)))
    y1, y2 = sorted((min(max(y1, 0.0), h), min(max(y2, 0.0), h)))
    return [[x1 * sx, y1 * sy], [max(x2, x1 + 1) * sx, max(y2, y1 + 1) * sy]], [2, 3]


def make_clip_batch(
    schedule: Sam2Schedule, size: int, rng: np.random.Generator, click: bool
) -> ClipBatch:
    frame_size = FRAME_SIZES[int(rng.integers(len(FRAME_SIZES)))]
    images, masks, clip_of, coords, labels = [], [], [], [], []
    for c in range(schedule.clips):
        clip = clip_sample(
            rng, schedule.frames, schedule.objects, frame_size, schedule.augment, schedule.backdrops
        )
        images += [model_input(img, size) for img in clip.images]
        for k in range(len(clip.masks)):
            masks.append(np.stack([_target(m, size) for m in clip.masks[k]]))
            clip_of.append(c)
            pts, lbl = _prompt(clip, k, size, click, rng)
            coords.append(pts)
            labels.append(lbl)
    target = torch.from_numpy(np.stack(masks))
    return ClipBatch(
        images=torch.from_numpy(np.stack(images)),
        masks=target,
        present=target.flatten(2).amax(dim=2) > 0,
        clip_of=torch.tensor(clip_of, dtype=torch.long),
        frames=schedule.frames,
        point_coords=torch.tensor(coords, dtype=torch.float32),
        point_labels=torch.tensor(labels, dtype=torch.int32),
    )


def _focal(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Sigmoid focal loss (alpha 0.25, gamma 2), mean over pixels: [B, M]."""
    prob = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p_t = prob * target + (1 - prob) * (1 - target)
    alpha_t = 0.25 * target + 0.75 * (1 - target)
    return (alpha_t * ce * (1 - p_t) ** 2).flatten(2).mean(dim=2)


def _dice(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    prob = logits.sigmoid().flatten(2)
    t = target.flatten(2)
    return 1 - (2 * (prob * t).sum(2) + 1) / (prob.sum(2) + t.sum(2) + 1)


def frame_loss(
    multi_logits: torch.Tensor,
    ious: torch.Tensor,
    score_logits: torch.Tensor,
    target: torch.Tensor,
    present: torch.Tensor,
) -> dict[str, torch.Tensor]:
    """Losses of one frame for B objects: ``multi_logits`` [B, M, S, S], ``ious`` [B, M],
    ``score_logits`` [B, 1], ``target`` [B, S, S], ``present`` [B] (see the module docstring)."""
    t = target[:, None].expand_as(multi_logits)
    focal = _focal(multi_logits, t)
    dice = _dice(multi_logits, t)
    combo = FOCAL_WEIGHT * focal + dice
    best = combo.argmin(dim=1)
    rows = torch.arange(len(best))
    with torch.no_grad():
        pred = multi_logits > 0
        inter = (pred & (t > 0.5)).flatten(2).sum(2).float()
        union = (pred | (t > 0.5)).flatten(2).sum(2).float()
        actual = inter / union.clamp(min=1)
    shown = present.float()
    n_shown = shown.sum().clamp(min=1)
    return {
        "mask": (combo[rows, best] * shown).sum() / n_shown,
        "iou": ((ious - actual).abs().mean(dim=1) * shown).sum() / n_shown,
        "score": F.binary_cross_entropy_with_logits(score_logits[:, 0], shown),
    }


def clip_loss(model: SAM2Base, batch: ClipBatch) -> dict[str, torch.Tensor]:
    """Forward one batch of clips through SAM 2 (see the module docstring); mean losses."""
    backbone_out = model.forward_image(batch.images)
    _, vision_feats, vision_pos, feat_sizes = model._prepare_backbone_features(backbone_out)
    output_dict: dict[str, dict[int, Any]] = {
        "cond_frame_outputs": {},
        "non_cond_frame_outputs": {},
    }
    totals: dict[str, torch.Tensor] = {}
    for t in range(batch.frames):
        rows = batch.clip_of * batch.frames + t
        feats = [f[:, rows] for f in vision_feats]
        pos = [p[:, rows] for p in vision_pos]
        init = t == 0
        points = (
            {"point_coords": batch.point_coords, "point_labels": batch.point_labels}
            if init
            else None
        )
        current, sam_outputs, _, _ = model._track_step(
            t, init, feats, pos, feat_sizes, points, None, output_dict, batch.frames, False, None
        )
        _, high_multi, ious, _, high, obj_ptr, score = sam_outputs
        current["pred_masks_high_res"] = high
        current["obj_ptr"] = obj_ptr
        model._encode_memory_in_output(feats, feat_sizes, points, True, high, score, current)
        kind = "cond_frame_outputs" if init else "non_cond_frame_outputs"
        output_dict[kind][t] = current
        parts = frame_loss(high_multi, ious, score, batch.masks[:, t], batch.present[:, t])
        for k, v in parts.items():
            totals[k] = totals.get(k, torch.zeros(())) + v / batch.frames
    return totals


def train_sam2(
    model: SAM2Base,
    schedule: Sam2Schedule,
    rng: np.random.Generator,
    on_log: OnLog | None = None,
    checkpoint: Checkpoint | None = None,
) -> list[float]:
    """Train ``model`` (a ``SAM2Base``) in place; returns the loss of every step."""
    size = int(model.image_size)

    def step_loss(step: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        click = bool(rng.random() < schedule.click_share)
        parts = clip_loss(model, make_clip_batch(schedule.phase(step), size, rng, click))
        return parts["mask"] + parts["iou"] + parts["score"], parts

    return run_steps("sam2", model, schedule, step_loss, on_log, checkpoint)
