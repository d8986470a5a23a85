"""Model presets: which SAM 2 and which Grounding DINO a ``--models`` name means.

Real presets fetch from the Hugging Face Hub on first use (and are cached by huggingface_hub);
``demo`` is a small SAM 2 and Grounding DINO trained by ``promptcam train-demo`` on the generated
demo scenes and shipped in ``configs/demo/`` (loaded as local weights are: a Meta-format
checkpoint + its YAML, a transformers directory), so the demo source tracks for real offline;
``tiny-random`` builds small random-weight models from configs in ``configs/`` with a fixed
seed, for tests that need only shapes. It is never chosen silently.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from stream.errors import ModelLoadError

CONFIGS_DIR = Path(__file__).resolve().parent.parent / "configs"
TINY_RANDOM = "tiny-random"
DEMO = "demo"
DEMO_DIR = CONFIGS_DIR / "demo"
OFFLINE_OPTIONS = (
    "offline options: --models demo (trained on the demo scenes), --models tiny-random (random "
    "weights), or local weights with --sam2-checkpoint FILE.pt --sam2-config FILE.yaml and "
    "--detector DIR"
)


@dataclass(frozen=True)
class Preset:
    name: str
    sam2_hub_id: (
        str | None
    )  # Hugging Face Hub repo holding the checkpoint (sam2's build_sam2_hf ids)
    sam2_config: str  # sam2 package config name, or a file under configs/ for tiny-random
    detector: str  # Grounding DINO hub id, or a local directory (tiny-random, demo)
    seed: int = 0
    sam2_checkpoint: str | None = None  # a local Meta-format checkpoint (demo)

    @property
    def is_local(self) -> bool:
        """Needs no download (weights shipped or generated here)."""
        return self.sam2_hub_id is None


PRESETS: dict[str, Preset] = {
    "sam2.1-hiera-tiny": Preset(
        "sam2.1-hiera-tiny",
        "facebook/sam2.1-hiera-tiny",
        "configs/sam2.1/sam2.1_hiera_t.yaml",
        "IDEA-Research/grounding-dino-tiny",
    ),
    "sam2.1-hiera-small": Preset(
        "sam2.1-hiera-small",
        "facebook/sam2.1-hiera-small",
        "configs/sam2.1/sam2.1_hiera_s.yaml",
        "IDEA-Research/grounding-dino-tiny",
    ),
    "sam2.1-hiera-base-plus": Preset(
        "sam2.1-hiera-base-plus",
        "facebook/sam2.1-hiera-base-plus",
        "configs/sam2.1/sam2.1_hiera_b+.yaml",
        "IDEA-Research/grounding-dino-base",
    ),
    "sam2.1-hiera-large": Preset(
        "sam2.1-hiera-large",
        "facebook/sam2.1-hiera-large",
        "configs/sam2.1/sam2.1_hiera_l.yaml",
        "IDEA-Research/grounding-dino-base",
    ),
    TINY_RANDOM: Preset(
        TINY_RANDOM,
        None,
        str(CONFIGS_DIR / "sam2_tiny_random.yaml"),
        str(CONFIGS_DIR / "grounding_dino_tiny_random"),
        seed=0,
    ),
    DEMO: Preset(
        DEMO,
        None,
        str(DEMO_DIR / "sam2_demo.yaml"),
        str(DEMO_DIR / "grounding_dino"),
        sam2_checkpoint=str(DEMO_DIR / "sam2_demo.pt"),
    ),
}


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ModelLoadError(
            f"unknown model preset '{name}' (known: {', '.join(PRESETS)})"
        ) from None
