"""Florence-2 (transformers ``florence2``) open-vocabulary detection through its generation API.

For each prompt phrase the model generates an answer to ``<OPEN_VOCABULARY_DETECTION>phrase``
("Locate phrase in the image."): text and location tokens, four ``<loc_k>`` per box on a 1000-bin
grid. The processor's own parser (``post_process_generation``) turns it into boxes in the image's
pixels (polygons, which it may answer instead, become their bounding boxes); every box is labelled
with the phrase it was asked for. Florence-2 gives no scores: every box has confidence 1.0 and
neither threshold applies. Decoding follows the checkpoint's generation config (beam search for
the released ones) with at most ``MAX_NEW_TOKENS`` new tokens (about 40 boxes per phrase), or the
checkpoint's own ``max_new_tokens`` if lower.

The input size is the checkpoint's (768 px): ``detector_size`` does not apply. ``detect_batch``
runs one generation per phrase over every image asking for it (same text, so no padding: each
image's answer is what it would be alone).
"""

from __future__ import annotations

import copy
from collections.abc import Hashable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import supervision as sv
import torch
from numpy.typing import NDArray

from engine.core.protocols import DetectorPrompt
from engine.detectors.base import (
    DetectorBase,
    finish,
    normalize_prompt,
    pretrained_model,
    prompt_text,
    seeded_model,
    to_rgb,
)
from stream.config import EngineConfig

MODEL_TYPES = ("florence2",)
TASK = "<OPEN_VOCABULARY_DETECTION>"
MAX_NEW_TOKENS = 256


class Florence2Detector(DetectorBase):
    def __init__(
        self,
        model: Any,
        processor: Any,
        engine: EngineConfig,
        device: torch.device,
        dtype: str = "auto",
    ) -> None:
        super().__init__(model.config.model_type, model, engine, device, dtype)
        self.processor = processor
        positions = int(model.config.text_config.max_position_embeddings)
        own = model.generation_config.max_new_tokens  # a checkpoint's own cap, if it has one
        self.generation_config = copy.deepcopy(model.generation_config)
        self.generation_config.max_new_tokens = min(MAX_NEW_TOKENS, positions - 1, own or positions)
        self.generation_config.max_length = None

    @classmethod
    def from_pretrained(
        cls,
        where: str,
        *,
        local_files_only: bool,
        engine: EngineConfig,
        device: torch.device,
        dtype: str,
    ) -> Florence2Detector:
        from transformers import AutoProcessor

        processor = AutoProcessor.from_pretrained(where, local_files_only=local_files_only)
        model = pretrained_model(_model_class(), where, local_files_only)
        return cls(model, processor, engine, device, dtype)

    @classmethod
    def from_config_dir(
        cls, directory: Path, *, seed: int, engine: EngineConfig, device: torch.device, dtype: str
    ) -> Florence2Detector:
        from transformers import AutoConfig, AutoProcessor, GenerationConfig

        config = AutoConfig.from_pretrained(directory)
        model = seeded_model(lambda: _model_class()(config), seed)
        model.generation_config = GenerationConfig.from_pretrained(directory)
        return cls(model, AutoProcessor.from_pretrained(directory), engine, device, dtype)

    def save_pretrained(self, directory: Path) -> None:
        self.model.save_pretrained(directory)
        self.processor.save_pretrained(directory)

    def parse_prompt(self, text: str) -> DetectorPrompt:
        phrases = normalize_prompt(text)
        return DetectorPrompt(tuple(phrases), prompt_text(phrases), self.family)

    def _group_key(self, image: NDArray[np.uint8], prompt: DetectorPrompt) -> Hashable:
        return None  # one group; _run generates phrase by phrase over the images asking for it

    def _run(
        self, images: Sequence[NDArray[np.uint8]], prompts: Sequence[DetectorPrompt]
    ) -> list[sv.Detections]:
        rgbs = [to_rgb(im) for im in images]
        askers: dict[str, list[int]] = {}
        for i, p in enumerate(prompts):
            for phrase in p.phrases:
                askers.setdefault(phrase, []).append(i)
        boxes: list[list[list[float]]] = [[] for _ in images]
        labels: list[list[int]] = [[] for _ in images]
        for phrase, members in askers.items():
            answers = self._generate(phrase, [rgbs[i] for i in members])
            for i, answer in zip(members, answers, strict=True):
                h, w = images[i].shape[:2]
                found = self._boxes(answer, (w, h))
                boxes[i].extend(found)
                labels[i].extend([prompts[i].phrases.index(phrase)] * len(found))
        return [
            finish(
                np.asarray(b, dtype=np.float32).reshape(-1, 4),
                np.ones(len(b), dtype=np.float32),
                np.asarray(lbl, dtype=np.int64),
                p.phrases,
                im.shape[:2],
            )
            for b, lbl, p, im in zip(boxes, labels, prompts, images, strict=True)
        ]

    def _generate(self, phrase: str, rgbs: list[NDArray[np.uint8]]) -> list[str]:
        inputs = self.processor(
            images=rgbs, text=[f"{TASK}{phrase}"] * len(rgbs), return_tensors="pt"
        ).to(self.device)
        pixel_values = inputs["pixel_values"].to(self.model.dtype)
        generated = self.model.generate(
            input_ids=inputs["input_ids"],
            attention_mask=inputs["attention_mask"],
            pixel_values=pixel_values,
            generation_config=self.generation_config,
        )
        answers: list[str] = self.processor.batch_decode(generated, skip_special_tokens=False)
        return answers

    def _boxes(self, answer: str, size_wh: tuple[int, int]) -> list[list[float]]:
        parsed = self.processor.post_process_generation(answer, task=TASK, image_size=size_wh)[TASK]
        found = [[float(v) for v in box] for box in parsed["bboxes"]]
        for polygons in parsed["polygons"]:
            coords = [np.asarray(p, dtype=np.float32).reshape(-1) for p in polygons]
            points = np.concatenate(coords) if coords else np.zeros(0, np.float32)
            if len(points) >= 4:  # at least two (x, y) points
                xy = points[: len(points) // 2 * 2].reshape(-1, 2)
                found.append([*xy.min(axis=0).tolist(), *xy.max(axis=0).tolist()])
        return found


def _model_class() -> Any:
    from transformers import Florence2ForConditionalGeneration

    return Florence2ForConditionalGeneration
