"""Typed values of the events layer: object states, event types, line crossings, and the
``events.<camera>`` message (CONTRACT v1.2)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, NotRequired, TypedDict

SCHEMA_VERSION = 1


class ObjectState(Enum):
    """Life of a tracked object in the events layer."""

    PROBATION = "probation"  # seen, not yet for probation_frames: raises nothing
    ACTIVE = "active"  # its event exists (``new`` published)
    ENDED = "ended"  # gone for end_after messages, or the engine restarted


class EventType(str, Enum):
    NEW = "new"
    UPDATE = "update"
    END = "end"


class Direction(str, Enum):
    IN = "in"
    OUT = "out"


class Kind(str, Enum):
    OBJECT = "object"
    REVIEW = "review"


class CrossingDict(TypedDict):
    """A line crossing as the events message carries it."""

    line: str
    direction: str
    t_ns: int


class EventDict(TypedDict):
    """The ``event`` object of an events message (``EventBody.as_dict``)."""

    id: str
    object_id: int
    label: str
    start_ns: int
    end_ns: int | None
    zones: list[str]
    entered_zones: list[str]
    lines: list[CrossingDict]
    top_score: float
    has_snapshot: bool
    object_ids: NotRequired[list[int]]  # review items only
    labels: NotRequired[list[str]]  # review items only


class EventHeader(TypedDict):
    """The JSON header of an ``events.<camera>`` message."""

    v: int
    camera: str
    type: str
    kind: str
    event: EventDict
    before: Mapping[str, Any] | None  # an EventDict; read with .get defaults by clients/bench


class LabelCounts(TypedDict):
    """Objects active now per label, and per zone and label."""

    labels: dict[str, int]
    zones: dict[str, dict[str, int]]


class CameraCounts(LabelCounts):
    """A camera's live counts (``CameraEvents.counts``): ``LabelCounts`` and the line
    crossings since start per line, direction and label."""

    camera: str
    lines: dict[str, dict[str, dict[str, int]]]


@dataclass(frozen=True)
class Crossing:
    line: str
    direction: Direction
    t_ns: int

    def as_dict(self) -> CrossingDict:
        return {"line": self.line, "direction": self.direction.value, "t_ns": self.t_ns}


@dataclass
class EventBody:
    """The ``event`` object of an events message. For a review item ``object_id`` is its first
    object and ``object_ids``/``labels`` list all of them."""

    id: str
    object_id: int
    label: str
    start_ns: int
    end_ns: int | None = None
    zones: list[str] = field(default_factory=list)
    entered_zones: list[str] = field(default_factory=list)
    lines: list[Crossing] = field(default_factory=list)
    top_score: float = 0.0
    has_snapshot: bool = False
    object_ids: list[int] | None = None
    labels: list[str] | None = None

    def as_dict(self) -> EventDict:
        out: EventDict = {
            "id": self.id,
            "object_id": self.object_id,
            "label": self.label,
            "start_ns": self.start_ns,
            "end_ns": self.end_ns,
            "zones": list(self.zones),
            "entered_zones": list(self.entered_zones),
            "lines": [c.as_dict() for c in self.lines],
            "top_score": round(float(self.top_score), 6),
            "has_snapshot": self.has_snapshot,
        }
        if self.object_ids is not None:
            out["object_ids"] = list(self.object_ids)
            out["labels"] = list(self.labels or [])
        return out


@dataclass(frozen=True)
class EventMessage:
    """One ``events.<camera>`` message: header ``{"v", "camera", "type", "kind", "event",
    "before"}`` (``kind`` "object" or "review"; ``before`` the previous state of the same
    event, None for ``new``)."""

    camera: str
    type: EventType
    kind: Kind
    event: EventDict
    before: Mapping[str, Any] | None  # an EventDict; read with .get defaults by clients/bench

    @property
    def topic(self) -> bytes:
        return f"events.{self.camera}".encode()

    def header(self) -> EventHeader:
        return {
            "v": SCHEMA_VERSION,
            "camera": self.camera,
            "type": self.type.value,
            "kind": self.kind.value,
            "event": self.event,
            "before": self.before,
        }

    def to_parts(self) -> list[bytes]:
        return [self.topic, json.dumps(self.header(), separators=(",", ":")).encode()]
