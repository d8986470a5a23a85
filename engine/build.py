"""Assemble engines from the configuration (models loaded once, here; ``engine.models.loading`` says
which tracker and detector a configuration means)."""

from __future__ import annotations

import logging

from engine.core.protocols import Detector
from engine.models.loading import load_detector as _load_detector
from engine.models.loading import load_kernel
from engine.pipeline import MultiCameraEngine, TrackingEngine
from stream.config import Config

log = logging.getLogger(__name__)


def load_detector(cfg: Config) -> Detector:
    return _load_detector(cfg.models, cfg.engine)


def _family(detector: Detector) -> str:
    return str(getattr(detector, "family", type(detector).__name__))


def build_engine(cfg: Config, *, background_grounding: bool) -> TrackingEngine:
    """One camera (``cfg.camera``, from the source and engine sections): the tracker always;
    the detector only when a text prompt is in use (a run with only manual boxes needs no
    detector; the live engine loads it on the first ``set_prompt``)."""
    kernel = load_kernel(cfg.models)
    segmenter = kernel.new_session()
    detector = load_detector(cfg) if cfg.engine.prompt.strip() else None
    log.info(
        "models ready: %s on %s%s",
        type(kernel).__name__,
        kernel.device,
        f", detector {_family(detector)}" if detector else ", no detector",
    )
    return TrackingEngine(
        cfg.engine,
        segmenter,
        detector,
        background_grounding=background_grounding,
        device=kernel.device,
        camera=cfg.camera,
    )


def build_multi_engine(cfg: Config) -> MultiCameraEngine:
    """Every camera of ``cfg`` on one kernel and one detector, grounding in the background
    (the live engine); the detector is loaded when any camera has a text prompt."""
    kernel = load_kernel(cfg.models)
    cameras = cfg.camera_settings()
    needs_detector = any(c.engine.prompt.strip() for c in cameras.values())
    detector = load_detector(cfg) if needs_detector else None
    engine = MultiCameraEngine(kernel, detector, background_grounding=True, device=kernel.device)
    for name, cam in cameras.items():
        engine.add_camera(name, cam.engine)
    log.info(
        "models ready: %s on %s%s; cameras %s",
        type(kernel).__name__,
        kernel.device,
        f", detector {_family(detector)}" if detector else ", no detector",
        ", ".join(cameras),
    )
    return engine
