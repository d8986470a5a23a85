"""Recorder: a real ``promptcam record`` process against the synthetic engine's sockets."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import av

from clients.web.synthetic import SyntheticEngine
from stream.config import load_config
from stream.wire import TracksMessage
from tests.conftest import tcp_endpoint, wait_for

ROOT = Path(__file__).resolve().parent.parent


def _overrides() -> dict[str, Any]:
    return {
        "bus.annotated": tcp_endpoint(),
        "bus.tracks": tcp_endpoint(),
        "bus.control": tcp_endpoint(),
    }


def _cmd(overrides: dict[str, Any], out: Path, *extra: str) -> list[str]:
    args = [
        sys.executable,
        "-m",
        "clients.cli",
        "record",
        "--dir",
        str(out),
        "--log-level",
        "WARNING",
        *extra,
    ]
    for k, v in overrides.items():
        args += ["--set", f"{k}={v}"]
    return args


def _check_pair(mp4: Path) -> tuple[int, int]:
    with av.open(str(mp4)) as c:
        assert c.streams.video[0].codec_context.name in ("h264", "mpeg4")
        frames = sum(1 for _ in c.decode(video=0))
    lines = mp4.with_suffix(".jsonl").read_text().splitlines()
    for line in lines:
        TracksMessage.from_json(line)
        assert json.loads(line)["camera"] == "cam0"
    return frames, len(lines)


def test_sigterm_closes_files_properly(tmp_path: Path) -> None:
    ov = _overrides()
    with SyntheticEngine(load_config(None, ov), fps=20) as engine:
        proc = subprocess.Popen(_cmd(ov, tmp_path), cwd=ROOT, stdout=subprocess.PIPE, text=True)
        try:
            wait_for(
                lambda: (
                    (files := list(tmp_path.glob("*.jsonl"))) and files[0].stat().st_size > 2000
                ),
                timeout=30,
                what="recording",
            )
            start = engine.published
            wait_for(lambda: engine.published >= start + 10, timeout=30, what="more frames")
            proc.send_signal(signal.SIGTERM)
            out, _ = proc.communicate(timeout=20)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == 0 and "frames" in out
    mp4s = sorted(tmp_path.glob("*.mp4"))
    assert len(mp4s) == 1
    frames, lines = _check_pair(mp4s[0])
    assert frames >= 5 and lines >= 5


def test_rotates_by_time_and_stops_after_duration(tmp_path: Path) -> None:
    ov = _overrides()
    with SyntheticEngine(load_config(None, ov), fps=20):
        proc = subprocess.run(
            _cmd({**ov, "record.rotate_s": 0.5}, tmp_path, "--duration", "2.2"),
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert proc.returncode == 0, proc.stderr
    mp4s = sorted(tmp_path.glob("*.mp4"))
    assert len(mp4s) >= 3, [p.name for p in mp4s]
    for mp4 in mp4s:
        frames, lines = _check_pair(mp4)
        assert frames >= 1 and lines >= 1


def test_rotates_by_size(tmp_path: Path) -> None:
    ov = _overrides()
    with SyntheticEngine(load_config(None, ov), fps=20):
        proc = subprocess.run(
            _cmd(
                {**ov, "record.rotate_mb": 0.01, "record.rotate_s": "null"},
                tmp_path,
                "--duration",
                "2.0",
            ),
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert proc.returncode == 0, proc.stderr
    assert len(list(tmp_path.glob("*.mp4"))) >= 2
