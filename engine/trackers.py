"""Which segmenter kernel and which detector a configuration means (loaded here, once).

Tracker: ``models.tracker`` (``--tracker``) or the preset's tracker names a transformers video
model (``engine.backends``: :class:`HfVideoKernel`); otherwise Meta's ``sam2`` package runs
(``engine.segmenters.sam2.Sam2Kernel``: the preset's SAM 2, or ``--sam2-checkpoint/--sam2-config``).
Detector: ``models.detector`` or the preset's detector, any family of ``engine/detectors/``
(a SAM 3 checkpoint grounds with SAM 3, whose detections carry masks: concept mode), loaded
bare: the engine passes each camera's parsed prompt with every call.
"""

from __future__ import annotations

from typing import Any

from engine.backends.video_models import load_video_model
from engine.core.protocols import Detector
from engine.detectors.loading import load_detector_backend
from engine.presets import get_preset
from engine.sam2_models import load_sam2
from engine.segmenters.sam2 import Sam2Kernel
from engine.segmenters.transformers import HfVideoKernel
from stream.config import EngineConfig, ModelsConfig
from stream.errors import ModelLoadError


def tracker_source(models: ModelsConfig) -> str | None:
    """The transformers tracker ``models`` names, or None for the sam2 package."""
    if models.tracker is not None:
        if models.sam2_checkpoint is not None or models.sam2_config is not None:
            raise ModelLoadError(
                "--tracker and --sam2-checkpoint/--sam2-config name two trackers: give one"
            )
        return models.tracker
    if models.sam2_checkpoint is not None or models.sam2_config is not None:
        return None
    return get_preset(models.preset).tracker


def load_kernel(models: ModelsConfig) -> Any:
    """The segmenter kernel (shared by every camera) that ``models`` names."""
    source = tracker_source(models)
    if source is None:
        return Sam2Kernel(load_sam2(models))
    return HfVideoKernel(load_video_model(source, models))


def load_detector(models: ModelsConfig, engine: EngineConfig) -> Detector:
    return load_detector_backend(models, engine)
