"""Recorder: a real ``promptcam record`` process against the synthetic engine's sockets."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import av
import psutil
import pytest

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


# --------------------------------------------------------------------------- a full disk

# In a user + mount namespace (no root needed), a tmpfs of a few MB holds the recording and a
# filler file that leaves little room; the test frees the room by deleting the filler through
# /proc/PID/root, i.e. on that very filesystem. After the recorder exits, the shell copies the
# recording out of the namespace (the tmpfs vanishes with it).
FULL_DISK_SCRIPT = (
    'mount -t tmpfs -o size=2m tmpfs "$1" && head -c 1900000 /dev/zero > "$1/filler" || exit 9; '
    'disk=$1; out=$2; shift 2; "$@"; rc=$?; cp -a "$disk/rec" "$out"; exit $rc'
)


def _tmpfs_namespace_unavailable(tmp_path: Path) -> str | None:
    if shutil.which("unshare") is None:
        return "'unshare' is not installed"
    probe = tmp_path / "probe"
    probe.mkdir()
    r = subprocess.run(
        ["unshare", "-rm", "sh", "-c", 'mount -t tmpfs -o size=1m tmpfs "$1"', "sh", str(probe)],
        capture_output=True,
        text=True,
        timeout=20,
    )
    return None if r.returncode == 0 else f"no tmpfs in a user namespace: {r.stderr.strip()[:200]}"


def _recorder_in(shell_pid: int) -> psutil.Process | None:
    """The recorder started by FULL_DISK_SCRIPT's shell: not its first child (that is ``mount``
    or ``head``, which a loaded host may still be running), the one that runs ``clients.cli``.
    Matched on the start of its argv: a child the shell has forked but not yet exec'd (for
    ``head`` or for the recorder) carries the shell's argv, which names ``clients.cli`` too, and
    it is gone a moment later."""
    for child in psutil.Process(shell_pid).children():
        try:
            if child.cmdline()[:3] == [sys.executable, "-m", "clients.cli"]:
                return child
        except psutil.NoSuchProcess:
            continue
    return None


def test_full_disk_keeps_files_playable_says_so_once_and_resumes(tmp_path: Path) -> None:
    reason = _tmpfs_namespace_unavailable(tmp_path)
    if reason:
        pytest.skip(reason)
    disk, out = tmp_path / "disk", tmp_path / "out"
    disk.mkdir()
    ov = {**_overrides(), "record.retry_s": 0.3, "record.min_free_mb": 0.5}
    cmd = _cmd(ov, disk / "rec")
    cmd[cmd.index("--log-level") + 1] = "WARNING"
    with SyntheticEngine(load_config(None, ov), fps=30, width=640, height=480):
        proc = subprocess.Popen(
            ["unshare", "-rm", "sh", "-c", FULL_DISK_SCRIPT, "sh", str(disk), str(out), *cmd],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            recorder = wait_for(lambda: _recorder_in(proc.pid), timeout=30, what="recorder")
            inside = Path(f"/proc/{recorder.pid}/root") / disk.relative_to("/")
            wait_for(
                lambda: shutil.disk_usage(inside).free < 64 * 1024,
                timeout=60,
                what="the disk to fill",
            )
            full = set((inside / "rec").glob("*.mp4"))
            (inside / "filler").unlink()  # space comes back
            wait_for(
                lambda: any(
                    p.stat().st_size > 50_000 for p in set((inside / "rec").glob("*.mp4")) - full
                ),
                timeout=30,
                what="a new recording after space came back",
            )
            recorder.send_signal(signal.SIGTERM)
            stdout, stderr = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:  # the recorder holds the pipes too: kill it before the shell
                for child in psutil.Process(proc.pid).children(recursive=True):
                    child.kill()
                proc.kill()
                proc.communicate()
    assert proc.returncode == 0, stderr[-2000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    stopped = [ln for ln in stderr.splitlines() if "recording stopped" in ln]
    resumed = [ln for ln in stderr.splitlines() if "recording resumes" in ln]
    assert len(stopped) == 1 and "No space left on device" in stopped[0], stderr[-2000:]
    assert len(resumed) == 1, stderr[-2000:]
    assert "write failures" in stdout and "dropped" in stdout, stdout
    mp4s = sorted(out.glob("*.mp4"))
    assert len(mp4s) >= 2, [p.name for p in mp4s]
    for mp4 in mp4s:  # the one the full disk cut short and the new one both play to the end
        frames, lines = _check_pair(mp4)
        assert frames >= 1 and lines >= 1, mp4.name


def test_frames_too_small_for_h264_are_refused_and_counted(tmp_path: Path) -> None:
    """A 1-pixel-wide first frame once crashed ``promptcam record`` (H.264 cannot hold it):
    frames under 2 pixels a side are refused and counted (said in the summary), the recording
    starts with the first frame it can hold, odd sizes are cropped to even."""
    import time

    import numpy as np
    import zmq

    from stream import bus as zbus
    from stream.wire import AnnotatedMessage, encode_jpeg

    ov = _overrides()
    ctx: zmq.Context[Any] = zmq.Context()
    pub = zbus.bind(ctx, zmq.PUB, ov["bus.annotated"])
    proc = subprocess.Popen(
        _cmd(ov, tmp_path), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )

    def frame(seq: int, h: int, w: int) -> list[Any]:
        img = np.full((h, w, 3), 120, np.uint8)
        jpeg = encode_jpeg(img)
        return AnnotatedMessage("cam0", seq, time.time_ns(), w, h, 0, jpeg).to_parts()

    try:
        seq = 0
        deadline = time.monotonic() + 30
        after_open = 30  # rounds sent once the recording has started (its first frame)
        while after_open > 0:
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "no recording started"
            for h, w in ((64, 1), (1, 64), (1, 1), (49, 65)):
                pub.send_multipart(frame(seq, h, w))
                seq += 1
            if any(tmp_path.glob("*.mp4")):
                after_open -= 1
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        pub.close(0)
        ctx.term()
    assert proc.returncode == 0, err[-3000:]
    assert "Traceback" not in err
    assert "too_small" in out and "rejected" in out, out
    assert err.count("under 2 pixels a side") <= 10  # the recorder's first ten rejections
    [mp4] = sorted(tmp_path.glob("*.mp4"))
    with av.open(str(mp4)) as c:
        sizes = [(f.width, f.height) for f in c.decode(video=0)]
    assert len(sizes) >= 20 and set(sizes) == {(64, 48)}
