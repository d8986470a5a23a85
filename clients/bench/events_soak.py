"""``promptcam bench --parts events --soak MINUTES``: the events service (``promptcam events``,
a real process) under 4 cameras for MINUTES, with retention on.

A feeder in this process plays 4 demo scenes (320x240, 8 objects, seeds 40-43) in real time at
10 frames/s each: the exact ground-truth tracks on ``tracks.<camera>`` and the rendered frame as
``annotated.<camera>`` (JPEG), each message stamped with the wall time it was sent as its
capture time. Each camera has a line and a zone, so objects raise events, zone entries,
crossings and snapshots throughout. Retention is tight on purpose (``max_events`` 300, 4 MiB of
snapshots, checked every ``RETAIN_EVERY_S``), so that what a flat line means is "retention keeps
up", not "nothing was written". Sampled every 10 s: the service's RSS, the database size (with
its WAL), the snapshot folder, events published. Latency: the service's own (tracks capture time
-> event published, p50/p99 from its status file) and the subscriber's for crossings (crossing's
capture time -> message received).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TypedDict

import numpy as np
import psutil
import zmq

from clients.bench import BenchRow, row
from stream.config import Config
from stream.demo import DemoScene
from stream.groundtruth import GroundTruthWriter
from stream.wire import AnnotatedMessage, TracksMessage, encode_jpeg

PART = "events"
CAMERAS = 4
W, H, OBJECTS, FPS = 320, 240, 8, 10.0
SAMPLE_S = 10.0


def _free_endpoint() -> str:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"


def soak_config(tmp: Path, tracks: str, annotated: str, events: str) -> dict[str, object]:
    cams = {
        f"cam{k}": {
            "lines": {"gate": {"points": [[0, H / 2], [W, H / 2]], "in_side": [W / 2, H]}},
            "zones": {"yard": {"points": [[W / 4, H / 4], [3 * W / 4, H / 4], [3 * W / 4, 3 * H / 4], [W / 4, 3 * H / 4]], "inertia": 2}},
        }
        for k in range(CAMERAS)
    }  # fmt: skip
    return {
        "cameras": {f"cam{k}": {"source": {"uri": "demo"}} for k in range(CAMERAS)},
        "bus": {"tracks": tracks, "annotated": annotated, "events": events},
        "events": {
            "database": str(tmp / "events.db"),
            "probation_frames": 3,
            "end_after": 10,
            "max_events": 300,
            "max_snapshot_mb": 4,
            "snapshot_every": 5,
            "status_file": str(tmp / "events-status.json"),
            "cameras": cams,
        },
    }


def _dir_bytes(path: Path) -> int:
    return sum(_dir_bytes_one(p) for p in path.iterdir()) if path.is_dir() else 0


def run_soak(cfg: Config, args: argparse.Namespace) -> list[BenchRow]:
    minutes = float(args.soak)
    with tempfile.TemporaryDirectory(prefix="promptcam-bench-events-") as d:
        return _soak(Path(d), minutes)


def _soak(tmp: Path, minutes: float) -> list[BenchRow]:
    tracks, annotated, events = _free_endpoint(), _free_endpoint(), _free_endpoint()
    conf = tmp / "config.yaml"
    conf.write_text(json.dumps(soak_config(tmp, tracks, annotated, events)))
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    pub, ann = ctx.socket(zmq.XPUB), ctx.socket(zmq.XPUB)
    for s, ep in ((pub, tracks), (ann, annotated)):
        s.linger = 0
        s.sndhwm = 10000
        s.bind(ep)
    sub = ctx.socket(zmq.SUB)
    sub.linger = 0
    sub.setsockopt(zmq.SUBSCRIBE, b"events.")
    sub.connect(events)
    proc = subprocess.Popen(
        [sys.executable, "-m", "clients.cli", "events", "--config", str(conf), "--log-level", "WARNING"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    scenes = [DemoScene(W, H, OBJECTS, seed=40 + k, fps=FPS) for k in range(CAMERAS)]
    writers = [GroundTruthWriter(io.StringIO(), f"cam{k}") for k in range(CAMERAS)]
    samples: list[dict[str, float]] = []
    crossing_ms: list[float] = []
    received = 0
    try:
        assert proc.stdout is not None
        proc.stdout.readline()  # listening
        for sock in (pub, ann):
            if not sock.poll(30000):
                raise RuntimeError("the events service did not subscribe")
            sock.recv()
        time.sleep(0.5)
        ps = psutil.Process(proc.pid)
        start = time.monotonic()
        end = start + minutes * 60
        next_sample = start
        i = 0
        while time.monotonic() < end:
            received += _drain(sub, start + i / FPS, crossing_ms)
            _publish(scenes, writers, pub, ann, i)
            i += 1
            if time.monotonic() >= next_sample:
                next_sample += SAMPLE_S
                samples.append(_sample(tmp, ps, time.monotonic() - start, received))
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
        final = json.loads(out.strip().splitlines()[-1])
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        ctx.destroy(linger=0)
    return _rows(samples, final, crossing_ms, minutes, i)


def _drain(sub: zmq.Socket[bytes], due: float, crossing_ms: list[float]) -> int:
    """Receive events until ``due`` (also when the feeder is behind its schedule: then what
    is queued); the latency of each crossing into ``crossing_ms``. How many were received."""
    received = 0
    while True:
        wait_ms = max(0, int((due - time.monotonic()) * 1000))
        if not sub.poll(wait_ms):
            if time.monotonic() >= due:
                return received
            continue
        msg = json.loads(sub.recv_multipart()[1])
        received += 1
        now = time.time_ns()
        new = msg["event"]["lines"][len((msg.get("before") or {}).get("lines", [])) :]
        if msg["kind"] == "object":
            crossing_ms += [(now - c["t_ns"]) / 1e6 for c in new]


def _publish(
    scenes: list[DemoScene],
    writers: list[GroundTruthWriter],
    pub: zmq.Socket[bytes],
    ann: zmq.Socket[bytes],
    i: int,
) -> None:
    """Frame ``i`` of every camera: its ground-truth tracks and its annotated JPEG."""
    for k, scene in enumerate(scenes):
        frame = scene.render_frame(i)
        t = time.time_ns()
        h = writers[k].message(frame, i).header
        msg = TracksMessage.build(f"cam{k}", i, t, W, H, "", h.objects, epoch="soak")
        pub.send_multipart(msg.to_parts())
        jpeg = encode_jpeg(frame.image, 80)
        ann.send_multipart(AnnotatedMessage(f"cam{k}", i, t, W, H, len(h.objects), jpeg).to_parts())


def _sample(tmp: Path, ps: psutil.Process, t_s: float, received: int) -> dict[str, float]:
    """The service's RSS, database and snapshot folder sizes at ``t_s`` into the soak."""
    db = tmp / "events.db"
    return {
        "t_s": t_s,
        "rss_mb": ps.memory_info().rss / 2**20,
        "db_mb": sum(_dir_bytes_one(p) for p in (db, db.with_name("events.db-wal"))) / 2**20,
        "snapshots_mb": _dir_bytes(tmp / "snapshots") / 2**20,
        "received": float(received),
    }


def _dir_bytes_one(p: Path) -> int:
    try:
        return p.stat().st_size
    except OSError:
        return 0


def _slope_per_h(samples: list[dict[str, float]], key: str) -> float:
    """Least-squares slope of the second half of the run (after warm-up), per hour."""
    half = samples[len(samples) // 2 :]
    if len(half) < 2:
        return float("nan")
    t = np.array([s["t_s"] for s in half])
    v = np.array([s[key] for s in half])
    return float(np.polyfit(t, v, 1)[0] * 3600)


class ServiceTotals(TypedDict, total=False):
    """What the events service prints on its last line when stopped (the part read here)."""

    published: int
    snapshots_written: int
    snapshot_errors: int
    latency_ms: dict[str, float]


def _rows(
    samples: list[dict[str, float]],
    final: ServiceTotals,
    crossing_ms: list[float],
    minutes: float,
    frames: int,
) -> list[BenchRow]:
    first, last = samples[0], samples[-1]
    peak = {k: max(s[k] for s in samples) for k in ("rss_mb", "db_mb", "snapshots_mb")}
    lat = final.get("latency_ms") or {}
    where = f"{CAMERAS} cameras x {frames} frames at {FPS:g} fps, {minutes:g} min, max_events 300, 4 MiB of snapshots"

    def pct(q: float) -> float:
        return float(np.percentile(crossing_ms, q)) if crossing_ms else float("nan")

    return [
        row(PART, "soak events published", final.get("published", 0), "", where),
        row(PART, "soak snapshots written", final.get("snapshots_written", 0), "", f"{final.get('snapshot_errors', 0)} refused"),
        row(PART, "soak RSS", last["rss_mb"], "MiB", f"first sample {first['rss_mb']:.1f}, peak {peak['rss_mb']:.1f}, slope of the second half {_slope_per_h(samples, 'rss_mb'):+.1f} MiB/h"),
        row(PART, "soak database", last["db_mb"], "MiB", f"with WAL; first {first['db_mb']:.2f}, peak {peak['db_mb']:.2f}, slope {_slope_per_h(samples, 'db_mb'):+.2f} MiB/h"),
        row(PART, "soak snapshot folder", last["snapshots_mb"], "MiB", f"peak {peak['snapshots_mb']:.2f} (budget 4, checked every 10 % of the budget written and every 60 s)"),
        row(PART, "soak event latency p50", lat.get("p50") or float("nan"), "ms", "tracks capture -> event published (the service's clock)"),
        row(PART, "soak event latency p99", lat.get("p99") or float("nan"), "ms", f"{lat.get('n', 0)} messages that raised events (last 10,000)"),
        row(PART, "soak crossing latency p50", pct(50), "ms", "crossing frame's capture -> message received by a subscriber"),
        row(PART, "soak crossing latency p99", pct(99), "ms", f"{len(crossing_ms)} crossings"),
        row(PART, "soak samples", json.dumps([{k: round(v, 2) for k, v in s.items()} for s in samples[:: max(1, len(samples) // 12)]]), "", "every 10 s (at most 12 shown)"),
    ]  # fmt: skip
