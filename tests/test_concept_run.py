"""SAM 3 concept mode end to end: ``promptcam run --models sam3-tiny-random`` on the demo scene
(SAM 3's detector grounds ``ball. box.`` with masks that seed the SAM 3 tracker), a real
ZeroMQ subscriber on the tracks topic, a ``set_prompt`` to ``ball.`` over the real control
socket: afterwards only balls, the surviving ball IDs and labels kept, no box ID back, IDs never
reused (an ID back after a gap is a dormant track re-identified under its own label, within
``engine.reid_frames``); SIGTERM stops everything cleanly.

Random weights score every query near 0.25 (hence ``box_threshold: 0.2``) and track nothing in
particular, so tracks would end on their own after a few re-groundings without re-detection;
``max_unseen`` and ``max_missed`` are raised so that a track ends only when the prompt change
ends it (or two tracks merge), and the assertions below can require survivors.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from clients.subscriber import TracksSubscriber
from stream import bus as zbus
from stream.config import EngineConfig
from stream.wire import TracksHeader
from tests.conftest import free_port, tcp_endpoint, wait_for

REPO = Path(__file__).resolve().parent.parent
BEFORE, AFTER = "ball. box.", "ball."


class TracksLog:
    """Every tracks message of the run, in arrival order, collected by a ``TracksSubscriber``
    in a thread of its own."""

    def __init__(self, endpoint: str) -> None:
        self.ctx: zmq.Context[Any] = zmq.Context()
        self.sub = TracksSubscriber(endpoint, camera="cam0", ctx=self.ctx).open()
        self._seen: list[TracksHeader] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tracks-log", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            msg = self.sub.recv(timeout=0.05)
            if msg is not None:
                with self._lock:
                    self._seen.append(msg.header)

    def headers(self) -> list[TracksHeader]:
        with self._lock:
            return list(self._seen)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sub.close()
        self.ctx.destroy(linger=0)


class Lines:
    """A child's text stream read to the end in a thread (so its pipe never fills)."""

    def __init__(self, stream: Any) -> None:
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._run, args=(stream,), daemon=True)
        self._thread.start()

    def _run(self, stream: Any) -> None:
        for line in stream:
            self.lines.append(line)

    def text(self, timeout: float = 10.0) -> str:
        self._thread.join(timeout)
        return "".join(self.lines)


@pytest.fixture
def tracks_log() -> Iterator[tuple[str, TracksLog]]:
    endpoint = tcp_endpoint()
    log = TracksLog(endpoint)
    try:
        yield endpoint, log
    finally:
        log.close()


def labels_of(h: TracksHeader) -> dict[int, str]:
    return {o.id: o.label for o in h.objects}


def test_concept_mode_through_run_keeps_ids_across_a_prompt_change(
    tmp_path: Path, tracks_log: tuple[str, TracksLog]
) -> None:
    tracks, log = tracks_log
    control, web_port = tcp_endpoint(), free_port()
    site = tmp_path / "site.yaml"
    site.write_text(
        f"""
bus: {{frames: '{tcp_endpoint()}', tracks: '{tracks}', annotated: '{tcp_endpoint()}',
       control: '{control}'}}
models: {{device: cpu}}
source: {{width: 160, height: 120, fps: 8}}
engine: {{box_threshold: 0.2, max_objects: 6, reground_every_frames: 5,
          max_unseen: 10000, max_missed: 100000}}
web: {{port: {web_port}}}
run: {{status_file: '{tmp_path / "status.json"}', status_every_s: 1, stop_timeout_s: 20}}
"""
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "clients.cli", "run", "--config", str(site),
         "--models", "sam3-tiny-random", "--source", "demo", "--prompt", BEFORE,
         "--duration", "300"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    assert proc.stdout is not None and proc.stderr is not None
    out, err = Lines(proc.stdout), Lines(proc.stderr)

    def running() -> bool:
        if proc.poll() is not None:
            pytest.fail(f"promptcam run exited with {proc.returncode}: {err.text()[-3000:]}")
        return True

    def ctl(req: dict[str, Any]) -> dict[str, Any]:
        reply = zbus.request(control, req, 30_000)
        assert reply["ok"], reply
        return reply

    try:
        # Both labels tracked for a while (re-groundings included) before the change.
        def both(h: Any) -> bool:
            return {"ball", "box"} <= set(labels_of(h).values())

        def ready() -> bool:
            hs = log.headers()
            # both labels over 8 frames, and in the newest one: a box is live at the change
            return running() and sum(map(both, hs)) >= 8 and both(hs[-1])

        wait_for(
            ready,
            timeout=180,
            what="tracks of both labels over 8 frames",
        )
        assert ctl({"cmd": "set_prompt", "prompt": AFTER}) == {"ok": True, "labels": ["ball"]}
        groundings_at_change = ctl({"cmd": "stats"})["stats"]["groundings"]
        stats = wait_for(
            lambda: (
                running()
                and sum(h.prompt == AFTER for h in log.headers()) >= 12
                and (s := ctl({"cmd": "stats"})["stats"])["groundings"] >= groundings_at_change + 2
                and s
            ),
            timeout=120,
            interval=0.2,
            what="frames and two re-groundings after the prompt change",
        )
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    stderr = err.text()
    assert rc == 0, stderr[-3000:]
    assert "did not stop within" not in stderr, stderr[-3000:]  # no child had to be killed
    assert "stopped (restarts: capture 0, engine 0, web 0)" in stderr, stderr[-3000:]
    assert f"http://127.0.0.1:{web_port}/" in out.text()  # the page URL, printed at start

    # The engine that `run` started is SAM 3 concept mode: SAM 3 tracker, SAM 3 detector (the
    # stats reply names no model; the engine's log, forwarded by the launcher, does).
    assert "[engine]" in stderr and "(Sam3TrackerVideoModel)" in stderr, stderr[-3000:]
    assert "detector: sam3-tiny-random (sam3," in stderr, stderr[-3000:]
    assert stats["prompt"] == AFTER
    assert stats["grounding_errors"] == 0 and stats["seed_failures"] == 0, stats
    assert log.sub.stats.rejected_total == 0 and log.sub.stats.seq_resets == 0, log.sub.stats

    headers = log.headers()
    prompts = [h.prompt for h in headers]
    n_before = prompts.count(BEFORE)
    assert prompts == [BEFORE] * n_before + [AFTER] * (len(prompts) - n_before), "prompt order"
    before, after = headers[:n_before], headers[n_before:]
    assert len(after) >= 12

    # Over the whole run: one label per ID; a new ID is greater than every earlier one; an ID
    # that left the tracks comes back only as a dormant track re-identified within the
    # re-identification window (engine.reid_frames), under its own label.
    window = EngineConfig().reid_frames
    label: dict[int, str] = {}
    left_at: dict[int, int] = {}
    previous: set[int] = set()
    for h in headers:
        now = labels_of(h)
        assert len(now) == len(h.objects), f"an ID twice in seq {h.seq}"
        new = set(now) - set(label)
        if new and label:
            assert min(new) > max(label), f"seq {h.seq}: new {sorted(new)}, seen {sorted(label)}"
        for tid, lab in now.items():
            assert label.setdefault(tid, lab) == lab, f"ID {tid} changed label"
        for tid in previous - set(now):
            left_at[tid] = h.seq
        for tid in set(now) & set(left_at):
            away = h.seq - left_at.pop(tid)
            assert away <= window, f"seq {h.seq}: ID {tid} back after {away} frames"
        previous = set(now)

    # The change: only balls afterwards; the balls of the last frame before it keep their IDs
    # (at least one survives) and labels; no box ID ever shows up again, though a box was live
    # within the last frames before it (the random-weight masks make tracks go dormant as
    # duplicates now and then; a dormant box would come back within reid_frames if the change
    # did not end it).
    last = labels_of(before[-1])
    balls = {tid for tid, lab in last.items() if lab == "ball"}
    boxes = {tid for h in before for tid, lab in labels_of(h).items() if lab == "box"}
    recent = {tid for h in before[-6:] for tid in labels_of(h)}
    assert balls and boxes & recent, f"last frames before the change: {before[-6:]}"
    after_ids = {tid for h in after for tid in labels_of(h)}
    assert {lab for h in after for lab in labels_of(h).values()} == {"ball"}
    assert not after_ids & boxes, sorted(after_ids & boxes)
    survivors = balls & set(labels_of(after[0]))
    assert survivors, f"no ball of {sorted(balls)} survived the change: {labels_of(after[0])}"
    newest_before = max(tid for h in before for tid in labels_of(h))
    carried = {tid for tid in after_ids if tid <= newest_before}
    balls_before = {tid for h in before for tid, lab in labels_of(h).items() if lab == "ball"}
    assert carried <= balls_before, sorted(carried - balls_before)  # only balls carry over
