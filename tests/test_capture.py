"""The capture process: frames and status on real sockets (tcp and ipc), clean stop on SIGTERM,
and survival of a real GStreamer RTSP server that is killed, restarted and stalled."""

from __future__ import annotations

import functools
import http.server
import json
import os
import random
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pytest
import zmq

from stream.capture import Backoff, Capture
from stream.config import Config, load_config
from stream.receiver import LatestFrameReceiver
from stream.wire import FrameMessage, WireError
from tests import hostile
from tests.conftest import free_port, wait_for
from tests.test_sources import write_video

RTSP_SERVER = Path(__file__).with_name("rtsp_server.py")
SYSTEM_PYTHON = "/usr/bin/python3"


def _gst_available() -> bool:
    probe = "import gi; gi.require_version('Gst','1.0'); gi.require_version('GstRtspServer','1.0'); from gi.repository import GstRtspServer"
    try:
        return (
            subprocess.run([SYSTEM_PYTHON, "-c", probe], capture_output=True, timeout=30).returncode
            == 0
        )
    except (OSError, subprocess.TimeoutExpired):
        return False


needs_gst = pytest.mark.skipif(
    not _gst_available(), reason="GStreamer RTSP server bindings not installed"
)


class BusWatcher:
    """Collects ``frame.<camera>`` seqs and the latest ``capture.<camera>`` status in a thread."""

    def __init__(self, ctx: zmq.Context[Any], endpoint: str, camera: str = "cam0") -> None:
        self.seqs: list[int] = []
        self.shapes: set[tuple[int, ...]] = set()
        self.statuses: list[dict[str, Any]] = []
        self.errors: list[str] = []
        self._sock = ctx.socket(zmq.SUB)
        self._sock.linger = 0
        self._sock.rcvhwm = 1000
        for topic in (f"frame.{camera}", f"capture.{camera}"):
            self._sock.setsockopt(zmq.SUBSCRIBE, topic.encode())
        self._sock.connect(endpoint)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bus-watcher", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                if not self._sock.poll(50):
                    continue
                parts = self._sock.recv_multipart()
                if parts[0].startswith(b"capture."):
                    self.statuses.append(json.loads(parts[1]))
                    continue
                try:
                    msg = FrameMessage.from_parts(parts)
                except WireError as e:
                    self.errors.append(str(e))
                    continue
                self.shapes.add(msg.image().shape)
                self.seqs.append(msg.seq)
        finally:
            self._sock.close(0)

    @property
    def stats(self) -> dict[str, Any]:
        return self.statuses[-1]["stats"] if self.statuses else {}

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)


@pytest.fixture
def watchers(ctx: zmq.Context[Any]) -> Iterator[list[BusWatcher]]:
    made: list[BusWatcher] = []
    yield made
    for w in made:
        w.close()


def _cfg(endpoint: str, **source: Any) -> Config:
    overrides: dict[str, Any] = {"bus.frames": endpoint}
    overrides.update({f"source.{k}": v for k, v in source.items()})
    return load_config(None, overrides)


def _run_in_thread(
    cap: Capture, max_frames: int | None = None
) -> tuple[threading.Thread, list[Any]]:
    result: list[Any] = []

    def target() -> None:
        try:
            result.append(cap.run(max_frames))
        except Exception as e:  # recorded for the test to assert on
            result.append(e)

    t = threading.Thread(target=target, name="capture-under-test", daemon=True)
    t.start()
    return t, result


# --------------------------------------------------------------------------- in-process


def test_backoff_doubles_to_max_with_jitter() -> None:
    b = Backoff(0.5, 4.0, jitter=0.25, rng=random.Random(1))
    delays = [b.next() for _ in range(7)]
    bases = [0.5, 1.0, 2.0, 4.0, 4.0, 4.0, 4.0]
    for d, base in zip(delays, bases, strict=True):
        assert 0.75 * base <= d <= base
    assert len(set(delays)) == len(delays)  # jittered, not lockstep
    b.reset()
    assert b.next() <= 0.5


def test_demo_capture_publishes_consecutive_frames_and_status(
    ctx: zmq.Context[Any], endpoint: str, watchers: list[BusWatcher]
) -> None:
    cfg = _cfg(endpoint, uri="demo", width=160, height=120, fps=30)
    stop = threading.Event()
    cap = Capture(cfg, stop, ctx)
    thread, result = _run_in_thread(cap)
    try:
        w = BusWatcher(ctx, endpoint)
        watchers.append(w)
        wait_for(
            lambda: len(w.seqs) >= 20 and w.statuses, timeout=15, what="20 frames and a status"
        )
    finally:
        stop.set()
        thread.join(10)
    assert result == [0]
    seqs = w.seqs
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # no gap at 30 fps with a fast reader
    assert w.shapes == {(120, 160, 3)} and not w.errors
    status = w.statuses[-1]
    assert status["v"] == 1 and status["camera"] == "cam0" and isinstance(status["t_ns"], int)
    for key in ("frames", "fps", "reconnects", "stalls", "read_errors", "state", "source"):
        assert key in status["stats"]
    assert cap.stats.frames >= len(seqs) and cap.stats.reconnects == 0


def test_file_capture_ends_with_every_frame_jpeg(
    ctx: zmq.Context[Any], endpoint: str, tmp_path: Path
) -> None:
    video = tmp_path / "clip.mp4"
    write_video(video, 15, size=(96, 64))
    cfg = _cfg(endpoint, uri=str(video), realtime=True, encoding="jpeg")
    with LatestFrameReceiver(endpoint, "cam0", staleness_ms=None, ctx=ctx) as rx:
        cap = Capture(cfg, ctx=ctx)
        assert cap.run() == 0  # end of file: normal end
        assert cap.stats.frames == 15
        last = None
        while (msg := rx.get(timeout=1)) is not None:
            last = msg
        assert last is not None and last.encoding == "jpeg"
        assert last.image().shape == (64, 96, 3)
        assert last.seq == 14  # the newest frame, the last of the file


def test_file_capture_loops(ctx: zmq.Context[Any], endpoint: str, tmp_path: Path) -> None:
    video = tmp_path / "clip.mp4"
    write_video(video, 4)
    cap = Capture(_cfg(endpoint, uri=str(video), realtime=False, loop=True), ctx=ctx)
    assert cap.run(max_frames=10) == 0
    assert cap.stats.frames == 10


def test_camera_down_at_start_is_waited_for(ctx: zmq.Context[Any], endpoint: str) -> None:
    """A camera that does not answer when capture starts is retried like a drop (state
    ``waiting``, attempts counted), not a fatal error (tests/test_faults.py sees it come up)."""
    stop = threading.Event()
    port = free_port()
    cfg = _cfg(
        endpoint,
        uri=f"rtsp://admin:pw123456@127.0.0.1:{port}/x",
        open_timeout_s=2,
        reconnect_initial_s=0.1,
        reconnect_max_s=0.3,
    )
    cap = Capture(cfg, stop, ctx)
    thread, result = _run_in_thread(cap)
    try:
        wait_for(
            lambda: cap.stats.state == "waiting" and cap.stats.reconnect_attempts >= 2,
            timeout=20,
            what="capture waiting and retrying",
        )
        assert thread.is_alive() and result == [] and cap.stats.frames == 0
        assert "Connection refused" in cap.stats.last_error
        assert "pw123456" not in cap.stats.last_error
    finally:
        stop.set()
        thread.join(10)
    assert result == [0]


@pytest.mark.parametrize("uri", ["rtsp://", "/no/such/video.mp4", "5"])
def test_what_cannot_improve_stays_fatal_at_start(
    ctx: zmq.Context[Any], endpoint: str, uri: str
) -> None:
    from stream.errors import SourceConnectionError, SourceError

    cap = Capture(_cfg(endpoint, uri=uri), ctx=ctx)
    with pytest.raises(SourceError) as e:
        cap.run()
    assert not isinstance(e.value, SourceConnectionError)
    assert cap.stats.reconnect_attempts == 0


def test_frames_over_the_payload_limit_are_counted_not_sent(
    ctx: zmq.Context[Any], endpoint: str, watchers: list[BusWatcher]
) -> None:
    """A source whose frames are larger than bus.max_payload_mb (a camera bigger than the
    config said): each is refused at capture, counted and its seq skipped, never sent (a
    receiver's ZeroMQ socket would drop the connection on it)."""
    stop = threading.Event()
    cfg = load_config(
        None,
        {"bus.frames": endpoint, "bus.max_payload_mb": 0.5, "source.fps": 30},
    )
    cap = Capture(cfg, stop, ctx)
    w = BusWatcher(ctx, endpoint)
    watchers.append(w)
    thread, result = _run_in_thread(cap)
    try:
        wait_for(lambda: w.stats.get("oversized", 0) >= 5, timeout=20, what="oversized counted")
        assert w.seqs == [] and w.stats["frames"] == 0 and w.stats["state"] == "streaming"
        assert "over bus.max_payload_mb=0.5" in w.stats["last_error"]
    finally:
        stop.set()
        thread.join(10)
    assert result == [0]


def test_stream_declaring_huge_frames_is_refused_counted_and_retried(
    ctx: zmq.Context[Any], endpoint: str, tmp_path: Path
) -> None:
    """A network stream whose frames are 8192x8192 (a decompression bomb served over HTTP):
    refused before decoding, counted in ``too_large``, retried with backoff like a camera that
    is not up; capture keeps running and nothing is published or decoded at that size."""
    hostile.write_bomb_video(tmp_path / "bomb.mp4")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, name="http-bomb", daemon=True).start()
    stop = threading.Event()
    cfg = _cfg(
        endpoint,
        uri=f"http://127.0.0.1:{server.server_address[1]}/bomb.mp4",
        reconnect_initial_s=0.1,
        reconnect_max_s=0.3,
    )
    cap = Capture(cfg, stop, ctx)
    rss = psutil.Process().memory_info().rss
    thread, result = _run_in_thread(cap)
    try:
        wait_for(lambda: cap.stats.too_large >= 3, timeout=30, what="refusals counted")
        assert thread.is_alive() and result == []
        assert cap.stats.frames == 0 and cap.stats.oversized == 0
        assert cap.stats.state == "waiting" and cap.stats.reconnect_attempts >= 2
        assert "8192x8192" in cap.stats.last_error and "max_pixels" in cap.stats.last_error
        assert psutil.Process().memory_info().rss - rss < 150 * 2**20  # a frame: 192 MiB
    finally:
        stop.set()
        thread.join(10)
        server.shutdown()
        server.server_close()
    assert result == [0]


def test_8k_demo_frames_reach_a_receiver(ctx: zmq.Context[Any], endpoint: str) -> None:
    """source.width=7680 source.height=4320 (the largest the config allows) fits the default
    payload limit: the frames go through capture and the receiver's ZeroMQ limits intact."""
    stop = threading.Event()
    cfg = load_config(
        None,
        {"bus.frames": endpoint, "source.width": 7680, "source.height": 4320, "source.fps": 2},
    )
    cfg.check_frame_size()
    cap = Capture(cfg, stop, ctx)
    with LatestFrameReceiver(
        endpoint, "cam0", None, int(cfg.bus.max_payload_mb * 2**20), cfg.bus, ctx
    ) as rx:
        thread, result = _run_in_thread(cap)
        try:
            msg = wait_for(lambda: rx.get(timeout=0.2), timeout=30, what="an 8K frame")
            assert (msg.width, msg.height) == (7680, 4320)
            assert msg.image().shape == (4320, 7680, 3)
            assert rx.stats.rejected_total == 0 and rx.stats.connection_drops == 0
        finally:
            stop.set()
            thread.join(10)
    assert result == [0]


def test_frame_size_over_the_limit_is_refused_at_config_time() -> None:
    from stream.config import ConfigError

    cfg = load_config(None, {"source.width": 7680, "source.height": 4320, "bus.max_payload_mb": 64})
    with pytest.raises(ConfigError, match=r"7680x4320 makes 94\.9 MiB frames.*max_payload_mb=95"):
        cfg.check_frame_size()
    r = subprocess.run(
        [sys.executable, "-m", "clients.cli", "capture", "--source", "demo", "--set", "source.width=7680",
         "--set", "source.height=4320", "--set", "bus.max_payload_mb=64",
         "--set", f"bus.frames=tcp://127.0.0.1:{free_port()}"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "bus.max_payload_mb=95 or more" in r.stderr


# --------------------------------------------------------------------------- subprocess


def _capture_cmd(source: str, endpoint: str, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "clients.cli",
        "capture",
        "--source",
        source,
        "--set",
        f"bus.frames={endpoint}",
        *extra,
    ]


def _spawn(cmd: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as f:
        return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=f)


def _kill(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        try:
            os.kill(proc.pid, signal.SIGCONT)
        except ProcessLookupError:
            return
        proc.kill()
    proc.wait(10)


def test_cli_max_frames() -> None:
    proc = subprocess.run(
        _capture_cmd("demo", f"tcp://127.0.0.1:{free_port()}", "--max-frames", "5"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "stopped after 5 frames" in proc.stderr


def test_ipc_capture_and_clean_sigterm(
    ctx: zmq.Context[Any], ipc_endpoint: str, tmp_path: Path, watchers: list[BusWatcher]
) -> None:
    log = tmp_path / "capture.log"
    proc = _spawn(_capture_cmd("demo", ipc_endpoint, "--fps", "30"), log)
    try:
        w = BusWatcher(ctx, ipc_endpoint)
        watchers.append(w)
        wait_for(lambda: len(w.seqs) >= 10, timeout=20, what="frames over ipc")
        assert w.shapes == {(480, 640, 3)}
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0, log.read_text()
        assert time.monotonic() - t0 < 5
        assert "Traceback" not in log.read_text()
        assert w.seqs == sorted(w.seqs)
    finally:
        _kill(proc)


# --------------------------------------------------------------------------- RTSP


class RtspServer:
    """The GStreamer test server (tests/rtsp_server.py) as a child process of this test."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.url = f"rtsp://127.0.0.1:{port}/test"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while True:  # the port can stay busy for a moment after a kill
            proc = subprocess.Popen(
                [SYSTEM_PYTHON, str(RTSP_SERVER), str(self.port), "15"],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            self.proc = proc
            assert proc.stdout is not None
            ready, _, _ = select.select(
                [proc.stdout], [], [], max(0.1, deadline - time.monotonic())
            )
            line = proc.stdout.readline() if ready else b""
            if line.startswith(b"READY"):
                return
            _kill(proc)
            if time.monotonic() > deadline:
                err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
                pytest.fail(f"RTSP server did not start: {line!r} {err}")
            time.sleep(0.2)

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, sig)
        if sig == signal.SIGKILL:
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None:
            _kill(self.proc)


@pytest.fixture
def rtsp_server() -> Iterator[RtspServer]:
    server = RtspServer(free_port())
    try:
        yield server
    finally:
        server.stop()


def _rtsp_capture(
    server: RtspServer, endpoint: str, tmp_path: Path, stall_s: float
) -> subprocess.Popen[bytes]:
    extra = [
        "--set", f"source.stall_timeout_s={stall_s}",
        "--set", "source.open_timeout_s=2",
        "--set", "source.read_timeout_s=10",
        "--set", "source.reconnect_initial_s=0.2",
        "--set", "source.reconnect_max_s=1",
    ]  # fmt: skip
    # Credentials in the URL (the server ignores them) must never reach logs or status.
    url = server.url.replace("rtsp://", "rtsp://viewer:pw-s3cret@")
    return _spawn(_capture_cmd(url, endpoint, *extra), tmp_path / "capture.log")


@needs_gst
def test_rtsp_server_killed_and_restarted(
    ctx: zmq.Context[Any], rtsp_server: RtspServer, tmp_path: Path, watchers: list[BusWatcher]
) -> None:
    rtsp_server.start()
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    proc = _rtsp_capture(rtsp_server, endpoint, tmp_path, stall_s=3)
    try:
        w = BusWatcher(ctx, endpoint)
        watchers.append(w)
        wait_for(lambda: len(w.seqs) >= 10, timeout=30, what="frames from RTSP")
        assert w.shapes == {(120, 160, 3)}
        rtsp_server.signal(signal.SIGKILL)
        wait_for(
            lambda: w.stats.get("state") == "reconnecting",
            timeout=15,
            what="capture to notice the dead server",
        )
        before = w.seqs[-1]
        rtsp_server.start()
        wait_for(
            lambda: len([s for s in w.seqs if s > before]) >= 10,
            timeout=30,
            what="frames after the restart",
        )
        assert proc.poll() is None, "capture exited instead of reconnecting"
        assert w.seqs == sorted(set(w.seqs)), "seq must keep increasing across reconnects"
        wait_for(lambda: w.stats.get("reconnects", 0) >= 1, timeout=5, what="reconnect counted")
        log = (tmp_path / "capture.log").read_text()
        assert "reconnected to" in log and "Traceback" not in log
        assert "pw-s3cret" not in log and "pw-s3cret" not in json.dumps(w.statuses)
    finally:
        _kill(proc)


@needs_gst
def test_rtsp_stall_detected_and_recovered(
    ctx: zmq.Context[Any], rtsp_server: RtspServer, tmp_path: Path, watchers: list[BusWatcher]
) -> None:
    rtsp_server.start()
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    proc = _rtsp_capture(rtsp_server, endpoint, tmp_path, stall_s=1.5)
    try:
        w = BusWatcher(ctx, endpoint)
        watchers.append(w)
        wait_for(lambda: len(w.seqs) >= 10, timeout=30, what="frames from RTSP")
        rtsp_server.signal(signal.SIGSTOP)
        wait_for(lambda: w.stats.get("stalls", 0) >= 1, timeout=15, what="stall in capture status")
        before = w.seqs[-1]
        rtsp_server.signal(signal.SIGCONT)
        wait_for(
            lambda: len([s for s in w.seqs if s > before]) >= 10,
            timeout=30,
            what="frames after the stall",
        )
        wait_for(lambda: w.stats.get("state") == "streaming", timeout=5, what="streaming state")
        assert proc.poll() is None
        assert w.seqs == sorted(set(w.seqs))
        log = (tmp_path / "capture.log").read_text()
        assert "stall: no frame for" in log and "Traceback" not in log
    finally:
        _kill(proc)


def test_status_reports_frames_to_a_plain_subscriber(ctx: zmq.Context[Any], endpoint: str) -> None:
    """A subscriber of only ``capture.`` sees stats; frames are not sent to it."""
    stop = threading.Event()
    cap = Capture(_cfg(endpoint, uri="demo", width=64, height=48, fps=30), stop, ctx)
    sub = ctx.socket(zmq.SUB)
    sub.linger = 0
    sub.setsockopt(zmq.SUBSCRIBE, b"capture.cam0")
    sub.connect(endpoint)
    thread, result = _run_in_thread(cap)
    try:
        got: list[dict[str, Any]] = []

        def frames_reported() -> bool:
            if sub.poll(100):
                parts = sub.recv_multipart()
                assert len(parts) == 2 and parts[0] == b"capture.cam0"
                got.append(json.loads(parts[1]))
            return bool(got) and got[-1]["stats"]["frames"] > 0

        wait_for(frames_reported, timeout=10, what="status with frames")
    finally:
        stop.set()
        thread.join(10)
        sub.close(0)
    assert result == [0]
    assert np.isfinite(got[-1]["stats"]["fps"])


def test_transport_bench_delivers_every_frame_intact(ipc_endpoint: str) -> None:
    from clients.bench.transport import freshness, throughput

    bus = load_config(None).bus
    r = throughput(ipc_endpoint, 12, bus)
    assert r["received"] == 12 and r["fps"] > 0
    r = throughput(ipc_endpoint + "-shm", 12, bus, payload="shm")
    assert r["received"] + r["overrun"] == 12 and r["received"] > 1 and r["fps"] > 0
    f = freshness(ipc_endpoint + "-fresh", 0.5, bus, work_s=0.05)
    assert f["frames"] >= 3 and f["max_lag"] >= 0
    f = freshness(ipc_endpoint + "-fresh-shm", 0.5, bus, work_s=0.05, shm=True)
    assert f["frames"] >= 3 and f["overrun"] == 0
