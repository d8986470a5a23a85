"""The live and offline pages in a real headless Chromium against the stand-in engine (no
models: fast), inside a loopback-only network namespace (as tests/test_browser.py).

pytest re-executes this file under ``unshare -rn`` (tests/netns.py); in there ``session()``
starts the stand-in engine (clients/web/synthetic.py: three cameras of 640x480, one of which,
``gate``, sends no frame) and a real ``promptcam web`` process, and Chromium opens the page:

- the prompt follows the engine: changed by the control socket, then by ``promptcam prompt``,
  the prompt box and "tracking: ..." show the new one within a bounded time, but not while the
  user types in the box (focused and edited);
- the camera that sends nothing says it waits for the camera, not for the engine;
- every object's label is drawn on the overlay at 12 CSS px or more where the video's own labels
  show smaller (grid tiles at 1280x800, a 390x844 phone);
- Remove and Reset say what they do;
- the offline page's job rows tell jobs apart (prompt, start time, frames, state), and a new
  video's prompt field starts empty.

Screenshots go to artifacts/ (page-grid-1280.png, page-grid-390.png, page-offline-1280.png,
page-offline-390.png).
"""

from __future__ import annotations

import argparse
import json
import re
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
    _get,
    _make_video,
    run_in_namespace,
)

CAMERAS = ("yard", "dock", "gate")  # gate sends no frame
PROMPTS = {"yard": "ball. box.", "dock": "person.", "gate": "car."}
REMOVE_TEXT = "stop following this object: it is no longer shown or re-found until it leaves the view or the prompt changes"
RESET_TEXT = "end every track and start over"
PROMPT_FOLLOW_S = 10  # the page polls its camera's state every 1.5 s at most

# every label the page draws on a canvas: its text, font and camera
RECORD_LABELS = """
window.__labels = [];
const fillText = CanvasRenderingContext2D.prototype.fillText;
CanvasRenderingContext2D.prototype.fillText = function (t, x, y, ...rest) {
  const a = this.canvas.closest && this.canvas.closest("article");
  window.__labels.push({ text: String(t), font: this.font, camera: a ? a.dataset.camera : null });
  if (window.__labels.length > 400) window.__labels.splice(0, 200);
  return fillText.call(this, t, x, y, ...rest);
};
"""


def _site(tmp: Path, web_port: int) -> Path:
    cameras = "\n".join(
        f"  {name}: {{source: demo, prompt: '{prompt}', frames: '{tcp_endpoint()}'}}"
        for name, prompt in PROMPTS.items()
    )
    site = tmp / "site.yaml"
    site.write_text(
        f"""
bus: {{annotated: '{tcp_endpoint()}', tracks: '{tcp_endpoint()}', control: '{tcp_endpoint()}'}}
models: {{preset: tiny-random, device: cpu}}
engine: {{detector_size: 128}}
web: {{port: {web_port}}}
cameras:
{cameras}
"""
    )
    return site


def session(out: Path) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    from clients.web.synthetic import SyntheticEngine
    from stream import bus as zbus
    from stream.config import load_config
    from tests.web_stack import stop

    results: dict[str, Any] = {}
    art = ROOT / "artifacts"
    art.mkdir(exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="promptcam-page-"))
    web_port = free_port()
    site = _site(tmp, web_port)
    cfg = load_config(site)
    engine = SyntheticEngine(cfg, fps=10, width=640, height=480, silent=["gate"]).start()
    web = subprocess.Popen(
        [sys.executable, "-m", "clients.cli", "web", "--config", str(site)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=(tmp / "web.log").open("w"),
        text=True,
    )
    t_start = time.monotonic()
    try:
        assert web.stdout is not None
        line = web.stdout.readline()
        if "serving on" not in line:
            raise RuntimeError(f"promptcam web did not start: {line!r}")
        url = f"http://127.0.0.1:{web_port}/"

        def js(expr: str) -> Any:
            return page.evaluate(expr)

        def q(camera: str, name: str) -> str:
            return f"document.querySelector('[data-camera={camera}] [data-role={name}]')"

        def set_prompt(camera: str, prompt: str) -> None:
            reply = zbus.request(
                cfg.bus.control, {"cmd": "set_prompt", "camera": camera, "prompt": prompt}, 10_000
            )
            assert reply["ok"], reply

        def labels_of(camera: str, ids: list[int]) -> list[dict[str, Any]]:
            """The overlay's newest label of each object, waited for (bounded)."""
            want = json.dumps([f"#{i} " for i in ids])
            page.wait_for_function(
                f"{want}.every(p => window.__labels.some(l => l.camera === '{camera}' && l.text.startsWith(p)))",
                timeout=15_000,
            )
            drawn: list[dict[str, Any]] = js(
                f"window.__labels.filter(l => l.camera === '{camera}')"
            )
            return [
                {**d, "px": float(re.search(r"([\d.]+)px", d["font"]).group(1))}  # type: ignore[union-attr]
                for d in drawn
                if any(d["text"].startswith(f"#{i} ") for i in ids)
            ]

        def scale(camera: str) -> float:
            return float(js(f"{q(camera, 'video')}.clientWidth / 640"))

        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.add_init_script(RECORD_LABELS)
            console: list[str] = []
            page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
            page.on("pageerror", lambda e: console.append(f"error: {e}"))
            page.goto(url)
            page.wait_for_function(
                "document.querySelectorAll('article.camera').length === 3", timeout=30_000
            )
            for cam in ("yard", "dock"):
                page.wait_for_function(f"{q(cam, 'video')}.videoWidth > 0", timeout=60_000)
                page.wait_for_function(
                    f"{q(cam, 'banner')}.textContent.startsWith('live')", timeout=30_000
                )

            # the camera that sends nothing: its view says it waits for the camera
            page.wait_for_function(
                f"!{q('gate', 'stage-note')}.hidden && {q('gate', 'banner')}.textContent.startsWith('waiting')",
                timeout=30_000,
            )
            results["gate_note"] = js(f"{q('gate', 'stage-note')}.textContent")
            results["gate_banner"] = js(f"{q('gate', 'banner')}.textContent")
            results["gate_text"] = js("document.querySelector('[data-camera=gate]')?.innerText")
            results["yard_note_hidden"] = js(f"{q('yard', 'stage-note')}.hidden")

            # labels in the grid's tiles: drawn on the overlay, 12 CSS px or more
            ids = [o["id"] for o in _get(url + "api/objects?camera=yard")["objects"]]
            results["tile_scale"] = scale("yard")
            results["tile_labels"] = labels_of("yard", ids)
            page.screenshot(path=str(art / "page-grid-1280.png"))

            # what Remove and Reset do
            results["remove_title"] = js(f"{q('yard', 'remove')}.title")
            results["reset_title"] = js(f"{q('yard', 'reset')}.title")
            results["remove_help"] = js(f"{q('yard', 'remove-help')}.textContent")

            # the prompt, changed on the control socket: the box and "tracking:" follow
            t0 = time.monotonic()
            set_prompt("yard", "kite. bird.")
            page.wait_for_function(
                f"{q('yard', 'prompt')}.value === 'kite. bird.'"
                f" && {q('yard', 'prompt-status')}.textContent === 'tracking: kite. bird.'",
                timeout=PROMPT_FOLLOW_S * 1000,
            )
            results["prompt_followed_s"] = round(time.monotonic() - t0, 2)
            # while the user types in the box, a change elsewhere does not overwrite it
            page.click("[data-camera=yard] [data-role=prompt]")
            page.keyboard.press("Control+A")
            page.keyboard.type("my own edit")
            set_prompt("yard", "cat.")
            page.wait_for_function(
                f"{q('yard', 'prompt-status')}.textContent === 'tracking: cat.'",
                timeout=PROMPT_FOLLOW_S * 1000,
            )
            results["typing_value"] = js(f"{q('yard', 'prompt')}.value")
            results["typing_focused"] = js(f"document.activeElement === {q('yard', 'prompt')}")
            # the CLI changes it: once the user has left the box, the box follows again
            page.click("header h1")
            t0 = time.monotonic()
            argv = ["prompt", "--config", str(site), "--camera", "yard", "dog."]
            cli = subprocess.run(
                [sys.executable, "-m", "clients.cli", *argv],
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert cli.returncode == 0, cli.stderr
            page.wait_for_function(
                f"{q('yard', 'prompt')}.value === 'dog.'"
                f" && {q('yard', 'prompt-status')}.textContent === 'tracking: dog.'",
                timeout=PROMPT_FOLLOW_S * 1000,
            )
            results["cli_followed_s"] = round(time.monotonic() - t0, 2)
            results["other_prompts"] = {c: js(f"{q(c, 'prompt')}.value") for c in ("dock", "gate")}

            # a 390 px phone: labels still drawn at 12 CSS px or more
            page.set_viewport_size({"width": 390, "height": 844})
            page.wait_for_function(f"{q('yard', 'video')}.clientWidth < 390", timeout=10_000)
            js("window.__labels.length = 0")
            ids = [o["id"] for o in _get(url + "api/objects?camera=yard")["objects"]]
            results["phone_scale"] = scale("yard")
            results["phone_labels"] = labels_of("yard", ids)
            page.screenshot(path=str(art / "page-grid-390.png"), full_page=True)

            # offline page: a job row says prompt, start time, frames and state; a new video
            # starts with an empty prompt
            page.set_viewport_size({"width": 1280, "height": 800})
            page.goto(url + "offline")
            clip = _make_video(tmp / "s.mp4")
            page.set_input_files("#file", str(clip))
            page.wait_for_function("!document.getElementById('draft').hidden", timeout=30_000)
            page.fill("#prompt", "ball.")
            page.click("#start")
            row = "document.querySelector('#jobs tr')"
            page.wait_for_function(
                f"{row} && {row}.querySelector('.prompt')?.textContent === 'ball.'"
                f" && {row}.querySelector('.started')?.textContent !== ''",
                timeout=30_000,
            )
            results["job_row"] = js(
                f"Object.fromEntries(['name', 'prompt', 'started', 'state', 'pct'].map(c => [c, {row}.querySelector('.' + c).textContent]))"
            )
            results["job_headers"] = js(
                "[...document.querySelectorAll('.jobs th')].map(th => th.textContent)"
            )
            page.set_input_files("#file", str(_make_video(tmp / "t.mp4")))
            page.wait_for_function("!document.getElementById('draft').hidden", timeout=30_000)
            results["second_prompt"] = js("document.getElementById('prompt').value")
            page.screenshot(path=str(art / "page-offline-1280.png"), full_page=True)
            page.set_viewport_size({"width": 390, "height": 844})
            page.screenshot(path=str(art / "page-offline-390.png"), full_page=True)
            for b in page.query_selector_all("#jobs button.cancel"):
                b.click()
            page.click("#discard")
            results["console_errors"] = [c for c in console if c.startswith("error")]
            browser.close()
        results["session_s"] = round(time.monotonic() - t_start, 1)
    finally:
        stop(web)
        engine.close()
    return results


@pytest.mark.slow
def test_page_follows_the_engine_in_chromium() -> None:
    r = run_in_namespace(Path(__file__), timeout=300)
    # the waiting camera
    assert r["gate_banner"].startswith("waiting for camera"), r["gate_banner"]
    assert r["gate_note"] == "waiting for the camera: no picture from it yet", r["gate_note"]
    assert "waiting for the engine" not in r["gate_text"], r["gate_text"]
    assert r["yard_note_hidden"]
    # labels: the tiles and the phone show the 640 px frames small, the overlay draws them
    for where in ("tile", "phone"):
        assert r[f"{where}_scale"] < 0.75, r[f"{where}_scale"]
        assert r[f"{where}_labels"], where
        assert all(d["px"] >= 12 for d in r[f"{where}_labels"]), r[f"{where}_labels"]
    # Remove and Reset
    assert r["remove_title"] == REMOVE_TEXT and REMOVE_TEXT in r["remove_help"]
    assert r["reset_title"] == RESET_TEXT and RESET_TEXT in r["remove_help"]
    # the prompt follows the engine, but not over the user's typing
    assert r["prompt_followed_s"] < PROMPT_FOLLOW_S and r["cli_followed_s"] < PROMPT_FOLLOW_S
    assert r["typing_value"] == "my own edit" and r["typing_focused"]
    assert r["other_prompts"] == {"dock": PROMPTS["dock"], "gate": PROMPTS["gate"]}
    # the offline job row
    row = r["job_row"]
    assert row["name"] == "s.mp4" and row["prompt"] == "ball.", row
    assert re.search(r"\d{1,2}:\d{2}:\d{2}", row["started"]), row
    assert row["state"] in ("queued", "running", "done") and row["pct"].endswith("/ 4"), row
    assert r["job_headers"][:4] == ["video · prompt", "started", "state", "frames"]
    assert r["second_prompt"] == ""
    assert not r["console_errors"], r["console_errors"]
    for name in ("grid-1280", "grid-390", "offline-1280", "offline-390"):
        assert (ROOT / "artifacts" / f"page-{name}.png").stat().st_size > 0
    print(f"\npage session: {r['session_s']} s, prompt followed in {r['prompt_followed_s']} s")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    res = session(Path(a.out))
    print(json.dumps(res), flush=True)
