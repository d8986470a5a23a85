"""A detector with one current prompt, for single-prompt tools (the benches, tests); and the
external detections of the ``detections`` topic as detector output.

The detectors themselves (``engine/detectors/``) are stateless: a prompt is parsed once into an
immutable ``DetectorPrompt`` and passed with every call, so one detector can serve many cameras;
the engine loads them bare (``engine.models.loading.load_detector``) and keeps each camera's prompt.
:class:`Grounder` keeps one prompt for a caller that has one (``set_prompt(text) -> phrases``,
``detect(image)``, ``.phrases``, ``.prompt``), over any detector family.

Loading (:func:`load_grounder`): the detector ``models.detector`` or the model preset names
(``engine/detectors/loading.py``), with ``engine.prompt`` as its prompt. A failed download raises
:class:`ModelLoadError` naming the offline options; with ``HF_HUB_OFFLINE=1`` it fails at once.

Prompts (``stream.prompts.normalize_prompt``): lower case, split into phrases on ``.``,
punctuation around a phrase stripped, whitespace collapsed, empty phrases and duplicates dropped.
An empty result is a :class:`PromptError`.

Detections are ``supervision.Detections`` (``engine/detectors/base.py``): ``xyxy`` (N, 4) float32
in the pixels of the image given (clipped to it), ``confidence`` (N,) float32, ``class_id`` (N,) the
phrase index and ``data["label"]`` (N,) the phrase itself (a numpy str array, always a whole prompt
phrase, never a sub-token string), and ``mask`` (N, H, W) bool from families that segment.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import supervision as sv
import torch
from numpy.typing import NDArray

from engine.core.protocols import Detector, DetectorPrompt
from engine.detectors.base import empty_detections, make_detections
from engine.models.detectors import load_detector_backend
from stream.config import EngineConfig, ModelsConfig
from stream.errors import PromptError
from stream.wire import DetectionsMessage

__all__ = ["Grounder", "detections_from_message", "load_grounder"]

log = logging.getLogger(__name__)


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


class Grounder:
    """A detector and the current prompt.

    It is itself a :class:`Detector` (``parse_prompt``, ``detect(image, prompt)``,
    ``detect_batch``), delegating to the family; ``detect(image)`` without a prompt uses the
    current one. One thread calls the detection methods at a time (the engine's grounding
    thread). :meth:`set_prompt` may run beside it: it swaps the prompt in one assignment, and a
    running :meth:`detect` keeps the prompt it started with (its labels are that prompt's
    phrases)."""

    def __init__(self, detector: Detector, prompt: str = "") -> None:
        self.detector = detector
        self._prompt: DetectorPrompt | None = None
        if prompt.strip():
            self.set_prompt(prompt)

    @property
    def device(self) -> torch.device:
        device: torch.device = getattr(self.detector, "device", torch.device("cpu"))
        return device

    @property
    def family(self) -> str:
        """The detector family (``grounding-dino``, ``owlv2``, ...; engine/detectors/loading.py)."""
        return str(getattr(self.detector, "family", type(self.detector).__name__))

    @property
    def phrases(self) -> list[str]:
        return list(self._prompt.phrases) if self._prompt else []

    @property
    def prompt(self) -> str:
        """The prompt text, e.g. ``"person. forklift."``."""
        return self._prompt.text if self._prompt else ""

    @property
    def detector_prompt(self) -> DetectorPrompt | None:
        return self._prompt

    def set_prompt(self, text: str) -> list[str]:
        """Normalise and set the prompt; returns its phrases (the labels detections carry).
        A bad prompt raises :class:`PromptError` and leaves the current one in place."""
        self._prompt = self.detector.parse_prompt(text)
        return list(self._prompt.phrases)

    def parse_prompt(self, text: str) -> DetectorPrompt:
        return self.detector.parse_prompt(text)

    def detect(
        self, image_bgr: NDArray[np.uint8], prompt: DetectorPrompt | None = None
    ) -> sv.Detections:
        """Boxes of ``prompt``'s phrases (default: the current prompt) in ``image_bgr``
        (H, W, 3 uint8), in its pixels."""
        p = prompt if prompt is not None else self._prompt
        if p is None:
            raise PromptError("no prompt set")
        return self.detector.detect(image_bgr, p)

    def detect_batch(
        self, images: Sequence[NDArray[np.uint8]], prompts: Sequence[DetectorPrompt]
    ) -> list[sv.Detections]:
        return self.detector.detect_batch(images, prompts)


def load_grounder(models: ModelsConfig, engine: EngineConfig) -> Grounder:
    """Load the detector ``models`` names, with ``engine.prompt`` as its prompt (if any)."""
    return Grounder(load_detector_backend(models, engine), engine.prompt)
