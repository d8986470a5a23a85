"""Training the demo Grounding DINO: transformers' ``GroundingDinoForObjectDetection`` with its
own detection loss (Hungarian matching; focal token loss, L1 and GIoU box losses, on every decoder
layer and on the two-stage encoder proposals), on captioned frames of generated scenes.

Two faults of that loss in transformers 5.23 are worked around, not patched: a batch's phrase
indices are offset wrongly past its first two images (so the loss is computed image by image,
:func:`per_image_loss`), and the encoder proposals it scores are detached, so the proposal heads
never learn (so they are scored again from the model's undetached encoder outputs with the same
matcher and criterion, :func:`encoder_proposal_loss`). Without the second, boxes stayed at the
mean box for 900 steps; with it, one batch is fitted in 100 steps.

Captions (:func:`make_caption`) are phrases such as ``ball``, ``red ball``, ``purple boxes`` or
``dog``; an object is the target of the phrase that names it (shape, or colour and shape), and a
caption never holds two phrases that name the same objects. Phrases that name nothing present
(``orange ball``, ``person``, a colour with no such object) teach the model to find nothing.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

import numpy as np
import torch

from engine.training.loop import Checkpoint, OnLog, run_steps
from engine.training.samples import DetectionSample, detection_sample
from engine.training.vocabulary import OTHER_COLOURS, OTHER_THINGS, PLURALS
from stream.backdrops import TRAINING_KINDS
from stream.demo import COLOURS, LABELS, GroundTruth

if TYPE_CHECKING:
    from transformers import GroundingDinoForObjectDetection, ProcessorMixin
    from transformers.models.grounding_dino.modeling_grounding_dino import (
        GroundingDinoObjectDetectionOutput,
    )

log = logging.getLogger(__name__)

# A 4:3 frame at the processor's shortest edge (240 px) is 320x240: render training frames in
# 4:3 sizes so that every batch has one shape and needs no padding.
DETECTOR_FRAME_SIZES = ((320, 240), (640, 480), (480, 360))


@dataclass(frozen=True)
class DetectorSchedule:
    steps: int
    batch: int
    lr: float
    warmup: int
    weight_decay: float = 1e-4
    clip_grad: float = 0.1
    log_every: int = 50
    augment: float = 0.0  # share of frames seen under a random camera look (training.augment)
    backdrops: tuple[str, ...] = TRAINING_KINDS  # the looks' backdrop kinds (stream.backdrops)


@dataclass(frozen=True)
class Caption:
    phrases: tuple[str, ...]
    targets: tuple[tuple[GroundTruth, int], ...]  # (object, index of the phrase that names it)

    @property
    def text(self) -> str:
        return " ".join(f"{p}." for p in self.phrases)


def _shape_word(label: str, rng: np.random.Generator) -> str:
    return PLURALS[label] if rng.random() < 0.15 else label


def make_caption(targets: list[GroundTruth], rng: np.random.Generator) -> Caption:
    """A random caption for a frame and the phrase each target answers to (see the module doc)."""
    present = sorted({(g.colour, g.label) for g in targets})
    phrases: list[str] = []
    meaning: list[tuple[str | None, str | None]] = []  # (colour or None, shape or None)

    def add(text: str, colour: str | None, shape: str | None) -> None:
        # One phrase per meaning: "red ball" and "red balls" together would each be the other's
        # negative for the same objects.
        if text not in phrases and (shape is None or (colour, shape) not in meaning):
            phrases.append(text)
            meaning.append((colour, shape))

    mode = rng.random()
    if mode < 0.35:  # shapes only
        shapes = list(LABELS) if rng.random() < 0.7 else [LABELS[int(rng.integers(2))]]
        for s in shapes:
            add(_shape_word(s, rng), None, s)
    elif mode < 0.85:  # colour phrases, maybe one shape phrase for the other shape
        for _ in range(int(rng.integers(1, 4))):
            if present and rng.random() < 0.7:
                colour, shape = present[int(rng.integers(len(present)))]
            else:
                colour = list(COLOURS)[int(rng.integers(len(COLOURS)))]
                shape = LABELS[int(rng.integers(2))]
            add(f"{colour} {_shape_word(shape, rng)}", colour, shape)
        used = {s for _, s in meaning}
        free = [s for s in LABELS if s not in used]
        if free and rng.random() < 0.3:
            add(_shape_word(free[0], rng), None, free[0])
    else:  # mostly things that are not there
        if rng.random() < 0.5 and present:
            colour, shape = present[int(rng.integers(len(present)))]
            add(f"{colour} {_shape_word(shape, rng)}", colour, shape)
    if mode >= 0.85 or rng.random() < 0.3:
        for _ in range(int(rng.integers(1, 3))):
            if rng.random() < 0.5:
                add(OTHER_THINGS[int(rng.integers(len(OTHER_THINGS)))], None, None)
            else:
                other = OTHER_COLOURS[int(rng.integers(len(OTHER_COLOURS)))]
                add(f"{other} {_shape_word(LABELS[int(rng.integers(2))], rng)}", "", None)
    order = rng.permutation(len(phrases))
    phrases = [phrases[i] for i in order]
    meaning = [meaning[i] for i in order]
    pairs: list[tuple[GroundTruth, int]] = []
    for g in targets:
        for k, (want_colour, want_shape) in enumerate(meaning):
            if want_shape == g.label and want_colour in (None, g.colour):
                pairs.append((g, k))
                break
    return Caption(tuple(phrases), tuple(pairs))


def _labels(caption: Caption, width: int, height: int) -> dict[str, torch.Tensor]:
    """DETR-style targets: phrase indices and boxes as normalised (cx, cy, w, h)."""
    if not caption.targets:
        return {"class_labels": torch.zeros(0, dtype=torch.long), "boxes": torch.zeros(0, 4)}
    boxes = []
    for g, _ in caption.targets:
        x1, y1, x2, y2 = g.box
        boxes.append(
            [(x1 + x2) / 2 / width, (y1 + y2) / 2 / height, (x2 - x1) / width, (y2 - y1) / height]
        )
    return {
        "class_labels": torch.tensor([k for _, k in caption.targets], dtype=torch.long),
        "boxes": torch.tensor(boxes, dtype=torch.float32),
    }


class DetectorBatch(TypedDict):
    """One training batch: the model's inputs and its ``labels`` (per image: class_labels,
    boxes)."""

    pixel_values: torch.Tensor
    pixel_mask: torch.Tensor
    input_ids: torch.LongTensor
    token_type_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: list[dict[str, torch.Tensor]]


def make_batch(
    processor: ProcessorMixin,
    rng: np.random.Generator,
    batch: int,
    augment: float = 0.0,
    kinds: tuple[str, ...] = TRAINING_KINDS,
) -> DetectorBatch:
    """Model inputs and ``labels`` for ``batch`` captioned frames of one size (a share
    ``augment`` of them under a random camera look, backdrops of ``kinds``)."""
    size = DETECTOR_FRAME_SIZES[int(rng.integers(len(DETECTOR_FRAME_SIZES)))]
    samples: list[DetectionSample] = [
        detection_sample(rng, size, augment, kinds) for _ in range(batch)
    ]
    captions = [make_caption(s.targets, rng) for s in samples]
    images = [np.ascontiguousarray(s.image[:, :, ::-1]) for s in samples]
    pixels = processor.image_processor(images=images, return_tensors="pt")
    text = processor.tokenizer([c.text for c in captions], padding="longest", return_tensors="pt")
    w, h = size
    return DetectorBatch(
        pixel_values=pixels["pixel_values"],
        pixel_mask=pixels["pixel_mask"],
        input_ids=text["input_ids"],
        token_type_ids=text["token_type_ids"],
        attention_mask=text["attention_mask"],
        labels=[_labels(c, w, h) for c in captions],
    )


def train_detector(
    model: GroundingDinoForObjectDetection,
    processor: ProcessorMixin,
    schedule: DetectorSchedule,
    rng: np.random.Generator,
    on_log: OnLog | None = None,
    checkpoint: Checkpoint | None = None,
) -> list[float]:
    """Train ``model`` in place; returns the loss of every step."""

    def step_loss(_step: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        batch = make_batch(processor, rng, schedule.batch, schedule.augment, schedule.backdrops)
        out = model(**batch)
        loss = out.loss + encoder_proposal_loss(model, out, batch)
        return loss, {k: out.loss_dict[f"loss_{k}"] for k in ("ce", "bbox", "giou")}

    return run_steps("detector", model, schedule, step_loss, on_log, checkpoint)


def per_image_loss(*args: Any, **kwargs: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor], None]:
    """transformers' Grounding DINO detection loss on the decoder outputs, computed image by
    image and averaged (set as the model's ``loss_function``).

    Image by image: its criterion (5.23) offsets an image's phrase indices by that image's own
    phrase count instead of the count of the images before it (``_get_target_classes_one_hot``),
    so in a batch of three or more images, or of two with different phrase counts, the token
    targets point at another image's phrases; with one image per call there is no offset.
    Decoder only: the two-stage encoder proposals it is handed are detached (no gradient
    reaches the proposal heads), so they are left out here and trained by
    :func:`encoder_proposal_loss` from the model's undetached encoder outputs instead.
    Takes and returns what ``GroundingDinoForObjectDetectionLoss`` does (no auxiliary outputs).
    """
    from transformers.loss.loss_grounding_dino import GroundingDinoForObjectDetectionLoss

    names = ("logits", "labels", "device", "pred_boxes", "config", "label_maps", "text_mask")
    bound = dict(zip(names, args, strict=False)) | kwargs
    config = copy.copy(bound["config"])
    config.two_stage = False  # see the docstring: the encoder part is trained separately
    n = bound["logits"].shape[0]
    total = torch.zeros((), device=bound["logits"].device)
    parts: dict[str, torch.Tensor] = {}
    for i in range(n):
        loss, loss_dict, _ = GroundingDinoForObjectDetectionLoss(
            logits=bound["logits"][i : i + 1],
            labels=[bound["labels"][i]],
            device=bound["device"],
            pred_boxes=bound["pred_boxes"][i : i + 1],
            config=config,
            label_maps=(bound["label_maps"][i],),
            text_mask=bound["text_mask"][i : i + 1],
            outputs_class=bound["outputs_class"][:, i : i + 1],
            outputs_coord=bound["outputs_coord"][:, i : i + 1],
        )
        total = total + loss / n
        for k, v in loss_dict.items():
            parts[k] = parts.get(k, torch.zeros(())) + v.detach() / n
    return total, parts, None


def encoder_proposal_loss(
    model: GroundingDinoForObjectDetection,
    outputs: GroundingDinoObjectDetectionOutput,
    batch: DetectorBatch,
) -> torch.Tensor:
    """The detection loss (transformers' matcher and criterion, same weights) on the two-stage
    encoder proposals the decoder starts from: the top ``num_queries`` tokens by class score,
    with their boxes, taken from the undetached ``enc_outputs_class``/``enc_outputs_coord_logits``
    (what the original Grounding DINO supervises as its intermediate outputs)."""
    from transformers.loss.loss_grounding_dino import (
        GroundingDinoHungarianMatcher,
        GroundingDinoImageLoss,
    )
    from transformers.models.grounding_dino.modeling_grounding_dino import (
        build_label_maps,
        build_text_mask,
    )

    cfg = model.config
    scores = outputs.enc_outputs_class  # [B, tokens, text]
    coords = outputs.enc_outputs_coord_logits
    if scores is None or coords is None:
        raise ValueError("encoder proposal loss needs a two-stage model's encoder outputs")
    top = scores.max(-1).values.topk(cfg.num_queries, dim=1).indices
    logits = torch.gather(scores, 1, top[..., None].expand(-1, -1, scores.shape[-1]))
    boxes = torch.gather(coords, 1, top[..., None].expand(-1, -1, 4)).sigmoid()
    label_maps = build_label_maps(logits, batch["input_ids"])
    text_mask = build_text_mask(logits, batch["attention_mask"])
    matcher = GroundingDinoHungarianMatcher(
        class_cost=cfg.class_cost, bbox_cost=cfg.bbox_cost, giou_cost=cfg.giou_cost
    )
    criterion = GroundingDinoImageLoss(matcher, cfg.focal_alpha, ["labels", "boxes"])
    weights = {
        "loss_ce": 2.0,  # as GroundingDinoForObjectDetectionLoss weighs them
        "loss_bbox": cfg.bbox_loss_coefficient,
        "loss_giou": cfg.giou_loss_coefficient,
    }
    n = logits.shape[0]
    total = torch.zeros((), device=logits.device)
    for i in range(n):
        parts = criterion(
            {
                "logits": logits[i : i + 1],
                "pred_boxes": boxes[i : i + 1],
                "label_maps": (label_maps[i],),
                "text_mask": text_mask[i : i + 1],
            },
            [batch["labels"][i]],
        )
        total = total + sum(parts[k] * w for k, w in weights.items()) / n
    return total


def build_detector(
    arch_dir: Path, seed: int
) -> tuple[GroundingDinoForObjectDetection, ProcessorMixin]:
    """The untrained demo detector (weights from ``seed``) and its processor, from ``arch_dir``."""
    from transformers import AutoConfig, AutoProcessor, GroundingDinoForObjectDetection

    config = AutoConfig.from_pretrained(arch_dir)
    processor = AutoProcessor.from_pretrained(arch_dir)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = GroundingDinoForObjectDetection(config)
    model.loss_function = per_image_loss
    return model, processor


def load_trained_detector(
    weights_dir: Path,
) -> tuple[GroundingDinoForObjectDetection, ProcessorMixin]:
    """The demo detector and its processor with the trained weights in ``weights_dir`` (a
    ``save_pretrained`` directory), to go on training."""
    from transformers import AutoProcessor, GroundingDinoForObjectDetection

    model = GroundingDinoForObjectDetection.from_pretrained(weights_dir)
    model.loss_function = per_image_loss  # the loss the earlier stages trained with
    return model, AutoProcessor.from_pretrained(weights_dir)
