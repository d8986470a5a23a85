"""Ray calls in flight, polled without blocking (the controller's loop never waits on an actor).

A :class:`Call` wraps an ``ObjectRef``; :meth:`Call.poll` says whether it finished and, if so,
its value or the exception it ended with (an actor that died: ``RayActorError``; one that is
restarting: ``ActorUnavailableError``; an exception raised by the method: ``RayTaskError``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Outcome:
    value: Any = None
    error: BaseException | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class Call:
    ref: Any  # ray.ObjectRef
    started: float = field(default_factory=time.monotonic)

    def age(self) -> float:
        return time.monotonic() - self.started

    def poll(self) -> Outcome | None:
        """None while running; the outcome once done."""
        import ray

        ready, _ = ray.wait([self.ref], timeout=0)
        if not ready:
            return None
        try:
            return Outcome(value=ray.get(self.ref))
        except Exception as e:
            return Outcome(error=e)


def describe(error: BaseException) -> str:
    """One line for an exception from a Ray call."""
    text = str(error).strip().splitlines()
    head = text[0] if text else ""
    return f"{error.__class__.__name__}: {head[:200]}"
