"""SAM 3 concept mode's detector: transformers ``Sam3Model`` grounds a text prompt into every
matching instance, each with a box and a mask (``Detector`` protocol, ``engine.protocols``).

With ``--models sam3`` the engine seeds each new (or drifted) track with its detection's mask
(``CameraTracker._seed``) and the SAM 3 tracker (``engine.backends.transformers_video`` on
``Sam3TrackerVideoModel``) follows it; promptcam's track manager keeps the IDs (never reused,
kept across a prompt change for the labels still in it). The detector also serves any other
tracker (``--detector`` naming a SAM 3 checkpoint).

SAM 3 reads one noun phrase per query: the image is encoded once per frame and each phrase of
the prompt is decoded against those features. A query's score is its sigmoid logit times the
image's presence score (as ``Sam3Processor.post_process_instance_segmentation``), kept above
``box_threshold``; ``text_threshold`` does not apply. Boxes are the model's normalised xyxy
scaled to the frame; masks are the mask probabilities resized (bilinear) to the frame, > 0.5.
Frames are prepared as the tracker's (``video_models.FramePreprocessing``: the checkpoint's
``preprocessor_config.json``, 1008 px for the real model).

Branch ``i17d`` brings a SAM 3 detector of its own (``engine/detectors/sam3.py``): once both
are on main, this module folds into that one.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import supervision as sv
import torch
import torch.nn.functional as F

from engine.backends.video_models import PREPROCESSOR_FILE, FramePreprocessing, VideoFamily
from engine.device import autocast_dtype
from engine.grounder import make_detections, normalize_prompt, prompt_text
from engine.protocols import DetectorPrompt
from stream.config import EngineConfig, ModelsConfig
from stream.errors import ModelLoadError, PromptError

log = logging.getLogger(__name__)

MASK_THRESHOLD = 0.5
SAM3_MODEL_TYPES = ("sam3", "sam3_video")
_PREP_DEFAULTS = VideoFamily("sam3", "Sam3Model", False, False, False, (0.5,) * 3, (0.5,) * 3)


class Sam3ConceptDetector:
    """A loaded SAM 3 detector (see the module docstring); one thread calls it at a time."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        preprocessing: FramePreprocessing,
        engine: EngineConfig,
        device: torch.device,
        dtype: str = "auto",
    ) -> None:
        self.model = model.to(device).eval()
        self.tokenizer = tokenizer
        self.preprocessing = preprocessing
        self.device = device
        self.box_threshold = engine.box_threshold
        self.max_tokens = int(model.config.text_config.max_position_embeddings)
        self._dtype = autocast_dtype(dtype, device)
        self._lut = preprocessing.lut()

    def parse_prompt(self, text: str) -> DetectorPrompt:
        phrases = normalize_prompt(text)
        for phrase in phrases:
            n = len(self.tokenizer(phrase)["input_ids"])
            if n > self.max_tokens:
                raise PromptError(
                    f"prompt phrase {phrase[:60]!r} is longer than SAM 3's text encoder accepts "
                    f"({n} tokens, at most {self.max_tokens})"
                )
        return DetectorPrompt(tuple(phrases), prompt_text(phrases))

    def detect(self, image_bgr: np.ndarray, prompt: DetectorPrompt) -> sv.Detections:
        return self.detect_batch([image_bgr], [prompt])[0]

    def detect_batch(
        self, images: Sequence[np.ndarray], prompts: Sequence[DetectorPrompt]
    ) -> list[sv.Detections]:
        out = []
        with torch.inference_mode(), self._autocast():
            for image, prompt in zip(images, prompts, strict=True):
                out.append(self._detect(image, prompt))
        return out

    def _autocast(self) -> Any:
        if self._dtype is None:
            return torch.autocast("cpu", enabled=False)
        return torch.autocast(self.device.type, dtype=self._dtype)

    def _pixels(self, image_bgr: np.ndarray) -> torch.Tensor:
        size = self.preprocessing.size
        rgb = torch.from_numpy(np.ascontiguousarray(image_bgr[..., ::-1])).permute(2, 0, 1)[None]
        small = F.interpolate(
            rgb, size=(size, size), mode="bilinear", antialias=True, align_corners=False
        )
        levels = small[0].reshape(3, -1).numpy()
        out = np.stack([self._lut[c][levels[c]] for c in range(3)]).reshape(1, 3, size, size)
        return torch.from_numpy(out).to(self.device, dtype=self.model.dtype)

    def _detect(self, image_bgr: np.ndarray, prompt: DetectorPrompt) -> sv.Detections:
        h, w = image_bgr.shape[:2]
        vision = self.model.get_vision_features(pixel_values=self._pixels(image_bgr))
        boxes, scores, labels, masks = [], [], [], []
        scale = torch.tensor([w, h, w, h], dtype=torch.float32, device=self.device)
        for phrase in prompt.phrases:
            text = self.tokenizer(
                [phrase], padding="max_length", max_length=self.max_tokens, return_tensors="pt"
            ).to(self.device)
            res = self.model(
                vision_embeds=vision,
                input_ids=text["input_ids"],
                attention_mask=text["attention_mask"],
            )
            score = res.pred_logits[0].float().sigmoid()
            if res.presence_logits is not None:
                score = score * res.presence_logits[0].float().sigmoid()
            keep = score > self.box_threshold
            if not bool(keep.any()):
                continue
            boxes.append((res.pred_boxes[0][keep].float() * scale).clamp_(min=0))
            scores.append(score[keep])
            labels += [phrase] * int(keep.sum())
            prob = res.pred_masks[0][keep].float().sigmoid()[None]
            masks.append(F.interpolate(prob, size=(h, w), mode="bilinear", align_corners=False)[0])
        if not boxes:
            dets = make_detections(np.zeros((0, 4)), np.zeros(0), [], prompt.phrases)
            dets.mask = np.zeros((0, h, w), dtype=bool)
            return dets
        xyxy = torch.cat(boxes).cpu().numpy()
        xyxy[:, [0, 2]] = xyxy[:, [0, 2]].clip(0, w)
        xyxy[:, [1, 3]] = xyxy[:, [1, 3]].clip(0, h)
        dets = make_detections(xyxy, torch.cat(scores).cpu().numpy(), labels, prompt.phrases)
        dets.mask = (torch.cat(masks) > MASK_THRESHOLD).cpu().numpy()
        return dets


def is_sam3_source(source: str) -> bool:
    """Whether a detector source (directory or Hub id) is a SAM 3 checkpoint."""
    config = Path(source) / "config.json"
    if config.is_file():
        import json

        try:
            return json.loads(config.read_text()).get("model_type") in SAM3_MODEL_TYPES
        except ValueError:
            return False
    return source.rstrip("/").split("/")[-1].lower().startswith("sam3")


def load_sam3_detector(
    source: str, models: ModelsConfig, engine: EngineConfig
) -> Sam3ConceptDetector:
    """The SAM 3 detector from a directory (``config.json`` with or without weights: without,
    the tiny-random build from a fixed seed) or a Hub id."""
    import transformers
    from transformers import AutoConfig, AutoTokenizer

    from engine.device import resolve_device

    sam3_model: Any = transformers.Sam3Model

    device = resolve_device(models.device)
    local = Path(source).is_dir()
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        if local and not any(Path(source).glob("*.safetensors")):
            config = AutoConfig.from_pretrained(source)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                model = sam3_model(config)
        else:
            model, info = sam3_model.from_pretrained(source, output_loading_info=True)
            missing = sorted(info.get("missing_keys") or ())
            if missing:
                raise ModelLoadError(
                    f"SAM 3 weights in {source} do not match its config: "
                    f"{len(missing)} missing keys (e.g. {missing[0]})"
                )
    except (OSError, ValueError) as e:
        from engine.presets import OFFLINE_OPTIONS

        first = str(e).strip().splitlines()
        raise ModelLoadError(
            f"SAM 3 detector {source} could not be loaded ({type(e).__name__}: "
            f"{first[0] if first else ''}); {OFFLINE_OPTIONS}"
        ) from None
    prep_file = Path(source) / PREPROCESSOR_FILE if local else None
    vision: Any = model.config.vision_config
    size = int(vision.backbone_config.image_size)
    prep = FramePreprocessing.read(
        prep_file if prep_file is not None and prep_file.is_file() else None, _PREP_DEFAULTS, size
    )
    log.info("SAM 3 detector %s on %s", source, device)
    return Sam3ConceptDetector(model, tokenizer, prep, engine, device, models.dtype)
