"""The README's first command, offline, in a real headless Chromium: ``promptcam run --prompt
"red ball."`` with no model flag, inside a loopback-only network namespace (so the Hugging Face
Hub cannot be reached, as on a fresh offline machine).

pytest re-executes this file under ``unshare -rn`` (tests/netns.py). In there ``session()``
starts the run, checks that it says in one line that the demo source runs on the ``demo``
preset, subscribes to the tracks and checks them against the demo scene's ground truth (the red
ball followed, no track on an object of another colour), opens the page in Chromium, waits for labelled red balls in the
object list and takes a screenshot: ``artifacts/demo-red-ball.png``.
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
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests import netns  # noqa: E402
from tests.test_browser import CHROMIUM, CHROMIUM_FLAGS, _skip_reason  # noqa: E402

PROMPT = "red ball."
SCREENSHOT = ROOT / "artifacts" / "demo-red-ball.png"
TRACKS_TO_CHECK = 40


def _tracks_against_truth(endpoint: str, n: int) -> dict[str, Any]:
    """Receive tracks until ``n`` objects with a mask came; score each against the scene's
    ground truth of that frame (the capture's ``seq`` is the scene's frame index)."""

    from clients.subscriber import TracksSubscriber
    from stream.config import load_config
    from stream.demo import DemoScene

    s = load_config(None).source
    scene = DemoScene(s.width, s.height, s.demo_objects, s.seed)
    seen = on_red_ball = on_other = 0
    labels: set[str] = set()
    deadline = time.monotonic() + 180
    with TracksSubscriber(endpoint, "cam0") as sub:
        while seen < n and time.monotonic() < deadline:
            msg = sub.recv(timeout=5.0)
            if msg is None or not msg.header.objects:
                continue
            frame = scene.render_frame(msg.header.seq)
            balls = [frame.mask(g.id) for g in frame.truth if g.description == "red ball"]
            others = [frame.mask(g.id) for g in frame.truth if g.colour != "red"]
            for o in msg.header.objects:
                m = o.decode_mask()
                labels.add(o.label)
                if not m.any():  # a lost track (a ball that left the frame): an empty mask
                    continue
                on_red_ball += int(_best_iou(m, balls) >= 0.5)
                on_other += int(_best_iou(m, others) >= 0.5)
                seen += 1
    return {
        "object_frames": seen,
        "on_red_ball": on_red_ball,
        "on_other_colour": on_other,
        "labels": sorted(labels),
    }


def _best_iou(mask: Any, among: list[Any]) -> float:
    import numpy as np

    ious = [np.count_nonzero(mask & m) / max(1, int(np.count_nonzero(mask | m))) for m in among]
    return float(max(ious, default=0.0))


def session() -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    results: dict[str, Any] = {}
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("HF_HUB_OFFLINE", None)  # offline because nothing but loopback exists in here
    run = subprocess.Popen(
        [sys.executable, "-m", "clients.cli", "run", "--prompt", PROMPT, "--log-level", "WARNING"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env,
    )  # fmt: skip
    try:
        assert run.stdout is not None
        lines: list[str] = []
        url = None
        deadline = time.monotonic() + 120
        while url is None and time.monotonic() < deadline:
            line = run.stdout.readline()
            if not line:
                raise RuntimeError(f"promptcam run ended early: {lines}")
            lines.append(line.strip())
            if line.startswith("promptcam: open "):
                url = line.split()[2]
        results["fallback_line"] = next((ln for ln in lines if "'demo' preset" in ln), None)
        results.update(_tracks_against_truth("tcp://127.0.0.1:5551", TRACKS_TO_CHECK))
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.goto(str(url))
            page.wait_for_function(
                "document.querySelector('[data-camera=cam0] [data-role=video]')?.videoWidth > 0",
                timeout=90_000,
            )
            f0 = page.evaluate(
                "document.querySelector('[data-camera=cam0] [data-role=video]')?.getVideoPlaybackQuality().totalVideoFrames"
            )
            page.wait_for_function(
                f"document.querySelector('[data-camera=cam0] [data-role=video]')?.getVideoPlaybackQuality().totalVideoFrames > {f0} + 10",
                timeout=60_000,
            )
            # the object list is live: a ball that leaves the frame is lost, then leaves the
            # list. The rows are read in the same poll that finds a red ball in view (not lost),
            # and the screenshot taken right after.
            rows = page.wait_for_function(
                """() => {
                    const trs = [...document.querySelectorAll('[data-camera=cam0] [data-role=objects] tr')];
                    const inView = trs.some(r => r.querySelector('.label')?.textContent === 'red ball'
                        && r.querySelector('.state')?.textContent !== 'lost');
                    return inView ? trs.map(r => r.textContent) : null;
                }""",
                timeout=90_000,
            )
            results["object_rows"] = rows.json_value()
            SCREENSHOT.parent.mkdir(exist_ok=True)
            page.screenshot(path=str(SCREENSHOT))
            browser.close()
    finally:
        run.send_signal(signal.SIGINT)
        try:
            run.wait(30)
        except subprocess.TimeoutExpired:
            run.kill()
            run.wait(5)
    return results


@pytest.mark.slow
def test_first_command_offline_tracks_red_balls_in_chromium() -> None:
    reason = _skip_reason()
    if reason:
        pytest.skip(f"browser test needs a loopback-only namespace and Chromium: {reason}")
    with tempfile.TemporaryDirectory():
        proc = subprocess.run(
            netns.command([sys.executable, str(Path(__file__).resolve())]),
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=420,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    assert proc.returncode == 0 and lines, (
        f"session failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    )
    r = json.loads(lines[-1])
    assert r["fallback_line"] and "sam2.1-hiera-tiny" in r["fallback_line"]
    assert r["labels"] == ["red ball"]
    assert r["object_frames"] >= TRACKS_TO_CHECK
    # the red ball followed, and no track on an object of another colour. Not asserted: that
    # every track is on a red ball. The shipped SAM 2 keeps a mask for a few seconds where a ball
    # left the frame, until re-grounding ends it, and the detector takes a red box half out of
    # the frame for a red ball (measured and stated in the README).
    # Measured 0-13 % of masks on another colour in live runs, idle or loaded (frames the engine skips
    # vary with load); a model blind to colour puts most of them there (4 of the 6 objects).
    assert r["on_red_ball"] >= 5 and r["on_other_colour"] / r["object_frames"] <= 0.25, r
    assert any("red ball" in row for row in r["object_rows"])
    assert SCREENSHOT.stat().st_size > 10_000


if __name__ == "__main__":
    argparse.ArgumentParser().parse_args()
    print(json.dumps(session()), flush=True)
