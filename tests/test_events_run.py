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
    snapshots; the events child killed with SIGKILL is restarted and publishes again; SIGTERM
    stops everything with exit 0."""
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
                (s := read_status_file(status))
                and (s.get("events") or {}).get("snapshots_written", 0) >= 1
                and s
            ),
            timeout=10,
            what="the events counters in the status file",
        )
        assert doc["events"]["published"] >= 2 and doc["events"]["snapshot_errors"] == 0
        eid = next(g["event"]["id"] for g in got if g["event"]["has_snapshot"])
        assert (tmp_path / "ev" / "snapshots" / f"{eid}.jpg").stat().st_size > 0
        assert got[0]["type"] == "new" and got[0]["camera"] == "cam0"
        # SIGKILL the events child: the launcher restarts it, the object gets a new event
        os.kill(doc["children"]["events"]["pid"], signal.SIGKILL)
        wait_for(
            lambda: (
                (s := read_status_file(status))
                and s["children"]["events"]["restarts"] == 1
                and s["children"]["events"]["ready"]
            ),
            timeout=30,
            what="the events child restarted",
        )
        before_kill = {g["event"]["id"] for g in got}
        wait_for(
            lambda: (
                (s := read_status_file(status))
                and (s.get("events") or {}).get("pid") == s["children"]["events"]["pid"]
                and s["events"]["published"] >= 1
            ),
            timeout=30,
            what="the restarted events child publishing",
        )
        # its "new" may have gone out before this SUB reconnected: end the object, see its "end"
        oid = got[0]["event"]["object_id"]
        reply = zbus.request(ports["control"], {"cmd": "remove_object", "id": oid}, 10000)
        assert reply.get("ok"), reply

        def ended_anew() -> bool:
            zone_entered()
            return any(
                g["kind"] == "object" and g["type"] == "end" and g["event"]["id"] not in before_kill
                for g in got
            )

        wait_for(ended_anew, timeout=30, what="an end event from the restarted events child")
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


def test_bench_events_scoring_is_exact_on_truth_and_catches_errors() -> None:
    """The events bench's scoring: the ground truth scored against itself is precision and
    recall 1.0 with no duplicates; a crossing moved past the tolerance, a flipped direction and
    an event given to the wrong object each count as one false and one missed event."""
    from clients.bench.events import (
        TOLERANCE,
        duplicate_alerts,
        match,
        run_logic,
        scene_events_config,
        track_to_truth,
        truth_messages,
    )
    from stream.demo import DemoScene

    scene = DemoScene(320, 240, 6, seed=20)
    truth, _ = truth_messages(scene, 60)
    expected = run_logic(scene_events_config(320, 240), truth)
    assert len(expected.crossings) >= 3 and len(expected.entries) >= 2
    ids, per_frame = track_to_truth(truth, truth)
    assert ids == {o: o for o in ids} and len(ids) >= 4
    assert all(
        f == {o.id: o.id for o in m.header.objects} for f, m in zip(per_frame, truth, strict=True)
    )
    assert match(expected.crossings, expected.crossings) == len(expected.crossings)
    assert match(expected.entries, expected.entries) == len(expected.entries)
    assert duplicate_alerts(expected.reviews, expected.reviews) == 0
    (o, line, d, i), rest = expected.crossings[0], expected.crossings[1:]
    other = next(x for x in ids if x != o)
    flipped = "out" if d == "in" else "in"
    for wrong in ((o, line, d, i + TOLERANCE + 1), (o, line, flipped, i), (other, line, d, i)):
        assert match([wrong, *rest], expected.crossings) == len(expected.crossings) - 1, wrong
    assert match([(o, line, d, i + TOLERANCE)], expected.crossings) == 1
    s, e = expected.reviews[0]
    assert duplicate_alerts([(s, s + 1), (s + 2, e)], [(s, e)]) == 1


def test_bench_events_runs_the_seeds_asked_for() -> None:
    """``bench --parts events --seeds`` scores the scenes of those seeds (the tuning seeds are
    not the default held-out ones): a quick run of seed 5 says so and counts its events."""
    import argparse

    from clients.bench import events
    from stream.config import load_config

    args = argparse.Namespace(quick=True, seeds="5", models=None, soak=None)
    rows = events.run(load_config(), args)
    first = rows[0]
    assert first["name"] == "line crossings precision"
    assert f"seeds 5 x {events.QUICK_FRAMES} frames" in str(first["note"]), first
    assert isinstance(first["value"], float) and 0.0 <= first["value"] <= 1.0
    assert "grounded every 20 frames" in str(first["note"])  # the quality bench's cadence


def test_bench_events_takes_the_grounding_cadence_asked_for() -> None:
    """``--set engine.reground_every_frames=5`` reaches the engine the events bench runs (the
    quality bench's 20 otherwise); other keys leave the cadence at 20."""
    import argparse

    from clients.bench import events
    from clients.bench.quality import _config
    from stream.config import load_config

    asked = argparse.Namespace(set=["engine.reground_every_frames=5"], models=None)
    cfg = load_config(None, overrides={"engine.reground_every_frames": 5})
    assert (
        events._cadence(_config(cfg, asked, "ball."), cfg, asked).engine.reground_every_frames == 5
    )
    other = argparse.Namespace(set=["engine.max_missed=5"], models=None)
    cfg = load_config(None, overrides={"engine.max_missed": 5})
    bench_cfg = events._cadence(_config(cfg, other, "ball."), cfg, other)
    assert (bench_cfg.engine.reground_every_frames, bench_cfg.engine.max_missed) == (20, 5)


def test_bench_events_soak_short(tmp_path: Path) -> None:
    """The soak, 5 seconds: 4 cameras into a real ``promptcam events``; events and snapshots
    are made, RSS, database and latency are reported."""
    from clients.bench.events_soak import _soak

    rows = {r["name"]: r["value"] for r in _soak(tmp_path, 0.08)}

    def value(name: str) -> float:
        v = rows[name]
        assert isinstance(v, (int, float)), (name, v)
        return v

    assert value("soak events published") > 4
    assert value("soak snapshots written") > 0
    assert 10 < value("soak RSS") < 2000
    assert value("soak database") > 0
    assert 0 < value("soak event latency p50") <= value("soak event latency p99") < 5000
    samples = rows["soak samples"]
    assert isinstance(samples, str) and len(json.loads(samples)) >= 1
