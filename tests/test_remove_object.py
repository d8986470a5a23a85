"""Remove sticks, through the live engine: the engine process (frame loop, control server,
tracks and annotated publishers, in threads of this process, on real loopback sockets) with the
``demo`` preset's trained SAM 2 and Grounding DINO, grounding in its background worker, on a
generated demo scene whose ground truth says which object each published mask lies on.

Removing a detector-found object used to end its track, and the next grounding found the object
again under a new ID (within a second). Now it stays suppressed: over many groundings no
published object lies on it, it is not drawn, the other objects keep their IDs; a prompt set
again (or a reset) lifts the suppression, and the object is found again under a new ID.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import zmq

from engine.core.protocols import Detector
from engine.models.loading import load_detector, load_kernel
from engine.pipeline import TrackingEngine
from stream import bus as zbus
from stream.config import Config, load_config
from stream.demo import DemoScene, SceneFrame
from stream.wire import AnnotatedMessage, FrameMessage, TrackedObject, TracksMessage
from tests.conftest import wait_for

PROMPT = "ball. box."
SCENE = DemoScene(640, 480, 3, seed=0)  # two balls in view from frame 0, a box from ~frame 30
GROUNDINGS = 8  # groundings over which the removed ball must not come back


@pytest.fixture(scope="module")
def models() -> tuple[Any, Detector]:
    cfg = load_config(None, {"models.preset": "demo", "models.device": "cpu"})
    engine = cfg.engine.model_copy(update={"prompt": PROMPT})
    return load_kernel(cfg.models), load_detector(cfg.models, engine)


@dataclass
class Live:
    """An engine process serving camera ``cam0``; ``step`` sends the scene's next frame and
    returns its tracks message (and the scene's truth for that frame)."""

    cfg: Config
    pub: zmq.Socket[Any]
    tracks: zmq.Socket[Any]
    annotated: zmq.Socket[Any]
    seq: int = 0

    def step(self) -> tuple[TracksMessage, SceneFrame]:
        """Send the next frame and return its tracks; a frame that gets none within 2 s (the
        sockets still joining) is followed by the next one."""

        def send_and_receive() -> tuple[TracksMessage, SceneFrame] | None:
            frame = SCENE.render_frame(self.seq)
            msg = FrameMessage.from_image("cam0", self.seq, frame.image)
            self.pub.send_multipart(msg.to_parts(), copy=False)
            self.seq += 1
            while parts := zbus.recv_multipart_timeout(self.tracks, 2000, copy=True):
                got = TracksMessage.from_parts(parts)
                if got.header.seq == frame.index:
                    return got, frame
            return None

        result: tuple[TracksMessage, SceneFrame] = wait_for(
            send_and_receive, timeout=30, what=f"tracks of frame {self.seq}"
        )
        return result

    def control(self, request: dict[str, Any]) -> dict[str, Any]:
        reply = zbus.request(self.cfg.bus.control, request, timeout_ms=10_000)
        assert reply["ok"] is True, reply
        return reply

    def stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = self.control({"cmd": "stats"})["stats"]
        return stats

    def drawn(self) -> dict[int, int]:
        """Objects drawn per frame, from the annotated messages received so far."""
        out: dict[int, int] = {}
        while parts := zbus.recv_multipart_timeout(self.annotated, 0, copy=True):
            msg = AnnotatedMessage.from_parts(parts)
            out[msg.seq] = msg.objects
        return out


@pytest.fixture
def live(
    models: tuple[Any, Detector],
    bus_overrides: dict[str, str],
    ctx: zmq.Context[Any],
    request: pytest.FixtureRequest,
) -> Iterator[Live]:
    """The engine process; ``request.param`` (indirect parametrization): config overrides."""
    from engine.service import EngineProcess

    kernel, detector = models
    cfg = load_config(
        None,
        {
            **bus_overrides,
            "models.preset": "demo",
            "models.device": "cpu",
            "engine.prompt": PROMPT,
            "engine.reground_every_frames": 3,
            "bus.staleness_ms": 30000,
            **getattr(request, "param", {}),
        },
    )
    engine = TrackingEngine(
        cfg.engine, kernel.new_session(), detector, background_grounding=True, device=kernel.device
    )
    proc = EngineProcess(cfg, engine)
    thread = threading.Thread(target=proc.run, name="engine", daemon=True)
    thread.start()
    pub = zbus.bind(ctx, zmq.PUB, cfg.bus.frames, cfg.bus)
    tracks = zbus.connect(ctx, zmq.SUB, cfg.bus.tracks, subscribe=[b"tracks.cam0"])
    annotated = zbus.connect(ctx, zmq.SUB, cfg.bus.annotated, subscribe=[b"annotated.cam0"])
    try:
        yield Live(cfg, pub, tracks, annotated)
    finally:
        proc.stop.set()
        thread.join(20)
        for s in (pub, tracks, annotated):
            s.close(0)
    assert not thread.is_alive()


def on_object(o: TrackedObject, frame: SceneFrame) -> int | None:
    """The scene object the published mask lies on (mask IoU at least 0.3), if any."""
    mask = o.decode_mask()
    best: int | None = None
    best_iou = 0.3
    for g in frame.truth:
        m = frame.mask(g.id)
        iou = float(np.count_nonzero(m & mask)) / max(1, int(np.count_nonzero(m | mask)))
        if iou >= best_iou:
            best, best_iou = g.id, iou
    return best


REMOVED_BALL, KEPT_BALL = 1, 3  # the scene objects: the ball removed, the ball kept


def start(live: Live) -> tuple[int, int, dict[int, int]]:
    """Run until both balls are published; returns (ID on ball 1, ID on ball 3, ID by
    object)."""

    def both() -> dict[int, int] | None:
        msg, frame = live.step()
        on = {o.id: on_object(o, frame) for o in msg.header.objects}
        ids = {k: tid for tid, k in on.items() if k is not None}
        return ids if 1 in ids and 3 in ids else None

    ids: dict[int, int] = wait_for(both, timeout=60, what="both balls published")
    return ids[1], ids[3], ids


def test_removed_object_stays_removed_over_groundings_until_the_prompt_is_set(live: Live) -> None:
    removed, kept, _ = start(live)
    live.control({"cmd": "remove_object", "id": removed})
    again = zbus.request(live.cfg.bus.control, {"cmd": "remove_object", "id": removed})
    assert again["ok"] is False and f"no tracked object with id {removed}" in again["error"]
    g0 = live.stats()["groundings"]
    seen: set[int] = set()
    published: dict[int, int] = {}
    while live.stats()["groundings"] < g0 + GROUNDINGS:
        msg, frame = live.step()
        assert live.seq < 400, "the engine stopped grounding"
        on = {o.id: on_object(o, frame) for o in msg.header.objects}
        back_on_ball = [tid for tid, ball in on.items() if ball == REMOVED_BALL]
        assert back_on_ball == [], f"frame {frame.index}: removed ball back as {back_on_ball}"
        assert removed not in on and on.get(kept) == KEPT_BALL, (frame.index, on)
        seen |= set(on)
        published[msg.header.seq] = len(on)
    assert len(published) >= GROUNDINGS // 2, "fewer frames checked than groundings waited for"
    stats = live.stats()
    assert stats["suppressed"] == 1 and stats["objects"] == len(on)
    drawn = live.drawn()
    both = [s for s in drawn if s in published]  # frames whose annotated frame came too
    assert both and all(drawn[s] == published[s] for s in both), (drawn, published)

    # The same prompt set again lifts the suppression: the ball is found under a new ID.
    live.control({"cmd": "set_prompt", "prompt": PROMPT})

    def ball_back() -> int | None:
        msg, frame = live.step()
        on = {on_object(o, frame): o.id for o in msg.header.objects}
        assert on.get(3) == kept, on
        return on.get(1)

    back = wait_for(ball_back, timeout=60, what="the removed ball found again")
    assert back > max(seen | {removed}) and live.stats()["suppressed"] == 0


def test_reset_clears_suppressions(live: Live) -> None:
    removed, _, ids = start(live)
    live.control({"cmd": "remove_object", "id": removed})
    wait_for(lambda: live.stats()["suppressed"] == 1, what="suppressed counted")
    live.control({"cmd": "reset"})
    assert live.stats()["suppressed"] == 0

    def ball_back() -> int | None:
        msg, frame = live.step()
        return {on_object(o, frame): o.id for o in msg.header.objects}.get(1)

    back = wait_for(ball_back, timeout=60, what="the removed ball found after reset")
    assert back > max(ids.values())


def away(k: int) -> range:
    """The first frames during which scene object ``k`` is out of view (after being in it)."""
    seen = [any(g.id == k for g in SCENE.ground_truth(i)) for i in range(400)]
    gone = seen.index(False)
    return range(gone, seen.index(True, gone))


@pytest.mark.parametrize("live", [{"engine.max_missed": 5, "engine.reid_frames": 5}], indirect=True)
def test_removed_object_that_left_the_view_is_new_when_it_comes_back(live: Live) -> None:
    """Ball 3 leaves the view for 19 frames. Removed before, it is suppressed while in view;
    once away, its track ends (lost ``max_missed`` frames, then dormant ``reid_frames``), and
    with it the suppression: back in view, it is published again under a new ID."""
    gone = away(3)
    assert len(gone) > 12, gone  # time for its track to end while it is away
    live.seq = gone.start - 15  # the engine's first frame: a while before the ball leaves
    _, removed, ids = start(live)
    live.control({"cmd": "remove_object", "id": removed})
    seen = set(ids.values())
    while live.seq < gone.start:
        msg, frame = live.step()
        on = {o.id: on_object(o, frame) for o in msg.header.objects}
        assert 3 not in on.values(), f"frame {frame.index}: removed ball back as {on}"
        seen |= set(on)
    assert live.stats()["suppressed"] == 1
    wait_for(
        lambda: live.step() and live.stats()["suppressed"] == 0,
        timeout=60,
        what="the suppressed track ended",
    )
    assert live.seq <= gone.stop, "its track ended only after it was back in view"

    def ball_back() -> int | None:
        msg, frame = live.step()
        seen.update(o.id for o in msg.header.objects)
        return {on_object(o, frame): o.id for o in msg.header.objects}.get(3)

    back = wait_for(ball_back, timeout=60, what="the ball back in view tracked")
    assert back not in ids.values() and back > max(ids.values()) and back != removed
