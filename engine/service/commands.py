"""The control dispatcher's table: one handler per typed control command (``stream.wire``).

``stats`` and ``cameras`` are answered at once on the control thread from the loop's latest
snapshot; every other command runs on the frame loop, between ticks (``Route.on_loop``), so
nothing but the loop touches model state. A handler returns the reply's fields beside ``ok``
and raises ``PromptcamError`` for an error reply.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, Protocol, TypeVar

from stream.wire import (
    AddCamera,
    AddObject,
    Cameras,
    ControlCommand,
    LeaseIds,
    RemoveCamera,
    RemoveObject,
    Reset,
    SetPrompt,
    Stats,
)

if TYPE_CHECKING:
    from engine.service.loop import EngineProcess

Reply = dict[str, object]  # a reply's fields beside "ok"
Command = Callable[["EngineProcess"], Reply]  # what the frame loop runs
C = TypeVar("C", bound=ControlCommand)


@dataclass(frozen=True)
class Route(Generic[C]):
    """The handler of one command type, and the thread it runs on."""

    kind: type[C]
    handle: Callable[[EngineProcess, C], Reply]
    on_loop: bool = True

    def command(self, req: ControlCommand) -> Command:
        """``req`` bound to its handler, for the frame loop (or to call at once)."""
        assert isinstance(req, self.kind)
        typed: C = req
        return lambda service: self.handle(service, typed)


class Dispatch(Protocol):
    """A route as the table holds it, whatever its command type."""

    @property
    def on_loop(self) -> bool: ...

    def command(self, req: ControlCommand) -> Command: ...


def _stats(s: EngineProcess, req: Stats) -> Reply:
    if req.camera is not None:  # engine-wide; a camera named must be served
        s.feeds.require(req.camera)
    return {"stats": s.stats()}


def _cameras(s: EngineProcess, req: Cameras) -> Reply:
    if req.camera is not None:
        s.feeds.require(req.camera)
    return {"cameras": s.camera_list()}


def _set_prompt(s: EngineProcess, req: SetPrompt) -> Reply:
    return {"labels": s.set_prompt(req.camera, req.prompt)}


def _add_object(s: EngineProcess, req: AddObject) -> Reply:
    return {"id": s.tracker(req.camera).add_object(req.box, req.label)}


def _remove_object(s: EngineProcess, req: RemoveObject) -> Reply:
    s.tracker(req.camera).remove_object(req.id)
    return {}


def _reset(s: EngineProcess, req: Reset) -> Reply:
    s.tracker(req.camera).reset()
    return {}


def _add_camera(s: EngineProcess, req: AddCamera) -> Reply:
    s.add_camera(req.camera, req.frames, req.prompt, first_id=req.first_id, id_limit=req.id_limit)
    return {}


def _lease_ids(s: EngineProcess, req: LeaseIds) -> Reply:
    s.lease_ids(req.camera, req.first_id, req.id_limit)
    return {}


def _remove_camera(s: EngineProcess, req: RemoveCamera) -> Reply:
    s.remove_camera(req.camera)
    return {}


ROUTES: dict[type[ControlCommand], Dispatch] = {
    Stats: Route(Stats, _stats, on_loop=False),
    Cameras: Route(Cameras, _cameras, on_loop=False),
    SetPrompt: Route(SetPrompt, _set_prompt),
    AddObject: Route(AddObject, _add_object),
    RemoveObject: Route(RemoveObject, _remove_object),
    Reset: Route(Reset, _reset),
    AddCamera: Route(AddCamera, _add_camera),
    LeaseIds: Route(LeaseIds, _lease_ids),
    RemoveCamera: Route(RemoveCamera, _remove_camera),
}
