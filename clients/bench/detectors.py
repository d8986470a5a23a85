"""Bench part ``detectors``: every detector family's tiny-random model on 640x480 frames, at
detector size 480 (where the family's input size is configurable; the others use their config's
own), prompt ``person. ball. box.``:

* ms per ``detect`` (median);
* ``detect_batch`` of 4 different frames in one call against 4 single ``detect`` calls (ms for the
  four, median over rounds), the gain batching gives a multi-camera grounding worker.

tiny-random models measure the code around the model (pre- and post-processing, per-call
overhead), not a real checkpoint's arithmetic; the ``grounding`` part times the Grounding DINO
tiny architecture.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch

from clients.bench import BenchRow, row
from engine.detectors.base import DetectorBase
from engine.detectors.loading import load_detector_backend
from engine.presets import DETECTOR_PRESETS
from stream.config import Config

log = logging.getLogger(__name__)

PROMPT = "person. ball. box."
SIZE = 480
BATCH = 4


def _median_ms(fn: Callable[[], object], runs: int, device: torch.device) -> float:
    fn()  # warm-up
    times = []
    for _ in range(runs):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def _rows(name: str, detector: DetectorBase, runs: int) -> list[BenchRow]:
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (480, 640, 3), dtype=np.uint8) for _ in range(BATCH)]
    prompt = detector.parse_prompt(PROMPT)
    prompts = [prompt] * BATCH
    dev = detector.device
    params = sum(p.numel() for p in detector.model.parameters()) / 1e6
    single = _median_ms(lambda: detector.detect(frames[0], prompt), runs, dev)
    loop = _median_ms(lambda: [detector.detect(f, prompt) for f in frames], max(1, runs // 2), dev)
    batch = _median_ms(lambda: detector.detect_batch(frames, prompts), max(1, runs // 2), dev)
    note = f"{params:.2f} M params, {dev.type}, median of {runs}"
    return [
        row("detectors", f"{name} detect", single, "ms", note),
        row(
            "detectors",
            f"{name} detect_batch {BATCH} vs {BATCH} detect",
            f"{batch:.1f} vs {loop:.1f}",
            "ms",
            f"{loop / batch:.2f}x from batching",
        ),
    ]


def run(cfg: Config, args: argparse.Namespace) -> list[BenchRow]:
    runs = 3 if args.quick else 15
    engine = cfg.engine.model_copy(update={"detector_size": SIZE})
    rows: list[BenchRow] = []
    for preset in DETECTOR_PRESETS.values():
        if preset.hub_id is not None:
            continue
        models = cfg.models.model_copy(update={"detector": preset.name})
        detector = load_detector_backend(models, engine)
        rows.extend(_rows(preset.family, detector, runs))
        log.info("detectors: %s done", preset.name)
        del detector
    return rows
