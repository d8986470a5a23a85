"""Assemble engines from the configuration (models loaded once, here)."""

from __future__ import annotations

import logging

from engine.grounder import Grounder, load_grounder
from engine.pipeline import MultiCameraEngine, TrackingEngine
from engine.sam2_models import load_sam2
from engine.segmenter import Sam2Kernel, StreamingSegmenter
from stream.config import Config

log = logging.getLogger(__name__)


def load_detector(cfg: Config) -> Grounder:
    return load_grounder(cfg.models, cfg.engine)


def build_engine(cfg: Config, *, background_grounding: bool) -> TrackingEngine:
    """One camera (``cfg.camera``, from the source and engine sections): SAM 2 always;
    the detector only when a text prompt is in use (a run with only manual boxes needs no
    detector; the live engine loads it on the first ``set_prompt``)."""
    loaded = load_sam2(cfg.models)
    segmenter = StreamingSegmenter(loaded)
    grounder = load_detector(cfg) if cfg.engine.prompt.strip() else None
    log.info(
        "models ready: SAM 2 on %s, %s",
        loaded.device,
        f"detector {grounder.family}" if grounder else "no detector",
    )
    return TrackingEngine(
        cfg.engine,
        segmenter,
        grounder,
        background_grounding=background_grounding,
        device=loaded.device,
        camera=cfg.camera,
    )


def build_multi_engine(cfg: Config) -> MultiCameraEngine:
    """Every camera of ``cfg`` on one kernel and one detector, grounding in the background
    (the live engine); the detector is loaded when any camera has a text prompt."""
    loaded = load_sam2(cfg.models)
    cameras = cfg.camera_settings()
    needs_detector = any(c.engine.prompt.strip() for c in cameras.values())
    grounder = load_detector(cfg) if needs_detector else None
    engine = MultiCameraEngine(
        Sam2Kernel(loaded), grounder, background_grounding=True, device=loaded.device
    )
    for name, cam in cameras.items():
        engine.add_camera(name, cam.engine)
    log.info(
        "models ready: SAM 2 on %s%s; cameras %s",
        loaded.device,
        f", detector {grounder.family}" if grounder else ", no detector",
        ", ".join(cameras),
    )
    return engine
