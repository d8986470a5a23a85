"""Shared fixtures: random loopback endpoints, a ZeroMQ context whose sockets close with linger 0,
and a helper to poll for a condition instead of sleeping for fixed times.

Under ``CI=true`` a skipped test fails: a missing component (Chromium, Ray, GStreamer, a broker)
must not let CI stay green while running less. Every run ends with the count of skipped tests."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from stream.bus import free_loopback_endpoint as tcp_endpoint
from stream.bus import free_loopback_port as free_port

__all__ = ["free_port", "tcp_endpoint"]  # loopback endpoints for the tests


def in_ci() -> bool:
    """Whether this run is CI's (``CI`` set to a true value, as ``.ci/run`` is run)."""
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Under CI a skip (not an expected failure) is reported as a failure with its reason."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if in_ci() and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"skipped under CI=true (a missing component fails in CI): {reason}"


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Iterator[None]:
    """Under CI a module skipped at collection (``pytest.importorskip`` or ``pytest.skip(...,
    allow_module_level=True)`` at the top of a file) fails the same way as a skipped test."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if in_ci() and report.skipped:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"skipped under CI=true (a missing component fails in CI): {reason}"


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """One closing line with the number of skipped tests (0 in CI, where a skip fails)."""
    skipped = len(terminalreporter.stats.get("skipped", []))
    terminalreporter.write_line(f"skipped tests: {skipped}")


def wait_for(
    cond: Callable[[], Any],
    timeout: float = 10.0,
    interval: float = 0.02,
    what: str = "condition",
    step: Callable[[], None] | None = None,
) -> Any:
    """Poll ``cond`` until it returns a truthy value; fail the test after ``timeout`` seconds.
    ``step``, if given, runs before each check (e.g. sends what ``cond`` waits to see)."""
    deadline = time.monotonic() + timeout
    while True:
        if step is not None:
            step()
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


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """``gpu`` tests need CUDA: without it they are deselected, not skipped (CI has no GPU and
    fails on skips). ``PROMPTCAM_GPU_DEVICE=cpu`` (``.ci/gpu-check --rehearse``) keeps them, to
    run on the CPU."""
    gpu = [item for item in items if item.get_closest_marker("gpu") is not None]
    if not gpu or os.environ.get("PROMPTCAM_GPU_DEVICE") == "cpu":
        return
    import torch

    if torch.cuda.is_available():
        return
    config.hook.pytest_deselected(items=gpu)
    items[:] = [item for item in items if item.get_closest_marker("gpu") is None]
