"""The stateless Detector API every open-vocabulary family implements.

A :class:`Detector` holds weights and processors only; the prompt travels with each call as an
immutable :class:`DetectorPrompt`, so one loaded detector serves any number of cameras with
different prompts (from one thread at a time: the grounding worker)::

    prompt = detector.parse_prompt("person. red ball.")   # PromptError on a bad prompt
    dets = detector.detect(image_bgr, prompt)
    many = detector.detect_batch([img_a, img_b], [prompt_a, prompt_b])

Detections (``supervision.Detections``): ``xyxy`` (N, 4) float32 in the pixels of the image given,
clipped to it, boxes without area dropped; ``confidence`` (N,) float32; ``class_id`` (N,) int64 the
phrase index in ``prompt.phrases``; ``data["label"]`` (N,) that whole phrase (never a sub-token);
``mask`` (N, H, W) bool when the family segments (SAM 3), else None.

``detect_batch`` returns exactly what ``detect`` returns image by image (up to float rounding of a
batched matmul): images are grouped by what a family needs to share one model call (same input
size; same prompt where the family takes one text per batch) and each group runs as one call.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Protocol, Self

import numpy as np
import supervision as sv
import torch
from numpy.typing import NDArray

from engine.core.protocols import DetectorPrompt
from engine.device import autocast_dtype
from engine.models.pretrained import on_device, pretrained_model, random_model, seeded_model
from stream.config import EngineConfig
from stream.errors import PromptError
from stream.prompts import normalize_prompt as normalize_prompt  # the one rule, re-exported
from stream.prompts import prompt_text as prompt_text

if TYPE_CHECKING:
    from transformers import PreTrainedModel, ProcessorMixin

    from engine.models.pretrained import ModelClass


def make_detections(
    xyxy: NDArray[np.floating] | Sequence[Sequence[float]],
    scores: NDArray[np.floating] | Sequence[float],
    labels: Sequence[str],
    phrases: Sequence[str],
    mask: NDArray[np.bool_] | None = None,
) -> sv.Detections:
    """Build the Detections detectors return; ``class_id`` is each label's phrase index."""
    boxes = np.asarray(xyxy, dtype=np.float32).reshape(-1, 4)
    conf = np.asarray(scores, dtype=np.float32).reshape(-1)
    if len(conf) != len(boxes) or len(labels) != len(boxes):
        raise ValueError(
            f"detections need as many scores and labels as boxes: {len(boxes)} boxes, "
            f"{len(conf)} scores, {len(labels)} labels"
        )
    if mask is not None and mask.shape[0] != len(boxes):
        raise ValueError(f"detections need one mask per box: {len(boxes)} boxes, {len(mask)} masks")
    index = {p: i for i, p in enumerate(phrases)}
    class_id = np.array([index[lbl] for lbl in labels], dtype=np.int64)
    return sv.Detections(
        xyxy=boxes,
        mask=mask,
        confidence=conf,
        class_id=class_id,
        data={"label": np.array(list(labels), dtype=str)},
    )


# Frames narrower than this are not run through a detector: its processor takes a side of 1, 3
# or 4 pixels for the channel axis and fails (a 45-line traceback per pass), and nothing could
# be found in them anyway; such frames get no detections.
MIN_DETECT_SIDE = 8


def empty_detections() -> sv.Detections:
    return make_detections(np.zeros((0, 4)), np.zeros(0), [], [])


def check_image(image_bgr: NDArray[np.generic]) -> None:
    if image_bgr.ndim != 3 or image_bgr.shape[2] != 3 or image_bgr.dtype != np.uint8:
        raise ValueError(
            f"detect expects an HxWx3 uint8 BGR image, got {image_bgr.dtype} {image_bgr.shape}"
        )


def check_phrase_tokens(phrases: Sequence[str], count: Callable[[str], int], limit: int) -> None:
    """:class:`PromptError` naming the first phrase of more than ``limit`` tokens (``count``)."""
    for phrase in phrases:
        n = count(phrase)
        if n > limit:
            raise PromptError(
                f"prompt phrase {phrase[:60]!r} is longer than the text encoder accepts "
                f"({n} tokens, at most {limit})"
            )


def to_rgb(image_bgr: NDArray[np.uint8]) -> NDArray[np.uint8]:
    return np.ascontiguousarray(image_bgr[:, :, ::-1])


def corners(boxes_cxcywh: torch.Tensor) -> torch.Tensor:
    """(cx, cy, w, h) -> (x1, y1, x2, y2), as transformers' ``center_to_corners_format``."""
    cx, cy, w, h = boxes_cxcywh.unbind(-1)
    return torch.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], dim=-1)


def finish(
    boxes: NDArray[np.floating],
    scores: NDArray[np.floating],
    phrase_idx: NDArray[np.integer],
    phrases: Sequence[str],
    size: tuple[int, int],
    mask: NDArray[np.bool_] | None = None,
) -> sv.Detections:
    """Detections from raw per-box results: boxes clipped to ``size`` (h, w), boxes without area
    dropped (with their masks), labels from the phrase indices."""
    h, w = size
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4).copy()
    scores = np.asarray(scores, dtype=np.float32).reshape(-1)
    phrase_idx = np.asarray(phrase_idx, dtype=np.int64).reshape(-1)
    if len(boxes) == 0:
        return make_detections(
            boxes, scores, [], phrases, None if mask is None else np.zeros((0, h, w), dtype=bool)
        )
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, w)
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, h)
    ok = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1]) & np.isfinite(scores)
    labels = [phrases[int(i)] for i in phrase_idx[ok]]
    return make_detections(
        boxes[ok], scores[ok], labels, phrases, None if mask is None else mask[ok]
    )


# What a family's model is built by: pretrained weights or seeded random ones (DetectorBase).
ModelBuilder = Callable[[], "PreTrainedModel"]


@dataclass(frozen=True)
class LoadSpec:
    """Where a family's files are (a directory or Hub id) and how it runs once built."""

    where: str
    local_files_only: bool
    engine: EngineConfig
    device: torch.device
    dtype: str


class Saved(Protocol):
    """A part a family keeps beside its model (processor, tokenizer, ...)."""

    def save_pretrained(self, save_directory: Path) -> object: ...


class DetectorBase(ABC):
    """Shared machinery of the transformers families: the one loading path (pretrained weights
    from a directory or Hub id, :meth:`from_pretrained`; random weights from a config directory,
    :meth:`from_config_dir`), device and autocast, input checks, the grouping of
    ``detect_batch``. Subclasses implement :meth:`model_class`, :meth:`assemble` (read their
    processors, build the model, construct), :meth:`parse_prompt`, :meth:`_run` (one model call
    over a group) and :meth:`_saved` (the parts :meth:`save_pretrained` writes)."""

    prompt_type: ClassVar[type[DetectorPrompt]] = DetectorPrompt  # what parse_prompt returns

    def __init__(
        self,
        family: str,
        model: PreTrainedModel,
        engine: EngineConfig,
        device: torch.device,
        dtype: str = "auto",
    ) -> None:
        self.family = family
        self.model = on_device(model, device)
        self.device = device
        self.box_threshold = engine.box_threshold
        self.text_threshold = engine.text_threshold
        self.detector_size: int | None = engine.detector_size  # None: the family's own
        self._autocast_dtype: torch.dtype | None = autocast_dtype(dtype, device)

    # ------------------------------------------------------------------ loading

    @classmethod
    def from_pretrained(
        cls,
        where: str,
        *,
        local_files_only: bool,
        engine: EngineConfig,
        device: torch.device,
        dtype: str,
    ) -> Self:
        """The family from a directory or Hub id; weights must match the config."""

        def build() -> PreTrainedModel:
            return pretrained_model(cls.model_class(), where, local_files_only)

        return cls.assemble(LoadSpec(where, local_files_only, engine, device, dtype), build)

    @classmethod
    def from_config_dir(
        cls, directory: Path, *, seed: int, engine: EngineConfig, device: torch.device, dtype: str
    ) -> Self:
        """The family from a config directory, with random weights drawn from ``seed``."""

        def build() -> PreTrainedModel:
            return seeded_model(lambda: cls.random_model(directory), seed)

        return cls.assemble(LoadSpec(str(directory), False, engine, device, dtype), build)

    @classmethod
    @abstractmethod
    def model_class(cls) -> ModelClass:
        """The transformers class (or Auto* class) the family's weights load into."""

    @classmethod
    def random_model(cls, directory: Path) -> PreTrainedModel:
        """A model with random weights from ``directory``'s ``config.json``."""
        return random_model(cls.model_class(), directory)

    @classmethod
    @abstractmethod
    def assemble(cls, spec: LoadSpec, build: ModelBuilder) -> Self:
        """Read the family's processors from ``where``, then ``build()`` the model: the
        detector."""

    @abstractmethod
    def _saved(self) -> Sequence[Saved]:
        """The parts :meth:`save_pretrained` writes beside the model."""

    def save_pretrained(self, directory: Path) -> None:
        """Write weights, config and processor files, loadable with ``--detector DIRECTORY``."""
        self.model.save_pretrained(directory)
        for part in self._saved():
            part.save_pretrained(directory)

    # ------------------------------------------------------------------ detecting

    @abstractmethod
    def parse_prompt(self, text: str) -> DetectorPrompt: ...

    @abstractmethod
    def _run(
        self, images: Sequence[NDArray[np.uint8]], prompts: Sequence[DetectorPrompt]
    ) -> list[sv.Detections]:
        """One model call over ``images`` (a group of :meth:`_group_key`)."""

    def _group_key(self, image: NDArray[np.uint8], prompt: DetectorPrompt) -> Hashable:
        """Images with equal keys share one model call; default: the same image size."""
        return image.shape[:2]

    def detect(self, image_bgr: NDArray[np.uint8], prompt: DetectorPrompt) -> sv.Detections:
        """Boxes of ``prompt``'s phrases in ``image_bgr`` (H, W, 3 uint8), in its pixels."""
        return self.detect_batch([image_bgr], [prompt])[0]

    def detect_batch(
        self, images: Sequence[NDArray[np.uint8]], prompts: Sequence[DetectorPrompt]
    ) -> list[sv.Detections]:
        """``detect`` over several images, each with its own prompt, in as few calls as the
        family allows; results in input order."""
        if len(images) != len(prompts):
            raise ValueError(
                f"detect_batch needs one prompt per image: {len(images)} images, {len(prompts)} prompts"
            )
        prompts = [self._own(p) for p in prompts]
        groups: dict[Hashable, list[int]] = {}
        for i, (image, prompt) in enumerate(zip(images, prompts, strict=True)):
            check_image(image)
            if min(image.shape[:2]) < MIN_DETECT_SIDE:
                continue  # too small to detect in: no detections (the engine counts these)
            groups.setdefault(self._group_key(image, prompt), []).append(i)
        out: list[sv.Detections | None] = [None] * len(images)
        with torch.inference_mode(), self._autocast():
            for members in groups.values():
                results = self._run([images[i] for i in members], [prompts[i] for i in members])
                for i, r in zip(members, results, strict=True):
                    out[i] = r
        return [r if r is not None else empty_detections() for r in out]

    def _own(self, prompt: DetectorPrompt) -> DetectorPrompt:
        """``prompt`` as this family parses it (parsed again when another family made it)."""
        if prompt.family == self.family and type(prompt) is self.prompt_type:
            return prompt
        return self.parse_prompt(prompt.text)

    def _autocast(self) -> AbstractContextManager[None]:
        if self._autocast_dtype is None:
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self._autocast_dtype)


class ProcessorDetector(DetectorBase):
    """A family that reads its inputs through one transformers processor (``AutoProcessor``)
    and, unless it says otherwise, loads into ``AutoModelForZeroShotObjectDetection``."""

    def __init__(
        self,
        model: PreTrainedModel,
        processor: ProcessorMixin,
        engine: EngineConfig,
        device: torch.device,
        dtype: str = "auto",
    ) -> None:
        super().__init__(model.config.model_type, model, engine, device, dtype)
        self.processor = processor
        self._ready(engine)

    def _ready(self, engine: EngineConfig) -> None:
        """What a family derives from its model, processor and settings once loaded."""

    @classmethod
    def model_class(cls) -> ModelClass:
        from transformers import AutoModelForZeroShotObjectDetection

        return AutoModelForZeroShotObjectDetection

    @classmethod
    def assemble(cls, spec: LoadSpec, build: ModelBuilder) -> Self:
        from transformers import AutoProcessor

        processor = AutoProcessor.from_pretrained(
            spec.where, local_files_only=spec.local_files_only
        )
        return cls(build(), processor, spec.engine, spec.device, spec.dtype)

    def _saved(self) -> Sequence[Saved]:
        return [self.processor]
