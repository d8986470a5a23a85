"""Whether a preset's weights can be had now, and the demo source's offline default.

``promptcam run`` on the demo source uses the ``demo`` preset (weights shipped in the repo)
when the configured hub preset's weights are neither in the Hugging Face cache nor fetchable
(``HF_HUB_OFFLINE=1`` or the Hub unreachable), unless ``--models`` or local weights were given.
The launcher prints the one line :func:`demo_fallback` returns.
"""

from __future__ import annotations

import logging

from engine.presets import DEMO, Preset, get_preset
from stream.config import Config

log = logging.getLogger(__name__)

DETECTOR_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def cached(preset: Preset) -> bool:
    """Both of ``preset``'s models are in the local Hugging Face cache."""
    from huggingface_hub import try_to_load_from_cache
    from sam2.build_sam import HF_MODEL_ID_TO_FILENAMES

    if preset.sam2_hub_id is None:
        return True
    _, filename = HF_MODEL_ID_TO_FILENAMES[preset.sam2_hub_id]
    if not isinstance(try_to_load_from_cache(preset.sam2_hub_id, filename), str):
        return False
    return any(
        isinstance(try_to_load_from_cache(preset.detector, f), str) for f in DETECTOR_WEIGHT_FILES
    )


def unavailable(preset: Preset) -> str | None:
    """Why ``preset``'s weights cannot be had now (None: cached, shipped or fetchable)."""
    from engine.grounder import _hub_unreachable

    if preset.is_local or cached(preset):
        return None
    assert preset.sam2_hub_id is not None
    return _hub_unreachable(preset.sam2_hub_id)


def demo_fallback(cfg: Config, explicit_models: bool) -> tuple[Config, str | None]:
    """``cfg`` with the ``demo`` preset when the demo source would otherwise run on weights that
    cannot be had (see the module docstring), and the line that says so (None: unchanged)."""
    m = cfg.models
    if explicit_models or cfg.source.uri != "demo" or m.sam2_checkpoint or m.detector:
        return cfg, None
    preset = get_preset(m.preset)
    reason = unavailable(preset)
    if reason is None:
        return cfg, None
    line = (
        f"promptcam: {preset.name} weights are not cached and cannot be fetched ({reason}); "
        f"the demo source runs on the '{DEMO}' preset (trained on these scenes, shipped in "
        "configs/demo)"
    )
    return cfg.model_copy(update={"models": m.model_copy(update={"preset": DEMO})}), line
