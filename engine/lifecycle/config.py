"""Every threshold of the track lifecycle in one place: :class:`LifecycleConfig`
(``engine.lifecycle`` in the config) and the resolved :class:`Thresholds` the lifecycle reads.

Nine thresholds were user settings before this model existed and stay where users set them
(``engine.iou_threshold``, ``drift_iou``, ``merge_iou``, ``score_threshold``, ``max_missed``,
``max_unseen``, ``reid_frames``, ``reid_distance``, ``drift_colour``); :func:`thresholds` joins
them with this model's fields into one frozen view, so the lifecycle reads every number from
one object.

Profiles (``engine.lifecycle.profile``) give defaults to the fields not set explicitly:

- ``general`` (the default): colour cues compared as chromaticity (each channel over their sum:
  a brightness ramp, a shadow or auto-exposure leave it unchanged) of the colour relative to the
  frame's mean colour (``grey-world``: a white balance drift leaves it unchanged too), never as
  raw colour; lost tracks predicted by the Kalman motion model;
- ``demo``: the raw mean-BGR rules and the velocity motion model as before the profiles,
  tuned on the built-in demo scene of saturated balls and boxes under constant light.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Profile = Literal["general", "demo"]
ColourSpace = Literal["bgr", "chromaticity", "grey-world"]

# Each profile's values for the fields it decides (the others have one default for both).
PROFILES: dict[str, dict[str, Any]] = {
    "general": {"colour_space": "grey-world", "drift_colour": 0.35, "reid_colour": 0.25,
                "reid_look_colour": 0.1, "motion_model": "kalman"},
    "demo": {"colour_space": "bgr", "drift_colour": 0.45, "reid_colour": 0.3,
             "reid_look_colour": 0.12, "motion_model": "velocity"},
}  # fmt: skip


class LifecycleConfig(BaseModel):
    """The lifecycle's thresholds (units in each description); see docs/lifecycle.md."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    profile: Profile = Field(
        "general",
        description="Defaults for the appearance fields: 'general' (illumination-invariant "
        "grey-world chromaticity colour cues) or 'demo' (raw mean-BGR colour, tuned on the demo scene).",
    )
    colour_space: ColourSpace = Field(
        "grey-world",
        description="How mask and detection colours are compared: 'chromaticity' (b, g, r over "
        "their sum: brightness-invariant), 'grey-world' (the chromaticity of the colour over the "
        "frame's mean colour: brightness- and white-balance-invariant) or 'bgr' (raw mean colour "
        "in [0, 1]). Profile default.",
    )
    drift_colour: float = Field(
        0.35,
        ge=0,
        le=3,
        description="Colour distance (L1 in colour_space) from a track's anchor colour beyond "
        "which its mask is on another object (drift); 0: off. Used where engine.drift_colour "
        "is not set explicitly. Profile default.",
    )
    reid_colour: float = Field(
        0.25,
        ge=0,
        le=3,
        description="Re-identification near the predicted position: largest colour distance "
        "(L1 in colour_space) between a detection and the track. Profile default.",
    )
    reid_look_colour: float = Field(
        0.1,
        ge=0,
        le=3,
        description="Re-identification by look alone (anywhere in view): largest colour "
        "distance (L1 in colour_space) between a detection and the track's detections. "
        "Profile default.",
    )
    duplicate_iou: float = Field(
        0.5,
        gt=0,
        le=1,
        description="Box IoU (0-1) at which two same-label detections are one (NMS), or "
        "engine.merge_iou if lower.",
    )
    cross_label_duplicate_iou: float = Field(
        0.7,
        gt=0,
        le=1,
        description="Box IoU (0-1) at which a new detection overlapping a live track of another "
        "label is that object under another name, not a new object.",
    )
    reid_size_ratio: float = Field(
        2.5,
        ge=1,
        le=100,
        description="Re-identification: largest ratio of box sides (square root of areas, "
        "either way) between a detection and a track.",
    )
    reid_growth: float = Field(
        0.05,
        ge=0,
        le=10,
        description="Re-identification gate widening, in box sides per frame since the track's "
        "last good box.",
    )
    contained: float = Field(
        0.8,
        gt=0,
        le=1,
        description="Share (0-1) of a live track's box inside a left-over detection of its "
        "label for that detection to be its object (the mask shrank away).",
    )
    covering: float = Field(
        0.9,
        ge=0,
        le=1,
        description="Share (0-1) of a left-over detection's box inside a live track's box of "
        "its label for that detection to be the track's object (the mask bled past it); "
        "0: off.",
    )
    velocity_smoothing: float = Field(
        0.5,
        gt=0,
        le=1,
        description="Weight (0-1) of the newest displacement in a track's centre velocity.",
    )
    colour_smoothing: float = Field(
        0.2, gt=0, le=1, description="Weight (0-1) of the newest mask colour in a track's colour."
    )
    side_smoothing: float = Field(
        0.2, gt=0, le=1, description="Weight (0-1) of the newest box side in a track's size."
    )
    merge_after: int = Field(
        2,
        ge=1,
        le=1000,
        description="Consecutive re-groundings a same-label pair must overlap (engine.merge_iou) "
        "before the younger is merged into the older.",
    )
    duplicate_frames: int = Field(
        5,
        ge=1,
        le=10000,
        description="Consecutive frames two tracks' masks must coincide (engine.merge_iou) to "
        "be one object.",
    )
    duplicate_contained: float = Field(
        0.8,
        ge=0,
        le=1,
        description="Share (0-1) of the smaller of two tracks' masks (and boxes) inside the "
        "larger at or above which a frame counts as coinciding for the duplicate rule, like "
        "masks overlapping engine.merge_iou (one object, one track's mask bled past it); 0: "
        "off.",
    )
    duplicate_hold_iou: float = Field(
        0.5,
        ge=0,
        le=1,
        description="Mask IoU (0-1) at or above which a frame below engine.merge_iou holds two "
        "tracks' run of coinciding frames (duplicate_frames) instead of ending it; 0: any such "
        "frame ends it.",
    )
    duplicate_hide_frames: int = Field(
        2,
        ge=0,
        le=1000,
        description="Coinciding frames (duplicate_frames' count) after which the track the "
        "duplicate rule would retire is not published while the run lasts, so a viewer does "
        "not see two IDs on one object while the rule decides; 0: both are shown.",
    )
    duplicate_box_share: float = Field(
        0.5,
        gt=0,
        le=1,
        description="Share of engine.merge_iou two tracks' boxes must overlap before their masks "
        "are compared for the duplicate rule (a cheap pre-filter).",
    )
    drift_frames: int = Field(
        3,
        ge=1,
        le=10000,
        description="Consecutive off-colour frames (drift_colour) after which a track drifted.",
    )
    jump_after_hits: int = Field(
        3,
        ge=0,
        le=10000,
        description="A track with at least this many good frames whose new mask's box overlaps "
        "neither its last good box nor the box its motion predicts counts the frame as a miss: "
        "in one frame a mask left its object for another (a track whose object leaves the "
        "view jumps onto one entering elsewhere). 0: off.",
    )
    bleed_ratio: float = Field(
        0.0,
        ge=0,
        le=100,
        description="A track with jump_after_hits good frames whose new mask's box side (the "
        "square root of its area) exceeds this many times its smoothed side counts the frame "
        "as a miss, like a jump: in one frame the mask bled past its object onto the background "
        "or a neighbour. An object coming closer grows far slower. 0: off (the default: on the "
        "held-out scenes 2.5 cost 0.006-0.011 HOTA on most conditions, docs/lifecycle.md).",
    )
    motion_model: Literal["velocity", "kalman"] = Field(
        "kalman",
        description="How a lost or dormant track's place is predicted for re-identification: "
        "'velocity' (its last box moved by its smoothed centre velocity) or 'kalman' (a "
        "constant-velocity Kalman filter on centre and size; a detection inside its gate, "
        "chi-square 99% on the centre, also passes). Profile default.",
    )
    probation_frames: int = Field(
        1,
        ge=1,
        le=1000,
        description="Good frames (score at or above engine.score_threshold) a detector-found "
        "track needs before it is confirmed (tentative until then); manual tracks are "
        "confirmed on their first.",
    )

    @model_validator(mode="before")
    @classmethod
    def _profile_defaults(cls, data: Any) -> Any:
        """Fields not given take the profile's value."""
        if not isinstance(data, dict):
            return data
        profile = data.get("profile", "general")
        if profile not in PROFILES:
            return data  # the Literal check reports it
        return {**PROFILES[profile], **data}


@dataclass(frozen=True)
class Thresholds:
    """Every number the lifecycle reads: ``engine.*`` settings and :class:`LifecycleConfig`."""

    iou_threshold: float
    drift_iou: float
    merge_iou: float
    score_threshold: float
    max_missed: int
    max_unseen: int
    max_objects: int
    reid_frames: int
    reid_distance: float
    life: LifecycleConfig
    drift_colour: float

    @property
    def dedup_iou(self) -> float:
        return min(self.life.duplicate_iou, self.merge_iou)


def thresholds(engine: Any) -> Thresholds:
    """The resolved thresholds of an ``EngineConfig`` (``engine.drift_colour`` wins over the
    profile's only where it was set explicitly)."""
    life: LifecycleConfig = getattr(engine, "lifecycle", None) or LifecycleConfig()
    explicit = "drift_colour" in getattr(engine, "model_fields_set", set())
    return Thresholds(
        iou_threshold=engine.iou_threshold,
        drift_iou=engine.drift_iou,
        merge_iou=engine.merge_iou,
        score_threshold=engine.score_threshold,
        max_missed=engine.max_missed,
        max_unseen=engine.max_unseen,
        max_objects=engine.max_objects,
        reid_frames=engine.reid_frames,
        reid_distance=engine.reid_distance,
        life=life,
        drift_colour=engine.drift_colour if explicit else life.drift_colour,
    )
