"""The placement reconciler: which engine serves each camera (``placement.py`` chooses by
capacity), with a fresh block of object IDs per placement and the camera's last objects as
seeds; cameras lost with their engine placed again; a drained engine's cameras moved first.

A camera whose engine died is placed on a surviving engine at once (capacity permitting); until
then it is ``pending`` with the reason. A camera whose capture moved is re-pointed. A drained
engine hands its cameras over: each is placed on another engine and, once that one publishes its
tracks, the gateway switches to it and the old engine drops it.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from clients.fleet.calls import Call, Done, describe
from clients.fleet.messages import Reply
from clients.fleet.placement import Capacity, EngineLoad, Pending, choose_engine
from clients.fleet.reconcilers.world import (
    CameraSlot,
    CameraState,
    EngineSlot,
    EngineState,
    FleetWorld,
)

RETRY_PLACE_S = 1.0
START_GRACE_S = 60.0
RECOVER_GRACE_S = 5.0  # after a controller restart, how long an engine has to show it is up

Seed = tuple[list[float], str]


class Placer:
    """Places, moves and re-places cameras; ``push_routes`` tells the gateway of a switch."""

    def __init__(self, world: FleetWorld, push_routes: Callable[[], None]) -> None:
        self.world = world
        self.push_routes = push_routes

    # ------------------------------------------------------------------ what placement reads

    def loads(self) -> list[EngineLoad]:
        out = []
        for e in self.world.engines.values():
            mine = [c for c in self.world.cameras.values() if c.serves_on(e.name)]
            out.append(
                EngineLoad(
                    name=e.name,
                    up=e.state == EngineState.UP,
                    accepting=not e.draining,
                    cameras=len(mine),
                    reserved_objects=sum(self.reserve(c.name) for c in mine),
                )
            )
        return out

    def capacity(self) -> Capacity:
        f = self.world.cfg.fleet
        return Capacity(f.max_cameras_per_engine, f.max_objects_per_engine)

    def reserve(self, camera: str) -> int:
        settings = self.world.cfg.camera_settings().get(camera)
        return settings.engine.max_objects if settings is not None else 0

    def _engine_settings(self, c: CameraSlot) -> dict[str, object]:
        eng: dict[str, object] = self.world.cfg.camera_settings()[c.name].engine.model_dump(
            mode="json"
        )
        if c.record.prompt is not None:
            eng["prompt"] = c.record.prompt
        return eng

    def _seeds(self, camera: str) -> list[Seed]:
        if not self.world.cfg.fleet.reseed_objects:
            return []
        snap = self.world.snapshot.get(camera)
        return [(o["box"], o["label"]) for o in snap["objects"]] if snap is not None else []

    def _starting_up(self) -> bool:
        """At start, wait (up to ``START_GRACE_S``) for engines still starting, so that the
        first cameras spread over all of them instead of filling the first one up."""
        if time.monotonic() - self.world.started > START_GRACE_S:
            return False
        return any(e.state == EngineState.STARTING for e in self.world.engines.values())

    # ------------------------------------------------------------------ placing

    def step(self, c: CameraSlot) -> None:
        if c.place_call is not None:
            self._place_result(c, c.place_call)
            return
        engines = self.world.engines
        if c.record.engine is not None:
            e = engines[c.record.engine]
            since_start = time.monotonic() - self.world.started
            if e.state != EngineState.UP and since_start > RECOVER_GRACE_S:
                # recorded on an engine that did not come back (a controller restart after the
                # engine or its node died: nobody saw it go down)
                self.lose(c, f"engine {e.name} is {e.state}")
                return
        if c.state == CameraState.FAILED or c.frames is None or c.capture_incarnation is None:
            return
        if c.record.engine is not None:
            if c.placed_frames is not None and c.frames != c.placed_frames:
                handle = engines[c.record.engine].handle
                if handle is not None:
                    handle.unplace.remote(c.name)
                self.lose(c, f"its capture moved to {c.frames}")
            elif c.placed_frames is None:
                c.placed_frames = c.frames  # recovered from the record: assume the same capture
            return
        if time.monotonic() < c.retry_at or self._starting_up():
            return
        choice = choose_engine(self.loads(), self.reserve(c.name), self.capacity())
        if isinstance(choice, Pending):
            c.state, c.error = CameraState.PENDING, choice.reason
            return
        self._place(c, engines[choice.engine])

    def _place(self, c: CameraSlot, e: EngineSlot, moving: bool = False) -> None:
        assert e.handle is not None  # an engine that is up (placement chose it)
        block = self.world.lease()
        c.place_target, c.place_block = e.name, block
        c.place_call = Call(
            e.handle.place.remote(
                c.name,
                c.frames,
                self._engine_settings(c),
                block.first,
                block.limit,
                self._seeds(c.name),
            )
        )
        if moving:
            c.moving_to = e.name
        else:
            c.state, c.error = CameraState.PLACING, ""
        self.world.event(
            "placing", camera=c.name, engine=e.name, first_id=block.first, moving=moving
        )

    def _place_result(self, c: CameraSlot, call: Call[Reply]) -> None:
        out = call.poll()
        if out is None:
            return
        target, block = c.place_target, c.place_block
        c.place_call, c.place_target, c.place_block = None, None, None
        reply: Reply = out.value if isinstance(out, Done) else {"ok": False, "error": ""}
        if not isinstance(out, Done):
            reply["error"] = describe(out.error)
        if not reply.get("ok"):
            c.moving_to = None
            c.retry_at = time.monotonic() + RETRY_PLACE_S
            error = reply.get("error")
            if c.record.engine is None:
                c.state, c.error = CameraState.PENDING, f"{target} refused it: {error}"
            self.world.event("placement failed", camera=c.name, engine=target, error=error)
            return
        assert block is not None and target is not None
        if c.moving_to == target:
            c.place_block = block  # kept until the switch
            return
        c.record.engine = target
        c.record.blocks = [block.as_list()]
        c.record.placements += 1
        c.placed_frames = c.frames
        c.placed_at = time.monotonic()
        c.state = CameraState.WAITING
        self.world.dirty = True
        self.world.event("placed", camera=c.name, engine=target)

    # ------------------------------------------------------------------ drain and loss

    def drain_step(self) -> None:
        for e in self.world.engines.values():
            if not e.draining or e.state != EngineState.UP:
                continue
            for c in self.world.cameras.values():
                if c.record.engine != e.name or c.moving_to or c.place_call is not None:
                    continue
                choice = choose_engine(
                    self.loads(), self.reserve(c.name), self.capacity(), exclude=[e.name]
                )
                if isinstance(choice, Pending):
                    c.error = f"cannot leave {e.name}: {choice.reason}"
                    continue
                self._place(c, self.world.engines[choice.engine], moving=True)

    def switch(self, c: CameraSlot, new: EngineSlot) -> None:
        """Drain: the new engine publishes ``c``'s tracks; switch the gateway and drop the old."""
        old = self.world.engines.get(c.record.engine or "")
        block = c.place_block
        c.record.engine = new.name
        c.record.blocks = [block.as_list()] if block is not None else []
        c.record.placements += 1
        c.moving_to, c.place_block = None, None
        c.placed_at = time.monotonic()
        self.world.dirty = True
        self.push_routes()  # the gateway takes the new engine's messages first
        if old is not None and old.handle is not None:
            old.handle.unplace.remote(c.name)
        self.world.event("moved", camera=c.name, source=old.name if old else None, target=new.name)

    def lose(self, c: CameraSlot, reason: str) -> None:
        """``c`` is no longer served: place it again (with its last objects as seeds). A camera
        being moved that its new engine already took is switched there instead."""
        target, c.moving_to = c.moving_to, None
        if target is not None and c.place_call is None and c.place_block is not None:
            block, c.place_block = c.place_block, None
            c.record.engine = target
            c.record.blocks = [block.as_list()]
            c.record.placements += 1
            c.placed_frames, c.placed_at = c.frames, time.monotonic()
            self.world.dirty = True
            self.world.event("moved early", camera=c.name, target=target, reason=reason)
            return
        c.record.engine = None
        c.record.blocks = []
        c.placed_frames = None
        c.live = False
        c.state, c.error = CameraState.PENDING, reason
        c.lost_at = time.time() if c.lost_at is None else c.lost_at
        c.retry_at = 0.0
        self.world.dirty = True
        self.world.event("camera lost", camera=c.name, reason=reason)
