"""Many cameras, one engine: each camera tracks exactly as it would alone, cameras are served
fairly, control addresses cameras, cameras come and go at runtime.

Oracle for exactness: the same tiny-random weights, frames and prompts through (a) one
``MultiCameraEngine`` serving two cameras (one image-encoder call over both frames, one batched
propagation over both cameras' objects) and (b) a one-camera ``TrackingEngine`` per camera.
Masks and IDs are equal; logits agree within the segmenter tests' tolerance (batch-size effects
at the last bit, see ``tests/test_segmenter.py: assert_same``), and one camera of the shared
kernel equals the official ``SAM2VideoPredictor`` as the one-camera segmenter does.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import zmq
from supervision import Detections

from engine.core.protocols import DetectorPrompt
from engine.detectors.base import make_detections
from engine.models.sam2 import LoadedSam2, load_sam2, official_video_predictor
from engine.pipeline import FrameInput, MultiCameraEngine, TrackingEngine
from engine.segmenters.sam2 import Sam2Kernel, StreamingSegmenter
from engine.service import EngineProcess
from stream import bus as zbus
from stream.config import Config, ConfigError, EngineConfig, ModelsConfig, load_config
from stream.demo import DemoScene
from stream.errors import PromptError, RequestError
from stream.wire import FrameMessage, TracksMessage
from tests.conftest import tcp_endpoint, wait_for
from tests.moving_blocks import make_frames
from tests.test_segmenter import (
    LOGIT_TOL,
    NUM_FRAMES,
    PROMPTS,
    frame_logits,
    run_official,
    write_video,
)


@pytest.fixture(autouse=True)
def _threads() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def loaded() -> LoadedSam2:
    return load_sam2(ModelsConfig(preset="tiny-random", device="cpu"))


class SceneDetector:
    """Detector double: reports where a ``DemoScene``'s objects of the prompt's labels are on the
    frame given (ground truth, looked up by a pixel tag carrying the scene and frame)."""

    def __init__(self, scenes: dict[int, DemoScene]) -> None:
        self.scenes = scenes
        self.batches: list[list[tuple[int, int]]] = []

    def parse_prompt(self, text: str) -> DetectorPrompt:
        phrases = tuple(p.strip() for p in text.split(".") if p.strip())
        if not phrases:
            raise PromptError(f"prompt {text!r} has no phrase")
        return DetectorPrompt(phrases, " ".join(f"{p}." for p in phrases))

    def detect(self, image_bgr: np.ndarray, prompt: DetectorPrompt) -> Detections:
        scene_id, i = untag(image_bgr)
        _, gts = self.scenes[scene_id].render(i)
        keep = [g for g in gts if g.label in prompt.phrases]
        return make_detections(
            [list(g.box) for g in keep],
            [0.9] * len(keep),
            [g.label for g in keep],
            list(prompt.phrases),
        )

    def detect_batch(
        self, images: Sequence[np.ndarray], prompts: Sequence[DetectorPrompt]
    ) -> list[Detections]:
        self.batches.append([untag(img) for img in images])
        return [self.detect(img, p) for img, p in zip(images, prompts, strict=True)]


def tagged(scene: DemoScene, scene_id: int, i: int) -> np.ndarray:
    img = scene.render(i)[0].copy()
    img[0, 0] = (scene_id, i % 256, i // 256)
    return img


def untag(img: np.ndarray) -> tuple[int, int]:
    return int(img[0, 0, 0]), int(img[0, 0, 1]) + 256 * int(img[0, 0, 2])


def assert_same_results(
    multi: MultiCameraEngine, camera: str, solo: TrackingEngine, got: Any, want: Any, where: str
) -> None:
    assert [o.id for o in got.objects] == [o.id for o in want.objects], where
    assert [o.label for o in got.objects] == [o.label for o in want.objects], where
    h, w = want.height, want.width
    for a, b in zip(got.objects, want.objects, strict=True):
        la = frame_logits(multi.camera(camera).session, a.id, h, w)  # type: ignore[arg-type]
        lb = frame_logits(solo.seg, b.id, h, w)  # type: ignore[arg-type]
        assert (la - lb).abs().max().item() <= LOGIT_TOL, f"{where} object {a.id}"
        clear = (lb.abs() > LOGIT_TOL).numpy()
        np.testing.assert_array_equal(a.mask[clear], b.mask[clear], err_msg=f"{where} {a.id}")
        assert (a.mask != b.mask).sum() <= 3, f"{where} object {a.id}"


def test_two_cameras_equal_two_one_camera_engines(loaded: LoadedSam2) -> None:
    """Camera A: two balls/boxes by text prompt, the prompt changed mid-stream; camera B: a
    manual box on frame 0 and another added on frame 7. Both through one engine, against a
    one-camera engine each, frame by frame, with background-free (in-line) grounding."""
    scene_a, scene_b = DemoScene(320, 240, 3, seed=1, fps=30), DemoScene(256, 192, 2, seed=4)
    det = SceneDetector({1: scene_a, 2: scene_b})
    cfg_a = EngineConfig(prompt="ball. box.", reground_every_frames=4)
    cfg_b = EngineConfig(prompt="", reground_every_frames=4)
    kernel = Sam2Kernel(loaded)
    multi = MultiCameraEngine(kernel, det, background_grounding=False)
    multi.add_camera("a", cfg_a)
    multi.add_camera("b", cfg_b)
    solo_a = TrackingEngine(cfg_a, StreamingSegmenter(loaded), det, background_grounding=False)
    solo_b = TrackingEngine(cfg_b, StreamingSegmenter(loaded), det, background_grounding=False)
    try:
        for i in range(14):
            fa = FrameInput(i, i, tagged(scene_a, 1, i))
            fb = FrameInput(i, i, tagged(scene_b, 2, i))
            manual_b = [((40.0, 30.0, 120.0, 110.0), "cup")] if i == 0 else []
            if i == 7:
                manual_b = [((150.0, 100.0, 230.0, 180.0), "mug")]
            if i == 9:
                assert multi.camera("a").set_prompt("ball.") == solo_a.set_prompt("ball.")
            got = multi.tick({"a": fa, "b": fb}, {"b": manual_b})
            want_a = solo_a.process(fa)
            want_b = solo_b.process(fb, manual_b)
            assert got["a"].prompt == want_a.prompt
            assert_same_results(multi, "a", solo_a, got["a"], want_a, f"camera a frame {i}")
            assert_same_results(multi, "b", solo_b, got["b"], want_b, f"camera b frame {i}")
        assert {o.label for o in got["a"].objects} == {"ball"}  # the prompt change took effect
        assert len(got["b"].objects) == 2
        assert multi.camera("a").counters.groundings == solo_a.counters.groundings > 2
    finally:
        multi.close()


def test_shared_kernel_camera_equals_official_predictor(loaded: LoadedSam2, tmp_path: Path) -> None:
    """Camera ``a`` of a two-camera kernel equals ``propagate_in_video`` on its own video."""
    video = write_video(tmp_path / "a", make_frames(NUM_FRAMES, seed=0))
    other = [f[..., ::-1].copy() for f in make_frames(NUM_FRAMES, seed=7)]
    prompts = {1: PROMPTS[1], 2: PROMPTS[2]}
    ref = run_official(official_video_predictor(loaded), video.directory, prompts)
    kernel = Sam2Kernel(loaded)
    a, b = kernel.new_session(), kernel.new_session()
    for i in range(NUM_FRAMES):
        ia, ib = kernel.encode([(a, video.bgr[i]), (b, other[i])])
        if i == 0:
            for obj_id, p in prompts.items():
                a.add_prompt(obj_id, ia, **p)
            b.add_prompt(5, ib, box=(60, 40, 160, 120))
        outs_a, outs_b = kernel.track([(a, ia), (b, ib)])
        assert set(outs_a) == {1, 2} and set(outs_b) == {5}
        for obj_id, expected in ref[i].items():
            diff = (frame_logits(a, obj_id) - expected).abs().max().item()  # type: ignore[arg-type]
            assert diff <= LOGIT_TOL, f"frame {i} object {obj_id}: {diff}"
            clear = (expected.abs() > LOGIT_TOL).numpy()
            want = (expected > 0).numpy()
            np.testing.assert_array_equal(outs_a[obj_id].mask[clear], want[clear])


def test_encode_and_track_refuse_misuse(loaded: LoadedSam2) -> None:
    kernel = Sam2Kernel(loaded)
    s = kernel.new_session()
    img = np.zeros((64, 64, 3), np.uint8)
    with pytest.raises(ValueError, match="one frame per session"):
        kernel.encode([(s, img), (s, img)])
    foreign = Sam2Kernel(loaded).new_session()
    with pytest.raises(ValueError, match="another kernel"):
        kernel.encode([(foreign, img)])
    idx = s.add_frame(img)
    s.add_frame(img)
    with pytest.raises(RequestError, match="latest frame"):
        kernel.track([(s, idx)])


def test_grounding_batches_most_overdue_first_and_serves_every_camera(
    loaded: LoadedSam2,
) -> None:
    """Four cameras due at once, batches of two: the worker gets two cameras per batch, most
    overdue first, and every camera is grounded within two batches (none is starved)."""
    scenes = {k: DemoScene(160, 120, 2, seed=k) for k in range(1, 5)}
    det = SceneDetector(scenes)
    multi = MultiCameraEngine(
        Sam2Kernel(loaded), det, background_grounding=True, max_ground_batch=2
    )
    for k in scenes:
        multi.add_camera(f"c{k}", EngineConfig(prompt="ball. box.", reground_every_frames=1000))
    try:
        served: list[list[int]] = []
        for i in range(12):
            frames = {f"c{k}": FrameInput(i, i, tagged(s, k, i)) for k, s in scenes.items()}
            multi.tick(frames)
            assert multi.wait_grounding_idle(30)
            served = [[sid for sid, _ in b] for b in det.batches]
        assert all(len(b) == 2 for b in served[:2])
        assert sorted(served[0] + served[1]) == [1, 2, 3, 4]  # every camera in the first two
        assert all(multi.camera(f"c{k}").counters.groundings >= 1 for k in scenes)
        r = multi.tick({f"c{k}": FrameInput(12, 12, tagged(s, k, 12)) for k, s in scenes.items()})
        assert all(len(res.objects) > 0 for res in r.values())
    finally:
        multi.close()


def test_cameras_come_and_go_and_ids_are_never_reused(loaded: LoadedSam2) -> None:
    multi = MultiCameraEngine(Sam2Kernel(loaded), None, background_grounding=True)
    multi.add_camera("a", EngineConfig(prompt=""))
    img = DemoScene(160, 120, 1, seed=2).render(0)[0]
    multi.tick({"a": FrameInput(0, 0, img)})
    first = multi.camera("a").add_object((10, 10, 60, 60))
    with pytest.raises(RequestError, match="already served"):
        multi.add_camera("a", EngineConfig(prompt=""))
    multi.remove_camera("a")
    with pytest.raises(RequestError, match="unknown camera 'a'"):
        multi.camera("a")
    multi.add_camera("a", EngineConfig(prompt=""))
    multi.tick({"a": FrameInput(1, 1, img)})
    second = multi.camera("a").add_object((10, 10, 60, 60))
    assert second > first
    assert multi.camera("a").session.state_size().objects[0].obj_id == second


# ---------------------------------------------------------------------------- config


def test_cameras_config_resolves_and_rejects(tmp_path: Path) -> None:
    site = tmp_path / "site.yaml"
    site.write_text(
        "bus: {frames: 'tcp://127.0.0.1:6100'}\n"
        "engine: {prompt: 'ball. box.', max_objects: 8}\n"
        "cameras:\n"
        "  front: {source: demo, prompt: 'ball.'}\n"
        "  yard: {source: {uri: demo, seed: 3}, fps: 5, engine: {max_objects: 2}}\n"
    )
    example = load_config(Path(__file__).parent.parent / "configs" / "site-example.yaml")
    assert list(example.camera_settings()) == ["yard", "dock", "gate"]
    cams = load_config(site).camera_settings()
    assert list(cams) == ["front", "yard"]
    assert cams["front"].engine.prompt == "ball." and cams["front"].engine.max_objects == 8
    assert cams["yard"].engine.prompt == "ball. box." and cams["yard"].engine.max_objects == 2
    assert cams["yard"].source.fps == 5 and cams["yard"].source.seed == 3
    assert cams["front"].frames == "tcp://127.0.0.1:6100"
    assert cams["yard"].frames == "tcp://127.0.0.1:6110"
    bad = {
        "cameras:\n  a: {}\n  a: {}\n": "duplicate key 'a'",
        "cameras:\n  'a b': {}\n": "camera name 'a b'",
        "cameras:\n  a: {engine: {annotate: false}}\n": "cameras.a.engine.annotate: engine-wide",
        "cameras:\n  a: {engine: {colour: 1}}\n": "cameras.a.engine.colour: unknown engine key",
        "cameras:\n  a: {source: {fps: -1}}\n": "'cameras.a.source.fps'",
        "cameras:\n  a: {source: {nope: 1}}\n": "unknown config key 'cameras.a.source.nope'",
        "cameras:\n  a: {lens: wide}\n": "unknown config key 'cameras.a.lens'",
        "cameras:\n  a: {frames: 'tcp://127.0.0.1:6000'}\n  b: {frames: 'tcp://127.0.0.1:6000'}\n": "both use frames endpoint",
        "cameras:\n  a: {frames: 'udp://x'}\n": "'cameras.a.frames'",
    }
    for text, expected in bad.items():
        site.write_text(text)
        with pytest.raises(ConfigError) as e:
            load_config(site)
        assert expected in str(e.value) and "\n" not in str(e.value), text


# ---------------------------------------------------------------------------- engine process


@pytest.fixture
def two_camera_proc(loaded: LoadedSam2, tmp_path: Path) -> Iterator[tuple[Config, EngineProcess]]:
    site = tmp_path / "site.yaml"
    site.write_text(
        f"bus: {{frames: '{tcp_endpoint()}', tracks: '{tcp_endpoint()}', "
        f"annotated: '{tcp_endpoint()}', control: '{tcp_endpoint()}', staleness_ms: 5000}}\n"
        "models: {preset: tiny-random, device: cpu}\n"
        "engine: {prompt: ''}\n"
        "cameras:\n  left: {}\n  right: {}\n"
    )
    cfg = load_config(site)
    multi = MultiCameraEngine(Sam2Kernel(loaded), None, background_grounding=True)
    proc = EngineProcess(cfg, multi)
    t = threading.Thread(target=proc.run, daemon=True)
    t.start()
    yield cfg, proc
    proc.stop.set()
    t.join(10)
    assert not t.is_alive()


class Cam:
    """A camera's frames publisher (bound like a capture process) and its scene."""

    def __init__(self, ctx: zmq.Context[Any], name: str, endpoint: str, seed: int) -> None:
        self.name = name
        self.pub = zbus.bind(ctx, zmq.PUB, endpoint)
        self.scene = DemoScene(200, 150, 1, seed=seed)
        self.seq = 0

    def send(self) -> None:
        img = self.scene.render(self.seq)[0]
        self.pub.send_multipart(FrameMessage.from_image(self.name, self.seq, img).to_parts())
        self.seq += 1


def test_engine_process_serves_cameras_and_control_addresses_them(
    two_camera_proc: tuple[Config, EngineProcess], ctx: zmq.Context[Any]
) -> None:
    cfg, _proc = two_camera_proc
    settings = cfg.camera_settings()
    left = Cam(ctx, "left", settings["left"].frames, 1)
    right = Cam(ctx, "right", settings["right"].frames, 2)
    sub = zbus.connect(ctx, zmq.SUB, cfg.bus.tracks, subscribe=[b"tracks."])
    seen: dict[str, list[TracksMessage]] = {"left": [], "right": [], "third": []}

    def pump(*cams: Cam) -> None:
        for c in cams:
            c.send()
        while (parts := zbus.recv_multipart_timeout(sub, 20, copy=True)) is not None:
            m = TracksMessage.from_parts(parts)
            seen[m.camera].append(m)

    def control(req: dict[str, Any]) -> dict[str, Any]:
        return zbus.request(cfg.bus.control, req, 10_000)

    wait_for(
        lambda: seen["left"] and seen["right"], 30, what="tracks", step=lambda: pump(left, right)
    )
    r = control({"cmd": "add_object", "box": [10, 10, 60, 60]})
    assert r["ok"] is False and "left, right" in r["error"] and "camera" in r["error"]
    r = control({"cmd": "add_object", "box": [10, 10, 60, 60], "camera": "nowhere"})
    assert r["ok"] is False and "unknown camera 'nowhere'" in r["error"]
    ids = {
        c: control({"cmd": "add_object", "box": [20, 20, 90, 90], "camera": c})["id"]
        for c in ("left", "right")
    }
    assert ids == {"left": 1, "right": 1}  # IDs are per camera

    def has(camera: str, oid: int) -> bool:
        return any(oid in {o.id for o in m.header.objects} for m in seen[camera][-3:])

    wait_for(
        lambda: has("left", 1) and has("right", 1), 30, what="objs", step=lambda: pump(left, right)
    )
    # A camera whose source stops costs the other nothing: right keeps being served.
    n_right = len(seen["right"])
    for _ in range(10):
        pump(right)
    wait_for(
        lambda: len(seen["right"]) >= n_right + 10, 30, what="right alone", step=lambda: pump(right)
    )
    listing = control({"cmd": "cameras"})["cameras"]
    assert [c["camera"] for c in listing] == ["left", "right"]
    assert all(c["objects"] == 1 for c in listing)
    stats = control({"cmd": "stats"})["stats"]
    assert set(stats["cameras"]) == {"left", "right"}
    for cmd in ("stats", "cameras"):  # engine-wide replies; a camera named must be known (v1.1)
        assert control({"cmd": cmd, "camera": "right"})["ok"] is True
        r = control({"cmd": cmd, "camera": "nowhere"})
        assert r["ok"] is False and "unknown camera 'nowhere'" in r["error"], r
        assert "left, right" in r["error"]
    assert stats["cameras"]["right"]["frames_out"] > stats["cameras"]["left"]["frames_out"]

    # add_camera / remove_camera at runtime
    third_ep = tcp_endpoint()
    third = Cam(ctx, "third", third_ep, 3)
    assert control({"cmd": "add_camera", "camera": "third", "frames": third_ep})["ok"] is True
    r = control({"cmd": "add_camera", "camera": "third", "frames": third_ep})
    assert r["ok"] is False and "already served" in r["error"]
    wait_for(lambda: seen["third"], 30, what="tracks of the added camera", step=lambda: pump(third))
    assert control({"cmd": "remove_camera", "camera": "left"})["ok"] is True
    r = control({"cmd": "reset", "camera": "left"})
    assert r["ok"] is False and "unknown camera 'left'" in r["error"]
    # Tracks are published in order: once right's tracks of frames sent after the removal
    # arrive, every tracks message of left that was still queued has arrived too.
    n_right = len(seen["right"])
    wait_for(
        lambda: len(seen["right"]) >= n_right + 3, 30, what="right", step=lambda: pump(left, right)
    )
    n_left, n_right = len(seen["left"]), len(seen["right"])
    wait_for(
        lambda: len(seen["right"]) >= n_right + 5, 30, what="right", step=lambda: pump(left, right)
    )
    assert len(seen["left"]) == n_left  # its topic stopped
    assert [c["camera"] for c in control({"cmd": "cameras"})["cameras"]] == ["right", "third"]
    for c in (left, right, third):
        c.pub.close(0)
    sub.close(0)


def test_cameras_bench_worker_counts_frames_per_camera() -> None:
    from clients.bench.cameras import _worker

    shared = _worker(2, True, 0.5, 1, "cpu")
    assert set(shared["fps"]) == {"cam0", "cam1"} and all(v > 0 for v in shared["fps"].values())
    solo = _worker(1, False, 0.5, 1, "cpu")
    assert list(solo["fps"]) == ["cam0"] and solo["fps"]["cam0"] > 0 and solo["rss_mb"] > 0


def test_cameras_bench_compares_one_engine_two_engines_and_separate_ones(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The rows of ``bench --parts cameras`` from its children's reports (faked here; the
    worker itself is run above): ratios against the separate engines, the split side (two
    engines of N/2 cameras, their share of the cores each) from 4 cameras on, RSS against the
    summed one-camera engines, and the sides' order alternating between rounds."""
    from clients.bench import cameras

    fps = {(4, True): 10.0, (1, False): 12.0, (2, True): 15.0}  # per camera, by (cameras, shared)
    rss = {(4, True): 500.0, (1, False): 400.0, (2, True): 450.0}
    spawned: list[tuple[int, bool, int]] = []

    def spawn(n: int, shared: bool, duration: float, threads: int, device: str) -> Any:
        spawned.append((n, shared, threads))
        return (n, shared)

    def collect(procs: list[Any]) -> list[cameras.WorkerResult]:
        return [{"fps": {f"cam{k}": fps[p] for k in range(p[0])}, "rss_mb": rss[p]} for p in procs]

    monkeypatch.setattr(cameras, "_spawn", spawn)
    monkeypatch.setattr(cameras, "_collect", collect)
    rows = {r["name"]: r["value"] for r in cameras._count_rows(4, 1.0, 2, "cpu", rounds=2)}
    assert rows["4 cameras: one engine / separate engines"] == pytest.approx(40 / 48)
    assert rows["4 cameras, two engines of 2: aggregate / separate engines"] == pytest.approx(
        60 / 48
    )
    assert rows["4 cameras, two engines of 2: RSS / summed"] == pytest.approx(900 / 1600 * 100)
    assert rows["4 cameras: RSS one engine / summed"] == pytest.approx(500 / 1600 * 100)
    sides = [(n, shared) for n, shared, _ in spawned]
    one, solo, half = [(4, True)], [(1, False)] * 4, [(2, True)] * 2
    assert sides == one + solo + half + half + solo + one  # round 1, then the other way round
    assert {t for n, shared, t in spawned if (n, shared) == (2, True)} == {1}  # 2 cores / 2
    spawned.clear()
    two = {str(r["name"]) for r in cameras._count_rows(2, 1.0, 2, "cpu", rounds=1)}
    assert not any("two engines" in name for name in two) and spawned[0] == (2, True, 2)


def test_tick_workers_keep_one_torch_thread_each_after_the_default_is_put_back() -> None:
    """Each group worker runs its ops on one torch thread although the engine's own count (2,
    set before the workers start, as the engine service and the bench set it) is put back
    after them; measured before the fix: 2 threads in every worker."""
    from engine.tick_groups import TickWorkers

    def job() -> int:
        a = torch.ones(256, 256)
        assert float((a @ a).sum()) == 256.0**3  # a parallel op first, then the count it ran on
        return torch.get_num_threads()

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    workers = TickWorkers(2)
    try:
        assert workers.run([job, job]) == [1, 1]
        assert torch.get_num_threads() == 2  # the engine loop's own count is back
    finally:
        workers.close()
        torch.set_num_threads(before)


def test_camera_groups_run_side_by_side_and_track_as_alone(loaded: LoadedSam2) -> None:
    """``groups=2`` (the CPU default on 2 cores): three cameras in two groups, each group's
    encoder call and propagation on its own worker thread with one torch thread; every camera
    tracks as a one-camera engine does, results come back in the order of the frames given,
    and a bad box of one group is raised after both groups finished."""
    scenes = [DemoScene(160, 120, 1, seed=s) for s in (1, 2, 3)]
    names = ["c", "a", "b"]
    boxes = {n: [((20.0, 20.0, 70.0, 70.0), "object")] for n in names}
    kernel = Sam2Kernel(loaded)
    seen: dict[str, set[tuple[str, int]]] = {n: set() for n in names}
    encode = kernel.encode

    def recording_encode(items: Any) -> list[int]:
        for s, _ in items:
            name = next(n for n in names if multi.camera(n).session is s)
            seen[name].add((threading.current_thread().name, torch.get_num_threads()))
        return encode(items)

    kernel.encode = recording_encode  # type: ignore[method-assign]
    multi = MultiCameraEngine(kernel, None, background_grounding=True, groups=2)
    solos = {
        n: TrackingEngine(EngineConfig(prompt=""), StreamingSegmenter(loaded), None,
                          background_grounding=True)
        for n in names
    }  # fmt: skip
    try:
        for n in names:
            multi.add_camera(n, EngineConfig(prompt=""))
        for i in range(4):
            frames = {
                n: FrameInput(i, i, s.render(i)[0]) for n, s in zip(names, scenes, strict=True)
            }
            got = multi.tick(frames, boxes if i == 0 else None)
            assert list(got) == names
            for n in names:
                want = solos[n].process(frames[n], boxes[n] if i == 0 else ())
                assert_same_results(multi, n, solos[n], got[n], want, f"camera {n} frame {i}")
                assert got[n].timings_ms["cameras"] == (2.0 if n in ("c", "b") else 1.0)
        threads = {n: {t for t, _ in s} for n, s in seen.items()}
        assert threads["c"] == threads["b"] != threads["a"]  # round-robin: c, b | a
        assert all(
            len(t) == 1 and next(iter(t)).startswith("engine-group") for t in threads.values()
        )
        assert {k for s in seen.values() for _, k in s} == {1}  # one torch thread per group
        bad = {"a": [((500.0, 500.0, 600.0, 600.0), "object")]}
        frames = {n: FrameInput(9, 9, s.render(9)[0]) for n, s in zip(names, scenes, strict=True)}
        with pytest.raises(PromptError):
            multi.tick(frames, bad)
        assert multi.camera("c").counters.frames == 5  # the other group finished its tick
    finally:
        multi.close()
