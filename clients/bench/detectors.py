"""Bench part ``detectors``: every detector family's tiny-random model on 640x480 frames, at
detector size 480 (where the family's input size is configurable; the others use their config's
own), prompt ``person. ball. box.``:

* ms per ``detect`` (a quarter of 4 single calls, median over rounds);
* ``detect_batch`` of the same 4 frames in one call (median), and how many times faster it is
  than the 4 single calls (median of each round's ratio; both timed back to back in each round):
  the gain batching gives a multi-camera grounding worker.

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
from engine.models.detectors import load_detector_backend
from engine.models.presets import DETECTOR_PRESETS
from stream.config import Config

log = logging.getLogger(__name__)

PROMPT = "person. ball. box."
SIZE = 480
BATCH = 4


def _ms(fn: Callable[[], object], device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) * 1e3


def _rows(name: str, detector: DetectorBase, rounds: int) -> list[BenchRow]:
    """Each round times 4 single ``detect`` calls and one ``detect_batch`` of the same 4 frames
    back to back (in alternating order), so that a slow phase of the host hits both alike."""
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (480, 640, 3), dtype=np.uint8) for _ in range(BATCH)]
    prompt = detector.parse_prompt(PROMPT)
    prompts = [prompt] * BATCH
    dev = detector.device

    def singles() -> None:
        for f in frames:
            detector.detect(f, prompt)

    def batch() -> None:
        detector.detect_batch(frames, prompts)

    singles()  # warm-up
    batch()
    loop_ms, batch_ms = [], []
    for r in range(rounds):
        if r % 2:
            batch_ms.append(_ms(batch, dev))
            loop_ms.append(_ms(singles, dev))
        else:
            loop_ms.append(_ms(singles, dev))
            batch_ms.append(_ms(batch, dev))
    ratio = statistics.median(a / b for a, b in zip(loop_ms, batch_ms, strict=True))
    params = sum(p.numel() for p in detector.model.parameters()) / 1e6
    note = f"{params:.2f} M params, {dev.type}, median of {rounds} rounds"
    return [
        row("detectors", f"{name} detect", statistics.median(loop_ms) / BATCH, "ms", note),
        row(
            "detectors",
            f"{name} detect_batch of {BATCH} frames",
            statistics.median(batch_ms),
            "ms",
            f"{ratio:.2f}x faster than {BATCH} detect calls (per-round median)",
        ),
    ]


def run(cfg: Config, args: argparse.Namespace) -> list[BenchRow]:
    rounds = 3 if args.quick else 11
    engine = cfg.engine.model_copy(update={"detector_size": SIZE})
    rows: list[BenchRow] = []
    for preset in DETECTOR_PRESETS.values():
        if preset.hub_id is not None:
            continue
        models = cfg.models.model_copy(update={"detector": preset.name})
        detector = load_detector_backend(models, engine)
        rows.extend(_rows(preset.family, detector, rounds))
        log.info("detectors: %s done", preset.name)
        del detector
    return rows
