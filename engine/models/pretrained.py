"""Building a transformers model the two ways every family does: from pretrained weights (a
directory or Hub id) whose keys must all match the config, or with random weights drawn from a
seed (the ``*-tiny-random`` presets). transformers is imported on first use."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import torch

from engine.models.hub import first_line
from stream.errors import ModelLoadError

if TYPE_CHECKING:
    from transformers import PreTrainedModel
    from transformers.models.auto.auto_factory import _BaseAutoModelClass

    # A model class, or an Auto* class that picks one from the config.
    ModelClass = type[PreTrainedModel] | type[_BaseAutoModelClass]

M = TypeVar("M", bound=torch.nn.Module)


def pretrained_model(
    model_cls: ModelClass, where: str, local_files_only: bool = False
) -> PreTrainedModel:
    """``model_cls.from_pretrained(where)`` in eval mode; weights that do not match the config
    (missing or differently shaped) are a :class:`ModelLoadError`, not a silently half-random
    model. Unexpected extra weights are allowed (a ``sam3_video`` checkpoint's tracker)."""
    from transformers import PreTrainedModel

    try:
        loaded: object = model_cls.from_pretrained(
            where, local_files_only=local_files_only, output_loading_info=True
        )
    except RuntimeError as e:  # size mismatches between checkpoint and config
        raise ModelLoadError(
            f"weights in {where} do not match its config: {first_line(e)}"
        ) from None
    if not (isinstance(loaded, tuple) and len(loaded) == 2):
        raise ModelLoadError(f"{where}: transformers returned no loading information")
    model, info = loaded
    if not isinstance(model, PreTrainedModel) or not isinstance(info, dict):
        raise ModelLoadError(f"{where}: transformers returned {type(model).__name__}, not a model")
    problems = []
    for kind in ("missing_keys", "mismatched_keys"):
        keys = sorted(str(k) for k in info.get(kind) or ())
        if keys:
            problems.append(f"{len(keys)} {kind.replace('_', ' ')} (e.g. {keys[0]})")
    if problems:
        raise ModelLoadError(f"weights in {where} do not match its config: {'; '.join(problems)}")
    return on_device(model, None)


def random_model(model_cls: ModelClass, directory: Path) -> PreTrainedModel:
    """A model with random (not yet seeded: :func:`seeded_model`) weights from ``directory``'s
    ``config.json``."""
    from transformers import AutoConfig, PreTrainedModel

    config = AutoConfig.from_pretrained(directory)
    if issubclass(model_cls, PreTrainedModel):
        return model_cls(config)
    model: PreTrainedModel = model_cls.from_config(config)
    return model


def seeded_model(build: Callable[[], M], seed: int) -> M:
    """``build()`` (a model with random weights) drawn from ``seed``, in eval mode, leaving the
    caller's random state alone: the same seed gives the same weights."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build()
    return model.eval()


def on_device(model: M, device: torch.device | None) -> M:
    """``model`` moved to ``device`` (None: where it is; in place, as ``nn.Module.to`` moves)
    in eval mode."""
    module: torch.nn.Module = model  # transformers' stubs of PreTrainedModel.to/.eval misread
    if device is not None:
        module.to(device)
    module.eval()
    return model
