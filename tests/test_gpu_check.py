"""The GPU check (``.ci/gpu-check``, ``clients/bench/gpu_check.py``) rehearsed on the CPU.

The rehearsal runs every step of the real check (real child processes, the real engine
process, ``pytest -m gpu`` on the CPU) at tiny sizes, so that a lent GPU's minutes go to
measuring, not to finding a broken step. A step that fails or hangs is recorded and the next
one runs."""

from __future__ import annotations

import json
import math
import os
import subprocess
from pathlib import Path

import psutil
import pytest

from clients.bench import gpu_check

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_rehearsal_gives_every_step_with_figures(tmp_path: Path) -> None:
    out = tmp_path / "out"
    env = {**os.environ, "OUT": str(out)}
    env.pop(gpu_check.FAULT, None)
    proc = subprocess.run(
        ["bash", ".ci/gpu-check", "--rehearse"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
        check=False,
    )
    report_file = out / "gpu_check.json"
    assert report_file.exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(report_file.read_text())
    log_tail = (out / "gpu_check.log").read_text()[-4000:]
    steps = {s["name"]: s for s in report["steps"]}
    assert list(steps) == [s.name for s in gpu_check.STEPS]
    for name, step in steps.items():
        assert step["status"] == "ok", f"{name}: {step['status']} {step['error']}\n{log_tail}"
        assert step["figures"], f"{name} has no figures"
        assert all(math.isfinite(v) for v in step["figures"].values()), step["figures"]
    assert proc.returncode == 0 and report["ok"] and report["device"] == "cpu"
    figs = {name: step["figures"] for name, step in steps.items()}
    assert figs["env"]["bf16 matmul 256^3 on cpu [TFLOP/s]"] > 0
    assert figs["pytest_gpu"]["tests passed"] >= 5 and figs["pytest_gpu"]["tests failed"] == 0
    for name in ("engine_hiera_t", "engine_hiera_s", "engine_hiera_b+", "engine_hiera_l"):
        keys = " ".join(figs[name])
        assert "1 obj speed-up [x]" in keys and "4 obj memory attention rate" in keys, keys
    assert any("compiled" in k for k in figs["engine_compiled"])
    assert "slowdown while re-grounding [%]" in figs["loop"]
    assert (
        figs["latency"]["capture -> tracks p99 [ms]"]
        >= figs["latency"]["capture -> tracks p50 [ms]"]
        > 0
    )
    assert figs["cameras"]["4 cameras, one engine: aggregate [frames/s]"] > 0
    print(f"rehearsal: {report['seconds']} s")


def test_failed_and_hung_steps_are_recorded_and_the_check_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A step that raises is ``failed``, one that hangs is killed at its time limit
    (``timeout``), and a step left without budget is ``not run``; the report says not ok."""
    monkeypatch.setenv(gpu_check.FAULT, "env=raise,loop=hang")
    before = set(psutil.Process().children(recursive=True))  # other tests' leftovers, if any
    report = gpu_check.run_check(True, tmp_path, budget_s=14.0, only=["env", "loop", "latency"])
    got = [(s["name"], s["status"]) for s in report["steps"]]
    assert got == [("env", "failed"), ("loop", "timeout"), ("latency", "not run")], report
    assert "planted fault in step env" in report["steps"][0]["error"]
    assert report["steps"][1]["seconds"] < 14.0 + 5
    assert not report["ok"]
    assert json.loads((tmp_path / "gpu_check.json").read_text())["steps"] == report["steps"]
    left = [p for p in psutil.Process().children(recursive=True) if p not in before]
    assert left == [], left  # the hung step is gone
