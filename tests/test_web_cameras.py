"""The web server with several cameras: a real ``promptcam web`` process against the stand-in
engine serving three cameras (real ZeroMQ sockets) and real aiortc viewers, one peer connection
per camera. The camera list follows the engine's ``cameras`` reply at runtime; every per-camera
route needs ``?camera=`` when there are several; each camera has its own encoder (running only
while someone watches it), its own viewer cap and its own ``/metrics`` series.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from clients.web.camera_list import CameraInfo, parse_cameras_reply
from clients.web.probe import Viewer
from clients.web.synthetic import SyntheticEngine
from stream import bus as zbus
from stream.config import Config, load_config
from tests.conftest import tcp_endpoint, wait_for
from tests.test_web_limits import _offer_without_candidates
from tests.web_stack import http, post_json, start_web, stop

PROMPTS = {"yard": "ball. box.", "dock": "person.", "gate": "car. dog. cup."}


@dataclass
class Site:
    cfg: Config
    path: Path
    engine: SyntheticEngine


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    path = tmp_path / "site.yaml"
    cameras = "\n".join(
        f"  {name}: {{source: demo, prompt: '{prompt}', frames: '{tcp_endpoint()}'}}"
        for name, prompt in PROMPTS.items()
    )
    path.write_text(
        f"""
bus: {{annotated: '{tcp_endpoint()}', tracks: '{tcp_endpoint()}', control: '{tcp_endpoint()}'}}
models: {{preset: tiny-random}}
web: {{max_viewers: 1, connect_timeout_s: 3}}
cameras:
{cameras}
"""
    )
    cfg = load_config(path)
    with SyntheticEngine(cfg, fps=15) as engine:
        yield Site(cfg, path, engine)


def _names(url: str) -> list[str]:
    return [c["camera"] for c in http("GET", url + "api/cameras")[1]["cameras"]]


def _labels(url: str, camera: str) -> list[str]:
    body = http("GET", url + f"api/objects?camera={camera}")[1]
    return [o["label"] for o in body["objects"]]


def _metrics(url: str) -> str:
    status, body = http("GET", url + "metrics")
    assert status == 200
    text: str = body.decode()
    return text


def _series(text: str, name: str, camera: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(f'{name}{{camera="{camera}"}} '):
            return float(line.split()[1])
    return None


def test_every_camera_is_served_and_the_list_follows_the_engine(site: Site) -> None:
    proc, url = start_web({}, extra=["--config", str(site.path)])
    try:
        wait_for(lambda: _names(url) == list(PROMPTS), what="the three cameras, in order")
        for camera, prompt in PROMPTS.items():
            want = [p.strip() for p in prompt.split(".") if p.strip()]
            # it runs before the loop moves on
            wait_for(lambda: _labels(url, camera) == want, what=f"{camera}'s objects")  # noqa: B023
        status, body = http("GET", url + "api/objects")
        assert status == 400 and "several cameras (yard, dock, gate)" in body["error"], body
        status, body = http("GET", url + "api/objects?camera=lot")
        assert status == 404 and "yard, dock, gate" in body["error"], body
        status, body = post_json(url + "offer", {"sdp": "v=0", "type": "offer"})
        assert status == 400 and "?camera=" in body["error"], "an offer names its camera too"

        # one camera's prompt: that camera's only
        status, body = post_json(url + "api/prompt?camera=dock", {"prompt": "forklift."})
        assert status == 200, body
        assert {c: site.engine.prompt_of(c) for c in PROMPTS} == {**PROMPTS, "dock": "forklift."}
        assert site.engine.requests[-1] == {
            "cmd": "set_prompt",
            "prompt": "forklift.",
            "camera": "dock",
        }
        wait_for(lambda: _labels(url, "dock") == ["forklift"], what="dock's new object list")
        wait_for(
            lambda: http("GET", url + "api/state?camera=dock")[1]["prompt"] == "forklift.",
            what="dock's banner prompt",
        )
        health = http("GET", url + "healthz")[1]
        assert sorted(health["cameras"]) == sorted(PROMPTS) and health["camera"] is None
        assert all(age is not None and age < 5 for age in health["cameras"].values()), health

        asyncio.run(_viewers_and_runtime_changes(site, url))
    finally:
        stop(proc)


async def _get(url: str) -> Any:
    return (await asyncio.to_thread(http, "GET", url))[1]


async def _until(cond: Any, timeout: float, what: str) -> Any:
    """Poll the blocking ``cond`` off the event loop (the viewers' connections live on it)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await asyncio.to_thread(cond)
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.1)


async def _viewers_and_runtime_changes(site: Site, url: str) -> None:
    engine = site.engine

    def viewer(camera: str) -> Viewer:
        return Viewer(url, camera=camera, t_capture_of=lambda s: engine.t_capture_of(s, camera))

    yard, gate = viewer("yard"), viewer("gate")
    lot: Viewer | None = None
    try:
        await asyncio.gather(yard.connect(), gate.connect())
        await asyncio.gather(
            yard.receive(seconds=15, frames=10), gate.receive(seconds=15, frames=10)
        )
        for v in (yard, gate):
            # stamped frames whose capture time is the right camera's: the latency is sane
            assert v.result.frames >= 10 and len(v.result.stamps) >= 5, v.result.summary()
            p50 = v.result.summary()["latency_ms_p50"]
            assert isinstance(p50, (int, float)) and 0 < p50 < 2000, v.result.summary()
        stats = {c: (await _get(url + f"api/stats?camera={c}"))["web"] for c in PROMPTS}
        assert stats["yard"]["encoder_active"] and stats["gate"]["encoder_active"]
        assert not stats["dock"]["encoder_active"] and stats["dock"]["frames_encoded"] == 0
        assert stats["yard"]["viewers"] == 1 and stats["yard"]["viewers_total"] == 2

        text = await asyncio.to_thread(_metrics, url)
        assert (_series(text, "promptcam_web_frames_encoded_total", "yard") or 0) > 0
        assert (_series(text, "promptcam_web_frames_encoded_total", "gate") or 0) > 0
        assert not _series(text, "promptcam_web_frames_encoded_total", "dock")
        assert _series(text, "promptcam_web_viewers", "yard") == 1.0
        assert (_series(text, "promptcam_web_annotated_frames_received_total", "dock") or 0) > 0
        assert 'promptcam_camera_state{camera="gate",state="live"} 1.0' in text
        assert 'promptcam_camera_engine_fps_in{camera="dock"} 15.0' in text

        # the viewer cap is per camera (web.max_viewers: 1)
        sdp = await asyncio.to_thread(_offer_without_candidates)
        offer = {"sdp": sdp, "type": "offer"}
        status, body = await asyncio.to_thread(post_json, url + "offer?camera=yard", offer)
        assert status == 503 and "too many viewers of camera yard" in body["error"], body
        status, body = await asyncio.to_thread(post_json, url + "offer?camera=dock", offer)
        assert status == 200, body  # never connects: closed after web.connect_timeout_s

        # the engine stops serving gate: it leaves the list, its viewer is closed, its series go
        reply = await asyncio.to_thread(
            zbus.request, site.cfg.bus.control, {"cmd": "remove_camera", "camera": "gate"}
        )
        assert reply["ok"], reply
        await _until(lambda: _names(url) == ["yard", "dock"], 10, "gate gone from the list")
        await _until(
            lambda: gate.pc.connectionState in ("closed", "failed"), 10, "gate's viewer closed"
        )
        text = await asyncio.to_thread(_metrics, url)
        assert 'camera="gate"' not in text, "a removed camera's series are dropped"
        status, _ = await asyncio.to_thread(http, "GET", url + "api/objects?camera=gate")
        assert status == 404
        # yard's viewer is untouched
        before = yard.result.frames
        await yard.receive(seconds=10, frames=5)
        assert yard.result.frames >= before + 5

        # a camera added at runtime appears and plays
        reply = await asyncio.to_thread(
            zbus.request,
            site.cfg.bus.control,
            {"cmd": "add_camera", "camera": "lot", "frames": tcp_endpoint(), "prompt": "cat."},
        )
        assert reply["ok"], reply
        await _until(lambda: _names(url) == ["yard", "dock", "lot"], 10, "lot in the list")
        lot = viewer("lot")
        await lot.connect()
        await lot.receive(seconds=15, frames=5)
        assert lot.result.frames >= 5 and _labels(url, "lot") == ["cat"]
    finally:
        await asyncio.gather(*(v.close() for v in (yard, gate, lot) if v is not None))


def test_web_camera_set_shows_that_camera_only(site: Site) -> None:
    proc, url = start_web({"web.camera": "dock"}, extra=["--config", str(site.path)])
    try:
        assert _names(url) == ["dock"]
        wait_for(lambda: _labels(url, "dock") == ["person"], what="dock's objects")
        objects = http("GET", url + "api/objects")[1]  # one camera: ?camera= may be left out
        assert objects["camera"] == "dock" and [o["label"] for o in objects["objects"]] == [
            "person"
        ]
        assert http("GET", url + "api/objects?camera=yard")[0] == 404
        status, body = post_json(url + "api/prompt", {"prompt": "cup."})
        assert status == 200 and site.engine.prompt_of("dock") == "cup.", body
        assert site.engine.prompt_of("yard") == PROMPTS["yard"]
    finally:
        stop(proc)


def test_cameras_reply_parsing() -> None:
    """What the web takes from a ``cameras`` reply; a reply it cannot use keeps the last list."""
    ok = {
        "ok": True,
        "cameras": [
            {"camera": "yard", "frames": "tcp://127.0.0.1:5550", "state": "live"},
            {"camera": "bad name!"},
            {"camera": "yard"},
            "junk",
            {"camera": "dock", "frames": 7},
        ],
    }
    assert parse_cameras_reply(ok) == [
        CameraInfo("yard", "tcp://127.0.0.1:5550"),
        CameraInfo("dock", None),
    ]
    assert parse_cameras_reply({"ok": True, "cameras": []}) == []
    for bad in ({"ok": False, "error": "x"}, {"ok": True}, {"ok": True, "cameras": {}}, [1]):
        assert parse_cameras_reply(bad) is None
