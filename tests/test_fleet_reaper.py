"""The local fleet's reaper (clients/fleet/reaper.py) on plain processes: fast, no Ray."""

from __future__ import annotations

import subprocess
import sys
import threading

import psutil

from clients.fleet import reaper
from tests.conftest import wait_for

# A "fleet" that starts a "raylet", which starts an "agent" a moment later.
AGENT = "import time; time.sleep(120)"
RAYLET = (
    "import subprocess, sys, time; time.sleep(0.6); "
    f"subprocess.Popen([sys.executable, '-c', {AGENT!r}]); time.sleep(120)"
)
FLEET = f"import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', {RAYLET!r}]); time.sleep(120)"


def test_what_a_survivor_started_after_the_last_look_is_ended_too() -> None:
    fleet = subprocess.Popen([sys.executable, "-c", FLEET])
    root = psutil.Process(fleet.pid)
    ended: list[int] = []
    tree: list[psutil.Process] = []
    try:
        raylet = wait_for(lambda: root.children(), timeout=20, what="the raylet")[0]
        # The reaper's first look sees only the raylet; its next is long after the fleet died.
        worker = threading.Thread(target=lambda: ended.append(reaper.reap(fleet.pid, poll_s=2.5)))
        worker.start()
        agent = wait_for(lambda: raylet.children(), timeout=20, what="the agent")[0]
        tree = [raylet, agent]
        fleet.kill()
        fleet.wait()
        worker.join(timeout=30)
        assert ended == [2]  # the raylet and the agent it started after the reaper's last look
        _gone, alive = psutil.wait_procs(tree, timeout=5)  # init collects the orphans
        assert not alive, alive
    finally:
        fleet.kill()
        for p in tree:
            if p.is_running():
                p.kill()


def test_nothing_to_end_after_a_clean_exit() -> None:
    fleet = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.5)"])
    assert reaper.reap(fleet.pid, poll_s=0.05) == 0
    fleet.wait()
