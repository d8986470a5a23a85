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
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import supervision as sv
import torch
from numpy.typing import NDArray

from engine.core.protocols import DetectorPrompt
from engine.device import autocast_dtype
from engine.hub import first_line
from stream.config import EngineConfig
from stream.errors import ModelLoadError
from stream.prompts import normalize_prompt as normalize_prompt  # the one rule, re-exported
from stream.prompts import prompt_text as prompt_text


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


def check_image(image_bgr: NDArray[Any]) -> None:
    if image_bgr.ndim != 3 or image_bgr.shape[2] != 3 or image_bgr.dtype != np.uint8:
        raise ValueError(
            f"detect expects an HxWx3 uint8 BGR image, got {image_bgr.dtype} {image_bgr.shape}"
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


class DetectorBase(ABC):
    """Shared machinery of the transformers families: device and autocast, input checks, the
    grouping of ``detect_batch``. Subclasses implement :meth:`parse_prompt`, :meth:`_run` (one
    model call over a group) and :meth:`save_pretrained` (the files their loader reads)."""

    prompt_type: ClassVar[type[DetectorPrompt]] = DetectorPrompt  # what parse_prompt returns

    def __init__(
        self,
        family: str,
        model: Any,
        engine: EngineConfig,
        device: torch.device,
        dtype: str = "auto",
    ) -> None:
        self.family = family
        self.model = model.to(device).eval()
        self.device = device
        self.box_threshold = engine.box_threshold
        self.text_threshold = engine.text_threshold
        self.detector_size: int | None = engine.detector_size  # None: the family's own
        self._autocast_dtype: torch.dtype | None = autocast_dtype(dtype, device)

    @abstractmethod
    def parse_prompt(self, text: str) -> DetectorPrompt: ...

    @abstractmethod
    def save_pretrained(self, directory: Path) -> None:
        """Write weights, config and processor files, loadable with ``--detector DIRECTORY``."""

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

    def _autocast(self) -> AbstractContextManager[Any]:
        if self._autocast_dtype is None:
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self._autocast_dtype)


def pretrained_model(model_cls: Any, where: str, local_files_only: bool) -> Any:
    """``model_cls.from_pretrained(where)`` in eval mode; weights that do not match the config
    (missing or differently shaped) are a :class:`ModelLoadError`, not a silently half-random
    model. Unexpected extra weights are allowed (a ``sam3_video`` checkpoint's tracker)."""
    try:
        model, info = model_cls.from_pretrained(
            where, local_files_only=local_files_only, output_loading_info=True
        )
    except RuntimeError as e:  # size mismatches between checkpoint and config
        raise ModelLoadError(
            f"weights in {where} do not match its config: {first_line(e)}"
        ) from None
    problems = []
    for kind in ("missing_keys", "mismatched_keys"):
        keys = sorted(str(k) for k in info.get(kind) or ())
        if keys:
            problems.append(f"{len(keys)} {kind.replace('_', ' ')} (e.g. {keys[0]})")
    if problems:
        raise ModelLoadError(f"weights in {where} do not match its config: {'; '.join(problems)}")
    return model.eval()


def seeded_model(build: Callable[[], Any], seed: int) -> Any:
    """``build()`` (a model with random weights) drawn from ``seed``, in eval mode, leaving the
    caller's random state alone: the same seed gives the same weights."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build()
    return model.eval()
