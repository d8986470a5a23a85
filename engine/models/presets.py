"""Model presets: which tracker and which detector a ``--models`` name means, and the tracker
and detector presets ``--tracker`` and ``--detector`` accept.

Real presets fetch from the Hugging Face Hub on first use (and are cached by huggingface_hub);
``demo`` is a small SAM 2 and Grounding DINO trained by ``promptcam train-demo`` on the generated
demo scenes and shipped in ``configs/demo/`` (loaded as local weights are: a Meta-format
checkpoint + its YAML, a transformers directory), so the demo source tracks for real offline;
``tiny-random`` builds small random-weight models from configs in ``configs/`` (found where
``stream.config.CONFIGS_DIR`` says: the source tree or the installed package data) with a fixed
seed, for tests that need only shapes. It is never chosen silently.

A :class:`Preset` with ``tracker`` None tracks with Meta's ``sam2`` package (``sam2_hub_id`` /
``sam2_config``, or the local ``sam2_checkpoint``); with ``tracker`` set, with that row of
:data:`TRACKER_PRESETS` (a transformers video model, ``engine.backends``). A preset's ``detector``
is a :data:`DETECTOR_PRESETS` name (or a Hub id or directory: ``engine/models/detectors.py``).
To add a preset, add one row. A site's own presets (its mirror's repo ids, its own SAM 2 config)
are read from the YAML file ``PROMPTCAM_PRESETS`` names (:func:`extra_presets`): they load,
list and fetch (``promptcam models --fetch``) as the built-in ones do.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from stream.config import CONFIGS_DIR, ModelsConfig
from stream.errors import ModelLoadError

TINY_RANDOM = "tiny-random"
DEMO = "demo"
DEMO_DIR = CONFIGS_DIR / "demo"
OFFLINE_OPTIONS = (
    "offline options: --models demo (trained on the demo scenes), --models tiny-random (random "
    "weights), or local weights with --sam2-checkpoint FILE.pt --sam2-config FILE.yaml and "
    "--detector DIR (or a *-tiny-random detector preset, see promptcam models)"
)


@dataclass(frozen=True)
class TrackerPreset:
    """A transformers video tracker by name: a Hub repo, or (``hub_id`` None) a tiny-random
    config directory under ``configs/`` built with random weights from ``seed``."""

    name: str
    family: str  # transformers model_type (engine/models/video.py: FAMILIES)
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
class DetectorPreset:
    """An open-vocabulary detector by name: a Hub repo, or (``hub_id`` None) a tiny-random
    config directory under ``configs/`` built with random weights from ``seed``."""

    name: str
    family: str  # the transformers model_type family (engine/models/detectors.py: FAMILIES)
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
            note=_GATED,
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
    detector: str  # a DETECTOR_PRESETS name, a Hub id or a local directory (demo)
    sam2_file: str | None = None  # the checkpoint's file name in sam2_hub_id
    seed: int = 0
    tracker: str | None = None  # a TRACKER_PRESETS name; None: the sam2 package (sam2_* above)
    sam2_checkpoint: str | None = None  # a local Meta-format checkpoint (demo)


def _hf(name: str, tracker: str, detector: str) -> Preset:
    """A preset tracking with a transformers video model (its sam2_* fields are unused)."""
    return Preset(name, None, "", detector, tracker=tracker)


_GDINO_TINY = "grounding-dino-tiny"
_GDINO_TINY_RANDOM = "grounding-dino-tiny-random"
_SAM3_TINY_RANDOM = "sam3-tiny-random"


PRESETS: dict[str, Preset] = {
    "sam2.1-hiera-tiny": Preset(
        "sam2.1-hiera-tiny",
        "facebook/sam2.1-hiera-tiny",
        "configs/sam2.1/sam2.1_hiera_t.yaml",
        "grounding-dino-tiny",
        "sam2.1_hiera_tiny.pt",
    ),
    "sam2.1-hiera-small": Preset(
        "sam2.1-hiera-small",
        "facebook/sam2.1-hiera-small",
        "configs/sam2.1/sam2.1_hiera_s.yaml",
        "grounding-dino-tiny",
        "sam2.1_hiera_small.pt",
    ),
    "sam2.1-hiera-base-plus": Preset(
        "sam2.1-hiera-base-plus",
        "facebook/sam2.1-hiera-base-plus",
        "configs/sam2.1/sam2.1_hiera_b+.yaml",
        "grounding-dino-base",
        "sam2.1_hiera_base_plus.pt",
    ),
    "sam2.1-hiera-large": Preset(
        "sam2.1-hiera-large",
        "facebook/sam2.1-hiera-large",
        "configs/sam2.1/sam2.1_hiera_l.yaml",
        "grounding-dino-base",
        "sam2.1_hiera_large.pt",
    ),
    TINY_RANDOM: Preset(
        TINY_RANDOM,
        None,
        str(CONFIGS_DIR / "sam2_tiny_random.yaml"),
        "grounding-dino-tiny-random",
        seed=0,
    ),
    DEMO: Preset(
        DEMO,
        None,
        str(DEMO_DIR / "sam2_demo.yaml"),
        str(DEMO_DIR / "grounding_dino"),
        sam2_checkpoint=str(DEMO_DIR / "sam2_demo.pt"),
    ),
    # transformers video trackers (engine/models/video.py, engine/segmenters/transformers.py); "sam3" is SAM 3 concept mode: its detector
    # grounds the prompt (engine/detectors/sam3.py), its tracker follows.
    **{
        p.name: p
        for p in (
            _hf("sam2.1-hiera-tiny-hf", "sam2.1-hiera-tiny-hf", _GDINO_TINY),
            _hf("edgetam", "edgetam", _GDINO_TINY),
            _hf("sam3-tracker", "sam3-tracker", _GDINO_TINY),
            _hf("sam3", "sam3-tracker", "sam3"),
            _hf("sam2.1-hf-tiny-random", "sam2.1-hf-tiny-random", _GDINO_TINY_RANDOM),
            _hf("sam3-tracker-tiny-random", "sam3-tracker-tiny-random", _GDINO_TINY_RANDOM),
            _hf("sam3-tiny-random", "sam3-tracker-tiny-random", _SAM3_TINY_RANDOM),
        )
    },
}


PRESETS_ENV = "PROMPTCAM_PRESETS"
MAX_PRESETS_FILE_BYTES = 1 << 20
_HUB_ID = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$"


class PresetSpec(BaseModel):
    """One model preset of a ``PROMPTCAM_PRESETS`` file: a SAM 2 checkpoint on the Hub (or a
    mirror at ``HF_ENDPOINT``) and a detector."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(
        pattern=r"^[a-z0-9][a-z0-9._-]*$",
        min_length=1,
        max_length=64,
        description="The --models name; must not be a built-in preset's name.",
    )
    sam2_hub_id: str = Field(
        pattern=_HUB_ID,
        max_length=192,
        description="Hub repo (owner/name) holding the Meta-format SAM 2 checkpoint.",
    )
    sam2_file: str = Field(
        pattern=r"^[^/\\]+\.(pt|pth)$",
        max_length=128,
        description="The checkpoint's file name in sam2_hub_id (a dict with key 'model').",
    )
    sam2_config: str = Field(
        min_length=1,
        max_length=4096,
        description="The checkpoint's SAM 2 YAML: a config of the sam2 package "
        "(configs/sam2.1/sam2.1_hiera_t.yaml) or a YAML file (relative to this file).",
    )
    detector: str = Field(
        min_length=1,
        max_length=4096,
        description="Detector: a detector preset (promptcam models), a Hub id or a directory.",
    )


class PresetsFile(BaseModel):
    """The ``PROMPTCAM_PRESETS`` file: ``presets:`` a list of :class:`PresetSpec`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    presets: list[PresetSpec] = Field(
        default_factory=list,
        max_length=256,
        description="Model presets added to the built-in ones.",
    )


def extra_presets() -> dict[str, Preset]:
    """The presets of the file ``$PROMPTCAM_PRESETS`` names (none when unset); a file that is
    missing, unreadable, invalid or redefines a built-in preset is a one-line ModelLoadError."""
    where = os.environ.get(PRESETS_ENV, "").strip()
    if not where:
        return {}
    path = Path(where).expanduser()
    what = f"{PRESETS_ENV} file {path}"
    try:
        if path.stat().st_size > MAX_PRESETS_FILE_BYTES:
            raise ModelLoadError(f"{what} is over {MAX_PRESETS_FILE_BYTES} bytes")
        tree = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        text = str(e).strip().splitlines()
        raise ModelLoadError(
            f"{what} is not readable YAML: {text[0] if text else type(e).__name__}"
        ) from None
    try:
        spec = PresetsFile.model_validate(tree if tree is not None else {})
    except ValidationError as e:
        err = e.errors()[0]
        at = ".".join(str(x) for x in err["loc"]) or "(top level)"
        raise ModelLoadError(f"{what}: {at}: {err['msg']}") from None
    found: dict[str, Preset] = {}
    for p in spec.presets:
        if p.name in PRESETS or p.name in found:
            raise ModelLoadError(f"{what}: preset '{p.name}' is defined twice (or built in)")
        config = p.sam2_config
        if config.endswith((".yaml", ".yml")) and not config.startswith("configs/"):
            config = str((path.parent / Path(config).expanduser()).resolve())
        detector = p.detector
        local = path.parent / Path(detector).expanduser()
        if detector not in DETECTOR_PRESETS and (
            detector.startswith((".", "/", "~")) or local.is_dir()
        ):
            detector = str(local.resolve())
        found[p.name] = Preset(p.name, p.sam2_hub_id, config, detector, p.sam2_file)
    return found


def all_presets() -> dict[str, Preset]:
    """The built-in presets and those of ``$PROMPTCAM_PRESETS``."""
    return {**PRESETS, **extra_presets()}


def hub_files(models: ModelsConfig, with_detector: bool) -> list[tuple[str, str]]:
    """(repo id, file) on the Hugging Face Hub that loading ``models`` needs (a probe file
    for the detector: its ``config.json``); none for tiny-random or local weights."""
    from engine.models.hub import looks_like_hub_id

    preset = get_preset(models.preset)
    files = []
    if models.sam2_checkpoint is None and preset.sam2_hub_id and preset.sam2_file:
        files.append((preset.sam2_hub_id, preset.sam2_file))
    detector = models.detector if models.detector is not None else preset.detector
    if detector in DETECTOR_PRESETS:
        hub_id = DETECTOR_PRESETS[detector].hub_id
        if with_detector and hub_id is not None:
            files.append((hub_id, "config.json"))
        return files
    local = Path(detector).expanduser().is_dir()
    if with_detector and not local and looks_like_hub_id(detector):
        files.append((detector, "config.json"))
    return files


def get_preset(name: str) -> Preset:
    if name in PRESETS:
        return PRESETS[name]
    presets = all_presets()
    try:
        return presets[name]
    except KeyError:
        raise ModelLoadError(
            f"unknown model preset '{name}' (known: {', '.join(presets)})"
        ) from None
