"""The engine core and the engine process: scheduling of background grounding, control,
publishing over real sockets. Models: tiny-random SAM 2; a detector double only where the test
is about scheduling around the detector."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pytest
import zmq
from supervision import Detections

from engine.core.protocols import DetectorPrompt
from engine.detectors.base import make_detections
from engine.models.sam2 import load_sam2
from engine.pipeline import FrameInput, TrackingEngine
from engine.segmenters.sam2 import StreamingSegmenter
from stream import bus as zbus
from stream.config import Config, EngineConfig, ModelsConfig, load_config
from stream.demo import DemoScene
from stream.errors import PromptError, RequestError
from stream.wire import FrameMessage, TracksMessage
from tests.conftest import wait_for


@pytest.fixture(scope="module")
def loaded() -> Any:
    return load_sam2(ModelsConfig(preset="tiny-random", device="cpu"))


class SlowDetector:
    """Detector double: blocks until ``gate`` is set (a detector as slow as the test wants), then
    reports where the scene's objects were on the frame it was given (ground truth looked up by
    the frame's pixel tag)."""

    def __init__(self, scene: DemoScene, gate: threading.Event | None = None) -> None:
        self.scene = scene
        self.gate = gate
        self.calls: list[int] = []

    def parse_prompt(self, text: str) -> DetectorPrompt:
        return DetectorPrompt(("ball", "box"), "ball. box.")

    def detect_batch(
        self, images: Sequence[np.ndarray], prompts: Sequence[DetectorPrompt]
    ) -> list[Detections]:
        return [self.detect(image, prompt) for image, prompt in zip(images, prompts, strict=True)]

    def detect(self, image_bgr: np.ndarray, prompt: DetectorPrompt) -> Detections:
        i = int(image_bgr[0, 0, 0]) + 256 * int(image_bgr[0, 0, 1])  # frame index tagged in a pixel
        self.calls.append(i)
        if self.gate is not None and not self.gate.wait(60):
            raise TimeoutError("test never released the detector")
        _, gts = self.scene.render(i)
        return make_detections(
            [list(g.box) for g in gts], [0.9] * len(gts), [g.label for g in gts], ["ball", "box"]
        )


def tagged(scene: DemoScene, i: int) -> np.ndarray:
    img, _ = scene.render(i)
    img = img.copy()
    img[0, 0, 0], img[0, 0, 1] = i % 256, i // 256
    return img


def test_background_grounding_never_stalls_and_applies_to_its_frame(loaded: Any) -> None:
    scene = DemoScene(320, 240, 3, seed=1, fps=30)
    gate = threading.Event()
    det = SlowDetector(scene, gate)
    cfg = EngineConfig(prompt="ball. box.", reground_every_frames=1000)
    engine = TrackingEngine(cfg, StreamingSegmenter(loaded), det, background_grounding=True)
    try:
        # While the detector is stuck, the loop keeps producing a result for every frame.
        for i in range(10):
            r = engine.process(FrameInput(i, time.time_ns(), tagged(scene, i)))
            assert r.seq == i and r.objects == []
        assert det.calls == [0]  # grounding started on the first frame, and only one is in flight
        assert engine.stats()["grounding_in_flight"] is True
        gate.set()
        assert engine.wait_grounding_idle(30)
        r = engine.process(FrameInput(10, time.time_ns(), tagged(scene, 10)))
        # objects from the late result were prompted on frame 0, where they were detected
        _, gts = scene.render(0)
        assert len(r.objects) == len(gts)
        assert {10 - o.age for o in r.objects} == {0}
        assert engine.stats()["groundings"] == 1
    finally:
        gate.set()
        engine.close()


def test_inline_grounding_and_manual_prompts(loaded: Any) -> None:
    scene = DemoScene(320, 240, 2, seed=3, fps=30)
    det = SlowDetector(scene)
    cfg = EngineConfig(prompt="ball. box.", reground_every_frames=5)
    engine = TrackingEngine(cfg, StreamingSegmenter(loaded), det, background_grounding=False)
    r0 = engine.process(FrameInput(0, 0, tagged(scene, 0)))
    _, gts = scene.render(0)
    assert len(r0.objects) == len(gts)  # in line: objects appear on the grounded frame itself
    assert all(o.state == "new" and o.age == 0 for o in r0.objects)
    for i in range(1, 11):
        engine.process(FrameInput(i, i, tagged(scene, i)))
    assert det.calls == [0, 5, 10]  # scheduled frames only: reproducible
    with pytest.raises(PromptError):
        engine.add_object([10, 10, 10, 50])  # zero area
    with pytest.raises(PromptError):
        engine.add_object([400, 300, 500, 400])  # outside the 320x240 frame
    with pytest.raises(RequestError, match="no tracked object with id 9999"):
        engine.remove_object(9999)
    tid = engine.add_object([10, 10, 60, 60], "cup")
    r = engine.process(FrameInput(11, 11, tagged(scene, 11)))
    assert tid in {o.id for o in r.objects}
    engine.remove_object(tid)
    r = engine.process(FrameInput(12, 12, tagged(scene, 12)))
    assert tid not in {o.id for o in r.objects}
    engine.reset()
    assert engine.seg.object_ids == []


# ---------------------------------------------------------------------------- engine process


@pytest.fixture
def engine_proc(loaded: Any, bus_overrides: dict[str, str]) -> Iterator[tuple[Config, Any]]:
    from engine.service import EngineProcess

    cfg = load_config(
        None,
        {
            **bus_overrides,
            "models.preset": "tiny-random",
            "models.device": "cpu",
            "engine.prompt": "",
            "bus.staleness_ms": 5000,
        },
    )
    engine = TrackingEngine(cfg.engine, StreamingSegmenter(loaded), None, background_grounding=True)
    proc = EngineProcess(cfg, engine)
    t = threading.Thread(target=proc.run, daemon=True)
    t.start()
    yield cfg, proc
    proc.stop.set()
    t.join(10)
    assert not t.is_alive()


def test_engine_process_tracks_control_and_rejects(
    engine_proc: tuple[Config, Any], ctx: zmq.Context[Any]
) -> None:
    cfg, _proc = engine_proc
    pub = zbus.bind(ctx, zmq.PUB, cfg.bus.frames, cfg.bus)
    sub = zbus.connect(ctx, zmq.SUB, cfg.bus.tracks, subscribe=[b"tracks.cam0"])
    scene = DemoScene(320, 240, 2, seed=0, fps=30)
    seq = 0

    def send() -> None:
        nonlocal seq
        pub.send_multipart(
            FrameMessage.from_image("cam0", seq, scene.render(seq)[0]).to_parts(), copy=False
        )
        seq += 1

    def next_tracks() -> TracksMessage | None:
        send()
        parts = zbus.recv_multipart_timeout(sub, 200, copy=True)
        return TracksMessage.from_parts(parts) if parts else None

    first = wait_for(next_tracks, timeout=20, what="first tracks message")
    assert first.header.objects == [] and first.header.width == 320

    reply = zbus.request(
        cfg.bus.control, {"cmd": "add_object", "box": [20, 20, 90, 90], "label": "cup"}
    )
    assert reply["ok"] is True and isinstance(reply["id"], int)
    oid = reply["id"]
    msg = wait_for(
        lambda: (m := next_tracks()) and any(o.id == oid for o in m.header.objects) and m,
        what="object in tracks",
    )
    obj = next(o for o in msg.header.objects if o.id == oid)
    assert obj.label == "cup" and obj.mask.size == [240, 320]

    bad_requests: list[dict[str, Any]] = [
        {"cmd": "add_object", "box": [5, 5, 5, 50]},
        {"cmd": "remove_object", "id": 12345},
        {"cmd": "fly"},
    ]
    for bad in bad_requests:
        r = zbus.request(cfg.bus.control, bad)
        assert r["ok"] is False and r["error"]
    # garbage at the frames socket and the control socket: rejected, counted, tracking continues
    for i in range(200):
        pub.send_multipart([b"frame.cam0", b"{garbage" + bytes([i % 256])])
        pub.send_multipart([b"frame.cam0", b'{"v":1,"camera":"cam0"}', b"xx"])
    raw = ctx.socket(zmq.REQ)
    raw.linger = 0
    raw.connect(cfg.bus.control)
    for i in range(50):
        raw.send(b"\x00\x01" * (i + 1))
        assert raw.poll(5000)
        assert json.loads(raw.recv())["ok"] is False
    raw.close(0)
    huge = ctx.socket(zmq.REQ)  # a request over the size bound is dropped unread, no reply
    huge.linger = 0
    huge.connect(cfg.bus.control)
    huge.send(b"x" * (2 << 20))
    assert huge.poll(500) == 0
    huge.close(0)
    wait_for(lambda: next_tracks(), what="tracks after garbage")
    stats = zbus.request(cfg.bus.control, {"cmd": "stats"})["stats"]
    assert stats["frames_rejected"] >= 400
    assert stats["control_rejected"] >= 53
    assert stats["frames_out"] > 0 and "rss_mb" in stats["memory"]
    # the last frame's time per stage: the model's and the publishers'
    stages = stats["latency_ms"]
    for stage in ("encode_ms", "propagate_ms", "lifecycle_ms", "rle_ms", "json_send_ms"):
        assert stages.get(stage, -1.0) >= 0.0, (stage, stages)
    assert zbus.request(cfg.bus.control, {"cmd": "remove_object", "id": oid})["ok"] is True
    assert zbus.request(cfg.bus.control, {"cmd": "reset"})["ok"] is True
    pub.close(0)
    sub.close(0)


def test_engine_process_reads_frames_from_shared_memory(
    engine_proc: tuple[Config, Any], ctx: zmq.Context[Any]
) -> None:
    """``bus.frames_shm`` on the capture side: the engine's receiver reads the ring unasked and
    tracks what it would track from inline frames."""
    from stream.shm import ShmRing

    cfg, _proc = engine_proc
    pub = zbus.bind(ctx, zmq.PUB, cfg.bus.frames, cfg.bus)
    sub = zbus.connect(ctx, zmq.SUB, cfg.bus.tracks, subscribe=[b"tracks.cam0"])
    scene = DemoScene(320, 240, 2, seed=0, fps=30)
    ring = ShmRing("cam0", 320 * 240 * 3, cfg.bus.shm_slots)
    seq = 0

    def next_tracks() -> TracksMessage | None:
        nonlocal seq
        msg = FrameMessage.from_image("cam0", seq, scene.render(seq)[0]).to_shm(ring)
        pub.send_multipart(msg.to_parts(), copy=False)
        seq += 1
        parts = zbus.recv_multipart_timeout(sub, 200, copy=True)
        return TracksMessage.from_parts(parts) if parts else None

    try:
        first = wait_for(next_tracks, timeout=20, what="first tracks message")
        assert first.header.width == 320 and first.header.height == 240
        reply = zbus.request(cfg.bus.control, {"cmd": "add_object", "box": [20, 20, 90, 90]})
        oid = reply["id"]
        msg = wait_for(
            lambda: (m := next_tracks()) and any(o.id == oid for o in m.header.objects) and m,
            what="object in tracks",
        )
        assert next(o for o in msg.header.objects if o.id == oid).mask.size == [240, 320]
        stats = zbus.request(cfg.bus.control, {"cmd": "stats"})["stats"]
        assert stats["frames_in"] > 0 and stats["frames_rejected"] == 0
        assert stats["frames_overrun"] == 0
    finally:
        pub.close(0)
        sub.close(0)
        ring.close()


@pytest.mark.parametrize("mode", ["mask", "points"])
def test_seed_with_mask_and_points(loaded: Any, mode: str) -> None:
    """Detections seed tracks through a SAM 2 mask decoded from the box (``mask``) or points
    sampled inside it (``points``), as the reference Grounded SAM 2 pipeline does."""
    scene = DemoScene(320, 240, 2, seed=3, fps=30)
    cfg = EngineConfig(prompt="ball. box.", reground_every_frames=0, seed_with=mode)
    engine = TrackingEngine(
        cfg, StreamingSegmenter(loaded), SlowDetector(scene), background_grounding=False
    )
    r0 = engine.process(FrameInput(0, 0, tagged(scene, 0)))
    _, gts = scene.render(0)
    assert len(r0.objects) == len(gts) and engine.counters.seed_failures == 0
    r1 = engine.process(FrameInput(1, 1, tagged(scene, 1)))
    assert {o.id for o in r1.objects} == {o.id for o in r0.objects}


def test_sample_points_inside_mask() -> None:
    from engine.pipeline import sample_points

    mask = np.zeros((50, 60), bool)
    mask[10:20, 30:45] = True
    pts = sample_points(mask, 8, seed=1)
    assert pts.shape == (8, 2)
    assert all(mask[int(y), int(x)] for x, y in pts)
    assert np.array_equal(pts, sample_points(mask, 8, seed=1))


def test_reset_discards_grounding_results_from_before(loaded: Any) -> None:
    """A background grounding result that arrives after ``reset`` belongs to a frame that is
    gone: it is discarded and counted, never seeded (it was: a seed failure per detection)."""
    scene = DemoScene(320, 240, 3, seed=1, fps=30)
    gate = threading.Event()
    det = SlowDetector(scene, gate)
    cfg = EngineConfig(prompt="ball. box.", reground_every_frames=1000)
    engine = TrackingEngine(cfg, StreamingSegmenter(loaded), det, background_grounding=True)
    try:
        for i in range(3):
            engine.process(FrameInput(i, time.time_ns(), tagged(scene, i)))
        assert engine.stats()["grounding_in_flight"] is True
        engine.reset()
        gate.set()
        assert engine.wait_grounding_idle(30)
        r = engine.process(FrameInput(3, time.time_ns(), tagged(scene, 3)))
        st = engine.stats()
        assert r.objects == [] and engine.seg.object_ids == []
        assert st["seed_failures"] == 0 and st["grounding_results_dropped"] == 1
    finally:
        gate.set()
        engine.close()


def test_a_thread_that_dies_stops_the_process_and_nothing_blocks_on_it(
    ctx: zmq.Context[Any], endpoint: str
) -> None:
    """The tracks publisher dying (a label it cannot serialise, as a lone surrogate once made
    it) sets the process's stop event with the thread's name and a non-zero exit code, and the
    frame loop's ``put`` returns instead of blocking forever (SIGTERM was ignored then)."""
    from engine.outputs import TracksPublisher
    from engine.pipeline import FrameResult, ObjectResult
    from stream.threads import EXIT_THREAD_DIED, ThreadDeath

    stop = threading.Event()
    death = ThreadDeath(stop)
    previous = threading.excepthook
    death.install()
    sock = zbus.bind(ctx, zmq.PUB, endpoint)
    try:
        pub = TracksPublisher(sock, maxsize=1)
        image = np.zeros((4, 4, 3), np.uint8)
        obj = ObjectResult(1, "\ud800", 1.0, (0, 0, 1, 1), np.zeros((4, 4), bool), 0, "new")
        bad = FrameResult(0, 0, 4, 4, "x.", [obj], {})
        assert pub.put("cam0", bad, image, stop) is True
        wait_for(lambda: stop.is_set(), timeout=10, what="stop after the thread died")
        assert death.died == "tracks-publisher" and death.exit_code() == EXIT_THREAD_DIED
        wait_for(lambda: not pub.alive, timeout=10, what="the thread's end")
        good = FrameResult(1, 0, 4, 4, "x.", [], {})
        t0 = time.monotonic()
        assert pub.put("cam0", good, image) is False
        assert pub.put("cam0", good, image, stop) is False
        pub.close()
        assert time.monotonic() - t0 < 5.0
    finally:
        death.disarm()
        threading.excepthook = previous


def test_an_empty_prompt_clears_it_manual_objects_go_on(loaded: Any) -> None:
    """``set_prompt`` with "" (CONTRACT: any ``prompt:str``): the detector's tracks end, a manual
    object goes on, nothing is grounded until a prompt is set again, which grounds at once."""
    scene = DemoScene(320, 240, 2, seed=3, fps=30)
    det = SlowDetector(scene)
    cfg = EngineConfig(prompt="ball. box.", reground_every_frames=3)
    engine = TrackingEngine(cfg, StreamingSegmenter(loaded), det, background_grounding=False)
    r = engine.process(FrameInput(0, 0, tagged(scene, 0)))
    found = {o.id for o in r.objects}
    assert found and det.calls == [0]
    manual = engine.add_object([10, 10, 60, 60], "cup")
    assert engine.set_prompt("") == []
    for i in range(1, 8):
        r = engine.process(FrameInput(i, i, tagged(scene, i)))
        assert {o.id for o in r.objects} == {manual}, i
    assert det.calls == [0]  # no grounding without a prompt
    assert engine.set_prompt("ball. box.") == ["ball", "box"]
    r = engine.process(FrameInput(8, 8, tagged(scene, 8)))
    assert det.calls == [0, 8] and manual in {o.id for o in r.objects}
    assert {o.id for o in r.objects} - {manual} - found  # new IDs: the old ones ended


def test_a_track_retired_in_view_brings_the_next_grounding_forward(loaded: Any) -> None:
    """The camera tells its schedule of retirements that may leave an object in view, untracked
    (drifted, missed) and of no other: a duplicate retiring on frame 4 changes nothing; a drift
    on frame 6 (6 frames after the last grounding) grounds that frame, one on frame 7 three
    frames after it (``reground_after_retire_frames`` 3), against every 1000 frames otherwise."""
    from engine.lifecycle.states import EndReason
    from engine.lifecycle.track import TrackEvent

    scene = DemoScene(320, 240, 2, seed=3, fps=30)
    det = SlowDetector(scene)
    cfg = EngineConfig(
        prompt="ball. box.", reground_every_frames=1000, reground_after_retire_frames=3
    )
    engine = TrackingEngine(cfg, StreamingSegmenter(loaded), det, background_grounding=False)
    manager = engine.tracker.manager
    real_on_frame = manager.on_frame
    injected = {4: EndReason.DUPLICATE, 6: EndReason.DRIFTED, 7: EndReason.MISSED}

    def on_frame(seq: int, *args: Any, **kwargs: Any) -> list[TrackEvent]:
        events = list(real_on_frame(seq, *args, **kwargs))
        if seq in injected:  # an ID no track has: nothing else is disturbed
            events.append(TrackEvent(seq, 999, "dormant", injected[seq]))
        return events

    manager.on_frame = on_frame  # type: ignore[method-assign]
    for i in range(12):
        engine.process(FrameInput(i, i, tagged(scene, i)))
    assert det.calls == [0, 6, 9]
    engine.close()
