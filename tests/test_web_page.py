"""What the live and offline pages are told, checked without a browser (tests/test_browser_page.py
checks the pages themselves): what a camera's view waits for (the camera or the engine, also in
the video's placeholder), the camera's prompt as the engine has it now, and what a job row needs
to tell jobs apart."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from clients.web.camera_list import CameraInfo
from clients.web.camera_state import CameraMonitor, SiteView, camera_status
from clients.web.jobs import Job, JobManager, VideoInfo
from clients.web.probe import Viewer
from clients.web.video import placeholder
from stream.config import load_config
from stream.wire import TracksMessage
from tests.conftest import wait_for
from tests.web_stack import http, make_stack

# --------------------------------------------------------------------------- waiting for what


@pytest.mark.parametrize(
    ("observed", "state", "awaited"),
    [
        # the engine answers, the camera sends nothing (no capture status, no frame)
        ({}, "waiting", "waiting for the camera: no picture from it yet"),
        ({"capture": {"state": "waiting"}}, "waiting", "waiting for the camera"),
        ({"capture": {"state": "reconnecting", "reconnect_attempts": 3}}, "reconnecting", "camera"),
        ({"capture": {"state": "starting"}}, "starting", "waiting for the camera"),
        ({"frame_age_s": 9.0}, "waiting", "waiting for the camera: no picture from it for 9 s"),
        # the camera streams, the engine has not sent a picture yet
        ({"capture": {"state": "streaming"}}, "live", "waiting for the engine"),
        ({"engine_age_s": None}, "starting", "waiting for the engine: it is starting"),
        ({"engine_age_s": None, "engine_ever_answered": True}, "engine_restarting", "engine"),
        ({"capture": {"state": "streaming"}, "frame_age_s": 0.1}, "live", None),
        ({"frame_age_s": 0.1}, "live", None),
    ],
)
def test_what_a_view_waits_for(observed: dict[str, Any], state: str, awaited: str | None) -> None:
    kw: dict[str, Any] = {
        "capture": None,
        "capture_age_s": 0.5,
        "engine_age_s": 0.5,
        "engine_ever_answered": False,
        "launcher": None,
        "frame_age_s": None,
        "uptime_s": 10.0,
        **observed,
    }
    s = camera_status("cam0", **kw)
    assert s.state == state
    if awaited is None:
        assert s.waiting_for is None
    else:
        assert s.waiting_for is not None and awaited in s.waiting_for, s
        other = "engine" if "camera" in awaited else "camera"
        assert other not in s.waiting_for, s


def _grey(frame: Any) -> np.ndarray:
    return np.asarray(frame.to_ndarray(format="gray"), np.float32)


def test_a_camera_without_frames_says_it_waits_for_the_camera() -> None:
    """Real web process, stand-in engine answering, the camera sending nothing: the state says
    the camera is awaited, and so does the video's placeholder (not "waiting for the engine")."""
    with make_stack(engine_kw={"silent": ["cam0"]}) as st:
        state = wait_for(
            lambda: (s := http("GET", st.url + "api/state")[1])["state"] == "waiting" and s,
            timeout=20,
            what="a waiting state",
        )
        assert state["waiting_for"] == "waiting for the camera: no picture from it yet"

        async def one_frame() -> Any:
            v = Viewer(st.url)
            try:
                await v.connect()
                await v.receive(seconds=15, frames=2)
                return v.last_frame
            finally:
                await v.close()

        frame = asyncio.run(one_frame())
        assert frame is not None, "the placeholder is sent before the first frame"
        got = _grey(frame)
        h, w = got.shape

        def diff(text: str) -> float:
            want = placeholder(w, h, text).mean(axis=2)
            return float(np.abs(got - want).mean())

        said, engine = diff(state["waiting_for"]), diff("waiting for the engine...")
        assert said < 0.5 * engine, (said, engine)

        st.engine.silent.clear()  # frames come: nothing awaited
        wait_for(
            lambda: http("GET", st.url + "api/state")[1]["waiting_for"] is None,
            timeout=20,
            what="the state without a wait",
        )


# --------------------------------------------------------------------------- the prompt


class _Site:
    def __init__(self, view: SiteView) -> None:
        self.view = view

    def snapshot(self) -> SiteView:
        return self.view

    def cameras(self) -> list[CameraInfo]:
        return []


class _Feed:
    def __init__(self, msg: Any, age: float) -> None:
        self.msg, self.age = msg, age

    def latest(self) -> tuple[Any, int, float]:
        return self.msg, 1, self.age


def _monitor(stats_prompt: str, stats_age: float, tracks_prompt: str, tracks_age: float) -> str:
    now = time.monotonic()
    view = SiteView(engine={"prompt": stats_prompt, "cameras": {}}, engine_at=now - stats_age)
    msg = TracksMessage.build("cam0", 1, time.time_ns(), 320, 240, tracks_prompt, [])
    mon = CameraMonitor(_Site(view), "cam0", _Feed(None, float("inf")), _Feed(msg, tracks_age))  # type: ignore[arg-type]
    prompt = mon.status().prompt
    assert prompt is not None
    return prompt


def test_the_prompt_is_the_newest_observed() -> None:
    """The engine's stats are polled once a second, tracks come every frame: whichever was
    observed last gives the prompt (a prompt changed elsewhere shows in the next frame, and a
    stats answer from before the change does not bring the old one back)."""
    assert _monitor("old.", 0.9, "new.", 0.05) == "new."
    assert _monitor("new.", 0.1, "old.", 4.0) == "new."  # no frame since (camera down)


# --------------------------------------------------------------------------- offline jobs


def test_a_job_says_its_prompt_and_when_it_started(tmp_path: Path) -> None:
    async def run() -> dict[str, Any]:
        mgr = JobManager(load_config(None), root=tmp_path)
        job = Job(
            "j1", tmp_path, tmp_path / "v.mp4", "", "box", [], VideoInfo(64, 48, 4, 10.0, "h264")
        )
        job.name = "s.mp4"
        mgr.add_draft(job)
        before = time.time()
        mgr.start(job, "ball.", "box", [])
        d = job.as_dict()
        mgr.cancel(job)
        assert mgr._runner is not None
        mgr._runner.cancel()
        return {**d, "before": before}

    d = asyncio.run(run())
    assert d["prompt"] == "ball." and d["state"] == "queued" and d["total"] == 4
    assert d["before"] <= d["submitted"] <= time.time() and d["started"] is None
