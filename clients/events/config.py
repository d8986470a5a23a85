"""Configuration of the events service (``events:`` in the config): zones and lines per camera.

Coordinates are pixels of the frame (``units: px``, the default) or fractions of its width and
height (``units: fraction``, each coordinate in [0, 1]): an explicit key, so nothing is guessed
from the values. Geometry that cannot be right (fewer than 3 points, a self-crossing polygon, a
line of two equal points, an "in" point on the line) is refused here; what needs the camera (a
pixel point outside a known frame size, a label the camera's prompt does not name) is checked by
``EventsConfig.check_camera`` from ``stream.config.Config``. Every refusal is one line naming the
camera and the zone or line. This module must not import ``stream.config`` (which imports it).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from clients.events.geometry import Point, self_crossing, side

NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
MAX_POINTS = 64
MAX_SHAPES = 64  # zones, and lines, per camera
MAX_LABELS = 64

Coordinate = Annotated[float, Field(ge=-1e6, le=1e6, allow_inf_nan=False)]
Label = Annotated[str, Field(min_length=1, max_length=200)]
Units = Literal["px", "fraction"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def _fraction_check(points: list[tuple[float, float]], units: str, what: str) -> None:
    if units == "fraction":
        for x, y in points:
            if not (0.0 <= x <= 1.0 and 0.0 <= y <= 1.0):
                raise ValueError(
                    f"{what} ({x:g}, {y:g}) is not a fraction in [0, 1] (units: fraction)"
                )


class ZoneConfig(_Model):
    """A named polygon; an object is in it when enough of its mask is (or its box's bottom centre)."""

    points: list[tuple[Coordinate, Coordinate]] = Field(
        min_length=3,
        max_length=MAX_POINTS,
        description="Polygon corners [[x, y], ...] in order (3 to 64, not self-crossing), in 'units'.",
    )
    units: Units = Field(
        "px", description="'px': pixels of the frame; 'fraction': 0-1 of its width and height."
    )
    labels: list[Label] | None = Field(
        None,
        max_length=MAX_LABELS,
        description="Only objects with one of these labels count (default: every label); each must be a phrase of the camera's prompt.",
    )
    inertia: int = Field(
        3,
        ge=1,
        le=1000,
        description="Consecutive frames an object must be in (or out) before it counts as entered (left).",
    )
    loitering: float = Field(
        0.0,
        ge=0.0,
        le=86400.0,
        description="Seconds an object must stay in the zone before it counts as entered (0: at once).",
    )
    presence: Literal["mask", "bottom_center"] = Field(
        "mask",
        description="'mask': share of the object's mask inside; 'bottom_center': the bottom centre of its box.",
    )
    min_share: float = Field(
        0.5,
        gt=0.0,
        le=1.0,
        description="Share of the object's mask pixels that must lie inside (presence: mask).",
    )

    @model_validator(mode="after")
    def _geometry(self) -> ZoneConfig:
        pts = [(float(x), float(y)) for x, y in self.points]
        _fraction_check(pts, self.units, "point")
        crossing = self_crossing(pts)
        if crossing is not None:
            i, j = crossing
            raise ValueError(f"polygon crosses itself (edge {i} meets edge {j})")
        return self

    def pixel_points(self, width: int, height: int) -> list[Point]:
        return _scale(self.points, self.units, width, height)


class LineConfig(_Model):
    """A named segment counted when an object's reference point crosses it, with a direction."""

    points: list[tuple[Coordinate, Coordinate]] = Field(
        min_length=2,
        max_length=2,
        description="The segment's two ends [[x1, y1], [x2, y2]], in 'units'.",
    )
    in_side: tuple[Coordinate, Coordinate] = Field(
        description="A point on the 'in' side of the line, in 'units': crossing towards it is 'in', away from it 'out'."
    )
    units: Units = Field(
        "px", description="'px': pixels of the frame; 'fraction': 0-1 of its width and height."
    )
    labels: list[Label] | None = Field(
        None,
        max_length=MAX_LABELS,
        description="Only objects with one of these labels count (default: every label).",
    )
    anchor: Literal["mask_center", "center", "bottom_center"] = Field(
        "mask_center",
        description="The object's reference point: the centre of its mask (the mean of its "
        "pixels; its box's centre when the mask is empty), its box's centre, or its box's "
        "bottom centre. A mask that bleeds past its object moves its box's edges much more "
        "than its mask's centre.",
    )
    inertia: int = Field(
        3,
        ge=1,
        le=1000,
        description="Consecutive frames an object's reference point must stay across the line "
        "before the crossing counts (a box jittering on the line crosses once, not three times).",
    )
    max_gap: int = Field(
        5,
        ge=0,
        le=1000,
        description="Tracks messages in a row an object may be missing (or lost) and still be "
        "followed across the line: its side before the gap is compared with its side after, "
        "if it moved at most one box side per message (a longer gap, or a jump, forgets the "
        "side; 0: only consecutive messages count).",
    )

    @model_validator(mode="after")
    def _geometry(self) -> LineConfig:
        (a, b) = [(float(x), float(y)) for x, y in self.points]
        _fraction_check(
            [a, b, (float(self.in_side[0]), float(self.in_side[1]))], self.units, "point"
        )
        if a == b:
            raise ValueError("line's two points are the same")
        if side(a, b, (float(self.in_side[0]), float(self.in_side[1]))) == 0:
            raise ValueError("in_side lies on the line: it must be on one side")
        return self

    def pixel_points(self, width: int, height: int) -> list[Point]:
        return _scale([*self.points, self.in_side], self.units, width, height)


def _scale(
    points: Sequence[tuple[float, float]], units: str, width: int, height: int
) -> list[Point]:
    if units == "fraction":
        return [(float(x) * width, float(y) * height) for x, y in points]
    return [(float(x), float(y)) for x, y in points]


class CameraEventsConfig(_Model):
    """The zones and lines of one camera."""

    zones: dict[str, ZoneConfig] = Field(
        default_factory=dict,
        max_length=MAX_SHAPES,
        description="Zone name -> polygon and rules (at most 64).",
    )
    lines: dict[str, LineConfig] = Field(
        default_factory=dict,
        max_length=MAX_SHAPES,
        description="Line name -> segment and 'in' side (at most 64).",
    )

    @field_validator("zones", "lines")
    @classmethod
    def _names(cls, v: dict[str, object]) -> dict[str, object]:
        for name in v:
            if not NAME_RE.match(name):
                raise ValueError(f"name {name[:80]!r}: expected 1-64 letters, digits, '_' or '-'")
        return v


class EventsConfig(_Model):
    """``promptcam events``: object events and review items from tracks messages."""

    database: str = Field(
        "~/.local/share/promptcam/events.db",
        min_length=1,
        max_length=4096,
        description="SQLite file of events and review items (created with its folder; WAL mode).",
    )
    probation_frames: int = Field(
        3,
        ge=1,
        le=1000,
        description="Frames an object must be seen before its 'new' event (shorter ghosts raise nothing).",
    )
    end_after: int = Field(
        15,
        ge=1,
        le=100000,
        description="Tracks messages of its camera without the object after which its event ends.",
    )
    score_step: float = Field(
        0.05, ge=0.0, le=1.0, description="A top score rise of at least this much is an 'update'."
    )
    review_gap_s: float = Field(
        5.0,
        ge=0.0,
        le=3600.0,
        description="Seconds (capture time) a review item stays open after its last object's "
        "event ended: an object active again within them joins the same item (one activity, "
        "one alert, through a moment without tracks); 0: the item ends with its last object.",
    )
    retention_days: float = Field(
        30.0,
        gt=0.0,
        le=36500.0,
        description="Ended events and reviews older than this are deleted.",
    )
    max_events: int = Field(
        100000,
        ge=10,
        le=100_000_000,
        description="Most events (and reviews) kept; the oldest go first.",
    )
    pending_limit: int = Field(
        10000,
        ge=10,
        le=1_000_000,
        description="Writes kept in memory while the database refuses them (disk full); beyond, the oldest are dropped and counted.",
    )
    cameras: dict[str, CameraEventsConfig] = Field(
        default_factory=dict, description="Camera name -> its zones and lines."
    )
    enabled: bool = Field(
        False,
        description="Run the events service as a child of 'promptcam run' (it also runs when any camera has zones or lines).",
    )
    snapshots: bool = Field(
        True,
        description="Keep the best snapshot per event (JPEG with the mask outlined, and the mask as PNG) in 'snapshots/' beside the database.",
    )
    snapshot_every: int = Field(
        5,
        ge=1,
        le=10000,
        description="Frames of an event between two snapshot encodes at most (a better frame sooner waits).",
    )
    snapshot_quality: int = Field(85, ge=10, le=100, description="JPEG quality of snapshots.")
    max_snapshot_mb: float = Field(
        1024.0,
        gt=0.0,
        le=10_000_000.0,
        description="Most MiB of snapshot files kept; beyond, the files of the oldest ended events are deleted first.",
    )
    status_file: str | None = Field(
        None,
        max_length=4096,
        description="JSON file the service rewrites every second with its counters (the launcher sets it in the run directory).",
    )

    def active(self) -> bool:
        """Whether ``promptcam run`` starts the events service: ``enabled``, or any zone or line."""
        return self.enabled or any(c.zones or c.lines for c in self.cameras.values())

    def check_camera(
        self, camera: str, labels: list[str] | None, size: tuple[int, int] | None
    ) -> None:
        """``ValueError`` (one line naming the camera and zone or line) when a pixel point lies
        outside a known ``size`` (width, height) or a label filter names a label not in
        ``labels`` (the camera's prompt phrases, when known)."""
        cam = self.cameras.get(camera)
        if cam is None:
            return
        shapes: list[tuple[str, str, ZoneConfig | LineConfig]] = [
            *(("zone", n, z) for n, z in cam.zones.items()),
            *(("line", n, ln) for n, ln in cam.lines.items()),
        ]
        for kind, name, shape in shapes:
            where = f"events.cameras.{camera}: {kind} {name!r}"
            if size is not None and shape.units == "px":
                w, h = size
                pts = list(shape.points)
                if isinstance(shape, LineConfig):
                    pts.append(shape.in_side)
                for x, y in pts:
                    if not (0 <= x <= w and 0 <= y <= h):
                        raise ValueError(
                            f"{where}: point ({x:g}, {y:g}) is outside the {w}x{h} frame"
                        )
            if labels is not None and shape.labels is not None:
                for label in shape.labels:
                    if label.lower() not in labels:
                        raise ValueError(
                            f"{where}: label {label[:80]!r} is not in the camera's prompt ({', '.join(labels)})"
                        )
