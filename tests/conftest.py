"""Shared fixtures: random loopback endpoints, a ZeroMQ context whose sockets close with linger 0,
and a helper to poll for a condition instead of sleeping for fixed times."""

from __future__ import annotations

import random
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq


def _ephemeral_range() -> tuple[int, int]:
    try:
        lo, hi = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(lo), int(hi)
    except (OSError, ValueError):
        return 32768, 60999


_EPHEMERAL = _ephemeral_range()
_handed_out: set[int] = set()
_rng = random.Random()


def free_port() -> int:
    """A loopback TCP port that binds now, never handed out before in this session, and outside
    the kernel's ephemeral range. A port the kernel picks for ``bind(0)`` comes from that range,
    where every outgoing connection (ZeroMQ's connects and reconnects among them) also takes its
    local port, so it can be taken between being picked and being bound by the test's server."""
    lo, hi = _EPHEMERAL
    outside = [(a, b) for a, b in ((3024, lo - 1), (hi + 1, 65535)) if b - a >= 1000]
    if not outside:  # the ephemeral range covers (nearly) everything: let the kernel pick
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            return int(s.getsockname()[1])
    first, last = max(outside, key=lambda r: r[1] - r[0])
    for _ in range(200):
        port = _rng.randint(first, last)
        if port in _handed_out:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise RuntimeError(f"no free loopback port outside the ephemeral range {lo}-{hi}")


def tcp_endpoint() -> str:
    return f"tcp://127.0.0.1:{free_port()}"


def wait_for(
    cond: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02, what: str = "condition"
) -> Any:
    """Poll ``cond`` until it returns a truthy value; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


@pytest.fixture
def ctx() -> Iterator[zmq.Context[Any]]:
    c: zmq.Context[Any] = zmq.Context()
    yield c
    c.destroy(linger=0)


@pytest.fixture
def endpoint() -> str:
    return tcp_endpoint()


@pytest.fixture
def ipc_endpoint(tmp_path: Path) -> str:
    return f"ipc:///tmp/promptcam-test-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def bus_overrides() -> dict[str, str]:
    """Config overrides that put every socket on a fresh random loopback port."""
    return {
        "bus.frames": tcp_endpoint(),
        "bus.tracks": tcp_endpoint(),
        "bus.annotated": tcp_endpoint(),
        "bus.control": tcp_endpoint(),
    }
