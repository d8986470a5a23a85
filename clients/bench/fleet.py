"""Bench part ``fleet``: a fleet on a local Ray instance (one node, loopback), measured from the
gateway's relayed tracks, as a subscriber sees it.

1. **Placement time per camera**: with the fleet up (two engines, one camera), cameras added one
   by one at runtime (``add_camera``): time from the request to the camera's first relayed
   tracks message (a capture actor started, the camera placed, its first frame processed).
2. **Recovery time**: the engine serving most cameras is SIGKILLed (``kills`` times, waiting for
   Ray to restart it in between); for each camera it served, time from the kill to its first
   tracks message published by the engine it moved to. p50 and max over all of them.
3. **Throughput, 2 engines vs 1**: the same cameras (demo scenes at a rate no engine keeps up
   with here) on a fleet of one engine, then of two; aggregate relayed tracks messages/s over a
   window after a warm-up, and the ratio.

tiny-random weights and prompt '' (manual objects) unless ``--models`` says otherwise. Engines
share the machine's cores: on a 2-core CPU box two engines cannot do twice the work of one, so
the ratio shows the fleet's own overhead as much as any gain; on one GPU per engine it is the
scaling.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import statistics
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

import zmq

from clients.bench import BenchRow, row
from stream import bus as zbus
from stream.config import Config
from stream.errors import PromptcamError

if TYPE_CHECKING:
    from clients.fleet.cluster import Connection

T = TypeVar("T")

log = logging.getLogger(__name__)

BOX = [10.0, 10.0, 70.0, 70.0]


class _Tracks(threading.Thread):
    """Tracks messages from the gateway: per camera, (t_publish_ns, time received)."""

    def __init__(self, endpoint: str) -> None:
        super().__init__(name="bench-tracks", daemon=True)
        self.ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self.sock = zbus.connect(self.ctx, zmq.SUB, endpoint, subscribe=[b"tracks."])
        self.seen: dict[str, list[tuple[int, float]]] = defaultdict(list)
        self.lock = threading.Lock()
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            parts = zbus.recv_multipart_timeout(self.sock, 100, copy=True)
            if parts is None:
                continue
            h = json.loads(parts[1])
            with self.lock:
                self.seen[h["camera"]].append((int(h["t_publish_ns"]), time.time()))
        self.sock.close(0)
        self.ctx.destroy(0)

    def first_after(self, camera: str, t: float) -> float | None:
        ns = int(t * 1e9)
        with self.lock:
            return next((recv for pub, recv in self.seen[camera] if pub > ns), None)

    def rate(self, t0: float, t1: float) -> float:
        with self.lock:
            n = sum(1 for msgs in self.seen.values() for _, recv in msgs if t0 <= recv < t1)
        return n / (t1 - t0)


def _wait(cond: Callable[[], T | None], timeout: float, what: str) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(0.1)
    raise PromptcamError(f"bench fleet: timed out after {timeout:.0f}s waiting for {what}")


def _config(cfg: Config, engines: int, cameras: list[str], fps: float) -> Config:
    tree = cfg.model_dump(mode="json")
    tree.update(
        cameras={c: {"source": "demo", "fps": fps} for c in cameras},
        camera=cameras[0],
        log_level="WARNING",
    )
    tree["source"].update(width=320, height=240)
    tree["engine"].update(prompt="", max_objects=4, max_missed=100000, reground_every_frames=0)
    tree["bus"].update(
        tracks=zbus.free_loopback_endpoint(),
        annotated=zbus.free_loopback_endpoint(),
        control=zbus.free_loopback_endpoint(),
    )
    tree["web"]["port"] = zbus.free_loopback_port()
    tree["fleet"].update(
        name="bench",
        engines=engines,
        engine_cpus=0.5,
        capture_cpus=0.1,
        max_cameras_per_engine=16,
        max_objects_per_engine=64,
        check_every_s=0.25,
    )
    return Config.model_validate(tree)


class _Fleet:
    """A fleet started in this process, with a subscriber on its gateway."""

    def __init__(self, cfg: Config, conn: Connection) -> None:
        import ray

        from clients.fleet.driver import start_fleet

        self.ray = ray
        self.cfg = cfg
        self.controller, _ = start_fleet(cfg, conn)
        self.tracks = _Tracks(cfg.bus.tracks)
        self.tracks.start()

    def status(self) -> dict[str, Any] | None:
        try:
            reply = self.ray.get(self.controller.status.remote(), timeout=5)
            st: dict[str, Any] = dict(reply)
        except Exception:
            return None
        return st

    def all_live(self) -> dict[str, Any] | None:
        st = self.status()
        if st is None or not st["cameras"]:
            return None
        live = all(c["state"] == "live" for c in st["cameras"])
        up = all(e["state"] == "up" for e in st["engines"])
        return st if live and up else None

    def seed(self, camera: str) -> None:
        zbus.request(
            self.cfg.bus.control,
            {"cmd": "add_object", "camera": camera, "box": BOX, "label": "thing"},
            10_000,
        )

    def close(self) -> None:
        from clients.fleet.driver import shutdown

        self.tracks.halt.set()
        shutdown(self.controller)


def _placement(f: _Fleet, n: int) -> list[float]:
    times = []
    for k in range(n):
        name = f"added{k}"
        t0 = time.time()
        reply = f.ray.get(f.controller.add_camera.remote(name, {"source": "demo", "fps": 10}, None))
        if not reply.get("ok"):
            raise PromptcamError(f"bench fleet: add_camera refused: {reply.get('error')}")
        t = _wait(partial(f.tracks.first_after, name, t0), 120, f"{name}'s tracks")
        times.append(t - t0)
    return times


def _recovery(f: _Fleet, kills: int) -> list[float]:
    times = []
    for k in range(kills):
        st = _wait(f.all_live, 120, f"every camera live before kill {k + 1}")
        for c in st["cameras"]:
            f.seed(c["camera"])
        victim = max(st["engines"], key=lambda e: len(e["cameras"]))
        t_kill = time.time()
        os.kill(victim["pid"], signal.SIGKILL)
        for cam in victim["cameras"]:
            t = _wait(partial(f.tracks.first_after, cam, t_kill), 60, f"{cam} after the kill")
            times.append(t - t_kill)
    return times


def _throughput(cfg: Config, conn: Connection, engines: int, cams: int, window: float) -> float:
    f = _Fleet(_config(cfg, engines, [f"cam{k}" for k in range(cams)], 30.0), conn)
    try:
        st = _wait(f.all_live, 180, f"{cams} cameras live on {engines} engine(s)")
        for c in st["cameras"]:
            f.seed(c["camera"])
        t0 = time.time() + 3.0  # warm-up
        _wait(lambda: time.time() >= t0 + window, window + 10, "the window")
        return f.tracks.rate(t0, t0 + window)
    finally:
        f.close()


def run(cfg: Config, args: argparse.Namespace) -> list[BenchRow]:
    from clients.fleet.cluster import connect

    quick = bool(getattr(args, "quick", False))
    added, kills, cams, window = (2, 2, 2, 5.0) if quick else (4, 5, 4, 15.0)
    base = _config(cfg, 2, ["first"], 10.0)
    conn = connect(None, base, log_to_driver=False)
    import ray

    note = f"{cfg.models.preset}, demo 320x240, local Ray instance, 2 engines x 0.5 CPU"
    rows: list[BenchRow] = []
    try:
        f = _Fleet(base, conn)
        try:
            _wait(f.all_live, 180, "the first camera live")
            place = _placement(f, added)
            rec = _recovery(f, kills)
        finally:
            f.close()
        rows += [
            row("fleet", "placement time per camera (add -> first tracks), mean", statistics.mean(place), "s", note),
            row("fleet", "placement time per camera, max", max(place), "s", f"{added} cameras added"),
            row("fleet", "recovery after an engine SIGKILL, p50", statistics.median(rec), "s", f"{kills} kills, {len(rec)} camera moves; kill -> tracks from the new engine"),
            row("fleet", "recovery after an engine SIGKILL, max", max(rec), "s", ""),
        ]  # fmt: skip
        one = _throughput(cfg, conn, 1, cams, window)
        two = _throughput(cfg, conn, 2, cams, window)
        rows += [
            row("fleet", f"{cams} cameras on 1 engine: tracks", one, "msg/s", f"demo at 30 fps each, {window:.0f} s window"),
            row("fleet", f"{cams} cameras on 2 engines: tracks", two, "msg/s", ""),
            row("fleet", "2 engines / 1 engine", two / one if one else float("inf"), "x", "the engines share this machine's cores"),
        ]  # fmt: skip
    finally:
        ray.shutdown()
    return rows
