"""The page in a real headless Chromium, inside a loopback-only network namespace.

pytest re-executes this file under ``unshare -rn`` (tests/netns.py); in there ``session()``
starts a GStreamer RTSP server (tests/rtsp_server.py), the real ``promptcam capture`` of it,
``promptcam engine --models tiny-random``, ``promptcam web`` and Chromium (playwright driving
/usr/bin/chromium), walks the whole scenario of both pages as a user would (draw, select,
relabel, remove, snapshot, fullscreen, prompt, camera outage, 390 px, offline job), and prints
one JSON object with the results, which the test asserts on. Screenshots go to artifacts/
(live-1400.png, live-390.png, live-reconnecting.png, offline-1400.png, offline-390.png).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests import netns  # noqa: E402
from tests.conftest import free_port  # noqa: E402

if TYPE_CHECKING:  # playwright is imported where a test runs Chromium
    from playwright.sync_api import Position

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--allow-loopback-in-peer-connection",
    "--disable-features=WebRtcHideLocalIpsWithMdns",
    "--autoplay-policy=no-user-gesture-required",
]


# --------------------------------------------------------------------------- in the namespace


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


def _wait(cond: Any, timeout: float, what: str, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


def _cli(*args: str, overrides: dict[str, Any]) -> list[str]:
    argv = [sys.executable, "-m", "clients.cli", *args, "--log-level", "WARNING"]
    for k, v in overrides.items():
        argv += ["--set", f"{k}={v}"]
    return argv


def _make_video(path: Path, frames: int = 4) -> Path:
    import av
    import numpy as np

    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=10)
        s.width, s.height = 160, 120
        s.pix_fmt = "yuv420p"
        for i in range(frames):
            img = np.full((120, 160, 3), 50, np.uint8)
            img[30:70, 10 + 10 * i : 50 + 10 * i] = (0, 0, 255)
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="bgr24")):
                c.mux(p)
        for p in s.encode(None):
            c.mux(p)
    return path


RTSP_SERVER = ROOT / "tests" / "rtsp_server.py"
WIDTH, HEIGHT = 320, 240


class Rtsp:
    """tests/rtsp_server.py under the system interpreter, killed and started again on its port."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.url = f"rtsp://127.0.0.1:{port}/test"
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["/usr/bin/python3", str(RTSP_SERVER), str(self.port), "15", f"{WIDTH}x{HEIGHT}"],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if "READY" not in line:
            raise RuntimeError(f"rtsp server did not start: {line!r}")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def _drag(page: Any, selector: str, fx0: float, fy0: float, fx1: float, fy1: float) -> None:
    """Drag with the mouse over ``selector`` from one fraction of its size to another."""
    r = page.locator(selector).bounding_box()
    page.mouse.move(r["x"] + fx0 * r["width"], r["y"] + fy0 * r["height"])
    page.mouse.down()
    for k in range(1, 6):
        f = k / 5
        x = fx0 + (fx1 - fx0) * f
        y = fy0 + (fy1 - fy0) * f
        page.mouse.move(r["x"] + x * r["width"], r["y"] + y * r["height"])
    page.mouse.up()


def session(out: Path) -> dict[str, Any]:
    """The whole scenario: live page (draw, select, relabel, remove, snapshot, fullscreen,
    camera outage, prompt after reload, 1400 and 390 px) and the offline page."""
    import cv2
    import numpy as np
    from playwright.sync_api import sync_playwright

    from engine.render import Renderer
    from tests.test_render import label_fill

    results: dict[str, Any] = {}
    art = ROOT / "artifacts"
    art.mkdir(exist_ok=True)
    ports = {
        k: f"tcp://127.0.0.1:{free_port()}" for k in ("frames", "tracks", "annotated", "control")
    }
    overrides: dict[str, Any] = {f"bus.{k}": v for k, v in ports.items()}
    overrides |= {
        "models.preset": "tiny-random",
        "engine.detector_size": 128,
        # random weights: no detections, drawn objects are never dropped
        "engine.box_threshold": 1.0,
        "engine.reground_every_frames": 0,
        "engine.score_threshold": -100,
        "engine.max_missed": 100000,
        "source.stall_timeout_s": 2,
        "source.open_timeout_s": 2,
        "source.read_timeout_s": 3,
        "source.reconnect_initial_s": 0.3,
        "source.reconnect_max_s": 1,
    }
    rtsp = Rtsp(free_port())
    procs: list[subprocess.Popen[bytes] | subprocess.Popen[str]] = []
    tmp = Path(tempfile.mkdtemp(prefix="promptcam-browser-"))
    try:
        rtsp.start()
        procs.append(
            subprocess.Popen(_cli("capture", "--source", rtsp.url, overrides=overrides), cwd=ROOT)
        )
        procs.append(
            subprocess.Popen(_cli("engine", "--prompt", "ball.", overrides=overrides), cwd=ROOT)
        )
        web = subprocess.Popen(
            _cli("web", "--port", "0", overrides=overrides),
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        procs.append(web)
        assert web.stdout is not None
        line = web.stdout.readline()
        if "serving on" not in line:
            raise RuntimeError(f"promptcam web did not start: {line!r}")
        url = line.split()[-1]
        _wait(
            lambda: _get(url + "healthz")["last_annotated_age_s"] is not None,
            180,
            "the first annotated frame",
        )
        view = "[data-camera=cam0]"

        def role(name: str) -> str:
            return f"{view} [data-role={name}]"

        def js(expr: str) -> Any:
            return page.evaluate(expr)

        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
            page = browser.new_page(viewport={"width": 1400, "height": 900}, accept_downloads=True)
            console: list[str] = []
            page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
            page.on("pageerror", lambda e: console.append(f"error: {e}"))
            t0 = time.monotonic()
            page.goto(url)
            video = f"document.querySelector('{role('video')}')"
            page.wait_for_function(f"{video}.videoWidth > 0", timeout=60_000)
            results["first_video_s"] = round(time.monotonic() - t0, 2)
            results["video_width"] = js(f"{video}.videoWidth")
            f0 = js(f"{video}.getVideoPlaybackQuality().totalVideoFrames")
            page.wait_for_function(
                f"{video}.getVideoPlaybackQuality().totalVideoFrames > {f0} + 3", timeout=60_000
            )
            results["frames_advance"] = True
            banner = f"document.querySelector('{role('banner')}')?.textContent"
            page.wait_for_function(f"{banner}.startsWith('live')", timeout=30_000)
            results["banner_live"] = js(banner)
            results["engine_error_during_start"] = js(
                f"document.querySelector('{role('stats-error')}')?.textContent"
            )

            # draw a box on the video: it becomes a tracked object, listed with its id
            rows = f"[...document.querySelectorAll('{role('objects')} tr')]"
            page.fill(role("new-label"), "thing")
            _drag(page, role("overlay"), 0.15, 0.2, 0.4, 0.55)
            page.wait_for_function(f"{rows}.length === 1", timeout=30_000)
            first = int(js(f"{rows}[0].dataset.id"))
            results["drawn_row"] = js(f"{rows}[0].textContent")
            results["drawn_selected"] = js(
                f"document.querySelector('{role('selected-name')}')?.textContent"
            )
            # a second one, selected by a click on the video, relabelled
            page.fill(role("new-label"), "other")
            _drag(page, role("overlay"), 0.6, 0.45, 0.85, 0.8)
            page.wait_for_function(f"{rows}.length === 2", timeout=30_000)
            second = max(int(i) for i in js(f"{rows}.map(r => r.dataset.id)"))
            # (random weights: both masks may cover the frame; clicks cycle through overlaps)
            page.keyboard.press("Escape")
            selected = f"document.querySelector('{role('selected-name')}')?.textContent"
            clicks = []
            for _ in range(2):
                page.locator(role("overlay")).click(
                    position=_inside(page, role("overlay"), url, second)
                )
                page.wait_for_function(f"{selected}.startsWith('#')", timeout=10_000)
                clicks.append(js(selected))
                if clicks[-1].startswith(f"#{second} "):
                    break
            results["video_clicks"] = clicks
            results["clicked_on_video"] = int(clicks[-1].split()[0].lstrip("#"))
            page.fill(role("relabel-input"), "cup")
            page.click(role("relabel"))
            page.wait_for_function(
                f"{rows}.some(r => r.children[1].textContent === 'cup') && !{rows}.some(r => r.dataset.id === '{second}')",
                timeout=30_000,
            )
            page.screenshot(path=str(art / "live-1400.png"))  # the relabelled one selected
            relabelled = int(
                js(f"{rows}.find(r => r.children[1].textContent === 'cup').dataset.id")
            )
            results["relabelled"] = [second, relabelled]

            # the drawn object's id is on the video: its label in the annotated frame
            snap = _get(url + "api/snapshot")
            obj = next(o for o in snap["tracks"]["objects"] if o["id"] == first)
            with urllib.request.urlopen(url + snap["image"].lstrip("/"), timeout=10) as r:
                png = r.read()
            text = Renderer.label_text(first, obj["label"], obj["confidence"])
            frame = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
            assert frame is not None
            results["label_fill"] = round(label_fill(frame, text, Renderer().color_of(first)), 3)
            (art / "snapshot.png").write_bytes(png)

            # snapshot button: annotated PNG + that frame's tracks JSON
            downloads: list[Any] = []

            def on_download(d: Any) -> None:
                downloads.append(d)

            page.on("download", on_download)
            page.click(role("snapshot"))
            deadline = time.monotonic() + 20
            while len(downloads) < 2 and time.monotonic() < deadline:
                page.wait_for_timeout(100)  # lets playwright deliver the download events
            page.remove_listener("download", on_download)
            names = sorted(d.suggested_filename for d in downloads)
            results["snapshot_files"] = names
            for d in downloads:
                d.save_as(tmp / d.suggested_filename)
            results["snapshot_png"] = (tmp / names[1]).read_bytes()[:4] == b"\x89PNG"
            snap_json = json.loads((tmp / names[0]).read_text())
            results["snapshot_seq_matches"] = names[1] == f"promptcam-cam0-{snap_json['seq']}.png"

            # select in the list, remove
            page.click(f"{role('objects')} tr[data-id='{first}']")
            page.wait_for_function(
                f"document.querySelector('{role('objects')} tr[data-id=\"{first}\"]')?.classList.contains('selected')",
                timeout=10_000,
            )
            page.click(role("remove"))
            page.wait_for_function(f"!{rows}.some(r => r.dataset.id === '{first}')", timeout=30_000)
            results["removed"] = first not in {
                o["id"] for o in _get(url + "api/objects")["objects"]
            }

            # fullscreen and back
            page.click(role("fullscreen"))
            page.wait_for_function("document.fullscreenElement !== null", timeout=10_000)
            results["fullscreen"] = js("document.fullscreenElement.dataset.role")
            page.evaluate("document.exitFullscreen()")
            page.wait_for_function("document.fullscreenElement === null", timeout=10_000)

            # the prompt: typed, then shown after a reload as the engine has it
            page.fill(role("prompt"), "person. dog.")
            page.click(role("prompt-send"))
            page.wait_for_function(
                f"document.querySelector('{role('s-prompt')}')?.textContent === 'person. dog.'",
                timeout=120_000,
            )
            page.reload()
            page.wait_for_function(
                f"document.querySelector('{role('prompt')}')?.value === 'person. dog.'",
                timeout=30_000,
            )
            results["prompt_after_reload"] = js(
                f"document.querySelector('{role('prompt')}')?.value"
            )
            page.wait_for_function(f"{video}.videoWidth > 0", timeout=60_000)

            # 390 px wide: one column, the video at least 300 px wide
            page.set_viewport_size({"width": 390, "height": 844})
            page.wait_for_function(f"{video}.clientWidth < 390", timeout=10_000)
            results["video_css_width_390"] = js(f"{video}.clientWidth")
            page.screenshot(path=str(art / "live-390.png"), full_page=True)
            page.set_viewport_size({"width": 1400, "height": 900})

            # the camera goes away and comes back: the banner says so
            rtsp.kill()
            page.wait_for_function(f"/^(reconnecting|waiting)/.test({banner})", timeout=30_000)
            results["banner_down"] = js(banner)
            page.screenshot(path=str(art / "live-reconnecting.png"))
            rtsp.start()
            page.wait_for_function(f"{banner}.startsWith('live')", timeout=60_000)
            results["banner_back"] = js(banner)

            # offline page: upload, draw a box on the preview, start, follow the job, play it
            page.goto(url.replace("/?", "/offline?") if "?" in url else url + "offline")
            page.set_input_files("#file", str(_make_video(tmp / "clip.mp4")))
            page.wait_for_function(
                "!document.getElementById('draft').hidden && document.getElementById('preview-img').naturalWidth > 0",
                timeout=60_000,
            )
            _drag(page, "#preview-overlay", 0.05, 0.25, 0.35, 0.6)
            page.wait_for_function(
                "document.querySelectorAll('#boxes li').length === 1", timeout=5_000
            )
            results["offline_box"] = js(
                "document.querySelector('#boxes li')?.firstChild.textContent"
            )
            page.fill("#prompt", "ball.")
            page.screenshot(path=str(art / "offline-1400.png"))
            page.click("#start")
            page.wait_for_function("document.body.dataset.jobDone !== undefined", timeout=240_000)
            page.wait_for_function(
                "(() => { const v = document.getElementById('result-video'); return v.readyState >= 2 && v.videoWidth > 0; })()",
                timeout=30_000,
            )
            results["offline_plays"] = js("document.getElementById('result-video').videoWidth")
            results["offline_job_row"] = js("document.querySelector('#jobs tr')?.textContent")
            with page.expect_download() as dl:
                page.click("#dl-video")
            saved = tmp / "download.mp4"
            dl.value.save_as(saved)
            results["offline_download_bytes"] = saved.stat().st_size
            page.set_viewport_size({"width": 390, "height": 844})
            page.screenshot(path=str(art / "offline-390.png"), full_page=True)
            results["console_errors"] = [c for c in console if c.startswith("error")]
            browser.close()
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in reversed(procs):
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        rtsp.kill()
    return results


def _inside(page: Any, selector: str, url: str, object_id: int) -> Position:
    """A point of ``selector`` (the video overlay) inside object ``object_id``'s box."""
    objs = _get(url + "api/objects")
    o = next(o for o in objs["objects"] if o["id"] == object_id)
    r = page.locator(selector).bounding_box()
    scale = min(r["width"] / objs["width"], r["height"] / objs["height"])
    ox = (r["width"] - objs["width"] * scale) / 2
    oy = (r["height"] - objs["height"] * scale) / 2
    x1, y1, x2, y2 = o["box"]
    return {"x": ox + (x1 + x2) / 2 * scale, "y": oy + (y1 + y2) / 2 * scale}


# --------------------------------------------------------------------------- the test


def _skip_reason() -> str | None:
    if not os.path.exists(CHROMIUM):
        return f"{CHROMIUM} is not installed"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright python package is not installed"
    return netns.unavailable_reason()


def run_in_namespace(script: Path, timeout: float) -> dict[str, Any]:
    """Run ``script --out DIR`` in a loopback-only namespace; the last JSON line it prints.
    Skips when Chromium, playwright or such namespaces are missing."""
    reason = _skip_reason()
    if reason:
        pytest.skip(f"browser test needs a loopback-only namespace and Chromium: {reason}")
    with tempfile.TemporaryDirectory() as out:
        argv = netns.command([sys.executable, str(script.resolve()), "--out", out])
        proc = subprocess.run(
            argv,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    assert proc.returncode == 0 and lines, (
        f"browser session failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    )
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def _run_session() -> dict[str, Any]:
    return run_in_namespace(Path(__file__), timeout=480)


@pytest.mark.slow
def test_live_and_offline_pages_in_chromium() -> None:
    """Real capture (RTSP) + engine (tiny-random) + web, the pages in headless Chromium."""
    r = _run_session()
    assert r["video_width"] > 0 and r["frames_advance"]
    assert r["banner_live"].startswith("live") and r["engine_error_during_start"] == ""
    assert r["drawn_row"].startswith("#") and "thing" in r["drawn_row"]
    assert r["drawn_selected"].endswith(" thing"), "a drawn object is selected"
    assert r["clicked_on_video"] == r["relabelled"][0] and r["relabelled"][1] > r["relabelled"][0]
    assert r["label_fill"] > 0.6, "the drawn object's id label is in the annotated frame"
    assert r["snapshot_png"] and r["snapshot_seq_matches"]
    assert [n.rsplit(".", 1)[1] for n in r["snapshot_files"]] == ["json", "png"]
    assert r["removed"] and r["fullscreen"] == "view"
    assert r["prompt_after_reload"] == "person. dog."
    assert r["video_css_width_390"] >= 300
    assert r["banner_down"].startswith(("reconnecting", "waiting")) and r["banner_back"].startswith(
        "live"
    )
    assert r["offline_box"].endswith("@ frame 0") and r["offline_plays"] > 0
    assert "done" in r["offline_job_row"] and r["offline_download_bytes"] > 1000
    assert not r["console_errors"], r["console_errors"]
    for name in ("live-1400", "live-390", "live-reconnecting", "offline-1400", "offline-390"):
        assert (ROOT / "artifacts" / f"{name}.png").stat().st_size > 0


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    res = session(Path(a.out))
    print(json.dumps(res), flush=True)
