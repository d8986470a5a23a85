"""SAM 2 model loading: presets from the Hugging Face Hub, local checkpoint + YAML, tiny-random.

``load_sam2(cfg.models)`` returns a ``LoadedSam2``: a ``SAM2Base`` in eval mode on its device,
the autocast dtype to run it under, and the resolved model config (so that the official
``SAM2VideoPredictor`` can be built from the very same config and weights for comparison,
``official_video_predictor``).

Four ways to get a model:
- a real preset (``sam2.1-hiera-*``): the config from the installed ``sam2`` package and the
  checkpoint from the cache or the Hub (``engine.models.hub.fetch``), as sam2's own ``build_sam2_hf``
  does. A failed download raises ``ModelLoadError`` naming the offline options; with the Hub
  unreachable (or ``HF_HUB_OFFLINE=1``) and no cached file it fails at once, without retries.
- ``--sam2-checkpoint FILE.pt --sam2-config FILE.yaml``: any SAM 2 hydra YAML on disk (read with
  OmegaConf and instantiated with ``hydra.utils.instantiate``, no hydra search path involved)
  and a Meta-format checkpoint (a dict with key ``model``). Configs that do not describe a SAM 2
  model and checkpoints that do not match their config are refused with one line.
- ``demo``: the shipped ``configs/demo/sam2_demo.pt`` + ``sam2_demo.yaml``, through the same
  path as ``--sam2-checkpoint``/``--sam2-config``.
- ``tiny-random``: ``configs/sam2_tiny_random.yaml`` with random weights from the preset's fixed
  seed; two loads give identical weights.

Every model gets the settings of sam2's ``build_sam2_video_predictor`` (dynamic multimask via
stability, binarised memory masks on prompted frames); ``fill_hole_area`` is a predictor setting
and stays 0 (no hole filling, which needs sam2's C extension). On CUDA: bf16 autocast and TF32;
``compile`` wraps the hot modules in ``torch.compile``. On CPU: float32 unless bfloat16 is asked.
"""

from __future__ import annotations

import contextlib
import logging
import pickle
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import yaml
from hydra.errors import HydraException
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from engine.device import autocast_dtype, resolve_device
from engine.models import hub
from engine.models.presets import TINY_RANDOM, Preset, get_preset
from stream.config import ModelsConfig
from stream.errors import ModelLoadError

if TYPE_CHECKING:
    from sam2.modeling.sam2_base import SAM2Base
    from sam2.sam2_video_predictor import SAM2VideoPredictor

log = logging.getLogger(__name__)

# What sam2.build_sam.build_sam2_video_predictor adds to every config (fill_hole_area excepted).
_PREDICTOR_SETTINGS: dict[str, object] = {
    "sam_mask_decoder_extra_args": {
        "dynamic_multimask_via_stability": True,
        "dynamic_multimask_stability_delta": 0.05,
        "dynamic_multimask_stability_thresh": 0.98,
    },
    "binarize_mask_from_pts_for_mem_enc": True,
}


@dataclass(frozen=True)
class LoadedSam2:
    """A SAM 2 model ready for inference, and how to run it."""

    model: SAM2Base  # in eval mode on ``device``
    device: torch.device
    autocast_dtype: torch.dtype | None  # None: plain float32
    model_config: DictConfig  # the resolved ``model`` node it was built from
    source: str  # preset name or checkpoint path, for logs and stats
    preprocess: str = "pil"  # "pil" or "device": where frames are resized (ModelsConfig)

    @property
    def image_size(self) -> int:
        return int(self.model.image_size)

    @property
    def num_params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def autocast(self) -> contextlib.AbstractContextManager[None]:
        """Context to run the model in: bf16 autocast where chosen, else nothing."""
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)


def load_sam2(cfg: ModelsConfig) -> LoadedSam2:
    """Build the SAM 2 model that ``cfg`` names (see the module docstring)."""
    device = resolve_device(cfg.device)
    started = time.monotonic()
    if cfg.sam2_checkpoint is not None or cfg.sam2_config is not None:
        if cfg.sam2_checkpoint is None or cfg.sam2_config is None:
            raise ModelLoadError("--sam2-checkpoint and --sam2-config must be given together")
        model_cfg = read_sam2_config(cfg.sam2_config, cfg.image_size)
        model = _instantiate(model_cfg, str(cfg.sam2_config))
        _load_checkpoint(model, cfg.sam2_checkpoint, cfg.sam2_config)
        source = str(cfg.sam2_checkpoint)
    else:
        preset = get_preset(cfg.preset)
        if preset.sam2_checkpoint is not None:  # shipped weights: the local-weights path
            model_cfg = read_sam2_config(Path(preset.sam2_config), cfg.image_size)
            model = _instantiate(model_cfg, preset.sam2_config)
            _load_checkpoint(model, Path(preset.sam2_checkpoint), preset.sam2_config)
        elif preset.name == TINY_RANDOM:
            model_cfg = read_sam2_config(Path(preset.sam2_config), cfg.image_size)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(preset.seed)
                model = _instantiate(model_cfg, preset.sam2_config)
        else:
            model_cfg, model = _load_hub_preset(preset, cfg.image_size)
        source = preset.name
    # Objects are batched here, one per row; the official predictor runs them one at a time,
    # where this cross-object constraint is a no-op. Keep it a no-op (see engine/segmenters/sam2.py).
    model.non_overlap_masks_for_mem_enc = False
    model = model.to(device).eval()
    _cache_frame_constants(model)
    dtype = autocast_dtype(cfg.dtype, device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if cfg.compile:
        _compile_hot_modules(model, device)
    preprocess = cfg.preprocess
    if preprocess == "auto":
        preprocess = "device" if device.type == "cuda" else "pil"
    loaded = LoadedSam2(model, device, dtype, model_cfg, source, preprocess)
    log.info(
        "SAM 2 %s: %.2fM params, %d px, %s, %s, loaded in %.1fs",
        source,
        loaded.num_params / 1e6,
        loaded.image_size,
        device,
        dtype or "float32",
        time.monotonic() - started,
    )
    return loaded


def _cache_frame_constants(model: SAM2Base) -> None:
    """Compute once what SAM 2 recomputes on every frame from the weights alone: the Hiera
    trunk's positional embedding (a bicubic resize of ``pos_embed``: ~10 ms per frame for
    Hiera-T at 512 px on CPU) and the prompt encoder's dense positional encoding. Values are
    identical to the recomputed ones; the cache is keyed by size, device, dtype and autocast
    state, and belongs to this (frozen, eval-mode) model instance."""
    trunk = getattr(model.image_encoder, "trunk", None)
    if trunk is not None and callable(getattr(trunk, "_get_pos_embed", None)):
        trunk._get_pos_embed = _memoised(trunk._get_pos_embed)
    encoder = model.sam_prompt_encoder
    encoder.get_dense_pe = _memoised(encoder.get_dense_pe)


def _memoised(fn: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    cache: dict[tuple[Hashable, ...], torch.Tensor] = {}

    def cached(*args: Hashable) -> torch.Tensor:
        key = (*args, torch.is_autocast_enabled(), torch.is_inference_mode_enabled())
        value = cache.get(key)
        if value is None:
            value = fn(*args)
            cache[key] = value
        return value

    return cached


def read_sam2_config(path: Path, image_size: int | None = None) -> DictConfig:
    """Read a SAM 2 hydra YAML from disk and return its resolved ``model`` node.

    Adds the video-predictor settings and, if given, overrides the input size.
    """
    try:
        tree = OmegaConf.load(path)
    except FileNotFoundError:
        raise ModelLoadError(f"SAM 2 config {path} does not exist") from None
    except (OSError, OmegaConfBaseException, ValueError, yaml.YAMLError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ModelLoadError(f"SAM 2 config {path} is not readable YAML: {msg}") from None
    model_node = tree.get("model") if isinstance(tree, DictConfig) else None
    target = model_node.get("_target_") if isinstance(model_node, DictConfig) else None
    if not isinstance(target, str) or not _is_sam2_class(target):
        raise ModelLoadError(
            f"{path} is not a SAM 2 config (expected a 'model' section whose _target_ is "
            "sam2.modeling.sam2_base.SAM2Base or a subclass)"
        )
    assert isinstance(model_node, DictConfig)
    model_node = OmegaConf.merge(model_node, _PREDICTOR_SETTINGS)
    assert isinstance(model_node, DictConfig)
    if image_size is not None:
        model_node.image_size = image_size
        _set_rope_feat_sizes(model_node, image_size)
    # sam2's own compile flag compiles with CUDA graphs; compile is ours (ModelsConfig.compile).
    model_node.compile_image_encoder = False
    try:
        OmegaConf.resolve(model_node)
    except OmegaConfBaseException as e:
        raise ModelLoadError(f"SAM 2 config {path}: {str(e).splitlines()[0]}") from None
    return model_node


def save_checkpoint(model: torch.nn.Module, path: Path) -> None:
    """Write ``model``'s weights as a Meta-format SAM 2 checkpoint (``{"model": state_dict}``)."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    torch.save({"model": state}, path)


def official_video_predictor(loaded: LoadedSam2) -> SAM2VideoPredictor:
    """The official ``SAM2VideoPredictor`` on the same config, weights and device.

    The correctness oracle of the streaming segmenter (tests and ``promptcam bench``). Hole
    filling is off (``fill_hole_area=0``), as in the streaming engine.
    """
    node = OmegaConf.create(OmegaConf.to_container(loaded.model_config))
    assert isinstance(node, DictConfig)
    node._target_ = "sam2.sam2_video_predictor.SAM2VideoPredictor"
    node.fill_hole_area = 0
    predictor = _instantiate(node, "official predictor")
    predictor.load_state_dict(loaded.model.state_dict())
    predictor.non_overlap_masks_for_mem_enc = loaded.model.non_overlap_masks_for_mem_enc
    return predictor.to(loaded.device).eval()


def _compile_hot_modules(model: SAM2Base, device: torch.device) -> None:
    """``torch.compile`` the per-frame modules (as sam2's ``SAM2VideoPredictorVOS``, minus CUDA
    graphs, whose output buffers would be overwritten by the next call)."""
    if device.type != "cuda":
        log.warning("models.compile is for CUDA; running %s uncompiled", device)
        return
    mode = "max-autotune-no-cudagraphs"
    model.image_encoder.forward = torch.compile(
        model.image_encoder.forward, mode=mode, dynamic=False
    )
    # The number of memories (and objects) varies from frame to frame.
    model.memory_attention.forward = torch.compile(
        model.memory_attention.forward, mode=mode, dynamic=True
    )
    model.memory_encoder.forward = torch.compile(
        model.memory_encoder.forward, mode=mode, dynamic=True
    )
    model.sam_mask_decoder.forward = torch.compile(
        model.sam_mask_decoder.forward, mode=mode, dynamic=True
    )
    log.info("SAM 2 hot modules wrapped in torch.compile (%s); the first frames are slow", mode)


def _is_sam2_class(target: str) -> bool:
    from sam2.modeling.sam2_base import SAM2Base

    try:
        cls = get_class(target)
    except (HydraException, ImportError, ValueError, AttributeError):
        return False
    return isinstance(cls, type) and issubclass(cls, SAM2Base)


def _set_rope_feat_sizes(model_node: DictConfig, image_size: int) -> None:
    """Keep the memory attention's RoPE tables at the feature size of ``image_size``."""
    stride = int(model_node.get("backbone_stride", 16))
    side = image_size // stride
    layer = model_node.get("memory_attention", {}).get("layer", {})
    for name in ("self_attention", "cross_attention"):
        attn = layer.get(name) if isinstance(layer, DictConfig) else None
        if isinstance(attn, DictConfig) and "feat_sizes" in attn:
            attn.feat_sizes = [side, side]


def _instantiate(model_node: DictConfig, what: str) -> SAM2Base:
    try:
        return instantiate(model_node, _recursive_=True)
    except (HydraException, TypeError, ValueError, AssertionError, RuntimeError) as e:
        first = str(e).strip().splitlines()
        raise ModelLoadError(
            f"cannot build SAM 2 from {what}: {first[0] if first else type(e).__name__}"
        ) from None


def _load_checkpoint(model: torch.nn.Module, ckpt: Path, config: Path | str) -> None:
    try:
        blob = torch.load(ckpt, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ModelLoadError(f"SAM 2 checkpoint {ckpt} does not exist") from None
    except pickle.UnpicklingError:
        raise ModelLoadError(
            f"SAM 2 checkpoint {ckpt} is not readable: not a (weights-only) PyTorch checkpoint"
        ) from None
    except (OSError, RuntimeError, ValueError, EOFError) as e:
        msg = str(e).strip().splitlines()
        raise ModelLoadError(
            f"SAM 2 checkpoint {ckpt} is not readable: {msg[0] if msg else type(e).__name__}"
        ) from None
    if not isinstance(blob, dict) or not isinstance(blob.get("model"), dict):
        raise ModelLoadError(
            f"SAM 2 checkpoint {ckpt} is not in Meta format (a dict with key 'model')"
        )
    state: dict[str, object] = blob["model"]
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [
        f"{k} {_shape(state[k])} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and _shape(state[k]) != tuple(v.shape)
    ]
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys (e.g. {unexpected[0]})")
        if mismatched:
            parts.append(
                f"{len(mismatched)} shape mismatches (e.g. {mismatched[0]}, checkpoint vs config)"
            )
        raise ModelLoadError(
            f"SAM 2 checkpoint {ckpt} does not match config {config}: {'; '.join(parts)}"
        )
    model.load_state_dict(state)


def _load_hub_preset(preset: Preset, image_size: int | None) -> tuple[DictConfig, SAM2Base]:
    import sam2

    assert preset.sam2_hub_id is not None and preset.sam2_file is not None
    config_name = preset.sam2_config
    # a sam2 package config name, or a YAML file (an absolute path: a PROMPTCAM_PRESETS preset)
    config_path = Path(config_name)
    if not config_path.is_absolute():
        config_path = Path(sam2.__file__).resolve().parent / config_name
    model_cfg = read_sam2_config(config_path, image_size)
    ckpt = hub.fetch(preset.sam2_hub_id, preset.sam2_file)
    model = _instantiate(model_cfg, config_name)
    _load_checkpoint(model, ckpt, config_name)
    return model_cfg, model


def _shape(value: object) -> tuple[int, ...] | None:
    """A checkpoint entry's shape (None: not a tensor)."""
    return tuple(value.shape) if isinstance(value, torch.Tensor) else None
