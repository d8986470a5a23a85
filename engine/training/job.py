"""``promptcam train-demo``: train the ``demo`` preset's SAM 2 and Grounding DINO on generated
scenes, on the CPU, seeded, and write them where the preset loads them from.

Reads the architectures from ``configs/demo/`` (``sam2_demo.yaml``; ``grounding_dino/`` with
``config.json``, the processor and the tokenizer) and writes into ``--out`` (default the same
directory, i.e. the shipped preset):

- ``sam2_demo.yaml`` + ``sam2_demo.pt`` (a Meta-format checkpoint, ``{"model": state_dict}``);
- ``grounding_dino/`` (``save_pretrained``: ``config.json``, ``model.safetensors``, processor
  and tokenizer files);
- ``training.json``: seed, thread count, budget, steps, the logged loss curve, the loss on a
  fixed held-back batch before and after training, wall and CPU time per model, versions.

With two threads or more the two models train at once, each in a child process (``--only``)
with half the threads. Reproducible: the same seed and thread count give the same weights
(data come from a numpy generator and weights from torch's generator, both seeded here). Budgets: ``full`` (the shipped
weights) and ``tiny`` (seconds; CI runs it end to end and checks that the loss went down).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from engine.models.presets import DEMO_DIR
from engine.training.grounding_dino import (
    DetectorBatch,
    DetectorSchedule,
    build_detector,
    encoder_proposal_loss,
    load_trained_detector,
    make_batch,
)
from engine.training.grounding_dino import train_detector as run_detector
from engine.training.loop import Checkpoint, OnLog
from engine.training.sam2_clips import (
    ClipBatch,
    Sam2Schedule,
    clip_loss,
    make_clip_batch,
    train_sam2,
)
from stream.backdrops import PHOTO_KINDS
from stream.config import Config
from stream.errors import PromptcamError

if TYPE_CHECKING:
    from sam2.modeling.sam2_base import SAM2Base
    from transformers import GroundingDinoForObjectDetection, ProcessorMixin

log = logging.getLogger(__name__)

T = TypeVar("T")

SAM2_YAML = "sam2_demo.yaml"
SAM2_CHECKPOINT = "sam2_demo.pt"
DETECTOR_DIR = "grounding_dino"
REPORT = "training.json"
SNAPSHOT_EVERY = 250  # steps between weight snapshots (and stage checkpoints) during a run
# The fourth stages (2026-12-06): the shipped weights seen under random camera looks and other
# backdrops (engine.training.augment), half of the samples.
DET4, SAM4 = 3000, 3000
# The fifth stages (2026-12-07): more of the same at a lower learning rate, a larger share of
# looks, and real photographs (scikit-image's) among the backdrops.
DET5, SAM5 = 3000, 3000
# The sixth stages (2026-12-07): the fifth's data at a lower learning rate; SAM 2 on 8-frame clips
# (longer memory to follow an object through) with fewer steps for the same time.
DET6, SAM6 = 3000, 2400


class TrainingError(PromptcamError):
    """Training cannot start or its output cannot be written; the message is one line."""


class TrainConfig(BaseModel):
    """What ``promptcam train-demo`` does; ``budget`` picks the step counts."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    out: Path = Field(DEMO_DIR, description="Directory the weights are written to.")
    arch: Path = Field(DEMO_DIR, description="Directory holding the architectures.")
    budget: str = Field("full", pattern="^(full|tiny)$", description="full or tiny (CI).")
    seed: int = Field(0, ge=0, description="Seed of the data and of the initial weights.")
    threads: int = Field(2, ge=1, le=256, description="torch CPU threads.")
    only: str | None = Field(
        None, pattern="^(sam2|detector)$", description="Train one model only (the other is kept)."
    )
    from_stage: int | None = Field(
        None,
        ge=1,
        description="Go on from the weights in `arch` (the shipped ones by default) with the budget's"
        " stages from this one (0-based) on, instead of training from seeded random weights.",
    )


@dataclass(frozen=True)
class Budget:
    """Step counts of one budget. The detector trains in stages: each a warm restart (a fresh
    optimizer, warm-up then cosine decay, its own data stream), from where the last one ended."""

    detector: tuple[DetectorSchedule, ...]
    sam2: tuple[Sam2Schedule, ...]  # stages too


BUDGETS = {
    "full": Budget(
        (
            DetectorSchedule(steps=2400, batch=4, lr=3e-4, warmup=200, log_every=50),
            DetectorSchedule(steps=2000, batch=4, lr=1.5e-4, warmup=50, log_every=50),
            DetectorSchedule(steps=2400, batch=4, lr=1e-4, warmup=50, log_every=50),
            DetectorSchedule(steps=DET4, batch=4, lr=1e-4, warmup=50, log_every=50, augment=0.5),
            DetectorSchedule(steps=DET5, batch=4, lr=7e-5, warmup=50, log_every=50, augment=0.6, backdrops=PHOTO_KINDS),
            DetectorSchedule(steps=DET6, batch=4, lr=5e-5, warmup=50, log_every=50, augment=0.6, backdrops=PHOTO_KINDS),
        ),
        (
            Sam2Schedule(steps=4500, clips=2, frames=4, objects=3, lr=1e-3, warmup=150, log_every=50, image_steps=3000),
            Sam2Schedule(steps=1200, clips=2, frames=4, objects=3, lr=5e-4, warmup=50, log_every=50),
            Sam2Schedule(steps=2400, clips=2, frames=6, objects=3, lr=3e-4, warmup=50, log_every=50),
            Sam2Schedule(steps=SAM4, clips=2, frames=6, objects=3, lr=3e-4, warmup=50, log_every=50, augment=0.5),
            Sam2Schedule(steps=SAM5, clips=2, frames=6, objects=3, lr=2e-4, warmup=50, log_every=50, augment=0.6, backdrops=PHOTO_KINDS),
            Sam2Schedule(steps=SAM6, clips=2, frames=8, objects=3, lr=1.5e-4, warmup=50, log_every=50, augment=0.6, backdrops=PHOTO_KINDS),
        ),
    ),
    "tiny": Budget(
        (
            DetectorSchedule(steps=16, batch=2, lr=3e-4, warmup=4, log_every=8),
            DetectorSchedule(steps=8, batch=2, lr=1.5e-4, warmup=2, log_every=8, augment=0.5, backdrops=PHOTO_KINDS),
        ),
        (
            Sam2Schedule(steps=16, clips=1, frames=3, objects=2, lr=1e-3, warmup=4, log_every=8, image_steps=8, image_clips=2, image_objects=2),
            Sam2Schedule(steps=8, clips=1, frames=3, objects=2, lr=5e-4, warmup=2, log_every=8, augment=0.5, backdrops=PHOTO_KINDS),
        ),
    ),
}  # fmt: skip


@dataclass
class ModelReport:
    steps: int
    wall_s: float
    cpu_s: float
    loss_curve: list[tuple[int, float]]
    held_back_loss_before: float
    held_back_loss_after: float


def _timed(fn: Callable[[], T]) -> tuple[T, float, float]:
    wall, cpu = time.monotonic(), time.process_time()
    out = fn()
    return out, time.monotonic() - wall, time.process_time() - cpu


def _detector_loss(model: GroundingDinoForObjectDetection, batches: list[DetectorBatch]) -> float:
    was_training = model.training
    model.train()  # the loss is computed in training mode (no dropout in this config)
    with torch.no_grad():
        losses = []
        for b in batches:
            out = model(**b)
            losses.append(float(out.loss + encoder_proposal_loss(model, out, b)))
    model.train(was_training)
    return float(np.mean(losses))


def stage_rng(seed: int, stream: int, stage: int) -> np.random.Generator:
    """The data stream of a model's stage ``stage`` (each stage its own, and torch re-seeded at
    the start of every later stage, so that a stage run from the previous stage's saved weights
    trains exactly as it would have in one process)."""
    if stage > 0:
        torch.manual_seed(seed + stage)
    return np.random.default_rng([seed, stream] if stage == 0 else [seed, stream, stage])


def train_detector_stage(
    model: GroundingDinoForObjectDetection,
    processor: ProcessorMixin,
    seed: int,
    stage: int,
    schedule: DetectorSchedule,
    on_log: OnLog | None = None,
    resume: Path | None = None,
) -> None:
    """Detector stage ``stage`` on ``model`` in place, with a fresh optimizer; ``resume``: the
    stage's checkpoint file (gone on from if it exists, written as the stage goes)."""
    rng = stage_rng(seed, 2, stage)
    ckpt = None if resume is None else Checkpoint(resume, rng, SNAPSHOT_EVERY)
    run_detector(model, processor, schedule, rng, on_log=on_log, checkpoint=ckpt)


def train_detector(tc: TrainConfig, stages: tuple[DetectorSchedule, ...]) -> ModelReport:
    torch.manual_seed(tc.seed)
    if tc.from_stage is None:
        model, processor = build_detector(tc.arch / DETECTOR_DIR, tc.seed)
    else:
        model, processor = load_trained_detector(tc.arch / DETECTOR_DIR)
    first = tc.from_stage or 0
    held_rng = np.random.default_rng([tc.seed, 1])
    held = [make_batch(processor, held_rng, 2) for _ in range(2)]
    before = _detector_loss(model, held)
    curve: list[tuple[int, float]] = []
    target = tc.out / DETECTOR_DIR
    target.mkdir(parents=True, exist_ok=True)
    total = sum(s.steps for s in stages[first:])
    done = 0

    def logged(step: int, loss: float, _parts: dict[str, float]) -> None:
        curve.append((done + step, loss))
        if (done + step) % SNAPSHOT_EVERY == 0 and done + step < total and first == 0:
            model.save_pretrained(target)  # a snapshot: a stopped run leaves usable weights
            processor.save_pretrained(target)

    wall, cpu = 0.0, 0.0
    for k, schedule in enumerate(stages):
        if k < first:
            continue
        resume = tc.out / f"detector-stage{k}.ckpt" if first else None
        _, w, c = _timed(
            partial(train_detector_stage, model, processor, tc.seed, k, schedule, logged, resume)
        )
        wall, cpu, done = wall + w, cpu + c, done + schedule.steps
    after = _detector_loss(model, held)
    model.save_pretrained(target)
    processor.save_pretrained(target)
    log.info("detector: held-back loss %.3f -> %.3f; saved to %s", before, after, target)
    return ModelReport(total, wall, cpu, curve, before, after)


def _sam2_loss(model: SAM2Base, batches: list[ClipBatch]) -> float:
    was_training = model.training
    model.train()
    with torch.no_grad():
        losses = []
        for b in batches:
            parts = clip_loss(model, b)
            losses.append(float(parts["mask"] + parts["iou"] + parts["score"]))
    model.train(was_training)
    return float(np.mean(losses))


def train_sam2_stage(
    model: SAM2Base,
    seed: int,
    stage: int,
    schedule: Sam2Schedule,
    on_log: OnLog | None,
    resume: Path | None = None,
) -> None:
    """SAM 2 stage ``stage`` on ``model`` in place, with a fresh optimizer (``resume`` as for
    the detector)."""
    rng = stage_rng(seed, 4, stage)
    ckpt = None if resume is None else Checkpoint(resume, rng, SNAPSHOT_EVERY)
    train_sam2(model, schedule, rng, on_log=on_log, checkpoint=ckpt)


def train_sam2_model(tc: TrainConfig, stages: tuple[Sam2Schedule, ...]) -> ModelReport:
    from engine.models.sam2 import _instantiate, _load_checkpoint, read_sam2_config, save_checkpoint

    yaml_path = tc.arch / SAM2_YAML
    torch.manual_seed(tc.seed)
    model = _instantiate(read_sam2_config(yaml_path), str(yaml_path))
    first = tc.from_stage or 0
    if first:
        _load_checkpoint(model, tc.arch / SAM2_CHECKPOINT, yaml_path)
    size = int(model.image_size)
    held_rng = np.random.default_rng([tc.seed, 3])
    held = [make_clip_batch(stages[0], size, held_rng, click=False) for _ in range(2)]
    before = _sam2_loss(model, held)
    curve: list[tuple[int, float]] = []
    tc.out.mkdir(parents=True, exist_ok=True)
    if yaml_path.resolve() != (tc.out / SAM2_YAML).resolve():
        shutil.copyfile(yaml_path, tc.out / SAM2_YAML)
    total = sum(s.steps for s in stages[first:])
    done = 0

    def logged(step: int, loss: float, _parts: dict[str, float]) -> None:
        curve.append((done + step, loss))
        if (done + step) % SNAPSHOT_EVERY == 0 and done + step < total and first == 0:
            save_checkpoint(model, tc.out / SAM2_CHECKPOINT)  # a snapshot, as for the detector

    wall, cpu = 0.0, 0.0
    for k, schedule in enumerate(stages):
        if k < first:
            continue
        resume = tc.out / f"sam2-stage{k}.ckpt" if first else None
        _, w, c = _timed(partial(train_sam2_stage, model, tc.seed, k, schedule, logged, resume))
        wall, cpu, done = wall + w, cpu + c, done + schedule.steps
    after = _sam2_loss(model, held)
    save_checkpoint(model, tc.out / SAM2_CHECKPOINT)
    log.info("sam2: held-back loss %.3f -> %.3f; saved to %s", before, after, tc.out)
    return ModelReport(total, wall, cpu, curve, before, after)


def _model_report_path(out: Path, which: str) -> Path:
    return out / f"training-{which}.json"


def train_one(tc: TrainConfig, which: str) -> dict[str, Any]:
    """Train one model (``detector`` or ``sam2``) in this process; writes its weights and
    ``training-<which>.json``."""
    budget = BUDGETS[tc.budget]
    torch.set_num_threads(tc.threads)
    if which == "detector":
        report = asdict(train_detector(tc, budget.detector))
        report["schedule"] = [asdict(stage) for stage in budget.detector]
    else:
        report = asdict(train_sam2_model(tc, budget.sam2))
        report["schedule"] = [asdict(stage) for stage in budget.sam2]
    report["threads"] = tc.threads
    _model_report_path(tc.out, which).write_text(json.dumps(report, indent=2) + "\n")
    return report


def _in_parallel(tc: TrainConfig) -> None:
    """Both models at once, each in its own process with half the threads."""
    import subprocess
    import sys

    procs = []
    for which in ("detector", "sam2"):
        argv = [sys.executable, "-m", "clients.cli", "train-demo", "--only", which]
        argv += ["--out", str(tc.out), "--budget", tc.budget, "--seed", str(tc.seed)]
        argv += ["--threads", str(max(1, tc.threads // 2)), "--log-level", "INFO"]
        if tc.from_stage is not None:
            argv += ["--from-stage", str(tc.from_stage)]
        procs.append(
            (which, subprocess.Popen(argv, env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}))
        )
    failed = [w for w, p in procs if p.wait() != 0]
    if failed:
        raise TrainingError(f"training of {' and '.join(failed)} failed (see its log above)")


def train(tc: TrainConfig) -> dict[str, Any]:
    """Train what ``tc`` asks for and write the weights and ``training.json`` (see the module
    docstring); with ``only`` unset and two threads or more, the two models train in parallel
    processes of ``threads // 2`` threads each. Returns the report."""
    for need in (tc.arch / SAM2_YAML, tc.arch / DETECTOR_DIR / "config.json"):
        if not need.exists():
            raise TrainingError(f"architecture file {need} is missing")
    budget = BUDGETS[tc.budget]
    stages = min(len(budget.detector), len(budget.sam2))
    if tc.from_stage is not None and tc.from_stage >= stages:
        raise TrainingError(
            f"--from-stage {tc.from_stage}: the {tc.budget} budget has stages 0-{stages - 1}"
        )
    try:
        tc.out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise TrainingError(f"cannot create {tc.out}: {e.strerror or e}") from None
    if tc.only is not None:
        return train_one(tc, tc.only)
    started = time.monotonic(), time.process_time()
    if tc.threads >= 2:
        _in_parallel(tc)
    else:
        for which in ("detector", "sam2"):
            train_one(tc, which)
    report: dict[str, Any] = {  # a JSON document
        "seed": tc.seed,
        "threads": tc.threads,
        "budget": tc.budget,
        "parallel": tc.threads >= 2,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "torch": torch.__version__,
        "wall_s": time.monotonic() - started[0],
    }
    cpu = time.process_time() - started[1]
    for which in ("detector", "sam2"):
        path = _model_report_path(tc.out, which)
        report[which] = json.loads(path.read_text())
        path.unlink()
        cpu += report[which]["cpu_s"] if tc.threads >= 2 else 0.0
    report["cpu_s"] = cpu
    if tc.from_stage is not None:  # the earlier stages' report, this run appended to it
        earlier = tc.arch / REPORT
        whole: dict[str, Any] = json.loads(earlier.read_text()) if earlier.exists() else {}
        whole.setdefault("continued", []).append({"from_stage": tc.from_stage, **report})
        report = whole
    (tc.out / REPORT).write_text(json.dumps(report, indent=2) + "\n")
    return report


def main(cfg: Config, args: argparse.Namespace) -> int:
    fields: dict[str, object] = {}
    for name in ("out", "budget", "seed", "threads", "only", "from_stage"):
        value = getattr(args, name, None)
        if value is not None:
            fields[name] = value
    try:
        tc = TrainConfig.model_validate(fields)
    except ValueError as e:
        raise TrainingError(f"bad train-demo option: {str(e).splitlines()[-1]}") from None
    report = train(tc)
    if tc.only is not None:
        report = {tc.only: report}
    elif tc.from_stage is not None:
        report = report["continued"][-1]
    summary = {
        k: {
            "steps": report[k]["steps"],
            "wall_s": round(report[k]["wall_s"], 1),
            "cpu_s": round(report[k]["cpu_s"], 1),
            "held_back_loss": [
                round(report[k]["held_back_loss_before"], 4),
                round(report[k]["held_back_loss_after"], 4),
            ],
        }
        for k in ("detector", "sam2")
        if k in report
    }
    print(json.dumps({"out": str(tc.out), **summary}))
    return 0
