"""OmDet-Turbo (transformers ``omdet-turbo``): the prompt phrases are its classes, plus a task
sentence (``"Detect person, red ball."``, its processor's default).

transformers' ``OmDetTurboProcessor`` needs torchvision (for NMS), which the CPU install does not
have, so this module feeds the model from the checkpoint's own image processor and tokenizer
(padded to 77 tokens as that processor does) and post-processes as it does: the top
``num_queries`` (query, class) scores, kept above ``box_threshold``, class-wise non-maximum
suppression at IoU ``NMS_IOU`` (its default 0.5), boxes scaled to the image and clipped.
``text_threshold`` does not apply. The input size is the checkpoint's (640 px): ``detector_size``
does not apply. The released checkpoint's Swin backbone is a timm model, so it needs the
``timm`` package; the tiny-random config uses transformers' own Swin.

A phrase longer than 77 tokens is a :class:`PromptError`. The model caches text embeddings by
token ids (an LRU inside the model), so a repeated prompt costs no text encoding.
``detect_batch`` groups images by prompt (class padding would change the query selection).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Self

import numpy as np
import supervision as sv
import torch
from numpy.typing import NDArray

from engine.core.protocols import DetectorPrompt
from engine.detectors.base import (
    DetectorBase,
    LoadSpec,
    ModelBuilder,
    Saved,
    check_phrase_tokens,
    corners,
    finish,
    normalize_prompt,
    prompt_text,
    to_rgb,
)
from stream.config import EngineConfig
from stream.errors import ModelLoadError

if TYPE_CHECKING:
    from transformers import (
        BaseImageProcessor,
        BatchEncoding,
        PreTrainedModel,
        PreTrainedTokenizerBase,
    )

    from engine.models.pretrained import ModelClass


MODEL_TYPES = ("omdet-turbo",)
TEXT_TOKENS = 77  # OmDetTurboProcessor: padding="max_length", truncation, max_length=77
NMS_IOU = 0.5  # OmDetTurboProcessor.post_process_grounded_object_detection's default


@dataclass(frozen=True, kw_only=True)
class OmDetTurboPrompt(DetectorPrompt):
    """``phrases`` are the classes; ``task`` the task sentence the model also reads."""

    task: str


class OmDetTurboDetector(DetectorBase):
    prompt_type = OmDetTurboPrompt

    def __init__(
        self,
        model: PreTrainedModel,
        image_processor: BaseImageProcessor,
        tokenizer: PreTrainedTokenizerBase,
        engine: EngineConfig,
        device: torch.device,
        dtype: str = "auto",
    ) -> None:
        super().__init__(model.config.model_type, model, engine, device, dtype)
        self.image_processor = image_processor
        self.tokenizer = tokenizer

    @classmethod
    def model_class(cls) -> ModelClass:
        from transformers import OmDetTurboForObjectDetection

        return OmDetTurboForObjectDetection

    @classmethod
    def assemble(cls, spec: LoadSpec, build: ModelBuilder) -> Self:
        from transformers import AutoConfig, AutoImageProcessor, AutoTokenizer

        config = AutoConfig.from_pretrained(spec.where, local_files_only=spec.local_files_only)
        _check_backbone(config, spec.where)
        image_processor = AutoImageProcessor.from_pretrained(
            spec.where, local_files_only=spec.local_files_only
        )
        tokenizer = AutoTokenizer.from_pretrained(
            spec.where, local_files_only=spec.local_files_only
        )
        return cls(build(), image_processor, tokenizer, spec.engine, spec.device, spec.dtype)

    def _saved(self) -> Sequence[Saved]:
        return [self.image_processor, self.tokenizer]

    def parse_prompt(self, text: str) -> OmDetTurboPrompt:
        phrases = normalize_prompt(text)
        check_phrase_tokens(
            phrases, lambda phrase: len(self.tokenizer(phrase)["input_ids"]), TEXT_TOKENS
        )
        task = f"Detect {', '.join(phrases)}."
        return OmDetTurboPrompt(tuple(phrases), prompt_text(phrases), self.family, task=task)

    def _group_key(self, image: NDArray[np.uint8], prompt: DetectorPrompt) -> Hashable:
        return (image.shape[:2], prompt.phrases)

    def _tokens(self, texts: list[str]) -> BatchEncoding:
        tokens: BatchEncoding = self.tokenizer(
            texts,
            padding="max_length",
            truncation=True,
            max_length=TEXT_TOKENS,
            return_tensors="pt",
        ).to(self.device)
        return tokens

    def _run(
        self, images: Sequence[NDArray[np.uint8]], prompts: Sequence[DetectorPrompt]
    ) -> list[sv.Detections]:
        p = prompts[0]
        assert isinstance(p, OmDetTurboPrompt)
        n, batch = len(p.phrases), len(images)
        pixels = self.image_processor([to_rgb(im) for im in images], return_tensors="pt")
        classes = self._tokens(list(p.phrases) * batch)
        tasks = self._tokens([p.task] * batch)
        outputs = self.model(
            pixel_values=pixels["pixel_values"].to(self.device),
            classes_input_ids=classes["input_ids"],
            classes_attention_mask=classes["attention_mask"],
            tasks_input_ids=tasks["input_ids"],
            tasks_attention_mask=tasks["attention_mask"],
            classes_structure=torch.full((batch,), n, dtype=torch.long, device=self.device),
        )
        h, w = images[0].shape[:2]
        scale = torch.tensor([w, h, w, h], dtype=torch.float32, device=self.device)
        results = []
        for b in range(batch):
            scores = outputs.decoder_class_logits[b].float().sigmoid()  # (queries, classes)
            boxes = corners(outputs.decoder_coord_logits[b].float()) * scale
            top, flat = scores.flatten().topk(len(boxes), sorted=False)
            query, label = flat // scores.shape[1], flat % scores.shape[1]
            keep = (top > self.box_threshold) & (label < n)
            box, score, label = boxes[query[keep]], top[keep], label[keep]
            kept = class_nms(box, score, label, NMS_IOU)
            results.append(
                finish(
                    box[kept].cpu().numpy(),
                    score[kept].cpu().numpy(),
                    label[kept].cpu().numpy(),
                    p.phrases,
                    (h, w),
                )
            )
        return results


def class_nms(
    boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor, iou: float
) -> torch.Tensor:
    """Indices kept by greedy non-maximum suppression within each label, best score first
    (supervision's ``box_non_max_suppression``: a box overlapping a kept one of its label by
    more than ``iou`` goes)."""
    if len(boxes) == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    predictions = torch.cat([boxes, scores[:, None], labels[:, None].to(boxes.dtype)], dim=1)
    keep = sv.box_non_max_suppression(predictions.cpu().numpy().astype(np.float64), iou)
    order = [i for i in scores.argsort(descending=True).tolist() if keep[i]]
    return torch.tensor(order, dtype=torch.long, device=boxes.device)


def _check_backbone(config: object, where: str) -> None:
    backbone = getattr(config, "backbone_config", None)
    if getattr(backbone, "model_type", None) == "timm_backbone":
        try:
            import timm  # noqa: F401
        except ImportError:
            raise ModelLoadError(
                f"OmDet-Turbo {where} has a timm backbone: install the timm package "
                "(it needs torchvision) to use it"
            ) from None
