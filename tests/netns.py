"""Run a command in a fresh network namespace that has only loopback.

``unshare -rn`` (user + network namespace, no root needed) gives a namespace whose only
interface is ``lo``, down. We bring it up and add 127.0.0.2/8: aioice skips 127.0.0.1 when it
gathers, so it offers 127.0.0.2, and Chromium started with ``--allow-loopback-in-peer-connection``
connects to it. Nothing in there can reach any other address of the machine, so WebRTC tests
cannot send to them whatever ICE decides.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence

SETUP = 'ip link set lo up && ip addr add 127.0.0.2/8 dev lo && exec "$@"'


def unavailable_reason() -> str | None:
    """None when loopback-only namespaces work here, else why not."""
    for tool in ("unshare", "ip"):
        if shutil.which(tool) is None:
            return f"'{tool}' is not installed"
    try:
        probe = subprocess.run(
            ["unshare", "-rn", "sh", "-c", SETUP, "sh", "ip", "-4", "addr", "show", "lo"],
            capture_output=True,
            text=True,
            timeout=20,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"unshare -rn failed: {e}"
    if probe.returncode != 0 or "127.0.0.2" not in probe.stdout:
        return f"unshare -rn failed: {probe.stderr.strip()[:200] or 'no 127.0.0.2 on lo'}"
    return None


def command(argv: Sequence[str]) -> list[str]:
    """``argv`` wrapped to run inside a new loopback-only namespace."""
    return ["unshare", "-rn", "sh", "-c", SETUP, "sh", *argv]


def isolated_command(argv: Sequence[str]) -> list[str]:
    """``argv`` in a new loopback-only network namespace *and* a new PID namespace (with its own
    /proc): everything it starts sees only its own processes (so ``ray stop`` stops only those)
    and is killed by the kernel when ``argv`` (the namespace's init) exits, whatever happened."""
    return ["unshare", "-rnpf", "--mount-proc", "sh", "-c", SETUP, "sh", *argv]
