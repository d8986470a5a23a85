"""The SAM 3 detector (transformers ``Sam3Model``; ``sam3`` and ``sam3_video`` checkpoints, whose
tracker weights are ignored): text in, every matching instance out, with its mask.

SAM 3 reads one noun phrase per call, so each prompt phrase is a query of its own; the image is
encoded once and its features are shared by all its phrases, and all (image, phrase) pairs run
through the DETR part together (``PAIRS_PER_CALL`` at a time). Post-processing is the family's
own (``Sam3ImageProcessor.post_process_instance_segmentation``): a query's score is its
sigmoid logit times the image's presence score, kept above ``box_threshold``; boxes are scaled to
the image; mask probabilities are upsampled (bilinear) to the image and thresholded at ``MASK_THRESHOLD``.
``text_threshold`` does not apply. Detections carry ``mask`` (N, H, W) bool.

transformers' ``Sam3ImageProcessor`` needs torchvision, which the CPU install does not have, so
images are prepared here as it prepares them, from the checkpoint's ``preprocessor_config.json``
(resize to ``size``, bilinear with antialiasing, /255, mean/std). The input size is the
checkpoint's (1008 px): ``detector_size`` does not apply. A phrase longer than the text encoder
accepts (32 tokens) is a :class:`PromptError`.
"""

from __future__ import annotations

import json
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Self

import numpy as np
import supervision as sv
import torch
import torch.nn.functional as F
from numpy.typing import NDArray

from engine.core.protocols import DetectorPrompt
from engine.detectors.base import (
    DetectorBase,
    LoadSpec,
    ModelBuilder,
    Saved,
    check_phrase_tokens,
    finish,
    normalize_prompt,
    prompt_text,
    to_rgb,
)
from stream.config import EngineConfig
from stream.errors import ModelLoadError

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from engine.models.pretrained import ModelClass


MODEL_TYPES = ("sam3", "sam3_video")
MASK_THRESHOLD = 0.5  # Sam3Processor.post_process_instance_segmentation's default
PAIRS_PER_CALL = 8  # (image, phrase) pairs per DETR call: bounds the per-query mask logits
PREPROCESSOR_FILE = "preprocessor_config.json"


@dataclass(frozen=True)
class Sam3Preprocessing:
    """What ``Sam3ImageProcessor`` does to an image, as its config file says (its defaults)."""

    height: int = 1008
    width: int = 1008
    rescale_factor: float = 1 / 255
    image_mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    image_std: tuple[float, float, float] = (0.5, 0.5, 0.5)

    @classmethod
    def read(cls, path: Path) -> Sam3Preprocessing:
        raw = json.loads(path.read_text())
        size = raw.get("size") or {}
        default = cls()
        return cls(
            int(size.get("height", default.height)),
            int(size.get("width", default.width)),
            float(raw.get("rescale_factor", default.rescale_factor)),
            tuple(raw.get("image_mean", default.image_mean)),
            tuple(raw.get("image_std", default.image_std)),
        )

    def save_pretrained(self, directory: Path) -> None:
        config = {
            "image_processor_type": "Sam3ImageProcessor",
            "processor_class": "Sam3Processor",
            "do_resize": True,
            "size": {"height": self.height, "width": self.width},
            "resample": 2,
            "do_rescale": True,
            "rescale_factor": self.rescale_factor,
            "do_normalize": True,
            "image_mean": list(self.image_mean),
            "image_std": list(self.image_std),
        }
        (directory / PREPROCESSOR_FILE).write_text(json.dumps(config, indent=2) + "\n")

    def __call__(self, rgbs: Sequence[NDArray[np.uint8]], device: torch.device) -> torch.Tensor:
        out = []
        for rgb in rgbs:
            x = torch.from_numpy(rgb).to(device).permute(2, 0, 1)[None].float()
            x = F.interpolate(
                x, size=(self.height, self.width), mode="bilinear", antialias=True
            ).clamp(0, 255)
            out.append(x)
        x = torch.cat(out) * self.rescale_factor
        mean = torch.tensor(self.image_mean, device=device).view(1, 3, 1, 1)
        std = torch.tensor(self.image_std, device=device).view(1, 3, 1, 1)
        return (x - mean) / std


# One phrase's kept queries in one image: (phrase index, scores, boxes, mask logits).
_Found = tuple[int, torch.Tensor, torch.Tensor, torch.Tensor]


class Sam3Detector(DetectorBase):
    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        preprocessing: Sam3Preprocessing,
        engine: EngineConfig,
        device: torch.device,
        dtype: str = "auto",
    ) -> None:
        from transformers import Sam3Model

        if not isinstance(model, Sam3Model):
            raise ModelLoadError(f"not a SAM 3 model: {type(model).__name__}")
        super().__init__("sam3", model, engine, device, dtype)
        self.sam3 = model  # self.model, typed as the SAM 3 model it is
        self.tokenizer = tokenizer
        self.preprocessing = preprocessing
        self.max_tokens = int(self.model.config.text_config.max_position_embeddings)

    @classmethod
    def model_class(cls) -> ModelClass:
        from transformers import Sam3Model

        return Sam3Model

    @classmethod
    def assemble(cls, spec: LoadSpec, build: ModelBuilder) -> Self:
        from huggingface_hub import hf_hub_download
        from transformers import AutoTokenizer

        local = Path(spec.where) / PREPROCESSOR_FILE
        path = (
            local
            if local.is_file()
            else Path(
                hf_hub_download(
                    spec.where, PREPROCESSOR_FILE, local_files_only=spec.local_files_only
                )
            )
        )
        tokenizer = AutoTokenizer.from_pretrained(
            spec.where, local_files_only=spec.local_files_only
        )
        return cls(
            build(), tokenizer, Sam3Preprocessing.read(path), spec.engine, spec.device, spec.dtype
        )

    def _saved(self) -> Sequence[Saved]:
        return [self.tokenizer, self.preprocessing]

    def parse_prompt(self, text: str) -> DetectorPrompt:
        phrases = normalize_prompt(text)
        check_phrase_tokens(
            phrases, lambda phrase: len(self.tokenizer(phrase)["input_ids"]), self.max_tokens
        )
        return DetectorPrompt(tuple(phrases), prompt_text(phrases), self.family)

    def _group_key(self, image: NDArray[np.uint8], prompt: DetectorPrompt) -> Hashable:
        return None  # every image is resized to the checkpoint's square input

    def _run(
        self, images: Sequence[NDArray[np.uint8]], prompts: Sequence[DetectorPrompt]
    ) -> list[sv.Detections]:
        from transformers.models.sam3.modeling_sam3 import Sam3VisionEncoderOutput

        pixels = self.preprocessing([to_rgb(im) for im in images], self.device)
        vision = self.sam3.get_vision_features(pixel_values=pixels.to(self.model.dtype))
        pairs = [(i, j) for i, p in enumerate(prompts) for j in range(len(p.phrases))]
        found: list[list[_Found]] = [[] for _ in images]
        for start in range(0, len(pairs), PAIRS_PER_CALL):
            chunk = pairs[start : start + PAIRS_PER_CALL]
            index = torch.tensor([i for i, _ in chunk], device=self.device)
            text = self.tokenizer(
                [prompts[i].phrases[j] for i, j in chunk],
                padding="max_length",
                max_length=self.max_tokens,
                return_tensors="pt",
            ).to(self.device)
            embeds = Sam3VisionEncoderOutput(
                fpn_hidden_states=tuple(t[index] for t in vision.fpn_hidden_states),
                fpn_position_encoding=tuple(t[index] for t in vision.fpn_position_encoding),
            )
            out = self.sam3(
                vision_embeds=embeds,
                input_ids=text["input_ids"],
                attention_mask=text["attention_mask"],
            )
            scores = out.pred_logits.float().sigmoid()
            if out.presence_logits is not None:
                scores = scores * out.presence_logits.float().sigmoid()
            for k, (i, j) in enumerate(chunk):
                keep = scores[k] > self.box_threshold
                found[i].append(
                    (j, scores[k][keep], out.pred_boxes[k][keep], out.pred_masks[k][keep])
                )
        return [
            self._finish(image, p, parts)
            for image, p, parts in zip(images, prompts, found, strict=True)
        ]

    def _finish(
        self,
        image: NDArray[np.uint8],
        prompt: DetectorPrompt,
        parts: list[_Found],
    ) -> sv.Detections:
        h, w = image.shape[:2]
        scale = torch.tensor([w, h, w, h], dtype=torch.float32, device=self.device)
        scores = torch.cat([s for _, s, _, _ in parts])
        boxes = torch.cat([b.float() for _, _, b, _ in parts]) * scale
        labels = np.concatenate([np.full(len(s), j, dtype=np.int64) for j, s, _, _ in parts])
        probs = torch.cat([m.float().sigmoid() for _, _, _, m in parts])
        if len(probs):
            probs = F.interpolate(probs[None], size=(h, w), mode="bilinear", align_corners=False)[0]
            mask = (probs > MASK_THRESHOLD).cpu().numpy()
        else:
            mask = np.zeros((0, h, w), dtype=bool)
        return finish(
            boxes.cpu().numpy(), scores.cpu().numpy(), labels, prompt.phrases, (h, w), mask
        )
