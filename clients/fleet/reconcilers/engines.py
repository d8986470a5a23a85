"""The engines reconciler: one engine actor per GPU (or CPU share), followed through its states
(:class:`EngineState`), and each engine's report held against the assignment.

Per engine it keeps one ``watch`` call open, which fails at once when the engine's process or
node dies, and polls ``report`` (an engine that stops answering for ``fleet.engine_timeout_s``
is killed, and Ray restarts it). A report's cameras are checked against the assignment: a camera
the engine should serve but does not is re-placed, one it should not serve is removed; the
cameras it serves get their figures, states and further ID blocks from it.
"""

from __future__ import annotations

import time

from clients.fleet.calls import (
    Done,
    EngineHandle,
    Failed,
    actor_options,
    describe,
    engine_face,
    kill,
    start_actor,
)
from clients.fleet.messages import CameraReport, EngineInfo, EngineReport
from clients.fleet.reconcilers.placer import Placer
from clients.fleet.reconcilers.world import (
    REPORT_EVERY_S,
    RESOURCE_SHARE,
    CameraSlot,
    CameraState,
    EngineSlot,
    EngineState,
    FleetWorld,
)

GRACE_S = 3.0  # a placement younger than this is not yet expected in the engine's report


class EngineReconciler:
    """Starts, watches and polls the engine actors; see the module docstring."""

    def __init__(self, world: FleetWorld, placer: Placer) -> None:
        self.world = world
        self.placer = placer

    def _start(self, e: EngineSlot) -> EngineHandle:
        from clients.fleet.engine_actor import EngineActor

        f = self.world.cfg.fleet
        opts = actor_options(e.name, self.world.namespace, 16, f.engine_cpus)
        opts["num_gpus"] = f.engine_gpus or 0
        resource = self.world.engine_resource(e)
        if resource is not None:
            opts["resources"] = {resource: RESOURCE_SHARE}
        tree = self.world.config_tree()
        return engine_face(start_actor(EngineActor, opts, e.name, tree, self.world.keys()))

    def step(self, e: EngineSlot) -> None:
        if e.handle is None:
            e.handle = self._start(e)
        if e.info is None:
            self._info_step(e, e.handle)
            return
        died = e.watch.died(e.handle)
        if died is not None:
            self.down(e, died)
            return
        self._report_step(e, e.handle)

    def _info_step(self, e: EngineSlot, handle: EngineHandle) -> None:
        out = e.infos.ask(handle.info)
        if isinstance(out, Done):
            self._up(e, out.value)
            return
        if isinstance(out, Failed) and e.state not in (EngineState.DOWN, EngineState.PENDING):
            e.set_state(EngineState.STARTING, describe(out.error))  # ask again next tick
        resource = self.world.engine_resource(e)
        if e.state != EngineState.PENDING and self.world.stuck_without(e.since, resource):
            e.set_state(EngineState.PENDING, f"no alive node has resource {resource}")

    def _up(self, e: EngineSlot, info: EngineInfo) -> None:
        restarted = e.incarnation is not None and info["incarnation"] != e.incarnation
        e.restarts += restarted
        e.incarnation = info["incarnation"]
        e.info = info
        e.report = None
        e.reports.sent = 0.0
        e.set_state(EngineState.UP)
        self.world.event("engine up", engine=e.name, node=info["node_ip"], pid=info["pid"])
        if restarted:  # a restarted engine serves nothing it served before
            for c in self.world.cameras.values():
                if c.record.engine == e.name and c.place_call is None:
                    self.placer.lose(c, f"engine {e.name} restarted")

    def down(self, e: EngineSlot, reason: str) -> None:
        e.set_state(EngineState.DOWN, reason)
        e.info = None
        e.watch.calls.call = e.reports.call = e.infos.call = None
        e.report = None
        self.world.figures.faults += 1
        self.world.dirty = True
        self.world.event("engine down", engine=e.name, reason=reason)
        for c in self.world.cameras.values():
            if c.record.engine == e.name:
                self.placer.lose(c, f"engine {e.name} down")
            if c.place_target == e.name:
                c.place_call, c.place_target, c.place_block = None, None, None
            if c.moving_to == e.name:
                c.moving_to = None

    def _report_step(self, e: EngineSlot, handle: EngineHandle) -> None:
        out = e.reports.every(REPORT_EVERY_S, handle.report)
        if out is None:
            timeout = self.world.cfg.fleet.engine_timeout_s
            if e.reports.age() > timeout:
                self.down(e, f"no answer for {timeout:g}s")
                kill(handle, no_restart=False)  # Ray restarts it
            return
        if not isinstance(out, Done):
            self.down(e, describe(out.error))
            return
        rep = out.value
        if rep["incarnation"] != e.incarnation:
            e.info = None  # restarted between two looks: learn the new incarnation first
            return
        e.report = rep
        self._reconcile(e, handle, rep)

    def _reconcile(self, e: EngineSlot, handle: EngineHandle, rep: EngineReport) -> None:
        served = rep["cameras"]
        now = time.monotonic()
        for cam in served:
            c = self.world.cameras.get(cam)
            if c is None or not c.serves_on(e.name):
                self.world.event("stray camera removed", engine=e.name, camera=cam)
                handle.unplace.remote(cam)
        for c in self.world.cameras.values():
            if c.record.engine != e.name and c.moving_to != e.name:
                continue
            got = served.get(c.name)
            if got is None:
                if c.place_call is None and now - c.placed_at > GRACE_S and c.moving_to != e.name:
                    self.placer.lose(c, f"engine {e.name} no longer serves it")
                continue
            if c.moving_to == e.name:
                if got["frames_out"] > 0:
                    self.placer.switch(c, e)
                continue
            self._follow(c, e, got)
            self._renew_ids(c, e.name, handle)

    def _follow(self, c: CameraSlot, e: EngineSlot, got: CameraReport) -> None:
        """``c``'s figures and state from its engine's report."""
        c.fps, c.objects = float(got["fps"]), int(got["objects"])
        c.next_id, c.ids_left = got["next_id"], got["ids_left"]
        live = got["frames_out"] > 0 and got["state"] == CameraState.LIVE
        if live and not c.live and c.lost_at is not None:
            took = round(time.time() - c.lost_at, 3)
            fig = self.world.figures
            fig.recoveries += 1
            fig.recovery_s = [*fig.recovery_s[-99:], took]
            self.world.dirty = True
            self.world.event("camera recovered", camera=c.name, engine=e.name, seconds=took)
            c.lost_at = None
        c.live = live
        if live:
            c.state = CameraState.LIVE
        else:
            waiting = got["state"] == CameraState.WAITING
            c.state = CameraState.WAITING if waiting else CameraState.STALLED
        c.error = "" if live else c.error

    def _renew_ids(self, c: CameraSlot, engine: str, handle: EngineHandle) -> None:
        """A further block once half of what is left is used (engine ``lease``)."""
        if c.leases.call is not None and c.leases.poll() is None:
            return
        if c.ids_left is None or c.ids_left >= self.world.cfg.fleet.id_block // 2:
            return
        block = self.world.lease()
        c.record.blocks = [*c.record.blocks[-1:], block.as_list()]
        c.leases.ask(handle.lease, c.name, block.first, block.limit)
        self.world.event("ID block leased", camera=c.name, engine=engine, first=block.first)
