"""Limits that refuse instead of crashing: decompression bombs (a few hundred kilobytes that
declare 8192x8192 frames) are refused before decoding by ``source.max_pixels``, in
``open_source``, ``promptcam track``, ``promptcam capture`` and the web upload's probe."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml
import zmq

from stream import bus as zbus
from stream.config import ConfigError, SourceConfig, load_config
from stream.sources import SourceTooLargeError, open_source
from tests import hostile
from tests.conftest import free_port, tcp_endpoint, wait_for

REPO = Path(__file__).resolve().parent.parent
# Run a command as this wrapper's only child and print the child's peak RSS (KiB) last on
# stderr; the child's address space is capped so that a regression fails, not the machine.
_PEAK_RSS = """
import resource, subprocess, sys
def cap():
    resource.setrlimit(resource.RLIMIT_AS, (6 << 30, 6 << 30))
r = subprocess.run(sys.argv[1:], preexec_fn=cap, stdout=subprocess.DEVNULL)
print("PEAK_RSS_KB", resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr)
sys.exit(r.returncode)
"""


@pytest.fixture(scope="module")
def bomb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = hostile.write_bomb_video(tmp_path_factory.mktemp("bomb") / "bomb.mp4")
    assert path.stat().st_size < 400_000  # small on disk, 2 x 192 MiB decoded
    yield path


def _cfg(**kw: object) -> SourceConfig:
    return SourceConfig.model_validate({"realtime": False, **kw})


def _rss_mb() -> float:
    return float(psutil.Process().memory_info().rss) / 2**20


def test_bomb_video_is_refused_before_decoding(bomb: Path) -> None:
    before = _rss_mb()
    with pytest.raises(SourceTooLargeError) as e:
        open_source(str(bomb), _cfg())
    msg = str(e.value)
    assert "8192x8192" in msg and "source.max_pixels=8847360" in msg and "\n" not in msg
    assert not e.value.live
    assert _rss_mb() - before < 150, "a 8192x8192 frame was decoded"  # one BGR frame: 192 MiB
    # the limit is the config's: raised to 8K it still refuses 8192x8192; a 64x48 clip passes
    with pytest.raises(SourceTooLargeError, match="max_pixels=33177600"):
        open_source(str(bomb), _cfg(max_pixels=7680 * 4320))


def test_image_directory_refuses_images_that_declare_huge_sizes(tmp_path: Path) -> None:
    for side in (12000, 20000):  # 20000^2 is over Pillow's own limit: refused all the same
        d = tmp_path / f"dir{side}"
        d.mkdir()
        (d / "a.png").write_bytes(hostile.patched_png(side, side))
        src = open_source(str(d), _cfg())
        with pytest.raises(SourceTooLargeError, match="refused before decoding") as e:
            src.read()
        assert str(d / "a.png") in str(e.value) and "\n" not in str(e.value)
        src.close()
    ok = tmp_path / "ok"
    ok.mkdir()
    (ok / "a.png").write_bytes(hostile.patched_png(64, 64))
    assert open_source(str(ok), _cfg()).read().shape == (64, 64, 3)


@pytest.mark.parametrize("value", ["4095", "33177601", "-1"])
def test_max_pixels_is_bounded(value: str) -> None:
    with pytest.raises(ConfigError, match=r"source\.max_pixels") as e:
        load_config(None, {"source.max_pixels": int(value)})
    assert "\n" not in str(e.value)


def _cli(*args: str) -> tuple[int, str, int]:
    """``promptcam ARGS`` under the peak-RSS wrapper: exit code, stderr without the RSS line,
    and the peak RSS in MiB."""
    proc = subprocess.run(
        [sys.executable, "-c", _PEAK_RSS, sys.executable, "-m", "clients.cli", *args],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    lines = proc.stderr.strip().splitlines()
    assert lines and lines[-1].startswith("PEAK_RSS_KB"), proc.stderr
    return proc.returncode, "\n".join(lines[:-1]), int(lines[-1].split()[1]) // 1024


def test_track_refuses_a_bomb_with_one_line_and_bounded_memory(bomb: Path, tmp_path: Path) -> None:
    """The 15 KB file that once took ``promptcam track`` to 7.6 GB: one line, exit 2, before
    any model loads, peak RSS of the whole process (Python, torch imported) under 1 GiB."""
    code, err, peak_mb = _cli(
        "track",
        str(bomb),
        "--prompt",
        "ball",
        "--tracks",
        str(tmp_path / "t.jsonl"),
        "--models",
        "tiny-random",
        "--device",
        "cpu",
    )
    assert code == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith("promptcam track: error: ") and "8192x8192" in err
    assert "source.max_pixels" in err
    assert peak_mb < 1024, f"peak RSS {peak_mb} MiB"


def test_capture_refuses_a_bomb_file_with_one_line(bomb: Path) -> None:
    code, err, peak_mb = _cli(
        "capture", "--source", str(bomb), "--set", f"bus.frames=tcp://127.0.0.1:{free_port()}"
    )
    assert code == 2 and len(err.splitlines()) == 1, err
    assert err.startswith("promptcam capture: error: ") and "8192x8192" in err
    assert peak_mb < 1024, f"peak RSS {peak_mb} MiB"


def test_web_upload_probe_refuses_a_bomb(bomb: Path, tmp_path: Path) -> None:
    """The web upload's probe (which decoded the first frame in the server) refuses it: the
    upload gets a 400 with this line, no job is queued."""
    from clients.web.jobs import UploadError, probe_video
    from tests.test_sources import write_video

    before = _rss_mb()
    with pytest.raises(UploadError, match=r"8192x8192.*refused before decoding"):
        probe_video(bomb)
    assert _rss_mb() - before < 150
    with pytest.raises(UploadError, match="max_pixels=4096"):
        probe_video(bomb, 4096)
    write_video(tmp_path / "ok.mp4", 2)
    assert probe_video(tmp_path / "ok.mp4").width == 64


@pytest.mark.parametrize("key", ["bus.control", "bus.frames"])
def test_run_refuses_an_ipc_path_over_the_socket_limit_at_load(key: str) -> None:
    """An ipc path of 108 bytes once killed the launcher's status thread (``run`` went on
    without status); now the config refuses it: one line, exit 2, before anything starts."""
    path = "ipc:///tmp/" + "p" * 103
    argv = ["run", "--models", "tiny-random", "--device", "cpu", "--set", f"{key}={path}"]
    proc = subprocess.run(
        [sys.executable, "-m", "clients.cli", *argv],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("promptcam run: error: "), proc.stderr
    assert f"'{key}': ipc path of 108 bytes is longer than the 107" in lines[0]


# --------------------------------------------------------------------------- engine


@dataclass
class Engine:
    proc: subprocess.Popen[bytes]
    log: Path
    overrides: dict[str, str]

    def ask(self, request: dict[str, Any]) -> dict[str, Any]:
        return zbus.request(self.overrides["bus.control"], request, 20_000)

    def stats(self) -> dict[str, Any]:
        reply = self.ask({"cmd": "stats"})
        assert reply["ok"], reply
        stats: dict[str, Any] = reply["stats"]
        return stats


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    """One engine (tiny-random, CPU) that grounds every frame and serves at most 2 cameras."""
    ov = {
        "bus.frames": tcp_endpoint(),
        "bus.tracks": tcp_endpoint(),
        "bus.annotated": tcp_endpoint(),
        "bus.control": tcp_endpoint(),
        "engine.max_cameras": "2",
        "engine.reground_every_frames": "1",
        "bus.staleness_ms": "10000",
        "models.device": "cpu",
    }
    log = tmp_path_factory.mktemp("engine") / "engine.log"
    with log.open("wb") as out:
        sets = [x for k, v in ov.items() for x in ("--set", f"{k}={v}")]
        proc = subprocess.Popen(
            [sys.executable, "-m", "clients.cli", "engine", "--models", "tiny-random", *sets],
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    eng = Engine(proc, log, ov)
    try:

        def up() -> bool:
            assert proc.poll() is None, log.read_text()
            try:
                return bool(eng.ask({"cmd": "stats"})["ok"])
            except zbus.BusError:
                return False

        wait_for(up, timeout=120, interval=0.5, what="engine answering")
        yield eng
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_tiny_frames_are_tracked_not_grounded_with_one_log_line(engine: Engine) -> None:
    """Frames of 1xN, Nx1, 1x1, 2x2, 3xN, 4x4 into a real engine that grounds every frame: no
    traceback (there was one of 45 lines per detection pass), the skipped groundings counted,
    one log line for the camera, tracks published for every frame."""
    ctx: zmq.Context[Any] = zmq.Context()
    pub = zbus.bind(ctx, zmq.PUB, engine.overrides["bus.frames"])
    tracks = zbus.connect(ctx, zmq.SUB, engine.overrides["bus.tracks"], subscribe=[b"tracks.cam0"])
    widths: set[int] = set()
    try:
        seq = 0
        deadline = time.monotonic() + 60
        while len(widths) < len({w for _, w in hostile.TINY_SIZES}):
            assert time.monotonic() < deadline, f"tracks of tiny frames: {widths}"
            for parts in hostile.tiny_frames(seq):
                pub.send_multipart(parts)
                seq += 1
                if tracks.poll(300):
                    widths.add(json.loads(tracks.recv_multipart()[1])["width"])
        assert engine.proc.poll() is None
        text = engine.log.read_text()
        assert "Traceback" not in text, text[-3000:]
        assert text.count("under 8 pixels a side") == 1, text[-3000:]
        stats = engine.stats()
        assert stats["grounding_skipped_small"] >= 3, stats
        assert stats["grounding_errors"] == 0, stats
    finally:
        pub.close(0)
        tracks.close(0)
        ctx.term()


def test_add_camera_beyond_max_cameras_and_bad_endpoints_get_error_replies(
    engine: Engine,
) -> None:
    """add_camera of a camera beyond engine.max_cameras, or from an endpoint ZeroMQ cannot use
    (port 99999 once connected to 34463), gets {"ok": false, "error": ...}; the engine serves on."""
    for frames in hostile.BAD_ENDPOINTS:
        reply = engine.ask(json.loads(hostile.add_camera(frames)))
        assert reply["ok"] is False and "frames" in reply["error"], (frames, reply)
    reply = engine.ask({"cmd": "add_camera", "camera": "cam1", "frames": tcp_endpoint()})
    assert reply["ok"], reply
    reply = engine.ask({"cmd": "add_camera", "camera": "cam2", "frames": tcp_endpoint()})
    assert reply == {
        "ok": False,
        "error": "this engine serves 2 cameras, its engine.max_cameras=2: remove one first",
    }
    cams = engine.ask({"cmd": "cameras"})["cameras"]
    assert sorted(c["camera"] for c in cams) == ["cam0", "cam1"]
    assert engine.ask({"cmd": "remove_camera", "camera": "cam1"})["ok"]
    assert engine.proc.poll() is None and "Traceback" not in engine.log.read_text()


@pytest.mark.parametrize("n", [257, 345])
def test_more_cameras_than_an_engine_serves_is_a_config_error(n: int, tmp_path: Path) -> None:
    """345 cameras once ended the engine with a traceback at start (ZeroMQ's 1023 sockets);
    over engine.max_cameras (at most 256) is now one line, exit 2, before any model loads."""
    cams = {f"c{i}": {"frames": f"ipc://{tmp_path}/f{i}"} for i in range(n)}
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump({"cameras": cams}))
    argv = ["engine", "--config", str(tmp_path / "cfg.yaml"), "--models", "tiny-random"]
    proc = subprocess.run(
        [sys.executable, "-m", "clients.cli", *argv],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr[-2000:]
    assert f"cameras: {n} configured, over engine.max_cameras=256" in lines[0]
    with pytest.raises(ConfigError, match=r"over engine\.max_cameras=4"):
        load_config(None, {"cameras": cams, "engine.max_cameras": 4})
    with pytest.raises(ConfigError, match=r"engine\.max_cameras"):
        load_config(None, {"engine.max_cameras": 257})


def test_track_of_one_pixel_frames_is_one_line(tmp_path: Path) -> None:
    """1x1 frames once gave ``promptcam track`` a traceback (the detector's processor, then the
    MP4 writer); a job refuses frames under 16 px a side in one line (an image directory here;
    tests/test_cli_errors.py has the videos). The live engine tracks such frames without
    grounding them (the hostile-input suite)."""
    import cv2
    import numpy as np

    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(3):
        cv2.imwrite(str(frames / f"{i:03d}.png"), np.full((1, 1, 3), 40 * i, np.uint8))
    out, tracks = tmp_path / "o.mp4", tmp_path / "t.jsonl"
    argv = ["track", str(frames), "--prompt", "ball", "--out", str(out), "--tracks", str(tracks)]
    proc = subprocess.run(
        [sys.executable, "-m", "clients.cli", *argv, "--models", "tiny-random", "--device", "cpu"],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=REPO,
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "1x1" in lines[0], proc.stderr[-3000:]
    assert not tracks.exists() and not out.exists()


def test_web_upload_of_a_bomb_is_refused_before_a_job(bomb: Path) -> None:
    """The 67 KB upload that once took an offline job to 7.9 GB: a real ``promptcam web``
    answers 400 with the line, queues no job and stays healthy."""
    from tests.test_web import multipart
    from tests.web_stack import healthy, http, make_stack

    with make_stack() as st:
        body, ctype = multipart({"prompt": "ball."}, "bomb.mp4", bomb.read_bytes())
        status, resp = http("POST", st.url + "api/jobs", body, {"Content-Type": ctype}, 60)
        assert status == 400, resp
        assert "8192x8192" in resp["error"] and "source.max_pixels" in resp["error"], resp
        status, jobs = http("GET", st.url + "api/jobs")
        assert status == 200 and jobs["jobs"] == [], jobs
        assert healthy(st.url)
