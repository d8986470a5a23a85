"""Which engine takes a camera: by capacity, least loaded first (pure logic).

An engine can take a camera while it serves fewer than ``max_cameras`` cameras and the objects
its cameras reserve (each camera its ``engine.max_objects``) plus the new camera's stay within
``max_objects``. Among the engines that can, the one with the fewest cameras wins, then the
fewest reserved objects, then the name. When none can, the answer is a :class:`Pending` with a
reason a person can act on.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Capacity:
    max_cameras: int
    max_objects: int


@dataclass(frozen=True)
class EngineLoad:
    """One engine as placement sees it."""

    name: str
    up: bool
    accepting: bool  # not draining
    cameras: int
    reserved_objects: int


@dataclass(frozen=True)
class Placed:
    engine: str


@dataclass(frozen=True)
class Pending:
    reason: str


def choose_engine(
    loads: Sequence[EngineLoad],
    reserve: int,
    capacity: Capacity,
    exclude: Iterable[str] = (),
) -> Placed | Pending:
    """The engine for a camera reserving ``reserve`` objects, or why there is none."""
    skip = set(exclude)
    if reserve > capacity.max_objects:
        return Pending(
            f"the camera reserves {reserve} objects (its engine.max_objects) but an engine "
            f"tracks at most {capacity.max_objects} (fleet.max_objects_per_engine)"
        )
    candidates = [e for e in loads if e.name not in skip]
    up = [e for e in candidates if e.up]
    if not up:
        return Pending("no engine is up")
    accepting = [e for e in up if e.accepting]
    if not accepting:
        return Pending("every engine that is up is draining")
    fits = [
        e
        for e in accepting
        if e.cameras < capacity.max_cameras and e.reserved_objects + reserve <= capacity.max_objects
    ]
    if not fits:
        parts = [
            f"{e.name} serves {e.cameras}/{capacity.max_cameras} cameras, "
            f"{e.reserved_objects}/{capacity.max_objects} objects reserved"
            for e in accepting
        ]
        down = [e.name for e in candidates if not e.up]
        tail = f"; down: {', '.join(down)}" if down else ""
        return Pending(f"over capacity ({'; '.join(parts)}; needs {reserve} objects){tail}")
    best = min(fits, key=lambda e: (e.cameras, e.reserved_objects, e.name))
    return Placed(best.name)
