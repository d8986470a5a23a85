"""Grounder: Grounding DINO (transformers) turns a text prompt and a frame into labelled boxes.

Loading (:func:`load_grounder`): ``models.detector`` or the preset's detector is

* a Hugging Face Hub id or a local directory: ``AutoModelForZeroShotObjectDetection`` and
  ``AutoProcessor`` ``from_pretrained`` (a failed download raises :class:`ModelLoadError` naming
  the offline options; with the Hub unreachable (one quick probe, ``engine.hub``) or
  ``HF_HUB_OFFLINE=1`` only the cache is read, so it fails at once);
* ``tiny-random`` (or the ``configs/grounding_dino_tiny_random`` directory, which holds a config,
  a processor config and a small ``vocab.txt`` but no weights): the model is built from the
  config with random weights drawn from a fixed seed, so two loads are identical.

Prompts (:func:`normalize_prompt`, :meth:`Grounder.set_prompt`): lower case, split into phrases
on ``.``, punctuation around a phrase stripped, whitespace collapsed, empty phrases and
duplicates dropped;
the model sees ``"phrase one. phrase two."``. An empty result is a :class:`PromptError`. A
prompt longer than the text encoder accepts (``max_text_len`` tokens) is truncated: trailing
phrases that do not fit are dropped with a warning (a single phrase that does not fit is a
:class:`PromptError`).

Detections are ``supervision.Detections``: ``xyxy`` (N, 4) float32 in the pixels of the image
given (clipped to it), ``confidence`` (N,) float32, ``class_id`` (N,) the phrase index and
``data["label"]`` (N,) the phrase itself (a numpy str array). The label is the prompt phrase
whose tokens score highest for that box (at least ``text_threshold``); a box whose best phrase
scores lower is dropped, so a label is always a whole prompt phrase, never a sub-token string.

Device: ``models.device`` (``auto``: CUDA when available). CUDA runs under bf16 autocast
(``models.dtype`` ``auto``/``bfloat16``), CPU in float32 unless ``models.dtype=bfloat16``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import supervision as sv
import torch
from numpy.typing import NDArray

from engine import hub
from engine.device import autocast_dtype, resolve_device
from engine.presets import CONFIGS_DIR, OFFLINE_OPTIONS, TINY_RANDOM, get_preset
from engine.protocols import DetectorPrompt
from stream.config import EngineConfig, ModelsConfig
from stream.errors import ModelLoadError, PromptError
from stream.wire import DetectionsMessage

log = logging.getLogger(__name__)

TINY_RANDOM_DIR = CONFIGS_DIR / "grounding_dino_tiny_random"
# Grounding DINO's reference resize is shortest edge 800, longest 1333; keep that aspect cap.
LONGEST_EDGE_RATIO = 1333 / 800
_WORD = re.compile(r"[a-z0-9]")
_EDGE_PUNCT = re.compile(r"^[\W_]+|[\W_]+$")  # punctuation and spaces around a phrase


def normalize_prompt(text: str) -> list[str]:
    """The prompt's phrases: lower case, split on '.', whitespace collapsed, deduplicated.

    Raises :class:`PromptError` when no phrase with a letter or digit is left."""
    phrases: list[str] = []
    for part in text.lower().split("."):
        phrase = " ".join(_EDGE_PUNCT.sub("", part).split())
        if phrase and _WORD.search(phrase) and phrase not in phrases:
            phrases.append(phrase)
    if not phrases:
        raise PromptError(
            f"prompt {text!r} has no phrase to look for (expected e.g. 'person. car.')"
        )
    return phrases


def prompt_text(phrases: Sequence[str]) -> str:
    """The text given to the model: each phrase ended by '.'."""
    return " ".join(f"{p}." for p in phrases)


def make_detections(
    xyxy: NDArray[np.floating] | Sequence[Sequence[float]],
    scores: NDArray[np.floating] | Sequence[float],
    labels: Sequence[str],
    phrases: Sequence[str],
) -> sv.Detections:
    """Build the Detections this module returns; ``class_id`` is each label's phrase index."""
    boxes = np.asarray(xyxy, dtype=np.float32).reshape(-1, 4)
    conf = np.asarray(scores, dtype=np.float32).reshape(-1)
    if len(conf) != len(boxes) or len(labels) != len(boxes):
        raise ValueError(
            f"detections need as many scores and labels as boxes: {len(boxes)} boxes, "
            f"{len(conf)} scores, {len(labels)} labels"
        )
    index = {p: i for i, p in enumerate(phrases)}
    class_id = np.array([index[lbl] for lbl in labels], dtype=np.int64)
    return sv.Detections(
        xyxy=boxes,
        confidence=conf,
        class_id=class_id,
        data={"label": np.array(list(labels), dtype=str)},
    )


def empty_detections() -> sv.Detections:
    return make_detections(np.zeros((0, 4)), np.zeros(0), [], [])


def detections_from_message(msg: DetectionsMessage, phrases: Sequence[str]) -> sv.Detections:
    """External detector boxes (``detections`` topic), treated like Grounding DINO output.

    Labels are normalised like prompt phrases; a detection whose label is not a phrase of the
    prompt, or whose box is not finite or has no area, is dropped."""
    keep: list[tuple[list[float], float, str]] = []
    for d in msg.header.detections:
        label = " ".join(d.label.lower().strip().rstrip(".").split())
        box = [float(v) for v in d.box]
        if label not in phrases or not np.isfinite(box).all():
            continue
        if not (box[2] > box[0] and box[3] > box[1]):
            continue
        keep.append((box, float(d.score), label))
    if len(keep) < len(msg.header.detections):
        log.debug(
            "dropped %d external detections (label not in prompt or bad box)",
            len(msg.header.detections) - len(keep),
        )
    if not keep:
        return empty_detections()
    return make_detections(
        [k[0] for k in keep], [k[1] for k in keep], [k[2] for k in keep], phrases
    )


@dataclass(frozen=True)
class _PromptTokens(DetectorPrompt):
    spans: tuple[tuple[int, int], ...]  # token index range [start, end) of each phrase
    n_tokens: int


class Grounder:
    """A loaded Grounding DINO with its processor and the current prompt.

    One thread calls :meth:`detect` at a time (the engine's grounding thread). :meth:`set_prompt`
    may run beside it: it swaps the prompt in one assignment, and a running :meth:`detect` keeps
    the prompt it started with (its labels are that prompt's phrases)."""

    def __init__(
        self,
        model: Any,
        processor: Any,
        engine: EngineConfig,
        device: torch.device,
        dtype: str = "auto",
    ) -> None:
        self.model = model.to(device).eval()
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.device = device
        self.box_threshold = engine.box_threshold
        self.text_threshold = engine.text_threshold
        self.detector_size = engine.detector_size
        self.max_text_len = int(model.config.max_text_len)
        self._autocast_dtype: torch.dtype | None = autocast_dtype(dtype, device)
        self._prompt: _PromptTokens | None = None
        if engine.prompt.strip():
            self.set_prompt(engine.prompt)

    # ------------------------------------------------------------------ prompt

    @property
    def phrases(self) -> list[str]:
        return list(self._prompt.phrases) if self._prompt else []

    @property
    def prompt(self) -> str:
        """The text the model sees, e.g. ``"person. forklift."``."""
        return self._prompt.text if self._prompt else ""

    def set_prompt(self, text: str) -> list[str]:
        """Normalise and set the prompt; returns its phrases (the labels detections carry)."""
        self._prompt = self.parse_prompt(text)
        return list(self._prompt.phrases)

    def parse_prompt(self, text: str) -> _PromptTokens:
        """The prompt's phrases that fit the text encoder, with their token spans."""
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
        return _PromptTokens(tuple(kept), text_in, tuple(spans), len(ids))

    # ------------------------------------------------------------------ detect

    def detect_batch(
        self, images: Sequence[NDArray[np.uint8]], prompts: Sequence[DetectorPrompt]
    ) -> list[sv.Detections]:
        """``detect`` of each frame with its prompt."""
        return [self.detect(img, p) for img, p in zip(images, prompts, strict=True)]

    def detect(
        self, image_bgr: NDArray[np.uint8], prompt: DetectorPrompt | None = None
    ) -> sv.Detections:
        """Boxes of ``prompt``'s phrases (default: the current prompt) in ``image_bgr``
        (H, W, 3 uint8), in its pixels."""
        if image_bgr.ndim != 3 or image_bgr.shape[2] != 3 or image_bgr.dtype != np.uint8:
            raise ValueError(
                f"detect expects an HxWx3 uint8 BGR image, got {image_bgr.dtype} {image_bgr.shape}"
            )
        if prompt is not None and not isinstance(prompt, _PromptTokens):
            prompt = self.parse_prompt(prompt.text)
        p = prompt if prompt is not None else self._prompt
        if p is None:
            raise PromptError("no prompt set")
        h, w = image_bgr.shape[:2]
        rgb = np.ascontiguousarray(image_bgr[:, :, ::-1])
        size = {
            "shortest_edge": self.detector_size,
            "longest_edge": round(self.detector_size * LONGEST_EDGE_RATIO),
        }
        inputs = self.processor(images=rgb, text=p.text, return_tensors="pt", size=size).to(
            self.device
        )
        with torch.inference_mode(), self._autocast():
            outputs = self.model(**inputs)
        results = self.processor.post_process_grounded_object_detection(
            outputs,
            inputs["input_ids"],
            threshold=self.box_threshold,
            text_threshold=self.text_threshold,
            target_sizes=[(h, w)],
        )[0]
        # Map each kept box to its best whole phrase. post-processing keeps the queries whose
        # best token probability exceeds the box threshold, in query order: recompute that mask.
        probs = outputs.logits[0].float().sigmoid()  # (queries, max_text_len)
        kept_probs = probs[probs.max(dim=-1).values > self.box_threshold]
        boxes = results["boxes"].float().cpu().numpy().reshape(-1, 4)
        scores = results["scores"].float().cpu().numpy().reshape(-1)
        if len(kept_probs) != len(boxes):
            raise RuntimeError(
                f"grounding post-processing kept {len(boxes)} boxes, expected {len(kept_probs)}"
            )
        if len(boxes) == 0:
            return empty_detections()
        phrase_scores = torch.stack(
            [kept_probs[:, a:b].max(dim=-1).values for a, b in p.spans], dim=1
        )
        best_score, best = phrase_scores.max(dim=1)
        best_np = best.cpu().numpy()
        ok = (best_score > self.text_threshold).cpu().numpy()
        boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, w)
        boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, h)
        ok &= (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        labels = [p.phrases[int(i)] for i in best_np[ok]]
        return make_detections(boxes[ok], scores[ok], labels, p.phrases)

    def _autocast(self) -> AbstractContextManager[Any]:
        if self._autocast_dtype is None:
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self._autocast_dtype)


# ---------------------------------------------------------------------- loading


def detector_source(models: ModelsConfig) -> str:
    """What ``models`` names as detector: ``models.detector`` or the preset's detector."""
    return models.detector if models.detector is not None else get_preset(models.preset).detector


def load_grounder(models: ModelsConfig, engine: EngineConfig) -> Grounder:
    """Load the detector ``models`` names (see the module docstring) with ``engine``'s prompt."""
    source = detector_source(models)
    device = resolve_device(models.device)
    if _is_tiny_random(source):
        seed = get_preset(TINY_RANDOM).seed
        model, processor = build_tiny_random(seed)
        log.info(
            "grounder: tiny-random Grounding DINO (seed %d, random weights) on %s", seed, device
        )
    else:
        model, processor = _from_pretrained(source)
        log.info("grounder: Grounding DINO from %s on %s", source, device)
    return Grounder(model, processor, engine, device, models.dtype)


def build_tiny_random(seed: int = 0, directory: Path = TINY_RANDOM_DIR) -> tuple[Any, Any]:
    """The small random-weight Grounding DINO and its processor (same ``seed``: same weights)."""
    from transformers import AutoConfig, AutoModelForZeroShotObjectDetection, AutoProcessor

    config = AutoConfig.from_pretrained(directory)
    processor = AutoProcessor.from_pretrained(directory)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForZeroShotObjectDetection.from_config(config)
    return model.eval(), processor


def _is_tiny_random(source: str) -> bool:
    if source == TINY_RANDOM:
        return True
    path = Path(source)
    return path.is_dir() and path.resolve() == TINY_RANDOM_DIR.resolve()


def _from_pretrained(source: str) -> tuple[Any, Any]:
    from transformers import AutoModelForZeroShotObjectDetection, AutoProcessor

    local = Path(source).expanduser()
    is_local = local.is_dir()
    if not is_local and not hub.looks_like_hub_id(source):
        raise ModelLoadError(f"detector directory {source} does not exist; {OFFLINE_OPTIONS}")
    where = str(local) if is_local else source
    unreachable = None if is_local else hub.unreachable(source, "config.json")
    if unreachable:
        log.debug(
            "Hugging Face Hub unreachable (%s): trying the local cache for %s", unreachable, source
        )
    try:
        processor = AutoProcessor.from_pretrained(where, local_files_only=bool(unreachable))
        model = AutoModelForZeroShotObjectDetection.from_pretrained(
            where, local_files_only=bool(unreachable)
        )
    except (OSError, ValueError) as e:
        if is_local:
            raise ModelLoadError(
                f"cannot load Grounding DINO from directory {where}: {hub.first_line(e)}"
            ) from None
        raise ModelLoadError(
            f"cannot download Grounding DINO '{source}' from the Hugging Face Hub and it is not "
            f"cached ({unreachable or hub.first_line(e)}); {OFFLINE_OPTIONS}"
        ) from None
    if getattr(model.config, "model_type", None) != "grounding-dino":
        raise ModelLoadError(f"{where} is a {model.config.model_type!r} model, not Grounding DINO")
    return model.eval(), processor
