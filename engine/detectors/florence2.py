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
from typing import TYPE_CHECKING, Any

import numpy as np
import supervision as sv
from numpy.typing import NDArray

from engine.core.protocols import DetectorPrompt
from engine.detectors.base import (
    ProcessorDetector,
    finish,
    normalize_prompt,
    prompt_text,
    to_rgb,
)
from stream.config import EngineConfig
from stream.errors import ModelLoadError

if TYPE_CHECKING:
    from transformers import PreTrainedModel

    from engine.models.pretrained import ModelClass


MODEL_TYPES = ("florence2",)
TASK = "<OPEN_VOCABULARY_DETECTION>"
MAX_NEW_TOKENS = 256


class Florence2Detector(ProcessorDetector):
    def _ready(self, engine: EngineConfig) -> None:
        from transformers import Florence2Processor

        if not isinstance(self.processor, Florence2Processor):
            raise ModelLoadError(f"not a Florence-2 processor: {type(self.processor).__name__}")
        self.parser = self.processor  # its generation parser, typed
        # transformers types generate() for a protocol of its own that its models do not meet
        self.generator: Any = self.model
        config = self.model.config
        positions = int(config.text_config.max_position_embeddings)
        own = self.model.generation_config.max_new_tokens  # a checkpoint's own cap, if any
        self.generation_config = copy.deepcopy(self.model.generation_config)
        self.generation_config.max_new_tokens = min(MAX_NEW_TOKENS, positions - 1, own or positions)
        self.generation_config.max_length = None

    @classmethod
    def model_class(cls) -> ModelClass:
        from transformers import Florence2ForConditionalGeneration

        return Florence2ForConditionalGeneration

    @classmethod
    def random_model(cls, directory: Path) -> PreTrainedModel:
        from transformers import GenerationConfig

        model = super().random_model(directory)
        model.generation_config = GenerationConfig.from_pretrained(directory)
        return model

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
        generated = self.generator.generate(
            input_ids=inputs["input_ids"],
            attention_mask=inputs["attention_mask"],
            pixel_values=pixel_values,
            generation_config=self.generation_config,
        )
        answers: list[str] = self.processor.batch_decode(generated, skip_special_tokens=False)
        return answers

    def _boxes(self, answer: str, size_wh: tuple[int, int]) -> list[list[float]]:
        parsed = self.parser.post_process_generation(answer, task=TASK, image_size=size_wh)[TASK]
        found = [[float(v) for v in box] for box in parsed["bboxes"]]
        for polygons in parsed["polygons"]:
            coords = [np.asarray(p, dtype=np.float32).reshape(-1) for p in polygons]
            points = np.concatenate(coords) if coords else np.zeros(0, np.float32)
            if len(points) >= 4:  # at least two (x, y) points
                xy = points[: len(points) // 2 * 2].reshape(-1, 2)
                found.append([*xy.min(axis=0).tolist(), *xy.max(axis=0).tolist()])
        return found
