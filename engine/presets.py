"""Model presets: which tracker and which detector a ``--models`` name means, and the tracker
presets ``--tracker`` accepts.

Real presets fetch from the Hugging Face Hub on first use (and are cached by huggingface_hub);
``tiny-random`` builds small random-weight models from configs in ``configs/`` (found where
``stream.config.CONFIGS_DIR`` says: the source tree or the installed package data) with a fixed
seed, for tests and offline runs. It is never chosen silently.

A :class:`Preset` with ``tracker`` None tracks with Meta's ``sam2`` package (``sam2_hub_id`` /
``sam2_config``); with ``tracker`` set, with that row of :data:`TRACKER_PRESETS` (a transformers
video model, ``engine.backends``). To add a preset, add one row.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from stream.config import CONFIGS_DIR, ModelsConfig
from stream.errors import ModelLoadError

TINY_RANDOM = "tiny-random"
OFFLINE_OPTIONS = (
    "offline options: --models tiny-random (random weights), or local weights with "
    "--sam2-checkpoint FILE.pt --sam2-config FILE.yaml and --detector DIR"
)


@dataclass(frozen=True)
class TrackerPreset:
    """A transformers video tracker by name: a Hub repo, or (``hub_id`` None) a tiny-random
    config directory under ``configs/`` built with random weights from ``seed``."""

    name: str
    family: str  # transformers model_type (engine/backends/video_models.py: FAMILIES)
    hub_id: str | None
    config_dir: Path | None = None
    seed: int = 0
    note: str = ""  # what else it needs, for errors and listings


_GATED = "gated on the Hub: accept the licence and log in (huggingface-cli login)"
_TIMM = "its image encoder is a timm model: needs timm (and an importable torchvision)"

TRACKER_PRESETS: dict[str, TrackerPreset] = {
    p.name: p
    for p in (
        TrackerPreset("sam2.1-hiera-tiny-hf", "sam2_video", "facebook/sam2.1-hiera-tiny"),
        TrackerPreset("sam2.1-hiera-small-hf", "sam2_video", "facebook/sam2.1-hiera-small"),
        TrackerPreset("sam2.1-hiera-base-plus-hf", "sam2_video", "facebook/sam2.1-hiera-base-plus"),
        TrackerPreset("sam2.1-hiera-large-hf", "sam2_video", "facebook/sam2.1-hiera-large"),
        TrackerPreset("edgetam", "edgetam_video", "yonigozlan/EdgeTAM-hf", note=_TIMM),
        TrackerPreset("sam3-tracker", "sam3_tracker_video", "facebook/sam3", note=_GATED),
        TrackerPreset(
            "sam2.1-hf-tiny-random", "sam2_video", None, CONFIGS_DIR / "sam2_video_tiny_random"
        ),
        TrackerPreset(
            "sam3-tracker-tiny-random",
            "sam3_tracker_video",
            None,
            CONFIGS_DIR / "sam3_tracker_video_tiny_random",
        ),
    )
}


@dataclass(frozen=True)
class Preset:
    name: str
    sam2_hub_id: (
        str | None
    )  # Hugging Face Hub repo holding the checkpoint (sam2's build_sam2_hf ids)
    sam2_config: str  # sam2 package config name, or a file under configs/ for tiny-random
    detector: str  # Grounding DINO hub id, or a directory name under configs/ for tiny-random
    sam2_file: str | None = None  # the checkpoint's file name in sam2_hub_id
    seed: int = 0
    tracker: str | None = None  # a TRACKER_PRESETS name; None: the sam2 package (sam2_* above)


def _hf(name: str, tracker: str, detector: str) -> Preset:
    """A preset tracking with a transformers video model (its sam2_* fields are unused)."""
    return Preset(name, None, "", detector, tracker=tracker)


_GDINO_TINY = "IDEA-Research/grounding-dino-tiny"
_GDINO_TINY_RANDOM = str(CONFIGS_DIR / "grounding_dino_tiny_random")
_SAM3_TINY_RANDOM = str(CONFIGS_DIR / "sam3_tiny_random")


PRESETS: dict[str, Preset] = {
    "sam2.1-hiera-tiny": Preset(
        "sam2.1-hiera-tiny",
        "facebook/sam2.1-hiera-tiny",
        "configs/sam2.1/sam2.1_hiera_t.yaml",
        "IDEA-Research/grounding-dino-tiny",
        "sam2.1_hiera_tiny.pt",
    ),
    "sam2.1-hiera-small": Preset(
        "sam2.1-hiera-small",
        "facebook/sam2.1-hiera-small",
        "configs/sam2.1/sam2.1_hiera_s.yaml",
        "IDEA-Research/grounding-dino-tiny",
        "sam2.1_hiera_small.pt",
    ),
    "sam2.1-hiera-base-plus": Preset(
        "sam2.1-hiera-base-plus",
        "facebook/sam2.1-hiera-base-plus",
        "configs/sam2.1/sam2.1_hiera_b+.yaml",
        "IDEA-Research/grounding-dino-base",
        "sam2.1_hiera_base_plus.pt",
    ),
    "sam2.1-hiera-large": Preset(
        "sam2.1-hiera-large",
        "facebook/sam2.1-hiera-large",
        "configs/sam2.1/sam2.1_hiera_l.yaml",
        "IDEA-Research/grounding-dino-base",
        "sam2.1_hiera_large.pt",
    ),
    TINY_RANDOM: Preset(
        TINY_RANDOM,
        None,
        str(CONFIGS_DIR / "sam2_tiny_random.yaml"),
        str(CONFIGS_DIR / "grounding_dino_tiny_random"),
        seed=0,
    ),
    # transformers video trackers (engine/backends); "sam3" is SAM 3 concept mode: its detector
    # grounds the prompt, its tracker follows (engine/backends/sam3_concept.py).
    **{
        p.name: p
        for p in (
            _hf("sam2.1-hiera-tiny-hf", "sam2.1-hiera-tiny-hf", _GDINO_TINY),
            _hf("edgetam", "edgetam", _GDINO_TINY),
            _hf("sam3-tracker", "sam3-tracker", _GDINO_TINY),
            _hf("sam3", "sam3-tracker", "facebook/sam3"),
            _hf("sam2.1-hf-tiny-random", "sam2.1-hf-tiny-random", _GDINO_TINY_RANDOM),
            _hf("sam3-tracker-tiny-random", "sam3-tracker-tiny-random", _GDINO_TINY_RANDOM),
            _hf("sam3-tiny-random", "sam3-tracker-tiny-random", _SAM3_TINY_RANDOM),
        )
    },
}


def hub_files(models: ModelsConfig, with_detector: bool) -> list[tuple[str, str]]:
    """(repo id, file) on the Hugging Face Hub that loading ``models`` needs (a probe file
    for the detector: its ``config.json``); none for tiny-random or local weights."""
    from engine.hub import looks_like_hub_id

    preset = get_preset(models.preset)
    files = []
    if models.sam2_checkpoint is None and preset.sam2_hub_id and preset.sam2_file:
        files.append((preset.sam2_hub_id, preset.sam2_file))
    detector = models.detector if models.detector is not None else preset.detector
    local = Path(detector).expanduser().is_dir()
    if with_detector and detector != TINY_RANDOM and not local and looks_like_hub_id(detector):
        files.append((detector, "config.json"))
    return files


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ModelLoadError(
            f"unknown model preset '{name}' (known: {', '.join(PRESETS)})"
        ) from None
