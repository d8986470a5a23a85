"""transformers video trackers: the families promptcam streams, and how one is loaded.

Families (the ``TRACKER`` rows of ``engine.models.registry``, by transformers ``model_type``): ``sam2_video`` (``Sam2VideoModel``:
SAM 2 / 2.1), ``edgetam_video`` (``EdgeTamVideoModel``) and ``sam3_tracker_video``
(``Sam3TrackerVideoModel``; a ``sam3_video`` checkpoint is read for its tracker, as
transformers does). They share one inference-session design; what differs for streaming is
listed on :class:`VideoFamily`.

:func:`load_video_model` takes a tracker preset name (``engine.models.presets.TRACKER_PRESETS``), a
local directory (as ``save_pretrained`` writes it) or a Hugging Face Hub id:

* presets with a ``config_dir`` (``*-tiny-random``) build the model from that config with random
  weights drawn from the preset's seed (two loads are identical);
* a directory or Hub id goes through the family's ``from_pretrained``; weights that do not match
  the config (missing or differently shaped) are a :class:`ModelLoadError`, and so is a config
  whose ``model_type`` is not a family here. A failed download names the offline options.

Frames are prepared as transformers' SAM image processors prepare them (torchvision backend):
the RGB frame resized to the model's square input, bilinear with antialiasing on uint8 (rounded
to grey levels), then the fused rescale-and-normalise ``(x - mean / rescale) / (std / rescale)``
in float32 (done here through a lookup table of the 256 levels, the same values). Mean, std and
rescale come from the checkpoint's ``preprocessor_config.json`` when it has one, else the
family's defaults. On CUDA the resize runs on the device in float and is rounded (within one
grey level of the CPU path).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from engine.device import autocast_dtype, resolve_device
from engine.models.hub import first_line
from engine.models.presets import OFFLINE_OPTIONS, TRACKER_PRESETS, TrackerPreset
from engine.models.pretrained import on_device, pretrained_model, seeded_model
from engine.models.registry import ModelKind, family_for_model_type, model_types
from stream.config import ModelsConfig
from stream.errors import ModelLoadError

if TYPE_CHECKING:
    from transformers import PreTrainedModel

log = logging.getLogger(__name__)

PREPROCESSOR_FILE = "preprocessor_config.json"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
HALF = (0.5, 0.5, 0.5)


@dataclass(frozen=True)
class VideoFamily:
    """One transformers video-tracker family and what its streaming needs to know."""

    model_type: str
    model_class: str  # the transformers class
    memory_batch_first: bool  # EdgeTAM's perceiver memories are [B, N, C]; the others [HW, B, C]
    memory_to_compute_dtype: bool  # SAM 2 / SAM 3 cast the bf16 memory bank before attending
    counts_spatial_memories: bool  # EdgeTAM's memory attention takes num_spatial_memory_tokens
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    needs: str = ""  # what else it needs, for error messages and `promptcam models`

    def model_cls(self) -> type[PreTrainedModel]:
        import transformers

        cls = getattr(transformers, self.model_class)
        if not (isinstance(cls, type) and issubclass(cls, transformers.PreTrainedModel)):
            raise ModelLoadError(f"transformers has no model class {self.model_class}")
        return cls


# The families, each a TRACKER row of engine.models.registry (which also maps a checkpoint's
# model_type to its family: a sam3_video checkpoint is read for its tracker).
SAM2_VIDEO = VideoFamily(
    "sam2_video", "Sam2VideoModel", False, True, False, IMAGENET_MEAN, IMAGENET_STD
)
EDGETAM_VIDEO = VideoFamily(
    "edgetam_video",
    "EdgeTamVideoModel",
    True,
    False,
    True,
    IMAGENET_MEAN,
    IMAGENET_STD,
    needs="timm (and an importable torchvision) for its RepViT image encoder",
)
SAM3_TRACKER_VIDEO = VideoFamily(
    "sam3_tracker_video", "Sam3TrackerVideoModel", False, True, False, HALF, HALF
)


@dataclass(frozen=True)
class FramePreprocessing:
    """How a frame becomes model input (see the module docstring)."""

    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    rescale: float = 1 / 255

    @classmethod
    def read(cls, path: Path | None, family: VideoFamily, size: int) -> FramePreprocessing:
        """The checkpoint's ``preprocessor_config.json`` (None: the family's defaults)."""
        if path is None:
            return cls(size, family.mean, family.std)
        try:
            raw = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise ModelLoadError(f"{path} is not a readable JSON file: {e}") from None
        return cls(
            size,
            _triple(raw.get("image_mean", family.mean), path, "image_mean"),
            _triple(raw.get("image_std", family.std), path, "image_std"),
            float(raw.get("rescale_factor", 1 / 255)),
        )

    def lut(self) -> np.ndarray:
        """[3, 256] float32: every uint8 level normalised per RGB channel, as the processor's
        fused rescale-and-normalise computes it."""
        mean = torch.tensor(self.mean) * (1.0 / self.rescale)
        std = torch.tensor(self.std) * (1.0 / self.rescale)
        levels = torch.arange(256, dtype=torch.float32)[None, :]
        out: np.ndarray = ((levels - mean[:, None]) / std[:, None]).numpy()
        return out


@dataclass(frozen=True)
class LoadedVideoModel:
    """A transformers video tracker ready for streaming, and how to run it."""

    model: Any  # the family's model class, eval mode, on ``device`` (attributes per family)
    family: VideoFamily
    device: torch.device
    autocast_dtype: torch.dtype | None  # None: plain float32
    preprocessing: FramePreprocessing
    source: str  # preset name, directory or Hub id, for logs

    @property
    def image_size(self) -> int:
        return int(self.model.config.image_size)

    @property
    def num_params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def autocast(self) -> contextlib.AbstractContextManager[None]:
        """Context to run the model in: bf16 autocast where chosen, else nothing."""
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)


def load_video_model(source: str, models: ModelsConfig) -> LoadedVideoModel:
    """The tracker ``source`` names (a tracker preset, a directory or a Hub id) on
    ``models.device``; see the module docstring."""
    device = resolve_device(models.device)
    started = time.monotonic()
    preset = TRACKER_PRESETS.get(source)
    if preset is not None and preset.config_dir is not None:
        family, model = _from_config_dir(preset)
        prep_file: Path | None = preset.config_dir / PREPROCESSOR_FILE
    else:
        where = preset.hub_id if preset is not None and preset.hub_id else source
        family, model, prep_file = _from_pretrained(where, preset)
    model = on_device(model, device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    size = int(model.config.image_size)
    prep = FramePreprocessing.read(
        prep_file if prep_file is not None and prep_file.is_file() else None, family, size
    )
    loaded = LoadedVideoModel(
        model, family, device, autocast_dtype(models.dtype, device), prep, source
    )
    log.info(
        "tracker %s (%s): %.2fM params, %d px, %s, %s, loaded in %.1fs",
        source,
        family.model_class,
        loaded.num_params / 1e6,
        size,
        device,
        loaded.autocast_dtype or "float32",
        time.monotonic() - started,
    )
    return loaded


def family_of(config: object, where: str) -> VideoFamily:
    """The family of a transformers config (its registry row's VideoFamily);
    ``ModelLoadError`` if promptcam does not stream it."""
    model_type = str(getattr(config, "model_type", "?"))
    row = family_for_model_type(ModelKind.TRACKER, model_type)
    family = row.implementation() if row is not None else None
    if not isinstance(family, VideoFamily):
        raise ModelLoadError(
            f"{where} is a '{model_type}' model, not a video tracker promptcam streams "
            f"(model types: {', '.join(model_types(ModelKind.TRACKER))})"
        )
    return family


def save_tiny_random(preset_name: str, directory: Path) -> Path:
    """Write the tiny-random tracker ``preset_name`` (its seeded random weights, config and
    preprocessor config) to ``directory`` as ``save_pretrained`` does; returns ``directory``."""
    preset = TRACKER_PRESETS[preset_name]
    assert preset.config_dir is not None
    _, model = _from_config_dir(preset)
    model.save_pretrained(directory)
    (directory / PREPROCESSOR_FILE).write_text((preset.config_dir / PREPROCESSOR_FILE).read_text())
    return directory


def _from_config_dir(preset: TrackerPreset) -> tuple[VideoFamily, PreTrainedModel]:
    from transformers import AutoConfig

    assert preset.config_dir is not None
    config = AutoConfig.from_pretrained(preset.config_dir)
    family = family_of(config, str(preset.config_dir))
    _check_needs(family, preset.name)
    return family, seeded_model(lambda: family.model_cls()(config), preset.seed)


def _from_pretrained(
    where: str, preset: TrackerPreset | None
) -> tuple[VideoFamily, PreTrainedModel, Path | None]:
    from transformers import AutoConfig

    local = Path(where).is_dir()
    if not local and (Path(where).exists() or where.startswith((".", "/"))):
        raise ModelLoadError(f"tracker {where} is not a directory (nor a preset or Hub id)")
    try:
        config = AutoConfig.from_pretrained(where)
    except (OSError, ValueError) as e:
        if local:
            raise ModelLoadError(f"tracker directory {where} has no readable config.json") from None
        hint = f" ({preset.note})" if preset is not None and preset.note else ""
        raise ModelLoadError(
            f"tracker {where} could not be loaded from the Hugging Face Hub{hint} "
            f"({type(e).__name__}: {first_line(e)}); {OFFLINE_OPTIONS}"
        ) from None
    family = family_of(config, where)
    _check_needs(family, where)
    try:
        model = pretrained_model(family.model_cls(), where)
    except OSError as e:
        raise ModelLoadError(
            f"tracker weights in {where} are not readable: {first_line(e)}"
        ) from None
    return family, model, _preprocessor_file(where, local)


def _preprocessor_file(where: str, local: bool) -> Path | None:
    if local:
        return Path(where) / PREPROCESSOR_FILE
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError

    try:
        return Path(hf_hub_download(where, PREPROCESSOR_FILE))
    except (OSError, ValueError, HfHubHTTPError) as e:  # none: the family's defaults
        log.info("%s has no %s (%s): family defaults", where, PREPROCESSOR_FILE, type(e).__name__)
        return None


def _check_needs(family: VideoFamily, where: str) -> None:
    if family.model_type == "edgetam_video" and not _timm_importable():
        raise ModelLoadError(
            f"{where}: EdgeTAM needs {family.needs}; this install has no working timm"
        )


def _timm_importable() -> bool:
    if importlib.util.find_spec("timm") is None:
        return False
    try:
        import timm  # noqa: F401
    except (ImportError, RuntimeError):
        return False
    return True


def _triple(value: object, path: Path, key: str) -> tuple[float, float, float]:
    items = list(value) if isinstance(value, list | tuple) else []
    numbers = [float(v) for v in items if isinstance(v, int | float)]
    if len(items) != 3 or len(numbers) != 3:
        raise ModelLoadError(f"{path}: {key} must be 3 numbers, got {value!r}")
    return numbers[0], numbers[1], numbers[2]
