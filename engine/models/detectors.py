"""Which detector ``models.detector`` (``--detector``) names, and loading it.

A detector source is one of

* a detector preset name (``engine/models/presets.py: DETECTOR_PRESETS``): a Hub repo, or a
  ``*-tiny-random`` preset, built from its config directory under ``configs/`` with random weights
  from a fixed seed (no weights on disk: two loads are identical);
* a local directory (as ``save_pretrained`` writes it); the ``configs/*_tiny_random`` directories
  themselves count as their tiny-random preset;
* a Hugging Face Hub id (``owner/name``).

Without ``models.detector`` the model preset's detector is used. The family is recognised from the
``model_type`` in the source's ``config.json`` (the ``DETECTOR`` rows of
``engine.models.registry``); a source that is not one of them
is a one-line :class:`ModelLoadError` naming the supported ones, as is a failed download (naming
the offline options) and a directory whose weights do not match its config.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from engine.detectors.base import DetectorBase
from engine.device import resolve_device
from engine.models import hub
from engine.models.hub import first_line
from engine.models.presets import DETECTOR_PRESETS, OFFLINE_OPTIONS, DetectorPreset, get_preset
from engine.models.registry import (
    ModelFamily,
    ModelKind,
    family_for_model_type,
    get_family,
    model_types,
)
from stream.config import EngineConfig, ModelsConfig
from stream.errors import ModelLoadError

log = logging.getLogger(__name__)


def family_for(model_type: object, where: str) -> ModelFamily:
    """The ``DETECTOR`` row that reads ``model_type``; ModelLoadError naming the supported
    model types if none does."""
    family = family_for_model_type(ModelKind.DETECTOR, model_type)
    if family is None:
        raise ModelLoadError(
            f"{where} is a {model_type!r} model, not a supported detector "
            f"(supported model types: {', '.join(model_types(ModelKind.DETECTOR))})"
        )
    return family


def detector_class(family: ModelFamily) -> type[DetectorBase]:
    """The class a ``DETECTOR`` row names."""
    cls = family.implementation()
    if not (isinstance(cls, type) and issubclass(cls, DetectorBase)):
        raise ModelLoadError(f"model family '{family.name}' is not a detector")
    return cls


def detector_source(models: ModelsConfig) -> str:
    """What ``models`` names as detector: ``models.detector`` or the model preset's detector."""
    return models.detector if models.detector is not None else get_preset(models.preset).detector


def load_detector_backend(models: ModelsConfig, engine: EngineConfig) -> DetectorBase:
    """Load the detector ``models`` names (see the module docstring) on ``models.device``."""
    source = detector_source(models)
    device = resolve_device(models.device)
    preset = resolve_preset(source)
    if preset is not None and preset.hub_id is None:
        assert preset.config_dir is not None
        cls = detector_class(get_family(preset.family))
        detector: DetectorBase = cls.from_config_dir(
            preset.config_dir, seed=preset.seed, engine=engine, device=device, dtype=models.dtype
        )
        log.info(
            "detector: %s (%s, random weights, seed %d) on %s",
            preset.name,
            detector.family,
            preset.seed,
            device,
        )
        return detector
    where = preset.hub_id if preset is not None and preset.hub_id else source
    detector = _load_pretrained(where, engine, device, models.dtype)
    log.info("detector: %s from %s on %s", detector.family, where, device)
    return detector


def resolve_preset(source: str) -> DetectorPreset | None:
    """The detector preset ``source`` names, also a tiny-random config directory given by path."""
    if source in DETECTOR_PRESETS:
        return DETECTOR_PRESETS[source]
    path = Path(source).expanduser()
    if path.is_dir():
        for preset in DETECTOR_PRESETS.values():
            if preset.config_dir is not None and path.resolve() == preset.config_dir.resolve():
                return preset
    return None


def check_source(source: str) -> None:
    """Refuse, without loading anything, a source that names no preset, directory or Hub id."""
    if resolve_preset(source) is not None:
        return
    local = Path(source).expanduser()
    if local.is_dir():
        return
    if not hub.looks_like_hub_id(source):
        raise ModelLoadError(f"detector directory {source} does not exist; {OFFLINE_OPTIONS}")
    if "/" not in source:
        raise ModelLoadError(
            f"unknown detector '{source}': not a preset ({', '.join(DETECTOR_PRESETS)}), "
            "a directory or a Hugging Face Hub id (owner/name)"
        )


def _load_pretrained(
    source: str, engine: EngineConfig, device: torch.device, dtype: str
) -> DetectorBase:
    check_source(source)
    local = Path(source).expanduser()
    is_local = local.is_dir()
    where = str(local) if is_local else source
    unreachable = None if is_local else hub.unreachable(source, "config.json")
    if unreachable:
        log.debug(
            "Hugging Face Hub unreachable (%s): trying the local cache for %s", unreachable, source
        )
    local_only = bool(unreachable)
    family = family_for(_model_type(where, is_local, local_only, unreachable), where)
    cls = detector_class(family)
    try:
        detector: DetectorBase = cls.from_pretrained(
            where, local_files_only=local_only, engine=engine, device=device, dtype=dtype
        )
    except (OSError, ValueError, KeyError, TypeError) as e:
        if is_local:
            raise ModelLoadError(
                f"cannot load {family.name} from directory {where}: {first_line(e)}"
            ) from None
        raise ModelLoadError(
            f"cannot download {family.name} '{source}' from the Hugging Face Hub and it is not "
            f"cached ({unreachable or first_line(e)}); {OFFLINE_OPTIONS}"
        ) from None
    return detector


def _model_type(where: str, is_local: bool, local_only: bool, unreachable: str | None) -> object:
    """The ``model_type`` in the source's ``config.json`` (downloaded or cached for a Hub id)."""
    if is_local:
        path = Path(where) / "config.json"
        if not path.is_file():
            raise ModelLoadError(
                f"cannot load a detector from directory {where}: it has no config.json"
            )
    else:
        from huggingface_hub import hf_hub_download

        try:
            path = Path(hf_hub_download(where, "config.json", local_files_only=local_only))
        except Exception as e:  # the Hub client's errors have no common base beyond Exception
            raise ModelLoadError(
                f"cannot download detector '{where}' from the Hugging Face Hub and it is not "
                f"cached ({unreachable or first_line(e)}); {OFFLINE_OPTIONS}"
            ) from None
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"{path} is not a readable JSON config: {first_line(e)}") from None
    return config.get("model_type") if isinstance(config, dict) else None
