"""The ``engine`` section: the prompt, re-grounding, matching and track-ending thresholds of
the tracking engine, with the track lifecycle's further knobs as its ``lifecycle``
sub-section (``engine.lifecycle.config.LifecycleConfig``). One class, ``EngineConfig``."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from engine.lifecycle.config import LifecycleConfig
from stream.config.base import MAX_ENGINE_CAMERAS, SOCKETS_PER_CAMERA, ConfigModel
from stream.wire import MAX_PROMPT_CHARS


class EngineConfig(ConfigModel):
    prompt: str = Field(
        "ball. box.",
        max_length=MAX_PROMPT_CHARS,
        description="Text prompt: phrases separated by '.' (at most 1000 characters, as on the web page).",
    )
    reground_every_frames: int = Field(
        30, ge=0, le=100000, description="Re-ground every N processed frames (0: off)."
    )
    reground_every_s: float | None = Field(
        None,
        gt=0,
        le=3600,
        description="Re-ground at least every N seconds of the frames' capture times (a live "
        "camera's clock, a file's own timeline; None: off).",
    )
    reground_after_retire_frames: int = Field(
        3,
        ge=0,
        le=100000,
        description="After a track retires for a reason that may leave its object in view, "
        "untracked (its mask slid onto another object, or no good mask for max_missed frames), "
        "re-ground as soon as this many processed frames have passed since the last grounding, "
        "instead of waiting for the schedule (0: off). Tuning "
        "seeds 200-207 / 300-307, 3 against 0: HOTA clean +0.013 / +0.017, every 3rd frame "
        "+0.041 / +0.029 (docs/lifecycle.md).",
    )
    box_threshold: float = Field(
        0.35,
        ge=0,
        le=1,
        description="Detector score threshold for a box (each family's meaning: engine/detectors/).",
    )
    text_threshold: float = Field(
        0.25,
        ge=0,
        le=1,
        description="Grounding DINO / MM-Grounding-DINO phrase score threshold (other families: unused).",
    )
    detector_size: int | None = Field(
        None,
        ge=64,
        le=2048,
        description="Shortest edge of the image given to Grounding DINO / MM-Grounding-DINO "
        "(None: the detector's own, its processor's shortest edge: 800 for Grounding DINO, 240 "
        "for the demo model; other families use their checkpoint's input size).",
    )
    iou_threshold: float = Field(
        0.3, gt=0, le=1, description="IoU at or above which a detection matches a track."
    )
    drift_iou: float = Field(
        0.5,
        gt=0,
        le=1,
        description="A matched track whose mask box IoU with its detection is below this is re-seeded.",
    )
    merge_iou: float = Field(
        0.8, gt=0, le=1, description="Two tracks whose masks overlap at least this much are merged."
    )
    score_threshold: float = Field(
        0.0, ge=-100, le=100, description="Object score logit below which a track counts as missed."
    )
    max_missed: int = Field(
        30, ge=1, le=100000, description="Consecutive missed frames after which a track ends."
    )
    max_unseen: int = Field(
        3,
        ge=1,
        le=10000,
        description="Re-groundings without re-detection after which a track ends.",
    )
    reid_frames: int = Field(
        150,
        ge=0,
        le=100000,
        description="Frames a track that missed max_missed frames, or was not re-detected for "
        "max_unseen re-groundings, stays dormant (its memory freed, nothing published) and can "
        "be re-identified under its own ID by a detection; then it ends (0: it ends at once).",
    )
    reid_distance: float = Field(
        1.5,
        ge=0,
        le=100,
        description="Re-identification gate: a detection of a lost or dormant track's label "
        "within this many box sides of where the track's motion puts it re-prompts that track "
        "(0: off, a lost track is matched by box IoU alone).",
    )
    drift_colour: float = Field(
        0.45,
        ge=0,
        le=3,
        description="A track whose mask's mean colour (b, g, r in [0, 1], L1) stays this far "
        "from its colour when last confirmed by a detection, on 3 frames in a row, has slid onto "
        "another object: it goes dormant for re-identification (0: off).",
    )
    max_objects: int = Field(32, ge=1, le=256, description="Most objects tracked at once.")
    max_cameras: int = Field(
        MAX_ENGINE_CAMERAS,
        ge=1,
        le=MAX_ENGINE_CAMERAS,
        description="Most cameras one engine serves (configured plus added with add_camera); "
        f"at most {MAX_ENGINE_CAMERAS}: each camera takes {SOCKETS_PER_CAMERA} of the 1023 "
        "ZeroMQ sockets an engine has (beyond ~340 cameras it could not start). A camera more "
        "is refused: a config error at start, an error reply to add_camera.",
    )
    seed_with: Literal["box", "mask", "points"] = Field(
        "box", description="How a detection starts a track."
    )
    annotate: bool = Field(True, description="Publish annotated JPEG frames.")
    jpeg_quality: int = Field(80, ge=10, le=100, description="Annotated JPEG quality.")
    stats_every_s: float = Field(2.0, gt=0, le=3600, description="Log a stats line this often.")
    state_file: Path | None = Field(
        None,
        description="Where the engine keeps its runtime state (prompt, manual objects) so that a restarted engine carries on; `promptcam run` puts it in its run directory. None: not kept.",
    )
    lifecycle: LifecycleConfig = Field(
        default_factory=LifecycleConfig,
        description="The track lifecycle's further thresholds and its profile ('general' or "
        "'demo'); docs/lifecycle.md.",
    )
