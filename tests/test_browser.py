"""The page in a real headless Chromium, inside a loopback-only network namespace.

pytest re-executes this file under ``unshare -rn`` (tests/netns.py); in there ``session()``
starts the engine side (the real ``promptcam capture --source demo`` + ``promptcam engine
--models tiny-random`` processes, or the synthetic engine when asked), ``promptcam web``, and
Chromium (playwright driving /usr/bin/chromium), runs the checks and prints one JSON object
with the results, which the test asserts on. A screenshot goes to artifacts/browser.png.
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
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests import netns  # noqa: E402
from tests.conftest import free_port  # noqa: E402

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


def session(out: Path, engine_kind: str) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    results: dict[str, Any] = {"engine": engine_kind}
    ports = {
        k: f"tcp://127.0.0.1:{free_port()}" for k in ("frames", "tracks", "annotated", "control")
    }
    overrides: dict[str, Any] = {f"bus.{k}": v for k, v in ports.items()}
    overrides |= {
        "models.preset": "tiny-random",
        "engine.detector_size": 128,
        "source.width": 320,
        "source.height": 240,
        "source.fps": 10,
    }
    procs: list[subprocess.Popen[str]] = []
    synthetic = None
    tmp = Path(tempfile.mkdtemp(prefix="promptcam-browser-"))
    try:
        if engine_kind == "real":
            procs.append(
                subprocess.Popen(
                    _cli("capture", "--source", "demo", overrides=overrides), cwd=ROOT, text=True
                )
            )
            procs.append(
                subprocess.Popen(
                    _cli("engine", "--prompt", "ball. box.", overrides=overrides),
                    cwd=ROOT,
                    text=True,
                )
            )
        else:
            from clients.web.synthetic import SyntheticEngine
            from stream.config import load_config

            synthetic = SyntheticEngine(load_config(None, overrides), fps=15).start()
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
        results["first_frame"] = True

        with sync_playwright() as pw:
            browser = pw.chromium.launch(
                executable_path=CHROMIUM, args=CHROMIUM_FLAGS
            )  # fresh temp profile
            page = browser.new_page(viewport={"width": 1280, "height": 800}, accept_downloads=True)
            console: list[str] = []
            page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
            page.goto(url)
            page.wait_for_function(
                "document.getElementById('video').videoWidth > 0", timeout=60_000
            )
            results["video_width"] = page.evaluate("document.getElementById('video').videoWidth")
            f0 = page.evaluate(
                "document.getElementById('video').getVideoPlaybackQuality().totalVideoFrames"
            )
            page.wait_for_function(
                f"document.getElementById('video').getVideoPlaybackQuality().totalVideoFrames > {f0} + 3",
                timeout=60_000,
            )
            results["frames_advance"] = True

            new_prompt = "person. dog."
            page.fill("#prompt", new_prompt)
            page.click("#prompt-send")
            page.wait_for_function(
                f"document.getElementById('s-prompt').textContent === {json.dumps(new_prompt)}",
                timeout=120_000,
            )
            results["engine_prompt"] = _get(url + "api/objects")["prompt"]
            if engine_kind == "synthetic":
                page.wait_for_function(
                    "[...document.querySelectorAll('#objects tr')].map(r => r.children[1].textContent).join(',') === 'person,dog'",
                    timeout=30_000,
                )
            rows0 = page.evaluate("document.getElementById('objects').innerHTML")
            page.wait_for_function(
                f"document.getElementById('objects').innerHTML !== {json.dumps(rows0)} || {json.dumps(engine_kind == 'real')}",
                timeout=30_000,
            )
            results["object_rows"] = page.evaluate(
                "[...document.querySelectorAll('#objects tr')].map(r => r.textContent)"
            )
            results["object_list_updates"] = True
            page.wait_for_function(
                "document.getElementById('s-viewers').textContent === '1'", timeout=10_000
            )
            (ROOT / "artifacts").mkdir(exist_ok=True)
            page.screenshot(path=str(ROOT / "artifacts" / "browser.png"))

            # offline page
            page.goto(url.replace("/?", "/offline?") if "?" in url else url + "offline")
            page.set_input_files("#file", str(_make_video(tmp / "clip.mp4")))
            page.fill("#prompt", "ball.")
            page.select_option("#seed", "box")
            page.click("#start")
            page.wait_for_function("document.body.dataset.jobDone !== undefined", timeout=240_000)
            page.wait_for_function(
                "(() => { const v = document.getElementById('result-video'); return v.readyState >= 2 && v.videoWidth > 0; })()",
                timeout=30_000,
            )
            results["offline_plays"] = page.evaluate(
                "document.getElementById('result-video').videoWidth"
            )
            with page.expect_download() as dl:
                page.click("#dl-video")
            saved = tmp / "download.mp4"
            dl.value.save_as(saved)
            results["offline_download_bytes"] = saved.stat().st_size
            page.screenshot(path=str(ROOT / "artifacts" / "browser-offline.png"))
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
        if synthetic is not None:
            synthetic.close()
    return results


# --------------------------------------------------------------------------- the test


def _skip_reason() -> str | None:
    if not os.path.exists(CHROMIUM):
        return f"{CHROMIUM} is not installed"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright python package is not installed"
    return netns.unavailable_reason()


def _run_session(engine_kind: str) -> dict[str, Any]:
    reason = _skip_reason()
    if reason:
        pytest.skip(f"browser test needs a loopback-only namespace and Chromium: {reason}")
    with tempfile.TemporaryDirectory() as out:
        argv = netns.command(
            [sys.executable, str(Path(__file__).resolve()), "--out", out, "--engine", engine_kind]
        )
        proc = subprocess.run(
            argv,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=420,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    assert proc.returncode == 0 and lines, (
        f"browser session failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    )
    result: dict[str, Any] = json.loads(lines[-1])
    return result


@pytest.mark.slow
def test_live_and_offline_pages_in_chromium() -> None:
    r = _run_session(os.environ.get("PROMPTCAM_BROWSER_ENGINE", "real"))
    assert r["video_width"] > 0 and r["frames_advance"]
    assert r["engine_prompt"] == "person. dog."
    assert r["object_list_updates"]
    assert r["offline_plays"] > 0 and r["offline_download_bytes"] > 1000
    assert (ROOT / "artifacts" / "browser.png").stat().st_size > 0


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--engine", choices=["real", "synthetic"], default="real")
    a = ap.parse_args()
    res = session(Path(a.out), a.engine)
    print(json.dumps(res), flush=True)
