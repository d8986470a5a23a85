"""Assemble a ``TrackingEngine`` from the configuration (models loaded once, here)."""

from __future__ import annotations

import logging

from engine.grounder import Grounder, load_grounder
from engine.pipeline import TrackingEngine
from engine.sam2_models import load_sam2
from engine.segmenter import StreamingSegmenter
from stream.config import Config

log = logging.getLogger(__name__)


def load_detector(cfg: Config) -> Grounder:
    return load_grounder(cfg.models, cfg.engine)


def build_engine(cfg: Config, *, background_grounding: bool) -> TrackingEngine:
    """SAM 2 always; the detector only when a text prompt is in use (a run with only manual
    boxes needs no detector; the live engine loads it on the first ``set_prompt``)."""
    loaded = load_sam2(cfg.models)
    segmenter = StreamingSegmenter(loaded)
    grounder = load_detector(cfg) if cfg.engine.prompt.strip() else None
    log.info(
        "models ready: SAM 2 on %s, %s",
        loaded.device,
        f"detector {grounder.detector.family}" if grounder else "no detector",
    )
    return TrackingEngine(
        cfg.engine,
        segmenter,
        grounder,
        background_grounding=background_grounding,
        device=loaded.device,
    )
