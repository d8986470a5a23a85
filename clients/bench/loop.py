"""Bench part ``loop``: the frame loop's per-frame time with and without a re-grounding running
beside it (background thread; own CUDA stream on GPU). Target: under 10% slower on a GPU.
On a 2-core CPU the detector thread competes with the loop for the same cores, so expect more."""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

from clients.bench import BenchRow, row
from engine.grounder import Grounder, load_grounder
from engine.models.sam2 import LoadedSam2, load_sam2
from engine.pipeline import FrameInput, TrackingEngine
from engine.segmenters.sam2 import StreamingSegmenter
from stream.config import Config
from stream.demo import DemoScene

WARMUP = 10
Factory = Callable[[], tuple[LoadedSam2, Grounder, int]]


def _tiny_random(cfg: Config) -> tuple[LoadedSam2, Grounder, int]:
    models = cfg.models.model_copy(update={"preset": "tiny-random"})
    # box_threshold 1.0: the detector runs fully but keeps no box, so both phases track the
    # same two objects (random weights would otherwise start dozens of tracks)
    engine = cfg.engine.model_copy(update={"detector_size": 480, "box_threshold": 1.0})
    return load_sam2(models), load_grounder(models, engine), 480


def _frame_times(
    loaded: LoadedSam2, grounder: Grounder, cfg: Config, frames: int, reground: bool
) -> tuple[float, int]:
    """Mean ms per frame over ``frames`` frames with 2 tracked objects; with ``reground`` a new
    grounding starts whenever the previous one finished. Returns (mean ms, groundings done)."""
    ecfg = cfg.engine.model_copy(
        update={
            "prompt": "ball. box.",
            "reground_every_frames": 1 if reground else 0,
            "box_threshold": 1.0,
        }
    )
    engine = TrackingEngine(
        ecfg, StreamingSegmenter(loaded), grounder, background_grounding=True, device=loaded.device
    )
    scene = DemoScene(640, 480, 2, seed=0)
    times: list[float] = []
    try:
        for i in range(frames + WARMUP):
            image = scene.render(i)[0]
            t0 = time.perf_counter()
            engine.process(
                FrameInput(i, time.time_ns(), image),
                [((40, 40, 140, 140), "a"), ((300, 200, 420, 330), "b")] if i == 0 else (),
            )
            if loaded.device.type == "cuda":
                import torch

                torch.cuda.synchronize()
            if i >= WARMUP:  # memory bank still filling (new shapes each frame): not timed
                times.append((time.perf_counter() - t0) * 1e3)
        engine.wait_grounding_idle(60)
        return statistics.fmean(times), engine.counters.groundings
    finally:
        engine.close()


def run(cfg: Config, args: argparse.Namespace) -> list[BenchRow]:
    frames = 20 if args.quick else 100
    rows: list[BenchRow] = []
    for name, factory in (("tiny-random", _tiny_random),):
        loaded, grounder, size = factory(cfg)
        # alternate the two phases (A B A B) so drift and warm-up do not favour either
        runs = [
            _frame_times(loaded, grounder, cfg, frames, reground=r)
            for r in (False, True, False, True)
        ]
        base = statistics.fmean(t for t, _ in runs[0::2])
        busy = statistics.fmean(t for t, _ in runs[1::2])
        n = sum(g for _, g in runs[1::2])
        slow = (busy / base - 1) * 100
        rows += [
            row(
                "loop", f"{name}: frame loop, no grounding", base, "ms/frame", "2 objects, 640x480"
            ),
            row(
                "loop",
                f"{name}: frame loop, grounding beside it",
                busy,
                "ms/frame",
                f"{n} groundings at {size} px ran meanwhile",
            ),
            row("loop", f"{name}: slowdown while re-grounding", slow, "%", "target < 10% on GPU"),
        ]
    return rows
