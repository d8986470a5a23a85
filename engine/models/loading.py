"""Which segmenter kernel and which detector a configuration means (loaded here, once).

Tracker: ``models.tracker`` (``--tracker``) or the preset's tracker names a transformers video
model: the one transformers path (``engine.models.video``; its family, a ``TRACKER`` row of
``engine.models.registry``, is read from the checkpoint's config) runs it in
``engine.segmenters.transformers.HfVideoKernel``. Otherwise the ``SEGMENTER`` row
``models.segmenter`` names (default ``sam2``) loads (Meta's ``sam2`` package: the preset's SAM 2, or
``--sam2-checkpoint/--sam2-config``). Detector: ``models.detector`` or the preset's detector, a
``DETECTOR`` row of the registry (``engine.models.detectors``), loaded bare (a SAM 3 checkpoint
grounds with SAM 3, whose detections carry masks: concept mode).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from engine.core.protocols import Detector, SegmenterKernel
from engine.models.detectors import load_detector_backend
from engine.models.presets import get_preset
from engine.models.registry import ModelKind, get_family
from engine.models.sam2 import load_sam2
from engine.models.video import load_video_model
from engine.segmenters.sam2 import Sam2Kernel
from engine.segmenters.transformers import HfVideoKernel
from stream.config import EngineConfig, ModelsConfig
from stream.errors import ModelLoadError

# A SEGMENTER row's implementation: the kernel the configuration names, loaded (engine/core's
# kernel protocol, which carries the device it runs on).
KernelLoader = Callable[[ModelsConfig], "SegmenterKernel[Any]"]


def load_sam2_kernel(models: ModelsConfig) -> Sam2Kernel:
    """The ``sam2`` row's loader: the SAM 2 model ``models`` names, in its kernel."""
    return Sam2Kernel(load_sam2(models))


def tracker_source(models: ModelsConfig) -> str | None:
    """The transformers tracker ``models`` names, or None for the ``sam2`` package."""
    if models.tracker is not None:
        if models.sam2_checkpoint is not None or models.sam2_config is not None:
            raise ModelLoadError(
                "--tracker and --sam2-checkpoint/--sam2-config name two trackers: give one"
            )
        return models.tracker
    if models.sam2_checkpoint is not None or models.sam2_config is not None:
        return None
    return get_preset(models.preset).tracker


def segmenter_loader(name: str) -> KernelLoader:
    """The loader of the ``SEGMENTER`` row ``name``."""
    family = get_family(name)
    loader = family.implementation()
    if family.kind != ModelKind.SEGMENTER or not callable(loader):
        raise ModelLoadError(f"model family '{name}' is not a segmenter")
    load: KernelLoader = loader
    return load


def load_kernel(models: ModelsConfig) -> SegmenterKernel[Any]:
    """The segmenter kernel (shared by every camera) that ``models`` names."""
    source = tracker_source(models)
    if source is None:
        return segmenter_loader(models.segmenter)(models)
    return HfVideoKernel(load_video_model(source, models))


def load_detector(models: ModelsConfig, engine: EngineConfig) -> Detector:
    """The detector ``models`` names (a ``DETECTOR`` row's class), loaded bare: the engine passes
    each camera's parsed prompt with every call."""
    return load_detector_backend(models, engine)
