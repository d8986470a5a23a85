"""A real ``promptcam web`` process against the stand-in engine (real ZeroMQ sockets), and
plain HTTP helpers, shared by the web tests."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from clients.web.synthetic import SyntheticEngine
from stream.config import load_config
from tests.conftest import tcp_endpoint

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Stack:
    url: str
    engine: SyntheticEngine
    proc: subprocess.Popen[str]
    token: str | None


def start_web(
    overrides: dict[str, Any], extra: list[str] | None = None, stderr: Path | None = None
) -> tuple[subprocess.Popen[str], str]:
    """``promptcam web`` on a free port; (process, URL). ``stderr``: its log goes there."""
    args = [sys.executable, "-m", "clients.cli", "web", "--port", "0", "--log-level", "WARNING"]
    for k, v in overrides.items():
        args += ["--set", f"{k}={v}"]
    err = stderr.open("w") if stderr is not None else None
    proc = subprocess.Popen(
        args + (extra or []), stdout=subprocess.PIPE, stderr=err, text=True, cwd=ROOT
    )
    if err is not None:
        err.close()
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if "serving on" not in line:
        proc.kill()
        pytest.fail(f"promptcam web did not start: {line!r}")
    return proc, line.split()[-1].split("?")[0]


def stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@contextlib.contextmanager
def make_stack(
    token: str | None = None,
    extra_overrides: dict[str, Any] | None = None,
    stderr: Path | None = None,
    engine_kw: dict[str, Any] | None = None,
) -> Iterator[Stack]:
    overrides: dict[str, Any] = {
        "bus.annotated": tcp_endpoint(),
        "bus.tracks": tcp_endpoint(),
        "bus.control": tcp_endpoint(),
        "models.preset": "tiny-random",
        **(extra_overrides or {}),
    }
    if token:
        overrides["web.token"] = token
    engine = SyntheticEngine(load_config(None, overrides), **{"fps": 20, **(engine_kw or {})})
    engine.start()
    proc, url = start_web(overrides, stderr=stderr)
    try:
        yield Stack(url, engine, proc, token)
    finally:
        stop(proc)
        engine.close()


def http(
    method: str,
    url: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 10,
) -> tuple[int, Any]:
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read()
            status = resp.status
            ctype = resp.headers.get("Content-Type", "")
    except urllib.error.HTTPError as e:
        raw, status, ctype = e.read(), e.code, e.headers.get("Content-Type", "")
    return status, (json.loads(raw) if ctype.startswith("application/json") else raw)


def post_json(url: str, obj: Any, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    return http(
        "POST",
        url,
        json.dumps(obj).encode(),
        {"Content-Type": "application/json", **(headers or {})},
    )


def healthy(url: str) -> bool:
    status, body = http("GET", url + "healthz")
    return status == 200 and body["ok"] is True
