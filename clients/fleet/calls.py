"""Ray calls in flight, polled without blocking (the controller's loop never waits on an actor),
and the typed faces of the fleet's actors.

A :class:`Call` wraps an ``ObjectRef``; :meth:`Call.poll` says whether it finished and, if so,
its value (:class:`Done`) or the exception it ended with (:class:`Failed`: an actor that died,
``RayActorError``; one that is restarting, ``ActorUnavailableError``; an exception raised by the
method, ``RayTaskError``).

Ray's ``ActorHandle`` types no method, so each actor the controller calls has a Protocol here
(:class:`EngineHandle`, :class:`CaptureHandle`, :class:`GatewayHandle`,
:class:`ControllerHandle`) naming the methods it is called by and what they return;
:func:`engine_face` and its siblings give a Ray handle that face.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Generic, Protocol, TypeVar, cast

from clients.fleet.messages import (
    CameraReply,
    CaptureInfo,
    CaptureStatus,
    DrainReply,
    EngineInfo,
    EngineReport,
    FleetStatus,
    GatewayInfo,
    RelayCamera,
    Reply,
    ShutdownReply,
)

if TYPE_CHECKING:
    from ray import ObjectRef
    from ray.actor import ActorHandle

T = TypeVar("T")

WATCH_S = 30.0  # a watch call returns after this long and is renewed


@dataclass(frozen=True)
class Done(Generic[T]):
    value: T


@dataclass(frozen=True)
class Failed:
    error: BaseException


Outcome = Done[T] | Failed


@dataclass
class Call(Generic[T]):
    ref: ObjectRef[T]
    started: float = field(default_factory=time.monotonic)

    def age(self) -> float:
        return time.monotonic() - self.started

    def poll(self) -> Outcome[T] | None:
        """None while running; the outcome once done."""
        import ray

        ready, _ = ray.wait([self.ref], timeout=0)
        if not ready:
            return None
        try:
            return Done(ray.get(self.ref))
        except Exception as e:
            return Failed(e)


def describe(error: BaseException) -> str:
    """One line for an exception from a Ray call."""
    text = str(error).strip().splitlines()
    head = text[0] if text else ""
    return f"{error.__class__.__name__}: {head[:200]}"


class Remote(Protocol[T]):
    """An actor method as Ray exposes it: ``.remote(...)`` starts a call."""

    def remote(self, *args: object) -> ObjectRef[T]: ...


class ActorFace(Protocol):
    """What every fleet actor answers: a watch that fails when it dies, and stop."""

    watch: Remote[str]
    stop: Remote[bool]


class EngineHandle(ActorFace, Protocol):
    info: Remote[EngineInfo]
    report: Remote[EngineReport]
    place: Remote[Reply]
    unplace: Remote[Reply]
    lease: Remote[Reply]
    control: Remote[bytes]


class CaptureHandle(ActorFace, Protocol):
    info: Remote[CaptureInfo]
    status: Remote[CaptureStatus]


class GatewayHandle(ActorFace, Protocol):
    info: Remote[GatewayInfo]
    snapshot: Remote[dict[str, RelayCamera]]
    set_routes: Remote[str]


class ControllerHandle(Protocol):
    status: Remote[FleetStatus]
    add_camera: Remote[CameraReply]
    remove_camera: Remote[CameraReply]
    drain: Remote[DrainReply]
    note_prompt: Remote[None]
    shutdown: Remote[ShutdownReply]


@dataclass
class CallSlot(Generic[T]):
    """At most one call of one kind in flight to an actor (``info``, ``report``, ...)."""

    call: Call[T] | None = None
    sent: float = 0.0  # when the last call was started

    def ask(self, method: Remote[T], *args: object) -> Outcome[T] | None:
        """Poll the call in flight, starting one now when there is none."""
        if self.call is None:
            self.call, self.sent = Call(method.remote(*args)), time.monotonic()
        return self.poll()

    def every(self, every_s: float, method: Remote[T], force: bool = False) -> Outcome[T] | None:
        """Poll the call in flight; with none, start one (answered on a later tick) once
        ``every_s`` passed since the last (at once with ``force``)."""
        if self.call is None:
            now = time.monotonic()
            if force or now - self.sent >= every_s:
                self.call, self.sent = Call(method.remote()), now
            return None
        return self.poll()

    def poll(self) -> Outcome[T] | None:
        if self.call is None:
            return None
        out = self.call.poll()
        if out is not None:
            self.call = None
        return out

    def age(self) -> float:
        """How long the call in flight has been running (0 with none)."""
        return self.call.age() if self.call is not None else 0.0


@dataclass
class Watch:
    """A ``watch`` call kept open on an actor: it fails at once when the actor's process or
    node dies, and returns (to be renewed) after ``WATCH_S`` while it lives."""

    calls: CallSlot[str] = field(default_factory=CallSlot)

    def died(self, actor: ActorFace) -> str | None:
        """None while ``actor`` lives; once its watch call failed, why (one line)."""
        out = self.calls.ask(actor.watch, WATCH_S)
        return describe(out.error) if isinstance(out, Failed) else None


def actor_options(
    name: str, namespace: str, max_concurrency: int, num_cpus: float, get_if_exists: bool = True
) -> dict[str, object]:
    """Ray options of a fleet actor: named, detached, restarted by Ray, its calls not retried."""
    opts: dict[str, object] = {
        "name": name,
        "namespace": namespace,
        "lifetime": "detached",
        "max_restarts": -1,
        "max_task_retries": 0,
        "max_concurrency": max_concurrency,
        "num_cpus": num_cpus,
    }
    if get_if_exists:
        opts["get_if_exists"] = True
    return opts


def _checked(handle: object) -> ActorHandle[object]:
    from ray.actor import ActorHandle

    if not isinstance(handle, ActorHandle):
        raise TypeError(f"not a Ray actor handle: {handle.__class__.__name__}")
    return handle


def engine_face(handle: object) -> EngineHandle:
    return cast(EngineHandle, _checked(handle))


def capture_face(handle: object) -> CaptureHandle:
    return cast(CaptureHandle, _checked(handle))


def gateway_face(handle: object) -> GatewayHandle:
    return cast(GatewayHandle, _checked(handle))


def controller_face(handle: object) -> ControllerHandle:
    return cast(ControllerHandle, _checked(handle))


def get_actor(name: str, namespace: str) -> ActorHandle[object]:
    """The named actor ``name`` of ``namespace`` (``ValueError`` when there is none)."""
    import ray

    return ray.get_actor(name, namespace=namespace)


def kill(handle: object, no_restart: bool = True) -> None:
    """``ray.kill`` for a handle seen through one of the faces above."""
    import ray

    ray.kill(_checked(handle), no_restart=no_restart)


def start_actor(cls: type, options: dict[str, object], *args: object) -> ActorHandle[object]:
    """Create (or find, with ``get_if_exists``) the actor ``cls`` with Ray ``options``."""
    import ray

    return _checked(ray.remote(cls).options(**options).remote(*args))


__all__ = [
    "ActorFace",
    "Call",
    "CallSlot",
    "CaptureHandle",
    "ControllerHandle",
    "Done",
    "EngineHandle",
    "Failed",
    "GatewayHandle",
    "Outcome",
    "Remote",
    "Watch",
    "actor_options",
    "capture_face",
    "controller_face",
    "describe",
    "engine_face",
    "gateway_face",
    "get_actor",
    "kill",
    "start_actor",
    "wait_all",
]


def wait_all(refs: Sequence[ObjectRef[T]], timeout: float) -> list[ObjectRef[T]]:
    """The refs of ``refs`` done within ``timeout`` seconds."""
    import ray

    ready, _ = ray.wait(list(refs), num_returns=len(refs), timeout=timeout)
    return ready
