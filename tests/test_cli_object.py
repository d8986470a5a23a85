"""``promptcam object add|remove|reset`` against a control socket (the stand-in engine, real
ZeroMQ), as real CLI processes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from clients.web.synthetic import SyntheticEngine
from stream.config import load_config
from tests.conftest import tcp_endpoint


def _object(control: str, *args: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "clients.cli", "object", *args, "--set", f"bus.control={control}"]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60)


def test_object_verbs_send_the_control_commands() -> None:
    overrides = {k: tcp_endpoint() for k in ("bus.annotated", "bus.tracks", "bus.control")}
    control = overrides["bus.control"]
    with SyntheticEngine(load_config(None, overrides), fps=10) as engine:
        r = _object(control, "add", "10,20,60,80", "--label", "cup")
        assert r.returncode == 0, r.stderr
        new_id = json.loads(r.stdout)["id"]
        assert engine.requests[-1] == {
            "cmd": "add_object",
            "box": [10.0, 20.0, 60.0, 80.0],
            "label": "cup",
        }

        r = _object(control, "remove", str(new_id))
        assert r.returncode == 0 and json.loads(r.stdout) == {"ok": True}, r.stderr
        r = _object(control, "remove", str(new_id))
        assert r.returncode == 2 and r.stderr.count("\n") == 1
        assert f"engine refused remove_object: no tracked object with id {new_id}" in r.stderr

        r = _object(control, "reset")
        assert r.returncode == 0 and engine.requests[-1] == {"cmd": "reset"}
        # the common flags before the verb too (CONTRACT: every subcommand takes --config)
        argv = [sys.executable, "-m", "clients.cli", "object", "--set", f"bus.control={control}"]
        r = subprocess.run([*argv, "reset"], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0 and engine.requests[-1] == {"cmd": "reset"}, r.stderr

        # --camera is passed only when given; a one-camera engine may not know the field yet
        r = _object(control, "reset", "--camera", "cam0")
        if r.returncode == 0:
            assert engine.requests[-1] == {"cmd": "reset", "camera": "cam0"}
        else:
            assert r.returncode == 2 and "camera" in r.stderr, r.stderr

        for bad, words in [
            (["add", "10,20,5,80"], "X2>X1"),
            (["add", "10,20,60,80@3"], "no @FRAME"),
            (["add", "10,20,60,80", "--label", ""], "--label must be"),
        ]:
            r = _object(control, *bad)
            assert r.returncode == 2 and words in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_object_without_engine_is_a_one_line_error() -> None:
    r = _object(tcp_endpoint(), "reset", "--timeout", "0.5")
    assert r.returncode == 2 and "no reply" in r.stderr and r.stderr.count("\n") == 1


def test_durations_timeouts_and_counts_out_of_range_are_one_line_errors() -> None:
    """A negative timeout would wait forever, a count of 0 or a negative duration would exit 0
    having done nothing: each is refused before anything starts, one line, exit 2."""
    cases = [
        ["prompt", "cup.", "--timeout", "-5"],
        ["subscribe", "--count", "0"],
        ["subscribe", "--count", "-1"],
        ["subscribe", "--timeout", "nan"],
        ["record", "--duration", "-1"],
        ["dds", "--duration", "0"],
    ]
    for args in cases:
        argv = [sys.executable, "-m", "clients.cli", *args]
        r = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        assert r.returncode == 2 and r.stderr.count("\n") == 1, (args, r.stderr)
        assert args[-2] in r.stderr and "Traceback" not in r.stderr, (args, r.stderr)


def test_subscribe_without_camera_prints_every_cameras_tracks(tmp_path: Path) -> None:
    """CONTRACT: ``promptcam subscribe [--camera NAME]``. Without ``--camera`` it prints the
    tracks of whatever cameras the engine serves (here two, neither named ``cam0``, the config's
    default camera); with it, that camera's alone."""
    overrides = {k: tcp_endpoint() for k in ("bus.annotated", "bus.tracks", "bus.control")}
    cfg = load_config(None, overrides)
    base = [sys.executable, "-m", "clients.cli", "subscribe", "--set"]
    base += [f"bus.tracks={overrides['bus.tracks']}", "--timeout", "20"]
    with SyntheticEngine(cfg, fps=20, cameras=["front", "back"]):
        r = subprocess.run([*base, "--count", "40"], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        assert {json.loads(ln)["camera"] for ln in r.stdout.splitlines()} == {"front", "back"}
        argv = [*base, "--count", "5", "--camera", "back"]
        r = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        assert {json.loads(ln)["camera"] for ln in r.stdout.splitlines()} == {"back"}
        # a camera the config's mapping does not name (added at run time): that one alone too
        site = tmp_path / "site.yaml"
        site.write_text("cameras:\n  a: {source: demo}\n  b: {source: demo}\n")
        r = subprocess.run(
            [*argv, "--config", str(site)], capture_output=True, text=True, timeout=60
        )
        assert r.returncode == 0, r.stderr
        assert {json.loads(ln)["camera"] for ln in r.stdout.splitlines()} == {"back"}
