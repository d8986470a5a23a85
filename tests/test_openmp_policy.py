"""Every promptcam package sets the OpenMP wait policy before torch loads, and leaves a policy
the user chose alone (stream/__init__.py says why)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

PROBE = "import {pkg}, os, torch; torch.ones(64, 64) @ torch.ones(64, 64); print(os.environ['OMP_WAIT_POLICY'])"


@pytest.mark.parametrize("pkg", ["stream", "engine", "clients"])
@pytest.mark.parametrize("given", [None, "ACTIVE"])
def test_wait_policy_is_passive_unless_set(pkg: str, given: str | None) -> None:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if given is not None:
        env["OMP_WAIT_POLICY"] = given
    out = subprocess.run(
        [sys.executable, "-c", PROBE.format(pkg=pkg)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert out.stdout.strip() == (given or "PASSIVE")
