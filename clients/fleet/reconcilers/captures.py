"""The captures reconciler: one capture actor per camera (near its camera, by Ray resource),
watched like an engine, and polled for where its frames are (a capture restarted elsewhere
publishes on a new endpoint: the placement reconciler re-points the camera's engine)."""

from __future__ import annotations

import time

from clients.fleet.calls import (
    CaptureHandle,
    Done,
    actor_options,
    capture_face,
    start_actor,
)
from clients.fleet.capture_actor import CaptureActor, CaptureState
from clients.fleet.reconcilers.world import (
    REPORT_EVERY_S,
    RESOURCE_SHARE,
    CameraSlot,
    CameraState,
    FleetWorld,
    capture_name,
)


class CaptureReconciler:
    """Starts, watches and polls the capture actors; see the module docstring."""

    def __init__(self, world: FleetWorld) -> None:
        self.world = world

    def _start(self, c: CameraSlot) -> CaptureHandle:
        w = self.world
        opts = actor_options(capture_name(c.name), w.namespace, 4, w.cfg.fleet.capture_cpus)
        if c.record.resource is not None:
            opts["resources"] = {c.record.resource: RESOURCE_SHARE}
        return capture_face(start_actor(CaptureActor, opts, c.name, w.config_tree(), w.keys()))

    def step(self, c: CameraSlot) -> None:
        if c.handle is None:
            c.handle = self._start(c)
        if c.capture_incarnation is None:
            self._info_step(c, c.handle)
        elif (died := c.watch.died(c.handle)) is not None:
            self._down(c, died)
        else:
            self._status_step(c, c.handle)

    def _down(self, c: CameraSlot, reason: str) -> None:
        """``c``'s capture died: Ray restarts it, wherever its resource allows."""
        self.world.event("capture down", camera=c.name, reason=reason)
        c.capture_incarnation, c.frames, c.capture_status = None, None, None
        c.statuses.call, c.capture_since = None, time.monotonic()
        c.error = f"capture down: {reason}"

    def _info_step(self, c: CameraSlot, handle: CaptureHandle) -> None:
        out = c.infos.ask(handle.info)
        if isinstance(out, Done):
            c.capture_incarnation = out.value["incarnation"]
            c.capture_since = time.monotonic()
            self.world.event("capture up", camera=c.name, node=out.value["node_ip"])
            return
        if self.world.stuck_without(c.capture_since, c.record.resource):
            c.state = CameraState.PENDING if c.record.engine is None else c.state
            c.error = f"its capture needs a node with resource {c.record.resource}"

    def _status_step(self, c: CameraSlot, handle: CaptureHandle) -> None:
        out = c.statuses.every(REPORT_EVERY_S, handle.status, force=c.frames is None)
        if not isinstance(out, Done):
            return  # not due, in flight, or failed: the watch call reports a dead capture
        st = out.value
        c.capture_status = st
        c.frames = st["frames"]
        if st["state"] == CaptureState.FAILED:
            c.state, c.error = CameraState.FAILED, st["error"]
