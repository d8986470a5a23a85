"""The fleet status (``promptcam fleet status``, the fleet page) from the reconcilers' state."""

from __future__ import annotations

from clients.fleet.messages import CameraStatus, EngineStatus, Figures
from clients.fleet.reconcilers.world import (
    CameraSlot,
    CameraState,
    EngineSlot,
    EngineState,
    FleetWorld,
)


def engine_status(world: FleetWorld, e: EngineSlot) -> EngineStatus:
    rep = e.report
    up_draining = e.draining and e.state == EngineState.UP
    info = e.info
    return {
        "name": e.name,
        "state": (EngineState.DRAINING if up_draining else e.state).value,
        "error": e.error,
        "node_id": info["node_id"] if info is not None else None,
        "node_ip": info["node_ip"] if info is not None else None,
        "pid": info["pid"] if info is not None else None,
        "tracks": info["tracks"] if info is not None else None,
        "resource": world.engine_resource(e),
        "cameras": world.served_by(e.name),
        "fps": float(rep["fps_out"]) if rep is not None else 0.0,
        "rss_mb": rep["rss_mb"] if rep is not None else None,
        "restarts": e.restarts,
    }


def camera_status(world: FleetWorld, c: CameraSlot) -> CameraStatus:
    st = c.capture_status
    stats = st["stats"] if st is not None else {}
    placed = bool(c.record.engine)
    prompt = c.record.prompt
    return {
        "camera": c.name,
        "state": (CameraState.MOVING if c.moving_to else c.state).value,
        "error": c.error,
        "engine": c.record.engine,
        "moving_to": c.moving_to,
        "frames": c.frames,
        "capture": st["state"] if st is not None else None,
        "capture_fps": stats.get("fps", 0.0),
        "resource": c.record.resource,
        "fps": c.fps if placed else 0.0,
        "objects": c.objects if placed else 0,
        "prompt": prompt if prompt is not None else world.config_prompt(c.name),
        "ids": c.record.blocks[-1] if c.record.blocks else None,
        "next_id": c.next_id,
        "placements": c.record.placements,
    }


def figures(world: FleetWorld) -> Figures:
    fig = world.figures
    rec = sorted(fig.recovery_s)
    return {
        "faults": fig.faults,
        "recoveries": fig.recoveries,
        "recovery_s": list(fig.recovery_s),
        "recovery_p50_s": rec[len(rec) // 2] if rec else None,
        "recovery_max_s": rec[-1] if rec else None,
        "controller_restarts": world.record.controller_starts - 1,
        "ids_next_free": world.leaser.next_free,
    }
