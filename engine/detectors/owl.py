"""OWLv2 and OWL-ViT (transformers ``owlv2``, ``owlvit``): one text query per prompt phrase.

Every image patch predicts one box and a logit per query. Post-processing is the family's own
(the image processor's ``post_process_object_detection``): a box's label is its best query,
its confidence that query's sigmoid score, kept above ``box_threshold``; boxes are scaled back
to the image (OWLv2 pads the image to a square first, OWL-ViT stretches it). ``text_threshold``
does not apply (there are no sub-phrase tokens to score). The input size is the checkpoint's
(OWLv2 960, OWL-ViT 768 px): ``engine.detector_size`` does not apply.

A phrase longer than the text encoder accepts (16 tokens in the released checkpoints) is a
:class:`PromptError`. ``detect_batch`` runs all images in one call, each with its own queries:
prompts with fewer phrases are padded with blank queries whose scores are dropped before
post-processing, and queries are scored independently, so results equal single calls.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np
import supervision as sv
import torch
from numpy.typing import NDArray

from engine.core.protocols import DetectorPrompt
from engine.detectors.base import (
    ProcessorDetector,
    check_phrase_tokens,
    finish,
    normalize_prompt,
    prompt_text,
    to_rgb,
)
from stream.config import EngineConfig

MODEL_TYPES = ("owlv2", "owlvit")


@dataclass
class _Outputs:
    """The two fields the family's post-processing reads, for one image's own queries."""

    logits: torch.Tensor  # (1, patches, queries)
    pred_boxes: torch.Tensor  # (1, patches, 4) normalised cx, cy, w, h


class OwlDetector(ProcessorDetector):
    max_query_tokens: int

    def _ready(self, engine: EngineConfig) -> None:
        self.max_query_tokens = int(self.model.config.text_config.max_position_embeddings)

    def parse_prompt(self, text: str) -> DetectorPrompt:
        phrases = normalize_prompt(text)
        check_phrase_tokens(
            phrases,
            lambda phrase: len(self.processor.tokenizer(phrase)["input_ids"]),
            self.max_query_tokens,
        )
        return DetectorPrompt(tuple(phrases), prompt_text(phrases), self.family)

    def _group_key(self, image: NDArray[np.uint8], prompt: DetectorPrompt) -> Hashable:
        return None  # every image is resized to the checkpoint's square input

    def _run(
        self, images: Sequence[NDArray[np.uint8]], prompts: Sequence[DetectorPrompt]
    ) -> list[sv.Detections]:
        inputs = self.processor(
            images=[to_rgb(im) for im in images],
            text=[list(p.phrases) for p in prompts],
            return_tensors="pt",
        ).to(self.device)
        outputs = self.model(**inputs)
        logits = outputs.logits.float()
        pred_boxes = outputs.pred_boxes.float()
        results = []
        for b, (image, p) in enumerate(zip(images, prompts, strict=True)):
            h, w = image.shape[:2]
            own = _Outputs(logits[b : b + 1, :, : len(p.phrases)], pred_boxes[b : b + 1])
            r = self.processor.image_processor.post_process_object_detection(
                outputs=own, threshold=self.box_threshold, target_sizes=[(h, w)]
            )[0]
            results.append(
                finish(
                    r["boxes"].cpu().numpy(),
                    r["scores"].cpu().numpy(),
                    r["labels"].cpu().numpy(),
                    p.phrases,
                    (h, w),
                )
            )
        return results
