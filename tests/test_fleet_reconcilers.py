"""The fleet controller's reconcilers on fake actors (no Ray cluster): placement on the least
loaded engine, a drain that moves a camera before the old engine drops it, an engine that dies
and its cameras re-placed, with the state enums' values as ``fleet status`` shows them.

Ray's ``wait``/``get`` are replaced by fakes that answer at once: each tick of the reconcilers
sees every call it started on the tick before as finished. tests/test_fleet.py runs the same
reconcilers on a real two-node Ray cluster."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import cast

import pytest
import ray

from clients.fleet.calls import CaptureHandle, EngineHandle, GatewayHandle
from clients.fleet.controller import first_record
from clients.fleet.reconcilers import (
    CameraState,
    EngineState,
    FleetWorld,
    Reconcilers,
)
from clients.fleet.reconcilers.status import camera_status, engine_status
from clients.fleet.store import FleetRecord, KvStore
from stream.config import Config


@dataclass(eq=False)
class FakeRef:
    """An ``ObjectRef``: ready with a value or an error, or (a watch) pending."""

    value: object = None
    error: BaseException | None = None
    ready: bool = True


class FakeActor:
    """An actor handle: ``handle.method.remote(*args)`` calls ``answers[method](*args)``."""

    def __init__(self, answers: dict[str, Callable[..., object]]) -> None:
        self.answers = answers
        self.calls: list[tuple[str, tuple[object, ...]]] = []
        self.watches: list[FakeRef] = []
        self.dead = False

    def __getattr__(self, name: str) -> _Method:
        return _Method(self, name)

    def kill(self) -> None:
        self.dead = True
        for ref in self.watches:
            ref.ready, ref.error = True, RuntimeError("RayActorError: the actor died")

    def remote(self, name: str, args: tuple[object, ...]) -> FakeRef:
        self.calls.append((name, args))
        if self.dead:
            return FakeRef(error=RuntimeError("RayActorError: the actor died"))
        if name == "watch":
            ref = FakeRef(ready=False)
            self.watches.append(ref)
            return ref
        return FakeRef(self.answers[name](*args))


@dataclass
class _Method:
    actor: FakeActor
    name: str

    def remote(self, *args: object) -> FakeRef:
        return self.actor.remote(self.name, args)


def where(name: str) -> dict[str, object]:
    return {"node_id": f"node-{name}", "node_ip": "127.0.0.1", "pid": 1, "incarnation": name}


@dataclass
class FakeEngine:
    name: str
    served: dict[str, str] = field(default_factory=dict)  # camera -> frames

    def actor(self) -> FakeActor:
        return FakeActor(
            {
                "info": lambda: {
                    **where(self.name),
                    "name": self.name,
                    "tracks": f"tcp://127.0.0.1:1{self.name[-1]}",
                    "annotated": f"tcp://127.0.0.1:2{self.name[-1]}",
                    "control": "tcp://127.0.0.1:3",
                },
                "report": self.report,
                "place": self.place,
                "unplace": lambda cam: {"ok": self.served.pop(cam, None) is not None},
                "lease": lambda *a: {"ok": True},
            }
        )

    def place(self, camera: str, frames: str, *_: object) -> dict[str, object]:
        self.served[camera] = frames
        return {"ok": True}

    def report(self) -> dict[str, object]:
        cams = {
            cam: {
                "state": "live",
                "fps": 5.0,
                "objects": 1,
                "frames_out": 3,
                "next_id": 1,
                "ids_left": 1 << 20,
                "ids_exhausted": 0,
                "frames": frames,
            }
            for cam, frames in self.served.items()
        }
        return {
            "incarnation": self.name,
            "cameras": cams,
            "fps_in": 5.0,
            "fps_out": 5.0,
            "rss_mb": 1.0,
            "t": 0.0,
        }


class MemoryStore(KvStore):
    def __init__(self) -> None:
        super().__init__("test")
        self.saved: list[bytes] = []

    def load(self) -> FleetRecord | None:
        return FleetRecord.from_json(self.saved[-1]) if self.saved else None

    def save(self, record: FleetRecord) -> None:
        self.saved.append(record.to_json())

    def delete(self) -> None:
        self.saved.clear()


def _capture(camera: str) -> FakeActor:
    return FakeActor(
        {
            "info": lambda: {**where(camera), "camera": camera},
            "status": lambda: {
                "incarnation": camera,
                "frames": f"tcp://127.0.0.1:9{camera}",
                "state": "streaming",
                "error": "",
                "stats": {"fps": 5.0},
            },
        }
    )


@dataclass
class Fleet:
    rec: Reconcilers
    engines: dict[str, FakeEngine]
    actors: dict[str, FakeActor]
    store: MemoryStore

    def tick_until(self, cond: Callable[[], bool], what: str, ticks: int = 20) -> None:
        for _ in range(ticks):
            self.rec.tick()
            if cond():
                return
        pytest.fail(f"not within {ticks} ticks: {what}")

    def camera(self, name: str) -> dict[str, object]:
        return dict(camera_status(self.rec.world, self.rec.world.cameras[name]))

    def engine(self, name: str) -> dict[str, object]:
        return dict(engine_status(self.rec.world, self.rec.world.engines[name]))


@pytest.fixture
def fleet(monkeypatch: pytest.MonkeyPatch) -> Iterator[Fleet]:
    monkeypatch.setattr(ray, "wait", lambda refs, **_: ([r for r in refs if r.ready], []))

    def get(ref: FakeRef, **_: object) -> object:
        if ref.error is not None:
            raise ref.error
        return ref.value

    monkeypatch.setattr(ray, "get", get)
    monkeypatch.setattr("clients.fleet.reconcilers.nodes.ray_nodes", lambda: [])
    monkeypatch.setattr("clients.fleet.reconcilers.engines.REPORT_EVERY_S", 0.0)
    monkeypatch.setattr("clients.fleet.reconcilers.captures.REPORT_EVERY_S", 0.0)
    cfg = Config.model_validate(
        {
            "cameras": {"a": {"source": "demo"}, "b": {"source": "demo"}},
            "fleet": {"engines": 2, "curve": "off"},
        }
    )
    store = MemoryStore()
    world = FleetWorld("test", store, first_record(cfg))
    rec = Reconcilers(world, "node-gateway")
    engines = {name: FakeEngine(name) for name in world.engines}
    actors: dict[str, FakeActor] = {}
    for name, e in world.engines.items():
        actors[name] = engines[name].actor()
        e.handle = cast(EngineHandle, actors[name])
    for name, c in world.cameras.items():
        actors[name] = _capture(name)
        c.handle = cast(CaptureHandle, actors[name])
    gateway = FakeActor(
        {
            "info": lambda: {**where("gw"), "tracks": "t", "annotated": "a", "control": "c"},
            "snapshot": lambda: {},
            "set_routes": lambda routes, endpoints: "gw",
        }
    )
    rec.gateway.handle = cast(GatewayHandle, gateway)
    actors["gateway"] = gateway
    yield Fleet(rec, engines, actors, store)


def test_cameras_spread_over_engines_and_go_live(fleet: Fleet) -> None:
    w = fleet.rec.world
    fleet.tick_until(
        lambda: all(c.state == CameraState.LIVE for c in w.cameras.values()), "cameras live"
    )
    assert {c.record.engine for c in w.cameras.values()} == {"engine-0", "engine-1"}
    assert all(e.state is EngineState.UP for e in w.engines.values())
    assert fleet.camera("a")["state"] == "live" and type(fleet.camera("a")["state"]) is str
    assert fleet.engine("engine-0")["state"] == "up"
    blocks = [c.record.blocks[0] for c in w.cameras.values()]
    assert blocks[0][1] <= blocks[1][0] or blocks[1][1] <= blocks[0][0]  # disjoint ID blocks
    routes = [args[0] for name, args in fleet.actors["gateway"].calls if name == "set_routes"]
    assert routes[-1] == {c.name: c.record.engine for c in w.cameras.values()}
    assert FleetRecord.from_json(fleet.store.saved[-1]).cameras["a"].engine is not None


def test_drain_moves_first_then_a_dead_engine_loses_its_cameras(fleet: Fleet) -> None:
    w = fleet.rec.world
    fleet.tick_until(
        lambda: all(c.state == CameraState.LIVE for c in w.cameras.values()), "cameras live"
    )
    moved = next(c for c in w.cameras.values() if c.record.engine == "engine-0")
    w.engines["engine-0"].draining = True
    fleet.rec.tick()
    assert fleet.camera(moved.name)["state"] == "moving"
    assert fleet.engine("engine-0")["state"] == "draining"
    fleet.tick_until(lambda: moved.record.engine == "engine-1", "the drained camera moved")
    assert ("unplace", (moved.name,)) in fleet.actors["engine-0"].calls
    assert fleet.engines["engine-1"].served.keys() == {"a", "b"}

    fleet.actors["engine-1"].kill()
    fleet.rec.tick()
    assert w.engines["engine-1"].state is EngineState.DOWN
    assert fleet.engine("engine-1")["state"] == "down"
    for c in w.cameras.values():
        assert c.state is CameraState.PENDING and c.record.engine is None
        assert fleet.camera(c.name)["state"] == "pending"
    assert w.figures.faults == 1
    fleet.tick_until(lambda: "draining" in w.cameras["a"].error, "placement says why not")
    w.engines["engine-0"].draining = False
    fleet.tick_until(
        lambda: all(c.state == CameraState.LIVE for c in w.cameras.values()), "re-placed live"
    )
    assert {c.record.engine for c in w.cameras.values()} == {"engine-0"}
    assert w.figures.recoveries == 2 and len(w.figures.recovery_s) == 2
