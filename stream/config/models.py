"""The ``models`` section: which segmenter, detector and tracker weights the engine loads, on
which device and in which precision (``engine/models/presets.py``). One class, ``ModelsConfig``."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from stream.config.base import ConfigModel


class ModelsConfig(ConfigModel):
    preset: str = Field(
        "sam2.1-hiera-tiny",
        description="Model preset (engine/models/presets.py): sam2.1-hiera-{tiny,small,base-plus,large} "
        "(sam2 package), sam2.1-hiera-tiny-hf, edgetam, sam3-tracker, sam3 (transformers; Hugging "
        "Face Hub), demo (trained on the demo scenes, shipped), or tiny-random, "
        "sam2.1-hf-tiny-random, sam3-tracker-tiny-random, sam3-tiny-random (random weights, offline).",
    )
    sam2_checkpoint: Path | None = Field(
        None,
        description="Local SAM 2 checkpoint (Meta format, dict with key 'model'); overrides the preset's SAM 2.",
    )
    sam2_config: Path | None = Field(
        None, description="SAM 2 hydra YAML config on disk, paired with sam2_checkpoint."
    )
    detector: str | None = Field(
        None,
        description="Detector preset (promptcam models), local directory or Hugging Face Hub id, "
        "any supported family; overrides the preset's detector.",
    )
    tracker: str | None = Field(
        None,
        description="transformers video tracker: a tracker preset (engine/models/presets.py "
        "TRACKER_PRESETS), a local directory or a Hugging Face Hub id of a Sam2Video, "
        "EdgeTamVideo or Sam3TrackerVideo model; overrides the preset's tracker.",
    )
    segmenter: str = Field(
        "sam2",
        min_length=1,
        max_length=64,
        pattern=r"^[a-z0-9][a-z0-9_.-]*$",
        description="Segmenter family when no transformers tracker is named: a segmenter row of "
        "the model registry (engine/models/registry.py; promptcam models --families). sam2 "
        "(Meta's sam2 package, the preset's checkpoint or --sam2-checkpoint) is the one shipped.",
    )
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="Compute device.")
    dtype: Literal["auto", "float32", "bfloat16"] = Field(
        "auto", description="auto: bf16 autocast on CUDA, float32 on CPU."
    )
    compile: bool = Field(False, description="torch.compile the SAM 2 hot modules (CUDA).")
    preprocess: Literal["auto", "pil", "device"] = Field(
        "auto",
        description="Frame resize: pil (bit-exact with the official SAM 2 loader, on the CPU), "
        "device (antialiased bicubic on the model's device, within 1 grey level of pil on "
        "natural images); auto: device on CUDA, pil on CPU.",
    )
    image_size: int | None = Field(
        None, ge=64, le=2048, description="Override the SAM 2 input size (multiple of 32)."
    )

    @field_validator("image_size")
    @classmethod
    def _mult32(cls, v: int | None) -> int | None:
        if v is not None and v % 32:
            raise ValueError("must be a multiple of 32")
        return v
