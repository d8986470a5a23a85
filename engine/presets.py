"""Model presets: which SAM 2 and which detector a ``--models`` name means, and the detector
presets ``--detector`` accepts.

Real presets fetch from the Hugging Face Hub on first use (and are cached by huggingface_hub);
``tiny-random`` presets build small random-weight models from configs in ``configs/`` with a
fixed seed, for tests and offline runs. They are never chosen silently.

To add a preset, add one row to :data:`PRESETS` or :data:`DETECTOR_PRESETS`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from stream.errors import ModelLoadError

CONFIGS_DIR = Path(__file__).resolve().parent.parent / "configs"
TINY_RANDOM = "tiny-random"
OFFLINE_OPTIONS = (
    "offline options: --models tiny-random (random weights), or local weights with "
    "--sam2-checkpoint FILE.pt --sam2-config FILE.yaml and --detector DIR "
    "(or a *-tiny-random detector preset, see promptcam models)"
)


@dataclass(frozen=True)
class DetectorPreset:
    """An open-vocabulary detector by name: a Hub repo, or (``hub_id`` None) a tiny-random
    config directory under ``configs/`` built with random weights from ``seed``."""

    name: str
    family: str  # the transformers model_type family (engine/detectors/loading.py: FAMILIES)
    hub_id: str | None
    config_dir: Path | None = None
    seed: int = 0
    note: str = ""  # what else it needs, shown by `promptcam models`


def _tiny(name: str, family: str, directory: str) -> DetectorPreset:
    return DetectorPreset(name, family, None, CONFIGS_DIR / directory)


DETECTOR_PRESETS: dict[str, DetectorPreset] = {
    p.name: p
    for p in (
        DetectorPreset(
            "grounding-dino-tiny", "grounding-dino", "IDEA-Research/grounding-dino-tiny"
        ),
        DetectorPreset(
            "grounding-dino-base", "grounding-dino", "IDEA-Research/grounding-dino-base"
        ),
        DetectorPreset(
            "mm-grounding-dino-tiny",
            "mm-grounding-dino",
            "openmmlab-community/mm_grounding_dino_tiny_o365v1_goldg_v3det",
        ),
        DetectorPreset("llmdet-tiny", "mm-grounding-dino", "iSEE-Laboratory/llmdet_tiny"),
        DetectorPreset("llmdet-large", "mm-grounding-dino", "iSEE-Laboratory/llmdet_large"),
        DetectorPreset("owlv2-base", "owlv2", "google/owlv2-base-patch16-ensemble"),
        DetectorPreset("owlvit-base", "owlvit", "google/owlvit-base-patch32"),
        DetectorPreset(
            "omdet-turbo",
            "omdet-turbo",
            "omlab/omdet-turbo-swin-tiny-hf",
            note="its Swin backbone is a timm model: needs the timm package (and torchvision)",
        ),
        DetectorPreset("florence2-base", "florence2", "florence-community/Florence-2-base"),
        DetectorPreset("florence2-large", "florence2", "florence-community/Florence-2-large"),
        DetectorPreset(
            "sam3",
            "sam3",
            "facebook/sam3",
            note="gated on the Hub: accept the licence and log in (huggingface-cli login)",
        ),
        _tiny("grounding-dino-tiny-random", "grounding-dino", "grounding_dino_tiny_random"),
        _tiny(
            "mm-grounding-dino-tiny-random", "mm-grounding-dino", "mm_grounding_dino_tiny_random"
        ),
        _tiny("owlv2-tiny-random", "owlv2", "owlv2_tiny_random"),
        _tiny("owlvit-tiny-random", "owlvit", "owlvit_tiny_random"),
        _tiny("omdet-turbo-tiny-random", "omdet-turbo", "omdet_turbo_tiny_random"),
        _tiny("florence2-tiny-random", "florence2", "florence2_tiny_random"),
        _tiny("sam3-tiny-random", "sam3", "sam3_tiny_random"),
    )
}


@dataclass(frozen=True)
class Preset:
    name: str
    sam2_hub_id: (
        str | None
    )  # Hugging Face Hub repo holding the checkpoint (sam2's build_sam2_hf ids)
    sam2_config: str  # sam2 package config name, or a file under configs/ for tiny-random
    detector: str  # a detector preset name, a Hub id or a local directory
    seed: int = 0


PRESETS: dict[str, Preset] = {
    "sam2.1-hiera-tiny": Preset(
        "sam2.1-hiera-tiny",
        "facebook/sam2.1-hiera-tiny",
        "configs/sam2.1/sam2.1_hiera_t.yaml",
        "grounding-dino-tiny",
    ),
    "sam2.1-hiera-small": Preset(
        "sam2.1-hiera-small",
        "facebook/sam2.1-hiera-small",
        "configs/sam2.1/sam2.1_hiera_s.yaml",
        "grounding-dino-tiny",
    ),
    "sam2.1-hiera-base-plus": Preset(
        "sam2.1-hiera-base-plus",
        "facebook/sam2.1-hiera-base-plus",
        "configs/sam2.1/sam2.1_hiera_b+.yaml",
        "grounding-dino-base",
    ),
    "sam2.1-hiera-large": Preset(
        "sam2.1-hiera-large",
        "facebook/sam2.1-hiera-large",
        "configs/sam2.1/sam2.1_hiera_l.yaml",
        "grounding-dino-base",
    ),
    TINY_RANDOM: Preset(
        TINY_RANDOM,
        None,
        str(CONFIGS_DIR / "sam2_tiny_random.yaml"),
        "grounding-dino-tiny-random",
        seed=0,
    ),
}


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ModelLoadError(
            f"unknown model preset '{name}' (known: {', '.join(PRESETS)})"
        ) from None
