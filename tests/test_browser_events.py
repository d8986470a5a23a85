"""The events part of the live page in a real headless Chromium against the stand-in engine
(no models) and a real ``promptcam web``, inside a loopback-only network namespace (as
tests/test_browser_page.py), over a seeded events database with snapshot files:

- a zone drawn with the mouse over the live video (four clicks, a click on the first corner
  closes it), named, saved; a line drawn with two clicks and one end dragged; ``zones.json``
  holds both where the mouse put them;
- after a reload the page shows them again, with the zone's live count (one seeded event is in
  the zone now);
- the timeline lists the camera's events newest first with their snapshot thumbnails; clicking
  one opens its snapshot frame; the label filter narrows it;
- at 390 px the page fits the phone's width.

Screenshots go to artifacts/ (events-1280.png, events-edit-1280.png, events-dialog-1280.png,
events-390.png).
"""

from __future__ import annotations

import argparse
import json
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
from tests.test_browser import CHROMIUM, CHROMIUM_FLAGS, run_in_namespace  # noqa: E402

CAMERA = "yard"
W, H = 640, 480
ZONE_CLICKS = [(0.15, 0.55), (0.55, 0.5), (0.6, 0.95), (0.1, 0.95)]
LINE_CLICKS = [(0.75, 0.1), (0.75, 0.6)]
LINE_END_DRAGGED = (0.9, 0.8)
N_EVENTS = 6
NO_SNAPSHOT = 2  # the event e2 has no snapshot file


def _seed(db: Path, now_ns: int) -> None:
    import cv2
    import numpy as np

    from clients.events.model import EventDict, EventMessage, EventType, Kind
    from clients.events.store import EventStore

    store = EventStore(db)
    snaps = db.parent / "snapshots"
    snaps.mkdir(exist_ok=True)  # the store makes it
    colours = [(60, 60, 230), (40, 170, 255), (90, 200, 60), (230, 120, 50), (200, 80, 200)]
    for i in range(N_EVENTS):
        label = "ball" if i % 2 == 0 else "box"
        active = i == N_EVENTS - 1
        body: EventDict = {
            "id": f"e{i}",
            "object_id": 10 + i,
            "label": label,
            "start_ns": now_ns - (N_EVENTS - i) * 45 * 10**9,
            "end_ns": None if active else now_ns - (N_EVENTS - i) * 45 * 10**9 + 8 * 10**9,
            "zones": ["door"] if active else [],
            "entered_zones": ["door"] if i in (1, N_EVENTS - 1) else [],
            "lines": [{"line": "gate", "direction": "in", "t_ns": now_ns}] if i == 3 else [],
            "top_score": 0.8,
            "has_snapshot": i != NO_SNAPSHOT,
        }
        kind = EventType.NEW if active else EventType.END
        store.write(EventMessage(CAMERA, kind, Kind.OBJECT, body, None))
        if i == NO_SNAPSHOT:
            continue
        # a frame like the events service's: the scene, the object's mask outlined
        img = np.zeros((H, W, 3), np.uint8)
        img[:] = np.linspace(40, 110, W, dtype=np.uint8)[None, :, None]
        mask = np.zeros((H, W), np.uint8)
        centre = (140 + 70 * i, 200 + 25 * (i % 3))
        if label == "ball":
            cv2.circle(mask, centre, 55, 255, -1)
        else:
            cv2.rectangle(
                mask, (centre[0] - 60, centre[1] - 45), (centre[0] + 60, centre[1] + 45), 255, -1
            )
        img[mask > 0] = colours[i % len(colours)]
        contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(img, contours, -1, (255, 255, 255), 3)
        cv2.putText(
            img, f"#{10 + i} {label}", (centre[0] - 50, centre[1] - 70), 0, 0.8, (255, 255, 255), 2
        )
        (snaps / f"e{i}.jpg").write_bytes(cv2.imencode(".jpg", img)[1].tobytes())
        (snaps / f"e{i}.png").write_bytes(cv2.imencode(".png", mask)[1].tobytes())
    store.close()


def _site(tmp: Path, web_port: int, db: Path) -> Path:
    site = tmp / "site.yaml"
    site.write_text(
        f"""
bus: {{annotated: '{tcp_endpoint()}', tracks: '{tcp_endpoint()}', control: '{tcp_endpoint()}'}}
models: {{preset: tiny-random, device: cpu}}
web: {{port: {web_port}}}
events: {{database: '{db}'}}
cameras:
  {CAMERA}: {{source: demo, prompt: 'ball. box.', frames: '{tcp_endpoint()}'}}
"""
    )
    return site


def session(out: Path) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    from clients.web.synthetic import SyntheticEngine
    from stream.config import load_config
    from tests.web_stack import stop

    results: dict[str, Any] = {}
    art = ROOT / "artifacts"
    art.mkdir(exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="promptcam-events-page-"))
    db = tmp / "events.db"
    _seed(db, time.time_ns())
    web_port = free_port()
    site = _site(tmp, web_port, db)
    engine = SyntheticEngine(load_config(site), fps=10, width=W, height=H).start()
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
        cam = f"[data-camera={CAMERA}]"

        def role(name: str) -> str:
            return f"{cam} [data-role={name}]"

        def js(expr: str) -> Any:
            return page.evaluate(expr)

        def at(fx: float, fy: float) -> tuple[float, float]:
            """Page coordinates of a point of the frame (the video shows it whole: 4:3)."""
            box = page.locator(role("video")).bounding_box()
            assert box is not None
            return box["x"] + fx * box["width"], box["y"] + fy * box["height"]

        def live_video() -> None:
            page.wait_for_function(
                f"document.querySelector('{role('video')}')?.videoWidth > 0", timeout=60_000
            )

        def timeline_ready(n: int) -> None:
            page.wait_for_function(
                f"[...document.querySelectorAll('{cam} .timeline li')].length === {n}"
                f" && [...document.querySelectorAll('{cam} .timeline img')].every(i => i.complete && i.naturalWidth > 0)",
                timeout=20_000,
            )

        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            console: list[str] = []
            page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
            page.on("pageerror", lambda e: console.append(f"error: {e}"))
            page.goto(url)
            live_video()
            timeline_ready(N_EVENTS)
            results["timeline"] = js(
                f"[...document.querySelectorAll('{cam} .timeline .event')].map(b => [b.dataset.id, !!b.querySelector('img')])"
            )

            # a zone drawn with the mouse: four corners, a click on the first closes it
            page.click(role("zone-edit"))
            page.click(role("new-zone"))
            for fx, fy in [*ZONE_CLICKS, ZONE_CLICKS[0]]:
                page.mouse.click(*at(fx, fy))
            page.fill(role("shape-name"), "door")
            # a line: two clicks, then one end dragged
            page.click(role("new-line"))
            for fx, fy in LINE_CLICKS:
                page.mouse.click(*at(fx, fy))
            page.fill(role("shape-name"), "gate")
            page.mouse.move(*at(*LINE_CLICKS[1]))
            page.mouse.down()
            page.mouse.move(*at(0.82, 0.7), steps=3)
            page.mouse.move(*at(*LINE_END_DRAGGED), steps=3)
            page.mouse.up()
            page.screenshot(path=str(art / "events-edit-1280.png"))
            page.click(role("zones-save"))
            page.wait_for_function(
                f"document.querySelector('{role('zones-status')}')?.textContent.startsWith('saved')",
                timeout=10_000,
            )
            results["zones_file"] = json.loads((tmp / "zones.json").read_text())
            page.click(role("zone-edit"))  # done editing

            # after a reload: the zone, its count (one event in it now), the line
            page.reload()
            live_video()
            page.wait_for_function(
                f"document.querySelector('{role('count-door')}')?.textContent === '1'",
                timeout=15_000,
            )
            results["shapes"] = js(
                f"[...document.querySelectorAll('{cam} .shapes .shape')].map(b => b.innerText.replace(/\\s+/g, ' '))"
            )
            results["svg_polygons"] = js(
                f"document.querySelectorAll('{cam} .zones-layer polygon').length"
            )
            results["svg_texts"] = js(
                f"[...document.querySelectorAll('{cam} .zones-layer text')].map(t => t.textContent)"
            )
            timeline_ready(N_EVENTS)
            page.screenshot(path=str(art / "events-1280.png"), full_page=True)

            # the timeline: a click opens the event's snapshot frame
            page.click(f"{cam} .timeline .event[data-id=e4]")
            page.wait_for_function(
                "document.getElementById('event-dialog').open"
                " && document.querySelector('#event-dialog img')?.naturalWidth > 0",
                timeout=10_000,
            )
            results["dialog_src"] = js("document.querySelector('#event-dialog img')?.src")
            results["dialog_size"] = js(
                "[document.querySelector('#event-dialog img')?.naturalWidth, document.querySelector('#event-dialog img')?.naturalHeight]"
            )
            results["dialog_title"] = js("document.querySelector('#event-dialog h2')?.textContent")
            page.screenshot(path=str(art / "events-dialog-1280.png"))
            page.keyboard.press("Escape")
            page.wait_for_function("!document.getElementById('event-dialog').open", timeout=5_000)

            # the label filter
            page.select_option(role("ev-label"), "box")
            page.wait_for_function(
                f"[...document.querySelectorAll('{cam} .timeline .label')].every(l => l.textContent.endsWith(' box'))"
                f" && document.querySelectorAll('{cam} .timeline li').length === {N_EVENTS // 2}",
                timeout=10_000,
            )
            results["filtered"] = js(
                f"[...document.querySelectorAll('{cam} .timeline .event')].map(b => b.dataset.id)"
            )
            page.select_option(role("ev-label"), "")
            timeline_ready(N_EVENTS)

            # every control has a name a screen reader can say
            results["unnamed"] = js(
                f"""[...document.querySelectorAll('{cam} button, {cam} input, {cam} select')]
                .filter(e => !e.closest('[hidden]') && !(e.getAttribute('aria-label') || e.textContent.trim() || e.closest('label')))
                .map(e => e.outerHTML.slice(0, 80))"""
            )

            # a phone
            page.set_viewport_size({"width": 390, "height": 844})
            page.wait_for_function(
                f"document.querySelector('{role('video')}')?.clientWidth < 390", timeout=10_000
            )
            results["phone_scroll_width"] = js("document.documentElement.scrollWidth")
            results["phone_svg_texts"] = js(
                f"[...document.querySelectorAll('{cam} .zones-layer text')].map(t => t.textContent)"
            )
            # no two zone / line labels drawn over each other (the line's name and its "in")
            results["phone_label_overlaps"] = js(
                f"""(() => {{ const b = [...document.querySelectorAll('{cam} .zones-layer text')]
                .map(t => [t.textContent, t.getBBox()]); const out = [];
                b.forEach(([n, r], i) => b.slice(i + 1).forEach(([m, q]) => {{
                  if (r.x < q.x + q.width && q.x < r.x + r.width && r.y < q.y + q.height && q.y < r.y + r.height) out.push([n, m]); }}));
                return out; }})()"""
            )
            page.screenshot(path=str(art / "events-390.png"), full_page=True)
            results["console_errors"] = [c for c in console if c.startswith("error")]
            browser.close()
        results["session_s"] = round(time.monotonic() - t_start, 1)
    finally:
        stop(web)
        engine.close()
    return results


def _close(a: list[float], b: tuple[float, float] | list[float], tol: float = 0.012) -> bool:
    return abs(a[0] - b[0]) <= tol and abs(a[1] - b[1]) <= tol


@pytest.mark.slow
def test_zones_counts_and_timeline_in_chromium() -> None:
    r = run_in_namespace(Path(__file__), timeout=240)
    ids = [f"e{i}" for i in reversed(range(N_EVENTS))]
    assert r["timeline"] == [[i, i != f"e{NO_SNAPSHOT}"] for i in ids], r["timeline"]
    cams = r["zones_file"]["cameras"]
    door, gate = cams[CAMERA]["zones"]["door"], cams[CAMERA]["lines"]["gate"]
    assert door["units"] == "fraction" and len(door["points"]) == len(ZONE_CLICKS), door
    assert all(_close(p, c) for p, c in zip(door["points"], ZONE_CLICKS, strict=True)), door
    assert _close(gate["points"][0], LINE_CLICKS[0]), gate
    assert _close(gate["points"][1], LINE_END_DRAGGED), gate
    assert r["shapes"] == ["door zone 1", "gate line 1 in / 0 out"], r["shapes"]
    assert r["svg_polygons"] == 1 and "door · 1" in r["svg_texts"], r["svg_texts"]
    assert "gate · 1 in / 0 out" in r["svg_texts"] and "in" in r["svg_texts"], r["svg_texts"]
    assert r["dialog_src"].split("?")[0].endswith("/api/events/e4/snapshot.jpg")
    assert r["dialog_size"] == [W, H] and r["dialog_title"] == f"{CAMERA} · #14 ball"
    assert r["filtered"] == ["e5", "e3", "e1"], r["filtered"]
    assert not r["unnamed"], r["unnamed"]
    assert r["phone_scroll_width"] <= 390 and "door · 1" in r["phone_svg_texts"]
    assert r["phone_label_overlaps"] == [], r["phone_label_overlaps"]
    assert not r["console_errors"], r["console_errors"]
    for name in ("1280", "edit-1280", "dialog-1280", "390"):
        assert (ROOT / "artifacts" / f"events-{name}.png").stat().st_size > 0
    print(f"\nevents page session: {r['session_s']} s")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    res = session(Path(a.out))
    print(json.dumps(res), flush=True)
