"""Typed values of the events layer: object states, event types, line crossings, and the
``events.<camera>`` message (CONTRACT v1.2)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

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


@dataclass(frozen=True)
class Crossing:
    line: str
    direction: Direction
    t_ns: int

    def as_dict(self) -> dict[str, Any]:
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

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
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
    event: dict[str, Any]
    before: dict[str, Any] | None

    @property
    def topic(self) -> bytes:
        return f"events.{self.camera}".encode()

    def header(self) -> dict[str, Any]:
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
