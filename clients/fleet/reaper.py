"""The local fleet's reaper: when ``promptcam fleet`` dies, the Ray processes it started go too.

A local fleet (no ``--address``) starts a one-node Ray instance as its descendants (GCS server,
raylet, and the raylet's agents and workers). Ray stops them on a clean exit, but a SIGKILLed
fleet cannot: the agents (dashboard agent, runtime-env agent: 186 MB) were left running.
``start_reaper`` starts this module as a small separate process (its own session, so a
terminal's Ctrl-C does not reach it) that remembers every descendant of the fleet process,
refreshed every ``POLL_S``, and once the fleet process is gone kills each remembered process
that still runs, with whatever those started since the last look (the same pid *and* start
time: never a recycled pid), then exits. On a clean stop there is nothing left to kill.

``python -m clients.fleet.reaper PID``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import time

import psutil

log = logging.getLogger(__name__)

POLL_S = 0.1
GRACE_S = 2.0  # SIGTERM first, SIGKILL what is left after this


def _descendants(root: psutil.Process) -> dict[int, float]:
    """pid -> start time of ``root``'s descendants (not this process)."""
    out: dict[int, float] = {}
    with contextlib.suppress(psutil.Error):
        for p in root.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                if p.pid != os.getpid():
                    out[p.pid] = p.create_time()
    return out


def _still(pid: int, started: float) -> psutil.Process | None:
    try:
        p = psutil.Process(pid)
        if abs(p.create_time() - started) < 0.01 and p.status() != psutil.STATUS_ZOMBIE:
            return p
    except psutil.Error:
        pass
    return None


def _alive(seen: dict[int, float]) -> list[psutil.Process]:
    return [p for p in (_still(q, t) for q, t in seen.items()) if p is not None]


def reap(pid: int, poll_s: float = POLL_S, grace_s: float = GRACE_S) -> int:
    """Watch ``pid``; when it is gone, end its remembered descendants. Returns how many."""
    try:
        root = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return 0
    seen: dict[int, float] = {}
    while root.is_running() and root.status() != psutil.STATUS_ZOMBIE:
        seen.update(_descendants(root))
        time.sleep(poll_s)
    left = _alive(seen)
    # What the survivors started since the last look (a raylet's agents start late): found
    # now, before the survivors end and their children are handed to init.
    for p in left:
        seen.update(_descendants(p))
    left = _alive(seen)
    for p in left:
        with contextlib.suppress(psutil.Error):
            p.send_signal(signal.SIGTERM)
    _gone, alive = psutil.wait_procs(left, timeout=grace_s)
    for p in alive:
        with contextlib.suppress(psutil.Error):
            p.kill()
    psutil.wait_procs(alive, timeout=grace_s)
    if left:
        log.warning("fleet process %d is gone: ended %d Ray processes it left", pid, len(left))
    return len(left)


def start_reaper() -> subprocess.Popen[bytes]:
    """Start the reaper of this process (see the module docstring)."""
    return subprocess.Popen(
        [sys.executable, "-m", "clients.fleet.reaper", str(os.getpid())],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        start_new_session=True,
        close_fds=True,
    )


def main(argv: list[str]) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    with contextlib.suppress(ImportError):
        from setproctitle import setproctitle

        setproctitle(f"promptcam: fleet reaper {argv[0]}")
    reap(int(argv[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
