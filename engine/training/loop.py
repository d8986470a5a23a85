"""The optimisation loop both demo models train with: AdamW, linear warm-up then cosine decay,
gradient-norm clipping, and a logged running mean of the loss and its parts.

A ``Checkpoint`` makes a stage continuable: every ``every`` steps the loop writes the model, the
optimizer, the step, the data stream's numpy generator state and torch's generator state to one
file (written beside it, then renamed over it); a later run given the same file starts from that
step with that state, so a stopped stage goes on as if it had not stopped. The file is removed
when the stage completes."""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

log = logging.getLogger(__name__)

StepLoss = Callable[[int], tuple[torch.Tensor, dict[str, torch.Tensor]]]
OnLog = Callable[[int, float, dict[str, float]], None]


class Schedule(Protocol):
    """What the loop reads of a model's schedule (frozen dataclasses: read-only)."""

    @property
    def steps(self) -> int: ...
    @property
    def lr(self) -> float: ...
    @property
    def warmup(self) -> int: ...
    @property
    def weight_decay(self) -> float: ...
    @property
    def clip_grad(self) -> float: ...
    @property
    def log_every(self) -> int: ...


def lr_factor(step: int, schedule: Schedule) -> float:
    """Linear warm-up, then cosine decay to 5 % of the peak."""
    if step < schedule.warmup:
        return (step + 1) / schedule.warmup
    span = max(1, schedule.steps - schedule.warmup)
    t = min(1.0, (step - schedule.warmup) / span)
    return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * t))


@dataclass(frozen=True)
class Checkpoint:
    """Where and how often a stage saves its state, and the data generator it saves."""

    path: Path
    rng: np.random.Generator
    every: int = 250

    def save(
        self, step: int, model: torch.nn.Module, opt: torch.optim.Optimizer, losses: list[float]
    ) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        torch.save(
            {
                "step": step,
                "model": model.state_dict(),
                "opt": opt.state_dict(),
                "rng": self.rng.bit_generator.state,
                "torch_rng": torch.get_rng_state(),
                "losses": losses,
            },
            tmp,
        )
        os.replace(tmp, self.path)

    def restore(
        self, model: torch.nn.Module, opt: torch.optim.Optimizer
    ) -> tuple[int, list[float]]:
        """Load the saved state if the file exists: (the step to go on from, the losses so far)."""
        if not self.path.exists():
            return 0, []
        blob = torch.load(self.path, map_location="cpu", weights_only=False)
        model.load_state_dict(blob["model"])
        opt.load_state_dict(blob["opt"])
        self.rng.bit_generator.state = blob["rng"]
        torch.set_rng_state(blob["torch_rng"])
        log.info("continuing from step %d of %s", blob["step"], self.path)
        return int(blob["step"]), list(blob["losses"])


def run_steps(
    name: str,
    model: torch.nn.Module,
    schedule: Schedule,
    step_loss: StepLoss,
    on_log: OnLog | None = None,
    checkpoint: Checkpoint | None = None,
) -> list[float]:
    """Train ``model`` in place for ``schedule.steps`` steps; ``step_loss(step)`` draws the
    step's batch and returns its loss and the loss's named parts. Returns every step's loss.
    With ``checkpoint``, goes on from its saved state if there is one and saves as it goes."""
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=schedule.lr, weight_decay=schedule.weight_decay)
    losses: list[float] = []
    first = 0
    if checkpoint is not None:
        first, losses = checkpoint.restore(model, opt)
    window: dict[str, list[float]] = {}
    started = time.monotonic()
    for step in range(first, schedule.steps):
        for group in opt.param_groups:
            group["lr"] = schedule.lr * lr_factor(step, schedule)
        loss, parts = step_loss(step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, schedule.clip_grad)
        opt.step()
        losses.append(float(loss.detach()))
        for k, v in parts.items():
            window.setdefault(k, []).append(float(v.detach()))
        if (step + 1) % schedule.log_every == 0 or step + 1 == schedule.steps:
            mean = float(np.mean(losses[-schedule.log_every :]))
            means = {k: float(np.mean(v)) for k, v in window.items()}
            window.clear()
            log.info(
                "%s step %d/%d loss %.3f (%s) %.1fs",
                name,
                step + 1,
                schedule.steps,
                mean,
                ", ".join(f"{k} {v:.3f}" for k, v in means.items()),
                time.monotonic() - started,
            )
            if on_log is not None:
                on_log(step + 1, mean, means)
        if (
            checkpoint is not None
            and (step + 1) % checkpoint.every == 0
            and step + 1 < schedule.steps
        ):
            checkpoint.save(step + 1, model, opt, losses)
    if checkpoint is not None:
        checkpoint.path.unlink(missing_ok=True)
    model.eval()
    return losses
