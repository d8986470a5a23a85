"""The live page with three cameras, in a real headless Chromium inside a loopback-only network
namespace (as tests/test_browser.py).

pytest re-executes this file under ``unshare -rn`` (tests/netns.py); in there ``session()``
starts a GStreamer RTSP server (tests/rtsp_server.py) and ``promptcam run --config site.yaml``
with three cameras of three kinds (the demo scene, a looping video file, the RTSP server) and
``tiny-random`` models: one capture per camera, one engine, one web server. Chromium opens the
page: three views play (each ``<video>`` decodes frames and its ``currentTime`` advances), one
camera's prompt is changed from its prompt box and the engine (control ``cameras``) reports the
new prompt for that camera only, a click enlarges a camera and another returns to the grid, and
a camera removed and added back at runtime (control) leaves and rejoins the page. Screenshots go
to artifacts/ (cameras-grid-1400.png, cameras-enlarged-1400.png, cameras-grid-390.png,
cameras-enlarged-390.png).
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.conftest import free_port, tcp_endpoint  # noqa: E402
from tests.test_browser import (  # noqa: E402
    CHROMIUM,
    CHROMIUM_FLAGS,
    HEIGHT,
    WIDTH,
    Rtsp,
    _get,
    _wait,
    run_in_namespace,
)

CAMERAS = ("yard", "dock", "gate")  # demo, video file, RTSP
PROMPTS = {"yard": "ball.", "dock": "box.", "gate": "person."}
NEW_PROMPT = "car. dog."


def _make_clip(path: Path, frames: int = 40) -> Path:
    """A 320x240 H.264 clip: a red square crossing a blue-grey field."""
    import av
    import numpy as np

    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=10)
        s.width, s.height = WIDTH, HEIGHT
        s.pix_fmt = "yuv420p"
        for i in range(frames):
            img = np.full((HEIGHT, WIDTH, 3), (90, 70, 50), np.uint8)
            x = 10 + (WIDTH - 80) * i // frames
            img[90:150, x : x + 60] = (40, 40, 230)
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="bgr24")):
                c.mux(p)
        for p in s.encode(None):
            c.mux(p)
    return path


def _site(tmp: Path, rtsp_url: str, web_port: int) -> Path:
    clip = _make_clip(tmp / "clip.mp4")
    frames = {name: tcp_endpoint() for name in CAMERAS}
    site = tmp / "site.yaml"
    site.write_text(
        f"""
bus: {{tracks: '{tcp_endpoint()}', annotated: '{tcp_endpoint()}', control: '{tcp_endpoint()}'}}
models: {{preset: tiny-random, device: cpu}}
# random weights: no detections (box_threshold 1), so no object and no re-grounding load
engine: {{detector_size: 128, box_threshold: 1.0, reground_every_frames: 0}}
web: {{port: {web_port}}}
run: {{status_file: '{tmp / "status.json"}', status_every_s: 5}}
source: {{width: {WIDTH}, height: {HEIGHT}, stall_timeout_s: 2, open_timeout_s: 2,
          reconnect_initial_s: 0.3, reconnect_max_s: 1}}
cameras:
  yard: {{source: demo, fps: 10, prompt: '{PROMPTS["yard"]}', frames: '{frames["yard"]}'}}
  dock: {{source: {{uri: '{clip}', loop: true}}, prompt: '{PROMPTS["dock"]}', frames: '{frames["dock"]}'}}
  gate: {{source: '{rtsp_url}', prompt: '{PROMPTS["gate"]}', frames: '{frames["gate"]}'}}
"""
    )
    return site


def _control(site: Path, request: dict[str, Any]) -> dict[str, Any]:
    from stream import bus as zbus
    from stream.config import load_config

    return zbus.request(load_config(site).bus.control, request, 15_000)


def session(out: Path) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    results: dict[str, Any] = {}
    art = ROOT / "artifacts"
    art.mkdir(exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="promptcam-cameras-"))
    rtsp = Rtsp(free_port())
    run: subprocess.Popen[str] | None = None
    t_start = time.monotonic()
    try:
        rtsp.start()
        web_port = free_port()
        site = _site(tmp, rtsp.url, web_port)
        with (tmp / "run.log").open("w") as log:  # the launcher's and children's lines
            run = subprocess.Popen(
                [sys.executable, "-m", "clients.cli", "run", "--config", str(site)],
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                text=True,
            )
        url = f"http://127.0.0.1:{web_port}/"

        def every_camera_annotated() -> bool:
            try:
                ages = _get(url + "healthz")["cameras"]
            except OSError:
                return False
            return sorted(ages) == sorted(CAMERAS) and all(a is not None for a in ages.values())

        try:
            _wait(every_camera_annotated, 180, "annotated frames of every camera")
        except TimeoutError:
            sys.stderr.write((tmp / "run.log").read_text()[-5000:])
            raise
        results["stack_ready_s"] = round(time.monotonic() - t_start, 1)

        def js(expr: str) -> Any:
            return page.evaluate(expr)

        def video(camera: str) -> str:
            return f"document.querySelector('[data-camera={camera}] [data-role=video]')"

        def role(camera: str, name: str) -> str:
            return f"[data-camera={camera}] [data-role={name}]"

        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            console: list[str] = []
            page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
            page.on("pageerror", lambda e: console.append(f"error: {e}"))
            t0 = time.monotonic()
            page.goto(url)
            page.wait_for_function(
                "document.querySelectorAll('article.camera').length === 3", timeout=30_000
            )
            results["views"] = js(
                "[...document.querySelectorAll('article.camera')].map(a => a.dataset.camera)"
            )
            for cam in CAMERAS:
                page.wait_for_function(f"{video(cam)}.videoWidth > 0", timeout=60_000)
            results["all_playing_s"] = round(time.monotonic() - t0, 2)
            # every video decodes new frames and its clock advances
            before = {
                c: js(
                    f"[{video(c)}.getVideoPlaybackQuality().totalVideoFrames, {video(c)}.currentTime]"
                )
                for c in CAMERAS
            }
            for cam in CAMERAS:
                f0, t_0 = before[cam]
                page.wait_for_function(
                    f"{video(cam)}.getVideoPlaybackQuality().totalVideoFrames > {f0} + 3"
                    f" && {video(cam)}.currentTime > {t_0} + 0.2",
                    timeout=60_000,
                )
            results["advancing"] = {
                c: js(
                    f"[{video(c)}.videoWidth, {video(c)}.getVideoPlaybackQuality().totalVideoFrames]"
                )
                for c in CAMERAS
            }
            for cam in CAMERAS:
                page.wait_for_function(
                    f"document.querySelector('{role(cam, 'banner')}')?.textContent.startsWith('live')",
                    timeout=30_000,
                )
            results["banners"] = {
                c: js(f"document.querySelector('{role(c, 'banner')}')?.textContent")
                for c in CAMERAS
            }
            results["grid_video_widths"] = {c: js(f"{video(c)}.clientWidth") for c in CAMERAS}

            # one camera's prompt, from its own prompt box: the engine changes that one only
            page.fill(role("dock", "prompt"), NEW_PROMPT)
            page.click(role("dock", "prompt-send"))
            page.wait_for_function(
                f"document.querySelector('{role('dock', 'prompt-status')}')?.textContent"
                f" === 'tracking: {NEW_PROMPT}'",
                timeout=60_000,
            )
            cams = _control(site, {"cmd": "cameras"})["cameras"]
            results["engine_prompts"] = {c["camera"]: c["prompt"] for c in cams}
            page.wait_for_function(
                f"document.querySelector('{role('dock', 's-prompt')}')?.textContent === '{NEW_PROMPT}'",
                timeout=30_000,
            )
            results["page_prompts"] = {
                c: js(f"document.querySelector('{role(c, 's-prompt')}')?.textContent")
                for c in CAMERAS
            }
            page.screenshot(path=str(art / "cameras-grid-1400.png"))

            # a click enlarges a camera; the others stay live as small pictures
            page.click(role("gate", "enlarge"))
            page.wait_for_function(
                "document.querySelector('[data-camera=gate]')?.dataset.mode === 'enlarged'",
                timeout=10_000,
            )
            page.wait_for_function(f"{video('gate')}.clientWidth > 800", timeout=10_000)
            results["enlarged"] = {
                "modes": {
                    c: js(f"document.querySelector('[data-camera={c}]')?.dataset.mode")
                    for c in CAMERAS
                },
                "widths": {c: js(f"{video(c)}.clientWidth") for c in CAMERAS},
                "hash": js("location.hash"),
            }
            f0 = js(f"{video('yard')}.getVideoPlaybackQuality().totalVideoFrames")
            page.wait_for_function(
                f"{video('yard')}.getVideoPlaybackQuality().totalVideoFrames > {f0} + 2",
                timeout=30_000,
            )
            results["thumbnail_plays"] = True
            page.screenshot(path=str(art / "cameras-enlarged-1400.png"))
            # a click on a small picture enlarges that camera instead
            page.click("[data-camera=yard] [data-role=stage]")
            page.wait_for_function(
                "document.querySelector('[data-camera=yard]')?.dataset.mode === 'enlarged'"
                " && document.querySelector('[data-camera=gate]')?.dataset.mode === 'thumb'",
                timeout=10_000,
            )
            results["switched"] = js("location.hash")

            # 390 px wide: the enlarged camera full width; back to the grid, one column
            page.set_viewport_size({"width": 390, "height": 844})
            page.wait_for_function(f"{video('yard')}.clientWidth < 390", timeout=10_000)
            results["enlarged_390_width"] = js(f"{video('yard')}.clientWidth")
            page.screenshot(path=str(art / "cameras-enlarged-390.png"), full_page=True)
            page.click("#all-cameras")
            page.wait_for_function(
                "[...document.querySelectorAll('article.camera')].every(a => a.dataset.mode === 'tile')",
                timeout=10_000,
            )
            results["grid_390_widths"] = {c: js(f"{video(c)}.clientWidth") for c in CAMERAS}
            page.screenshot(path=str(art / "cameras-grid-390.png"), full_page=True)
            page.set_viewport_size({"width": 1400, "height": 900})
            results["console_errors"] = [c for c in console if c.startswith("error")]

            # runtime: a camera removed leaves the page, added back it returns and plays
            frames = {c["camera"]: c["frames"] for c in cams}
            assert _control(site, {"cmd": "remove_camera", "camera": "dock"})["ok"]
            page.wait_for_function(
                "document.querySelectorAll('article.camera').length === 2"
                " && !document.querySelector('[data-camera=dock]')",
                timeout=30_000,
            )
            results["after_remove"] = js(
                "[...document.querySelectorAll('article.camera')].map(a => a.dataset.camera)"
            )
            added = _control(
                site, {"cmd": "add_camera", "camera": "dock", "frames": frames["dock"]}
            )
            assert added["ok"], added
            page.wait_for_function(
                f"document.querySelectorAll('article.camera').length === 3"
                f" && {video('dock')} && {video('dock')}.videoWidth > 0",
                timeout=60_000,
            )
            results["after_add"] = js(
                "[...document.querySelectorAll('article.camera')].map(a => a.dataset.camera)"
            )
            browser.close()
        results["session_s"] = round(time.monotonic() - t_start, 1)
    finally:
        if run is not None and run.poll() is None:
            run.send_signal(signal.SIGTERM)
            try:
                run.wait(30)
            except subprocess.TimeoutExpired:
                run.kill()
                run.wait(5)
        rtsp.kill()
    return results


@pytest.mark.slow
def test_three_cameras_in_chromium() -> None:
    """``promptcam run`` with a demo, a file and an RTSP camera; the page in headless Chromium."""
    r = run_in_namespace(Path(__file__), timeout=420)
    assert r["views"] == list(CAMERAS), "one view per camera, in the engine's order"
    for cam in CAMERAS:
        width, decoded = r["advancing"][cam]
        assert width == WIDTH and decoded > 3, (cam, r["advancing"])
        assert r["banners"][cam].startswith("live"), r["banners"]
    assert r["engine_prompts"] == {**PROMPTS, "dock": NEW_PROMPT}, "that camera's prompt only"
    assert r["page_prompts"] == {**PROMPTS, "dock": NEW_PROMPT}
    assert r["enlarged"]["modes"] == {"yard": "thumb", "dock": "thumb", "gate": "enlarged"}
    widths = r["enlarged"]["widths"]
    assert widths["gate"] > 2 * max(widths["yard"], widths["dock"]), widths
    assert widths["gate"] > 1.5 * max(r["grid_video_widths"].values()), (widths, r)
    assert r["enlarged"]["hash"] == "#camera=gate" and r["switched"] == "#camera=yard"
    assert r["thumbnail_plays"]
    assert r["enlarged_390_width"] >= 300
    assert all(w >= 300 for w in r["grid_390_widths"].values()), r["grid_390_widths"]
    assert not r["console_errors"], r["console_errors"]
    assert r["after_remove"] == ["yard", "gate"] and r["after_add"] == ["yard", "gate", "dock"]
    for name in ("grid-1400", "enlarged-1400", "grid-390", "enlarged-390"):
        assert (ROOT / "artifacts" / f"cameras-{name}.png").stat().st_size > 0
    print(
        f"\nthree-camera page: {json.dumps({k: r[k] for k in ('stack_ready_s', 'all_playing_s', 'session_s')})}"
    )


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    res = session(Path(a.out))
    print(json.dumps(res), flush=True)
