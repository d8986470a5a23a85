"""The camera banner decided from what the web observed (pure function, no processes)."""

from __future__ import annotations

from typing import Any

import pytest

from clients.web.camera_state import STARTUP_GRACE_S, camera_status


def _status(**kw: Any) -> tuple[str, str, int | None]:
    args: dict[str, Any] = {
        "capture": {"state": "streaming", "reconnect_attempts": 0},
        "capture_age_s": 0.5,
        "engine_age_s": 0.5,
        "engine_ever_answered": True,
        "launcher": None,
        "frame_age_s": 0.1,
        "uptime_s": 30.0,
    }
    s = camera_status("cam0", **(args | kw))
    return s.state, s.banner, s.attempt


def _launcher(state: str, restarts: int) -> dict[str, Any]:
    return {"children": {"engine": {"state": state, "restarts": restarts}}}


@pytest.mark.parametrize(
    ("kw", "expected"),
    [
        ({}, ("live", "live", None)),
        (
            {"capture": {"state": "reconnecting", "reconnect_attempts": 7}, "attempt_base": 4},
            ("reconnecting", "reconnecting (attempt 3)", 3),
        ),
        (
            {"capture": {"state": "reconnecting", "reconnect_attempts": 4}, "attempt_base": 4},
            ("reconnecting", "reconnecting (attempt 1)", 1),
        ),
        (
            {"capture": {"state": "waiting", "reconnect_attempts": 2}},
            ("waiting", "waiting for camera", 2),
        ),
        ({"capture": {"state": "stopped"}}, ("stopped", "camera stopped", None)),
        ({"capture": {"state": "starting"}}, ("starting", "starting", None)),
        # capture status gone stale (capture down): frames decide
        ({"capture_age_s": 10.0, "frame_age_s": 8.0}, ("waiting", "waiting for camera", None)),
        ({"capture": None, "capture_age_s": None}, ("live", "live", None)),
        # the engine
        ({"engine_age_s": 9.0}, ("engine_restarting", "engine restarting", None)),
        (
            {"engine_age_s": None, "engine_ever_answered": False},
            ("starting", "starting", None),  # a normal start: models loading
        ),
        (
            {"engine_age_s": None, "engine_ever_answered": False, "uptime_s": STARTUP_GRACE_S + 1},
            ("engine_restarting", "engine restarting", None),
        ),
        ({"launcher": _launcher("backoff", 1)}, ("engine_restarting", "engine restarting", None)),
        (
            {"launcher": _launcher("starting", 2), "engine_age_s": None},
            ("engine_restarting", "engine restarting", None),
        ),
        ({"launcher": _launcher("running", 0)}, ("live", "live", None)),
    ],
)
def test_banner(kw: dict[str, Any], expected: tuple[str, str, int | None]) -> None:
    assert _status(**kw) == expected


def test_banner_of_a_camera_whose_capture_failed() -> None:
    """The launcher marked the camera's capture failed for good (a source that cannot work):
    its banner says so with the error; the other cameras are not affected."""
    children = {
        "engine": {"state": "running", "restarts": 0},
        "capture:cam0": {"state": "failed", "error": "cannot open /x/missing.mp4"},
        "capture:cam1": {"state": "running"},
    }
    doc = {"camera": "cam0", "children": children}
    args: dict[str, Any] = {
        "capture": None,
        "capture_age_s": None,
        "engine_age_s": 0.5,
        "engine_ever_answered": True,
        "launcher": doc,
        "frame_age_s": None,
        "uptime_s": 30.0,
    }
    failed = camera_status("cam0", **args)
    assert (failed.state, failed.banner) == ("stopped", "camera failed")
    assert failed.last_error == "cannot open /x/missing.mp4"
    live = camera_status("cam1", **(args | {"frame_age_s": 0.2}))
    assert (live.state, live.last_error) == ("live", None)
    # a one-camera run names its capture child "capture"
    one = {"camera": "cam0", "children": {"capture": {"state": "failed", "error": "bad URL"}}}
    assert camera_status("cam0", **(args | {"launcher": one})).banner == "camera failed"


def test_launcher_status_line_shows_the_camera_reconnecting() -> None:
    import time

    from clients.health import ChildInfo, Observed, status_line

    child = {"capture": ChildInfo("capture", 1, "running", True, 0, None, 5.0)}

    def line(stats: dict[str, Any]) -> str:
        return status_line(Observed(capture=stats, capture_at=time.monotonic()), child, 5.0)

    base = {"fps": 0.0, "reconnects": 2, "stalls": 1, "reconnect_attempts": 3}
    assert line(base | {"state": "reconnecting"}).startswith(
        "capture reconnecting (attempt 3), 0.0 fps, reconnects 2"
    )
    # a camera waited for (down at start, issue 13): its attempts, no fps yet
    assert line(base | {"state": "waiting"}).startswith("capture waiting for camera (attempt 3)")
    assert line(base | {"state": "streaming", "fps": 15.0}).startswith("capture 15.0 fps")


def test_banner_of_a_launcher_document_with_malformed_children() -> None:
    """A status document whose ``children`` is not an object (a foreign or damaged file)
    says nothing about the engine: the banner comes from what is observed, no crash (before,
    ``(doc.get("children") or {}).get`` raised AttributeError on it)."""
    for children in ("x", ["engine"], 3):
        assert _status(launcher={"children": children}) == ("live", "live", None)
