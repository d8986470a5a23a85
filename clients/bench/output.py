"""Bench part ``output``: what the web live view costs and how late its frames are (and, first,
the robot outputs' per-frame cost and the recorder's MB per minute: ``robot_outputs``).

- CPU per viewer at 720p and 1080p: the synthetic engine publishes annotated frames at 30 fps,
  ``promptcam web`` (a subprocess) serves 1 and then 3 viewers (aiortc receivers in this
  process); the web process's CPU time per second, divided by viewers, over a fixed window.
  One H.264 encoder per camera is shared by all viewers (aiortc only packetizes and encrypts
  per viewer), so the cost per viewer falls as viewers are added.
- End-to-end latency capture → browser-ready frame: ``t_capture_ns`` of the frame to the moment
  an aiortc receiver has the decoded frame (the frame's seq is read from a barcode in its pixels).

ICE runs on loopback only (both sides), so nothing leaves the host.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time
from pathlib import Path

import psutil

from clients.bench import BenchRow, robot_outputs, row
from clients.web.probe import Viewer
from clients.web.synthetic import SyntheticEngine
from stream.bus import free_loopback_endpoint
from stream.config import Config

PART = "output"
ROOT = Path(__file__).resolve().parent.parent.parent


def _start_web(overrides: dict[str, object]) -> tuple[subprocess.Popen[str], str]:
    argv = [sys.executable, "-m", "clients.cli", "web", "--port", "0", "--log-level", "WARNING"]
    for k, v in overrides.items():
        argv += ["--set", f"{k}={v}"]
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if "serving on" not in line:
        proc.kill()
        raise RuntimeError(f"promptcam web did not start: {line!r}")
    return proc, line.split()[-1].split("?")[0]


async def _measure(
    url: str, pid: int, viewers: int, seconds: float, engine: SyntheticEngine
) -> dict[str, float]:
    vs = [Viewer(url, t_capture_of=engine.t_capture_of) for _ in range(viewers)]
    proc = psutil.Process(pid)
    try:
        await asyncio.gather(*(v.connect() for v in vs))
        await asyncio.gather(*(v.receive(seconds=2.0) for v in vs))  # warm up
        for v in vs:
            v.result.latencies_ms.clear()
        c0, t0 = proc.cpu_times(), time.monotonic()
        start = time.monotonic()
        await asyncio.gather(*(v.receive(seconds=seconds) for v in vs))
        c1, t1 = proc.cpu_times(), time.monotonic()
    finally:
        await asyncio.gather(*(v.close() for v in vs))
    cpu = (c1.user + c1.system - c0.user - c0.system) / (t1 - t0)
    lat = sorted(x for v in vs for x in v.result.latencies_ms)
    return {
        "cpu_per_viewer": 100 * cpu / viewers,
        "cpu_total": 100 * cpu,
        "fps": min(v.result.fps(start) for v in vs),
        "p50": lat[len(lat) // 2] if lat else float("nan"),
        "p95": lat[int(0.95 * (len(lat) - 1))] if lat else float("nan"),
    }


def run(cfg: Config, args: argparse.Namespace) -> list[BenchRow]:
    seconds = 4.0 if args.quick else 10.0
    sizes = [(1280, 720, "720p"), (1920, 1080, "1080p")]
    rows: list[BenchRow] = robot_outputs.rows(args.quick)  # ROS 2, MCAP, DDS; recorder MB/min
    for w, h, name in sizes:
        overrides = {
            "bus.annotated": free_loopback_endpoint(),
            "bus.tracks": free_loopback_endpoint(),
            "bus.control": free_loopback_endpoint(),
            "web.video_fps": 30,
        }
        engine = SyntheticEngine(
            cfg.model_copy(update={"bus": cfg.bus.model_copy(update=overrides_bus(overrides))}),
            fps=30,
            width=w,
            height=h,
        )
        engine.start()
        proc, url = _start_web(overrides)
        try:
            for n in (1, 3):
                m = asyncio.run(_measure(url, proc.pid, n, seconds, engine))
                note = f"{n} viewer(s), 30 fps source, web process CPU / viewers; slowest viewer {m['fps']:.1f} fps"
                rows.append(
                    row(
                        PART,
                        f"web CPU per viewer {name}, {n} viewer(s)",
                        round(m["cpu_per_viewer"], 1),
                        "% of a core",
                        note,
                    )
                )
                if n == 1:
                    rows.append(
                        row(
                            PART,
                            f"latency capture→decoded frame {name} p50",
                            round(m["p50"], 1),
                            "ms",
                            "aiortc receiver on loopback",
                        )
                    )
                    rows.append(
                        row(
                            PART,
                            f"latency capture→decoded frame {name} p95",
                            round(m["p95"], 1),
                            "ms",
                            "aiortc receiver on loopback",
                        )
                    )
        finally:
            proc.terminate()
            proc.wait(10)
            engine.close()
    return rows


def overrides_bus(overrides: dict[str, object]) -> dict[str, object]:
    return {k.split(".", 1)[1]: v for k, v in overrides.items() if k.startswith("bus.")}
