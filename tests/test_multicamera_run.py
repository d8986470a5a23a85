"""``promptcam run --config site.yaml`` with cameras of three kinds (the demo scene, a video file,
a real GStreamer RTSP server) and one whose source is bad: one capture process per camera, one
engine for all. The bad camera reports its error and the others run; killing the RTSP server
leaves the other cameras tracking and the RTSP camera recovers when the server returns; cameras
are removed and added at runtime through control.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from clients.health import read_status_file
from stream import bus as zbus
from stream.wire import TracksMessage
from tests.conftest import free_port, tcp_endpoint, wait_for
from tests.test_capture import RtspServer, needs_gst
from tests.test_sources import write_video

REPO = Path(__file__).resolve().parent.parent


class TracksTap:
    """Every tracks message of every camera, with arrival times, collected in a thread."""

    def __init__(self, endpoint: str) -> None:
        self.ctx: zmq.Context[Any] = zmq.Context()
        self.sub = zbus.connect(self.ctx, zmq.SUB, endpoint, subscribe=[b"tracks."])
        self.seen: dict[str, list[tuple[float, TracksMessage]]] = defaultdict(list)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            parts = zbus.recv_multipart_timeout(self.sub, 50, copy=True)
            if parts is None:
                continue
            msg = TracksMessage.from_parts(parts)
            with self._lock:
                self.seen[msg.camera].append((time.monotonic(), msg))

    def count(self, camera: str, since: float = 0.0) -> int:
        with self._lock:
            return sum(1 for t, _ in self.seen[camera] if t >= since)

    def rate(self, camera: str, t0: float, t1: float) -> float:
        with self._lock:
            n = sum(1 for t, _ in self.seen[camera] if t0 <= t < t1)
        return n / (t1 - t0)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sub.close(0)
        self.ctx.destroy(linger=0)


@pytest.fixture
def rtsp(tmp_path: Path) -> Iterator[RtspServer]:
    server = RtspServer(free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()


@needs_gst
def test_run_three_cameras_one_engine(rtsp: RtspServer, tmp_path: Path) -> None:
    video = tmp_path / "clip.mp4"
    write_video(video, 40, fps=10, size=(160, 120))
    frames = {name: tcp_endpoint() for name in ("yard", "dock", "gate", "broken")}
    control, tracks = tcp_endpoint(), tcp_endpoint()
    status_file = tmp_path / "status.json"
    site = tmp_path / "site.yaml"
    site.write_text(
        f"""
bus: {{tracks: '{tracks}', annotated: '{tcp_endpoint()}', control: '{control}'}}
models: {{preset: tiny-random, device: cpu}}
engine: {{prompt: ''}}
web: {{port: {free_port()}}}
run: {{status_file: '{status_file}', status_every_s: 1, restart_initial_s: 0.2, restart_max_s: 1}}
source: {{width: 160, height: 120, stall_timeout_s: 2, open_timeout_s: 2,
          reconnect_initial_s: 0.2, reconnect_max_s: 1}}
cameras:
  yard: {{source: demo, fps: 8, frames: '{frames["yard"]}'}}
  dock: {{source: {{uri: '{video}', loop: true}}, frames: '{frames["dock"]}'}}
  gate: {{source: '{rtsp.url}', frames: '{frames["gate"]}'}}
  broken: {{source: '{tmp_path / "missing.mp4"}', frames: '{frames["broken"]}'}}
"""
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "clients.cli", "run", "--config", str(site), "--duration", "240"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    tap = TracksTap(tracks)
    lines: list[str] = []

    def read_lines() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:  # status lines
            lines.append(line)

    threading.Thread(target=read_lines, daemon=True).start()
    figures: dict[str, Any] = {}
    try:
        live = ("yard", "dock", "gate")
        wait_for(
            lambda: proc.poll() is None and all(tap.count(c) >= 3 for c in live),
            timeout=120,
            what="tracks of every working camera",
        )
        status = wait_for(
            lambda: (
                (s := read_status_file(status_file))
                and s["children"]["capture:broken"]["state"] == "failed"
                and set(s["cameras"]) >= set(live)
                and s.get("engine")  # the engine's stats, fresh (None while a poll is late)
                and s
            ),
            timeout=60,
            what="status file with every camera, the broken one failed, and engine stats",
        )
        assert "missing.mp4" in status["children"]["capture:broken"]["error"]
        assert set(status["children"]) == {
            "capture:yard",
            "capture:dock",
            "capture:gate",
            "capture:broken",
            "engine",
            "web",
        }
        assert all(status["children"][f"capture:{c}"]["ready"] for c in live)
        assert set(status["engine"]["cameras"]) == set(frames)
        line = wait_for(
            lambda: next((ln for ln in lines if "capture yard" in ln and "gate" in ln), None),
            30,
            what="a status line naming every camera, in config order",
        )
        assert "capture:broken failed" in line, line

        # The RTSP server dies: the other cameras go on; the RTSP camera recovers later.
        rtsp.stop()
        t_kill = time.monotonic()
        before = {c: tap.rate(c, t_kill - 5, t_kill) for c in ("yard", "dock")}
        wait_for(
            lambda: tap.count("yard", t_kill + 4) >= 3 and tap.count("dock", t_kill + 4) >= 3,
            timeout=60,
            what="the other cameras tracking while the RTSP server is down",
        )
        during = {c: tap.rate(c, t_kill + 1, time.monotonic()) for c in ("yard", "dock")}
        rtsp.start()
        t_back = time.monotonic()
        wait_for(lambda: tap.count("gate", t_back) >= 3, timeout=90, what="RTSP camera back")
        figures.update(
            fps_before_kill=before,
            fps_while_rtsp_down=during,
            rtsp_recovery_s=round(time.monotonic() - t_back, 1),
        )
        assert all(during[c] > 0 for c in during)

        # Runtime: remove a camera, add it back (same name): its IDs continue, never reused.
        def ctl(req: dict[str, Any]) -> dict[str, Any]:
            return zbus.request(control, req, 15_000)

        first = ctl({"cmd": "add_object", "camera": "yard", "box": [10, 10, 60, 60]})
        assert first["ok"], first
        assert ctl({"cmd": "remove_camera", "camera": "yard"})["ok"]
        assert [c["camera"] for c in ctl({"cmd": "cameras"})["cameras"]] == [
            "dock",
            "gate",
            "broken",
        ]
        r = ctl({"cmd": "add_camera", "camera": "yard", "frames": frames["yard"]})
        assert r["ok"], r
        t_add = time.monotonic()
        wait_for(lambda: tap.count("yard", t_add) >= 2, timeout=60, what="yard tracks again")
        second = ctl({"cmd": "add_object", "camera": "yard", "box": [10, 10, 60, 60]})
        assert second["ok"] and second["id"] > first["id"], (first, second)
        r = ctl({"cmd": "add_object", "box": [10, 10, 60, 60]})
        assert r["ok"] is False and "camera" in r["error"]
    finally:
        proc.terminate()
        try:
            _, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
        tap.close()
        Path("artifacts").mkdir(exist_ok=True)
        Path("artifacts/multicamera_run.json").write_text(json.dumps(figures, indent=2))
    assert proc.returncode == 0, err[-3000:]
