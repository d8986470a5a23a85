"""The events service as a child of ``promptcam run`` (started because a camera has zones,
ready by its status file, its counters in the run's status file, events on
``events.<camera>``), and ``promptcam bench --parts events`` in short form."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import zmq

from clients.health import read_status_file
from stream import bus as zbus
from stream.errors import PromptcamError
from tests.conftest import free_port, tcp_endpoint, wait_for

REPO = Path(__file__).resolve().parent.parent


def test_run_starts_the_events_child_and_events_flow(tmp_path: Path) -> None:
    """`promptcam run` on the demo scene (tiny-random models, an object added by box) with a
    zone on cam0: an ``events`` child is started, becomes ready, its counters appear in the
    status file, a SUB on ``bus.events`` receives ``new`` and zone ``update`` events with
    snapshots, and SIGTERM stops everything with exit 0."""
    ports = {k: tcp_endpoint() for k in ("frames", "tracks", "annotated", "control", "events")}
    status = tmp_path / "status.json"
    overrides: dict[str, Any] = {f"bus.{k}": v for k, v in ports.items()}
    overrides |= {
        "web.port": free_port(),
        "run.status_file": str(status),
        "source.width": 320,
        "source.height": 240,
        "source.fps": 10,
        "models.preset": "tiny-random",
        "engine.detector_size": 128,
        # random weights: no detections, the added object is never dropped
        "engine.box_threshold": 1.0,
        "engine.reground_every_frames": 0,
        "engine.score_threshold": -100,
        "engine.max_missed": 100000,
        "events.database": str(tmp_path / "ev" / "events.db"),
        "events.probation_frames": 2,
        "events.snapshot_every": 1,
        "events.cameras.cam0.zones.yard": {
            "points": [[0, 0], [320, 0], [320, 240], [0, 240]],
            "inertia": 1,
            "min_share": 0.5,  # of the mask: the whole frame holds all of it
        },
    }
    sets = [x for k, v in overrides.items() for x in ("--set", f"{k}={json.dumps(v)}")]
    cmd = [sys.executable, "-m", "clients.cli", "run", "--duration", "120", *sets]
    log = tmp_path / "run.log"
    proc = subprocess.Popen(
        cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=log.open("w"), text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    ctx: zmq.Context[Any] = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.linger = 0
    sub.setsockopt(zmq.SUBSCRIBE, b"events.cam0")
    sub.connect(ports["events"])
    got: list[dict[str, Any]] = []
    try:
        wait_for(
            lambda: (
                (s := read_status_file(status))
                and s["children"].get("events", {}).get("ready")
                and s["children"]["engine"]["ready"]
            ),
            timeout=90,
            what="the events and engine children ready",
        )

        def add() -> bool:
            try:
                reply = zbus.request(
                    ports["control"],
                    {"cmd": "add_object", "box": [100, 150, 140, 190], "label": "ball"},
                    2000,
                )
            except PromptcamError:
                return False
            return bool(reply.get("ok"))

        wait_for(add, timeout=30, what="the object added")

        def zone_entered() -> bool:
            while sub.poll(50):
                got.append(json.loads(sub.recv_multipart()[1]))
            return any(
                g["kind"] == "object"
                and "yard" in g["event"]["zones"]
                and g["event"]["has_snapshot"]
                for g in got
            )

        try:
            wait_for(zone_entered, timeout=40, what="a zone entry with a snapshot on events.cam0")
        except BaseException:
            print(got[-5:], log.read_text()[-5000:])
            raise
        doc = wait_for(
            lambda: (
                (s := read_status_file(status)) and (s.get("events") or {}).get("published") and s
            ),
            timeout=10,
            what="the events counters in the status file",
        )
        assert doc["events"]["snapshots_written"] >= 1
        eid = next(g["event"]["id"] for g in got if g["event"]["has_snapshot"])
        assert (tmp_path / "ev" / "snapshots" / f"{eid}.jpg").stat().st_size > 0
        assert got[0]["type"] == "new" and got[0]["camera"] == "cam0"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        ctx.destroy(linger=0)
    err = log.read_text()
    assert "Traceback" not in err, err[-3000:]
    final = read_status_file(status)
    assert final is not None and final["children"]["events"]["state"] == "stopped"
