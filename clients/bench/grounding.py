"""Bench part ``grounding``: time of one Grounding DINO ``detect`` on a 640x480 frame, at detector
input sizes (shortest edge) 800 and 480, for

* the Grounding DINO tiny architecture (``GroundingDinoConfig()`` defaults: Swin-T backbone,
  BERT-base text encoder, 900 queries) with random weights, built locally (no download); and
* ``tiny-random`` (the small config tests use).

Random weights take the same time as trained ones. The slowdown of the frame loop while a
re-grounding runs beside it is the ``loop`` part; every detector family is the ``detectors`` part.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import torch

from clients.bench import BenchRow, row
from engine.core.protocols import DetectorPrompt
from engine.detectors.grounding_dino import GroundingDinoDetector, build_tiny_random
from engine.device import resolve_device
from engine.models.presets import DETECTOR_PRESETS
from stream.config import Config

if TYPE_CHECKING:
    from transformers import PreTrainedModel, ProcessorMixin

log = logging.getLogger(__name__)

SIZES = (800, 480)
PROMPT = "person. ball. box."


def _tiny_architecture(seed: int = 0) -> tuple[PreTrainedModel, ProcessorMixin]:
    """Grounding DINO tiny (default config) with random weights, and the tiny-random processor
    (its small vocabulary only changes which token ids the prompt gets, not the cost)."""
    from transformers import AutoModelForZeroShotObjectDetection, GroundingDinoConfig

    _, processor = _tiny_random(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        build: Callable[..., PreTrainedModel] = AutoModelForZeroShotObjectDetection.from_config
        model = build(GroundingDinoConfig())
    return model.eval(), processor


def _tiny_random(seed: int = 0) -> tuple[PreTrainedModel, ProcessorMixin]:
    directory = DETECTOR_PRESETS["grounding-dino-tiny-random"].config_dir
    assert directory is not None
    return build_tiny_random(seed, directory)


def _time_detect(
    detector: GroundingDinoDetector, prompt: DetectorPrompt, image: np.ndarray, runs: int
) -> tuple[float, float]:
    detector.detect(image, prompt)  # warm-up
    times = []
    for _ in range(runs):
        if detector.device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        detector.detect(image, prompt)
        if detector.device.type == "cuda":
            torch.cuda.synchronize()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times), min(times)


def run(cfg: Config, args: argparse.Namespace) -> list[BenchRow]:
    device = resolve_device(cfg.models.device)
    image = np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)
    rows: list[BenchRow] = []
    models = (("grounding-dino-tiny arch", _tiny_architecture), ("tiny-random", _tiny_random))
    for name, build in models:
        model, processor = build()
        params = sum(p.numel() for p in model.parameters()) / 1e6
        runs = (
            (1 if args.quick else 3)
            if name.startswith("grounding-dino")
            else (3 if args.quick else 20)
        )
        for size in SIZES:
            engine = cfg.engine.model_copy(update={"prompt": PROMPT, "detector_size": size})
            detector = GroundingDinoDetector(model, processor, engine, device, cfg.models.dtype)
            prompt = detector.parse_prompt(PROMPT)
            median, best = _time_detect(detector, prompt, image, runs)
            note = f"{params:.1f} M params, 640x480 frame, {device.type}, median of {runs} (best {best:.0f} ms)"
            rows.append(row("grounding", f"{name} @ {size}", median, "ms", note))
            log.info("grounding %s @ %d: %.1f ms", name, size, median)
        del model
    return rows
