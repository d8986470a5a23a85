"""A local fleet (``promptcam fleet`` without ``--address``: a one-node Ray instance it starts)
killed with SIGKILL leaves no Ray process behind (clients/fleet/reaper.py). Slow: Ray starts."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from tests.conftest import free_port, tcp_endpoint, wait_for

ROOT = Path(__file__).resolve().parent.parent
RAY_PARTS = ("gcs_server", "raylet")  # the head's processes, started by the fleet process


def _names(pids: dict[int, float]) -> list[str]:
    out = []
    for pid, started in pids.items():
        try:
            p = psutil.Process(pid)
            if abs(p.create_time() - started) < 0.01 and p.status() != psutil.STATUS_ZOMBIE:
                out.append(f"{pid} {' '.join(p.cmdline())[:120]}")
        except psutil.Error:
            continue
    return out


@pytest.mark.slow
def test_sigkilled_local_fleet_leaves_no_ray_process(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    site = tmp_path / "site.yaml"
    site.write_text(
        f"""
source: {{width: 160, height: 120}}
bus: {{tracks: '{tcp_endpoint()}', annotated: '{tcp_endpoint()}', control: '{tcp_endpoint()}'}}
models: {{preset: tiny-random, device: cpu}}
engine: {{prompt: '', max_objects: 4}}
web: {{port: {free_port()}}}
cameras:
  demo: {{source: demo, fps: 2}}
fleet: {{engines: 1, engine_cpus: 0.5, capture_cpus: 0.1, local_cpus: 2}}
"""
    )
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "PYTHONPATH": str(ROOT)}
    log = (tmp_path / "fleet.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "clients.cli", "fleet", "--config", str(site), "--duration", "300"],
        cwd=ROOT,
        stdout=log,
        stderr=log,
        env=env,
        start_new_session=True,
    )
    seen: dict[int, float] = {}
    try:
        fleet = psutil.Process(proc.pid)

        def ray_started(agents: bool = False) -> bool:
            for p in fleet.children(recursive=True):
                try:
                    seen[p.pid] = p.create_time()
                except psutil.Error:
                    continue
            running = " ".join(_names(seen))
            # the raylet's agents (runtime env, dashboard) are what was left behind
            return all(part in running for part in RAY_PARTS) and (not agents or "agent" in running)

        wait_for(ray_started, timeout=240, interval=0.2, what="Ray processes of the fleet")
        # The agents start a little later (slower under load): give them a while; the head's own
        # processes are enough to check that nothing is left behind.
        with contextlib.suppress(pytest.fail.Exception):
            wait_for(lambda: ray_started(agents=True), timeout=30, interval=0.2, what="agents")
        ray_started()  # one more snapshot of the fleet's descendants
        assert proc.poll() is None, (tmp_path / "fleet.log").read_text()[-2000:]
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        try:
            wait_for(lambda: not _names(seen), timeout=30, interval=0.2, what="no Ray process left")
        except pytest.fail.Exception:
            pytest.fail(f"Ray processes of the SIGKILLed fleet still run: {_names(seen)}")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pid, started in seen.items():  # whatever failed, leave nothing behind
            try:
                p = psutil.Process(pid)
                if abs(p.create_time() - started) < 0.01:
                    p.kill()
            except psutil.Error:
                pass
        log.close()
