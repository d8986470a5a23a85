"""The one model registry: every model family promptcam loads, by name, with its loader.

A row (:class:`ModelFamily`) says what a family is (``kind``: the ``sam2`` package segmenter, a
transformers video tracker, an open-vocabulary detector), which transformers ``model_type``
values it reads (how a directory or Hub id is recognised), where its implementation lives
(``"module:attribute"``, imported on first use so that listing models loads nothing) and one
line about it. Presets (``engine/models/presets.py``) name a family by its row's ``name``;
``promptcam models`` lists the rows with the presets each serves (:func:`presets_of`); loading
(``engine/models/loading.py``) finds the implementation here:

* ``SEGMENTER``: a :data:`KernelLoader` (``ModelsConfig`` -> kernel);
* ``TRACKER``: a ``engine.models.video.VideoFamily`` (what streaming that family needs), loaded
  by the one transformers video path;
* ``DETECTOR``: a ``engine.detectors.base.DetectorBase`` subclass, loaded by the one detector path
  (``engine/models/detectors.py``: preset, directory or Hub id, the same for every family).

A new family is its implementation file plus one row of :data:`FAMILIES`.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from enum import StrEnum

from stream.errors import ModelLoadError


class ModelKind(StrEnum):
    """What a family does in the engine."""

    SEGMENTER = "segmenter"  # Meta's sam2 package: preset checkpoints, local checkpoint + YAML
    TRACKER = "tracker"  # a transformers video tracker (--tracker)
    DETECTOR = "detector"  # an open-vocabulary detector (--detector)


@dataclass(frozen=True)
class ModelFamily:
    """One registry row (see the module docstring)."""

    name: str  # what presets name as their family
    kind: ModelKind
    model_types: tuple[str, ...]  # transformers config model_type values it reads
    loader: str  # "module:attribute" of its implementation, imported on first use
    description: str

    def implementation(self) -> object:
        """The object ``loader`` names (the caller narrows it to what its kind loads)."""
        module, _, attribute = self.loader.partition(":")
        return getattr(importlib.import_module(module), attribute)


DEFAULT_SEGMENTER = "sam2"  # the row that runs when no transformers tracker is named

_GDINO = "engine.detectors.grounding_dino:GroundingDinoDetector"
_OWL = "engine.detectors.owl:OwlDetector"
_VIDEO = "engine.models.video"

FAMILIES: dict[str, ModelFamily] = {
    f.name: f
    for f in (
        ModelFamily(
            "sam2",
            ModelKind.SEGMENTER,
            (),
            "engine.models.loading:load_sam2_kernel",
            "SAM 2 / 2.1 through Meta's sam2 package (Meta-format checkpoint + hydra YAML)",
        ),
        ModelFamily(
            "sam2_video",
            ModelKind.TRACKER,
            ("sam2_video",),
            f"{_VIDEO}:SAM2_VIDEO",
            "SAM 2 / 2.1 through transformers (Sam2VideoModel)",
        ),
        ModelFamily(
            "edgetam_video",
            ModelKind.TRACKER,
            ("edgetam_video",),
            f"{_VIDEO}:EDGETAM_VIDEO",
            "EdgeTAM through transformers (EdgeTamVideoModel; needs timm)",
        ),
        ModelFamily(
            "sam3_tracker_video",
            ModelKind.TRACKER,
            ("sam3_tracker_video", "sam3_video"),  # a SAM 3 checkpoint is read for its tracker
            f"{_VIDEO}:SAM3_TRACKER_VIDEO",
            "the SAM 3 tracker through transformers (Sam3TrackerVideoModel)",
        ),
        ModelFamily(
            "grounding-dino",
            ModelKind.DETECTOR,
            ("grounding-dino",),
            _GDINO,
            "Grounding DINO: the whole prompt as one text, boxes scored per token",
        ),
        ModelFamily(
            "mm-grounding-dino",
            ModelKind.DETECTOR,
            ("mm-grounding-dino",),
            _GDINO,
            "MM-Grounding-DINO and LLMDet (Grounding DINO's design)",
        ),
        ModelFamily(
            "owlv2", ModelKind.DETECTOR, ("owlv2",), _OWL, "OWLv2: one text query per phrase"
        ),
        ModelFamily(
            "owlvit", ModelKind.DETECTOR, ("owlvit",), _OWL, "OWL-ViT: one text query per phrase"
        ),
        ModelFamily(
            "omdet-turbo",
            ModelKind.DETECTOR,
            ("omdet-turbo",),
            "engine.detectors.omdet_turbo:OmDetTurboDetector",
            "OmDet-Turbo: the phrases are its classes, plus a task sentence",
        ),
        ModelFamily(
            "florence2",
            ModelKind.DETECTOR,
            ("florence2",),
            "engine.detectors.florence2:Florence2Detector",
            "Florence-2 open-vocabulary detection by generation (no scores)",
        ),
        ModelFamily(
            "sam3",
            ModelKind.DETECTOR,
            ("sam3", "sam3_video"),
            "engine.detectors.sam3:Sam3Detector",
            "SAM 3 concept detection: every instance of a phrase, with its mask",
        ),
    )
}


def families(kind: ModelKind) -> list[ModelFamily]:
    """The rows of ``kind``, in registry order."""
    return [f for f in FAMILIES.values() if f.kind == kind]


def get_family(name: str) -> ModelFamily:
    """The row ``name``; ModelLoadError (one line) if there is none."""
    try:
        return FAMILIES[name]
    except KeyError:
        raise ModelLoadError(
            f"unknown model family '{name}' (known: {', '.join(FAMILIES)})"
        ) from None


def model_types(kind: ModelKind) -> list[str]:
    """Every ``model_type`` a family of ``kind`` reads, in registry order."""
    return [t for f in families(kind) for t in f.model_types]


def family_for_model_type(kind: ModelKind, model_type: object) -> ModelFamily | None:
    """The first row of ``kind`` that reads ``model_type`` (None: no family does)."""
    for family in families(kind):
        if model_type in family.model_types:
            return family
    return None


def presets_of(family: ModelFamily) -> list[str]:
    """The tracker and detector presets built on ``family``, and the model presets using them
    (the ``sam2`` segmenter serves every model preset without a transformers tracker)."""
    from engine.models.presets import DETECTOR_PRESETS, TRACKER_PRESETS, all_presets

    models = all_presets().values()
    if family.kind == ModelKind.DETECTOR:
        named = [p.name for p in DETECTOR_PRESETS.values() if p.family == family.name]
        using = [p.name for p in models if p.detector in named]
    elif family.kind == ModelKind.TRACKER:
        named = [p.name for p in TRACKER_PRESETS.values() if p.family == family.name]
        using = [p.name for p in models if p.tracker in named]
    else:
        named, using = [], [p.name for p in models if p.tracker is None]
    return list(dict.fromkeys([*named, *using]))
