"""Grounding DINO and MM-Grounding-DINO / LLMDet (transformers ``grounding-dino`` and
``mm-grounding-dino``; LLMDet checkpoints are ``mm-grounding-dino`` models).

The model reads the whole prompt as one text (``"person. red ball."``) and scores every query
box against every text token. Post-processing is the family's own: a box is kept when its best
token probability exceeds ``box_threshold`` (its confidence); its label is the prompt phrase whose
tokens score highest for it, if that score exceeds ``text_threshold`` (else the box is dropped),
so labels are whole phrases, never sub-token strings. Input: shortest edge
``engine.detector_size`` (None: the processor's own, 800 for the reference models), longest at most 1333/800 of it (the reference resize's aspect cap).

Prompts longer than the text encoder accepts (``max_text_len`` tokens) lose their trailing
phrases with a warning; a single phrase that does not fit is a :class:`PromptError`.
``detect_batch`` runs every image of one size in one call, each with its own prompt (texts are
padded; padded tokens are masked out of attention and scoring, so results equal single calls).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import supervision as sv
import torch
from numpy.typing import NDArray

from engine.core.protocols import DetectorPrompt
from engine.detectors.base import (
    ProcessorDetector,
    corners,
    finish,
    normalize_prompt,
    prompt_text,
    to_rgb,
)
from engine.models.pretrained import seeded_model
from stream.config import EngineConfig
from stream.errors import PromptError

if TYPE_CHECKING:
    from transformers import PreTrainedModel, ProcessorMixin


log = logging.getLogger(__name__)

MODEL_TYPES = ("grounding-dino", "mm-grounding-dino")
# Grounding DINO's reference resize is shortest edge 800, longest 1333; keep that aspect cap.
LONGEST_EDGE_RATIO = 1333 / 800


def processor_size(processor: object) -> int:
    """The shortest edge a Grounding DINO processor resizes images to (800 if it names none)."""
    size = getattr(getattr(processor, "image_processor", None), "size", None)
    edge = (
        size.get("shortest_edge")
        if isinstance(size, dict)
        else getattr(size, "shortest_edge", None)
    )
    return int(edge) if edge else 800


@dataclass(frozen=True, kw_only=True)
class GroundingDinoPrompt(DetectorPrompt):
    """``text`` is what the model reads; ``spans`` the token range [start, end) of each phrase."""

    spans: tuple[tuple[int, int], ...]
    n_tokens: int


class GroundingDinoDetector(ProcessorDetector):
    prompt_type = GroundingDinoPrompt
    detector_size: int
    max_text_len: int

    def _ready(self, engine: EngineConfig) -> None:
        self.tokenizer = self.processor.tokenizer
        self.detector_size = engine.detector_size or processor_size(self.processor)
        self.max_text_len = int(self.model.config.max_text_len)

    # ------------------------------------------------------------------ prompt

    def parse_prompt(self, text: str) -> GroundingDinoPrompt:
        phrases = normalize_prompt(text)
        budget = self.max_text_len - 2  # [CLS] ... [SEP]
        spans: list[tuple[int, int]] = []
        pos = 1
        kept: list[str] = []
        for phrase in phrases:
            n = len(self.tokenizer.tokenize(phrase))
            if pos - 1 + n + 1 > budget:
                break
            spans.append((pos, pos + n))
            kept.append(phrase)
            pos += n + 1  # the phrase, then its '.'
        if not kept:
            raise PromptError(
                f"prompt phrase {phrases[0][:60]!r} is longer than the text encoder accepts "
                f"({self.max_text_len} tokens)"
            )
        if len(kept) < len(phrases):
            log.warning(
                "prompt longer than the text encoder accepts (%d tokens): dropped %d trailing "
                "phrase(s): %s",
                self.max_text_len,
                len(phrases) - len(kept),
                ", ".join(phrases[len(kept) :])[:200],
            )
        text_in = prompt_text(kept)
        ids = self.tokenizer(text_in)["input_ids"]
        if len(ids) != pos + 1:
            raise PromptError(
                f"prompt {text_in!r} tokenises unexpectedly ({len(ids)} tokens, expected {pos + 1})"
            )
        return GroundingDinoPrompt(
            tuple(kept), text_in, self.family, spans=tuple(spans), n_tokens=len(ids)
        )

    # ------------------------------------------------------------------ detect

    def _run(
        self, images: Sequence[NDArray[np.uint8]], prompts: Sequence[DetectorPrompt]
    ) -> list[sv.Detections]:
        h, w = images[0].shape[:2]
        size = {
            "shortest_edge": self.detector_size,
            "longest_edge": round(self.detector_size * LONGEST_EDGE_RATIO),
        }
        inputs = self.processor(
            images=[to_rgb(im) for im in images],
            text=[p.text for p in prompts],
            return_tensors="pt",
            padding="longest",
            size=size,
        ).to(self.device)
        outputs = self.model(**inputs)
        probs = outputs.logits.float().sigmoid()  # (batch, queries, max_text_len)
        boxes_all = corners(outputs.pred_boxes.float())
        scale = torch.tensor([w, h, w, h], dtype=torch.float32, device=boxes_all.device)
        results = []
        for b, p in enumerate(prompts):
            assert isinstance(p, GroundingDinoPrompt)
            scores, _ = probs[b].max(dim=-1)
            keep = scores > self.box_threshold
            kept = probs[b][keep]
            phrase_scores = torch.stack(
                [kept[:, start:end].max(dim=-1).values for start, end in p.spans], dim=1
            )
            best_score, best = phrase_scores.max(dim=1)
            ok = best_score > self.text_threshold
            boxes = (boxes_all[b][keep] * scale)[ok]
            results.append(
                finish(
                    boxes.cpu().numpy(),
                    scores[keep][ok].cpu().numpy(),
                    best[ok].cpu().numpy(),
                    p.phrases,
                    (h, w),
                )
            )
        return results


def build_tiny_random(seed: int, directory: Path) -> tuple[PreTrainedModel, ProcessorMixin]:
    """A small random-weight model from ``directory``'s config and its processor (same ``seed``:
    same weights)."""
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(directory)
    model = seeded_model(lambda: GroundingDinoDetector.random_model(directory), seed)
    return model, processor
