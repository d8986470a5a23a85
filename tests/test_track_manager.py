"""Track manager over scripted scenes and property-based assignment invariants.

The scene simulator stands in for the models (this is a test about association logic): ground
truth objects move along straight lines, enter, cross, occlude each other and leave; a simulated
detector (delayed by a few frames, like the grounding thread) misses objects, duplicates boxes and
adds false positives; a simulated segmenter follows the object a track was seeded on, reports
nothing while it is occluded or gone, and can drift until it is re-seeded.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
import supervision as sv
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.detectors.base import make_detections
from engine.lifecycle.config import LifecycleConfig
from engine.track_manager import (
    DUPLICATE_FRAMES,
    DUPLICATE_IOU,
    Box,
    Observation,
    Plan,
    Removal,
    TrackEvent,
    TrackManager,
    iou_matrix,
)
from stream.config import EngineConfig
from stream.errors import PromptError, RequestError

W, H = 640, 480
PHRASES = ["person", "ball"]


def demo_cfg(**kw: Any) -> EngineConfig:
    """These tests pin the demo profile's rules (raw mean-BGR colour cues); the general
    profile's are tested in tests/test_lifecycle.py."""
    return EngineConfig(lifecycle=LifecycleConfig(profile="demo"), **kw)


# ---------------------------------------------------------------------- scene simulator


@dataclass
class Obj:
    label: str
    size: tuple[float, float]
    start: tuple[float, float]
    velocity: tuple[float, float]
    visible: list[tuple[int, int]]  # [first, last) frame intervals in the scene
    depth: float = 0.0  # smaller is nearer the camera

    def in_scene(self, t: int) -> bool:
        return any(a <= t < b for a, b in self.visible)

    def box(self, t: int) -> Box:
        cx = self.start[0] + self.velocity[0] * t
        cy = self.start[1] + self.velocity[1] * t
        w, h = self.size
        return (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)


def _area(b: Box) -> float:
    return max(0.0, b[2] - b[0]) * max(0.0, b[3] - b[1])


def _inter(a: Box, b: Box) -> float:
    return _area((max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])))


@dataclass
class Scene:
    objects: list[Obj]
    frames: int

    def occluded(self, k: int, t: int) -> bool:
        o = self.objects[k]
        return any(
            j != k
            and p.in_scene(t)
            and p.depth < o.depth
            and _inter(p.box(t), o.box(t)) > 0.5 * _area(o.box(t))
            for j, p in enumerate(self.objects)
        )

    def seen(self, k: int, t: int) -> bool:
        return self.objects[k].in_scene(t) and not self.occluded(k, t)


@dataclass
class SimConfig:
    every: int = 10  # re-ground every N frames
    delay: int = 3  # frames between the detection frame and its result being applied
    miss: float = 0.0  # detector miss probability per object
    duplicate: float = 0.0  # probability of a second, slightly shifted box
    false_positive: float = 0.0  # probability of a random box per re-grounding
    box_noise: float = 0.0  # detector and segmenter box noise, pixels
    drift: float = 0.0  # segmenter drift per frame, in object widths, of drifting tracks
    seed: int = 0


@dataclass
class Run:
    """What happened: per frame, which live track followed which object."""

    follow: list[dict[int, list[int]]] = field(default_factory=list)  # t -> object -> track ids
    silent: list[dict[int, list[int]]] = field(default_factory=list)  # the same, suppressed tracks
    created: list[int] = field(default_factory=list)
    ended: set[int] = field(default_factory=set)
    dormant: set[int] = field(default_factory=set)  # kept for re-identification, not followed
    reseeds: int = 0
    bound: dict[int, int | None] = field(default_factory=dict)  # live track -> object (None: FP)
    plans: list[Plan] = field(default_factory=list)


def _best_object(scene: Scene, box: Box, t: int) -> int | None:
    best, best_iou = None, 0.5
    for k, o in enumerate(scene.objects):
        if o.in_scene(t):
            iou = float(iou_matrix(np.array([box]), np.array([o.box(t)]))[0, 0])
            if iou >= best_iou:
                best, best_iou = k, iou
    return best


def simulate(
    scene: Scene, cfg: EngineConfig, sim: SimConfig, removals: Mapping[int, int] | None = None
) -> tuple[Run, TrackManager]:
    """``removals``: frame -> object whose tracks the user removes on that frame."""
    rng = np.random.default_rng(sim.seed)
    tm = TrackManager(cfg)
    run = Run()
    offset: dict[int, float] = {}
    history: dict[int, dict[int, Observation]] = {}
    pending: dict[
        int, tuple[int, sv.Detections]
    ] = {}  # apply frame -> (detection frame, detections)

    def noisy(b: Box) -> Box:
        n = rng.normal(0, sim.box_noise, 4) if sim.box_noise else np.zeros(4)
        return (b[0] + n[0], b[1] + n[1], b[2] + n[2], b[3] + n[3])

    def detect(t: int) -> sv.Detections:
        boxes, scores, labels = [], [], []
        for k, o in enumerate(scene.objects):
            if scene.seen(k, t) and rng.random() >= sim.miss:
                boxes.append(noisy(o.box(t)))
                scores.append(0.5 + 0.5 * rng.random())
                labels.append(o.label)
                if rng.random() < sim.duplicate:
                    b = o.box(t)
                    boxes.append((b[0] + 2, b[1] + 1, b[2] + 1, b[3] - 1))
                    scores.append(0.4)
                    labels.append(o.label)
        if rng.random() < sim.false_positive:
            x, y = rng.uniform(0, W - 60), rng.uniform(0, H - 60)
            boxes.append((x, y, x + 40, y + 40))
            scores.append(0.4)
            labels.append(PHRASES[int(rng.integers(len(PHRASES)))])
        return make_detections(np.array(boxes).reshape(-1, 4), scores, labels, PHRASES)

    for t in range(scene.frames):
        if removals and t in removals:
            for tid in run.follow[-1].get(removals[t], []):
                tm.remove(tid)
        if t % sim.every == 0:
            pending[t + sim.delay] = (t, detect(t))
        if t in pending:
            s, dets = pending.pop(t)
            plan = tm.on_detections(s, dets, history.get(s, {}))
            run.plans.append(plan)
            for tid in plan.removed:
                run.ended.add(tid)
                run.bound.pop(tid)
            for tid in plan.dormant:
                run.dormant.add(tid)
                run.bound.pop(tid)
            for n in plan.new:
                run.created.append(n.id)
                run.bound[n.id] = _best_object(scene, n.box, s)
                offset[n.id] = 0.0
            for r in plan.reseed:
                run.reseeds += 1
                run.dormant.discard(r.id)
                run.bound[r.id] = _best_object(scene, r.box, s)
                offset[r.id] = 0.0
        obs: dict[int, Observation] = {}
        for tid, k in run.bound.items():
            if k is None or not scene.seen(k, t):
                obs[tid] = Observation(None, -5.0)
                continue
            if tid % 2 == 0:  # even tracks drift until re-seeded
                offset[tid] += sim.drift * scene.objects[k].size[0]
            b = noisy(scene.objects[k].box(t))
            d = offset[tid]
            obs[tid] = Observation((b[0] + d, b[1], b[2] + d, b[3]), 5.0)
        history[t] = obs
        history.pop(t - 50, None)
        for e in tm.on_frame(t, obs):
            if e.kind == "ended":
                run.ended.add(e.id)
                run.dormant.discard(e.id)
                run.bound.pop(e.id, None)
            elif e.kind == "dormant":
                run.dormant.add(e.id)
                run.bound.pop(e.id)
        suppressed = set(tm.suppressed_ids())
        assert set(run.bound) - suppressed == {i.id for i in tm.tracks()}
        follow: dict[int, list[int]] = defaultdict(list)
        silent: dict[int, list[int]] = defaultdict(list)
        for tid, k in run.bound.items():
            if k is not None:
                (silent if tid in suppressed else follow)[k].append(tid)
        run.follow.append(dict(follow))
        run.silent.append(dict(silent))
    return run, tm


def id_switches(scene: Scene, run: Run) -> int:
    """Times an object that stayed in the scene was followed by a different track than before."""
    switches = 0
    for k, o in enumerate(scene.objects):
        for a, b in o.visible:
            current: int | None = None
            for t in range(a, min(b, scene.frames)):
                ids = run.follow[t].get(k, [])
                if not ids:
                    continue
                if current is not None and ids[0] != current:
                    switches += 1
                current = ids[0]
    return switches


def assert_scene_invariants(scene: Scene, run: Run, tm: TrackManager, settle: int) -> None:
    # IDs never reused: every created ID is new and larger than all before it.
    assert run.created == sorted(set(run.created))
    assert id_switches(scene, run) == 0
    # Exactly one track per object: never two, and one once the object was in view long enough.
    for t, follow in enumerate(run.follow):
        for k, ids in follow.items():
            assert len(ids) == 1, f"frame {t}: object {k} followed by tracks {ids}"
        for k, o in enumerate(scene.objects):
            since = max((a for a, b in o.visible if a <= t < b), default=None)
            if (
                since is not None
                and t - since >= settle
                and all(scene.seen(k, u) for u in range(since, t + 1))
            ):
                assert follow.get(k), f"frame {t}: object {k} in view since {since} has no track"
    # Every ended object is freed: at the end nothing is live, every created ID ended or is
    # dormant (kept for re-identification, for at most reid_frames).
    assert not tm.tracks() and not run.bound
    assert run.dormant == set(tm.dormant_ids())
    assert run.ended | run.dormant == set(run.created)


def crossing_scene() -> Scene:
    """Two people cross (the nearer one occludes the other for a few frames), a ball enters
    late and leaves, a person leaves and comes back after a long time, a ball rolls through."""
    return Scene(
        [
            Obj("person", (60, 160), (60, 240), (2.0, 0.0), [(0, 260)], depth=0.0),
            Obj("person", (60, 160), (580, 250), (-2.0, 0.0), [(0, 260)], depth=1.0),
            Obj("ball", (30, 30), (320, 60), (0.0, 0.5), [(40, 200)]),
            Obj("person", (50, 120), (100, 380), (0.0, 0.0), [(0, 80), (180, 260)]),
            Obj("ball", (40, 40), (-20, 420), (4.0, 0.0), [(10, 170)]),
        ],
        frames=300,
    )


CFG = demo_cfg(max_missed=15, max_unseen=3, iou_threshold=0.3, drift_iou=0.5, merge_iou=0.8)


def test_perfect_detector_and_segmenter() -> None:
    scene = crossing_scene()
    run, tm = simulate(scene, CFG, SimConfig())
    assert_scene_invariants(scene, run, tm, settle=15)
    # 5 objects: the person back after leaving (100 frames) is re-identified under its own ID.
    assert len(run.created) == 5
    assert run.follow[100].get(3) is None and run.follow[79][3] == run.follow[200][3]


def test_occlusion_keeps_the_id_of_the_hidden_person() -> None:
    scene = crossing_scene()
    hidden = [
        t for t in range(scene.frames) if scene.objects[1].in_scene(t) and scene.occluded(1, t)
    ]
    assert 5 <= len(hidden) < CFG.max_missed  # the scene really occludes, briefly
    run, _ = simulate(scene, CFG, SimConfig())
    before = run.follow[hidden[0] - 1][1]
    after = run.follow[hidden[-1] + 1][1]
    assert before == after


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_noisy_detector_misses_duplicates_false_positives(seed: int) -> None:
    scene = crossing_scene()
    sim = SimConfig(miss=0.1, duplicate=0.3, false_positive=0.3, box_noise=2.0, seed=seed)
    run, tm = simulate(scene, CFG, sim)
    assert_scene_invariants(scene, run, tm, settle=35)
    assert len(run.created) > 6  # false positives made (short-lived) tracks


def test_drifting_segmenter_is_reseeded() -> None:
    scene = crossing_scene()
    run, tm = simulate(scene, CFG, SimConfig(drift=0.015, box_noise=1.0))
    assert run.reseeds > 0
    assert_scene_invariants(scene, run, tm, settle=15)


def test_object_gone_is_ended_after_max_missed_frames() -> None:
    scene = Scene([Obj("ball", (40, 40), (100, 100), (0, 0), [(0, 20)])], frames=60)
    cfg = demo_cfg(max_missed=5, max_unseen=100, reground_every_frames=10, reid_frames=0)
    run, tm = simulate(scene, cfg, SimConfig(every=1000, delay=0))
    assert run.created == [1] and run.ended == {1}
    # Frames 20..24 missed: it ends on frame 24, so frame 23 is the last that still has it.
    last = max(t for t, f in enumerate(run.follow) if 0 in f)
    assert last == 20 + cfg.max_missed - 2
    assert len(tm) == 0


# ---------------------------------------------------------------------- unit behaviour


def dets(*items: tuple[str, Box, float]) -> sv.Detections:
    if not items:
        return make_detections(np.zeros((0, 4)), [], [], PHRASES)
    return make_detections(
        [i[1] for i in items], [i[2] for i in items], [i[0] for i in items], PHRASES
    )


def test_states_age_and_lifecycle_events() -> None:
    tm = TrackManager(demo_cfg(max_missed=2, reid_frames=0))  # dormant: see below
    plan = tm.on_detections(10, dets(("ball", (0, 0, 10, 10), 0.9)), {})
    (new,) = plan.new
    assert new.id == 1 and new.label == "ball"
    assert [i.state for i in tm.tracks()] == ["new"]
    assert tm.on_frame(12, {1: Observation((0, 0, 10, 10), 3.0)}) == []
    info = tm.tracks()[0]
    assert (info.state, info.age) == ("new", 2)
    tm.on_frame(13, {1: Observation((0, 0, 10, 10), 3.0)})
    assert tm.tracks()[0].state == "tracked"
    (ev,) = tm.on_frame(14, {1: Observation((0, 0, 10, 10), -1.0)})
    assert (ev.kind, tm.tracks()[0].state) == ("lost", "lost")
    (ev,) = tm.on_frame(15, {1: Observation((1, 0, 11, 10), 1.0)})
    assert (ev.kind, tm.tracks()[0].state) == ("recovered", "tracked")
    tm.on_frame(16, {1: Observation(None, 1.0)})
    (ev,) = tm.on_frame(17, {1: Observation(None, 1.0)})
    assert (ev.kind, ev.reason, ev.id) == ("ended", "missed", 1)
    assert tm.tracks() == []
    # Later observations of the ended ID are ignored; its ID is never given again.
    assert tm.on_frame(18, {1: Observation((0, 0, 10, 10), 1.0)}) == []
    assert tm.on_detections(18, dets(("ball", (0, 0, 10, 10), 0.9)), {}).new[0].id == 2


def test_label_must_match_and_track_keeps_label() -> None:
    tm = TrackManager(demo_cfg())
    tm.on_detections(0, dets(("ball", (0, 0, 10, 10), 0.9)), {})
    at = {1: Observation((0, 0, 10, 10), 1)}
    # A box on the ball's object under another phrase is that object (IoU >= 0.7), not a new one.
    plan = tm.on_detections(1, dets(("person", (0, 0, 10, 11), 0.9)), at)
    assert plan.matches == () and plan.new == ()
    # IoU 0.625: a match were labels ignored; not the same object under another name.
    plan = tm.on_detections(2, dets(("person", (0, 0, 10, 16), 0.9)), at)
    assert plan.matches == () and [n.label for n in plan.new] == ["person"]
    assert [(i.id, i.label) for i in tm.tracks()] == [(1, "ball"), (2, "person")]


def test_drift_reseed_and_unseen_end() -> None:
    tm = TrackManager(demo_cfg(max_unseen=2, drift_iou=0.5, iou_threshold=0.2, reid_frames=0))
    tm.on_detections(
        0, dets(("ball", (0, 0, 10, 10), 0.9), ("person", (100, 100, 150, 200), 0.9)), {}
    )
    at = {1: Observation((4, 0, 14, 10), 1.0), 2: Observation((100, 100, 150, 200), 1.0)}
    plan = tm.on_detections(5, dets(("ball", (0, 0, 10, 10), 0.9)), at)
    assert [(r.id, r.box) for r in plan.reseed] == [(1, (0.0, 0.0, 10.0, 10.0))]
    assert plan.ended == ()
    plan = tm.on_detections(10, dets(("ball", (0, 0, 10, 10), 0.9)), at)
    assert plan.ended == (2,) and [i.id for i in tm.tracks()] == [1]


def test_lost_track_matches_on_last_known_box_and_is_reseeded() -> None:
    tm = TrackManager(demo_cfg())
    tm.on_detections(0, dets(("ball", (0, 0, 10, 10), 0.9)), {})
    tm.on_frame(1, {1: Observation((0, 0, 10, 10), 1.0)})
    tm.on_frame(2, {1: Observation(None, -3.0)})
    plan = tm.on_detections(2, dets(("ball", (1, 0, 11, 10), 0.9)), {1: Observation(None, -3.0)})
    assert plan.new == () and [r.id for r in plan.reseed] == [1]


def test_track_created_after_the_detection_frame_is_not_duplicated_or_penalised() -> None:
    tm = TrackManager(demo_cfg(max_unseen=1, reid_frames=0))
    tm.on_detections(20, dets(("ball", (0, 0, 10, 10), 0.9)), {})
    # A slower result computed on frame 15 arrives later: the ball is matched, not re-created;
    # a result without it does not count against a track that did not exist yet.
    plan = tm.on_detections(15, dets(("ball", (0, 0, 10, 10), 0.9)), {})
    assert plan.new == () and plan.ended == ()
    plan = tm.on_detections(16, dets(), {})
    assert plan.ended == ()
    plan = tm.on_detections(21, dets(), {})
    assert plan.ended == (1,)


def test_duplicates_nms_and_merge_keep_older_id() -> None:
    cfg = demo_cfg(merge_iou=0.8, max_unseen=100)
    tm = TrackManager(cfg)
    plan = tm.on_detections(
        0, dets(("ball", (0, 0, 100, 100), 0.9), ("ball", (1, 1, 100, 100), 0.8)), {}
    )
    assert [n.id for n in plan.new] == [1]  # NMS: one object, one track
    tm.add_manual("ball", (2, 2, 101, 101))  # a duplicate made by hand: id 2
    at = {1: Observation((0, 0, 100, 100), 1.0), 2: Observation((2, 2, 101, 101), 1.0)}
    one = dets(("ball", (0, 0, 100, 100), 0.9))
    assert tm.on_detections(1, one, at).merged == ()
    assert tm.on_detections(2, one, at).merged == (2,)
    assert [i.id for i in tm.tracks()] == [1]


def test_objects_crossing_are_not_merged() -> None:
    tm = TrackManager(demo_cfg(merge_iou=0.8, max_unseen=100))
    tm.add_manual("person", (0, 0, 50, 100))
    tm.add_manual("person", (200, 0, 250, 100))
    # Boxes overlap by ~0.9 for one re-grounding (they pass each other): not merged.
    crossing = {1: Observation((100, 0, 150, 100), 1.0), 2: Observation((103, 0, 153, 100), 1.0)}
    apart = {1: Observation((80, 0, 130, 100), 1.0), 2: Observation((123, 0, 173, 100), 1.0)}
    one = dets(("person", (100, 0, 150, 100), 0.9))
    for s, at in enumerate([crossing, apart, crossing, apart]):
        assert tm.on_detections(s, one, at).merged == ()
    # One behind the other for long: boxes overlap, masks (given by the engine) do not.
    for s in range(4, 8):
        plan = tm.on_detections(s, one, crossing, mask_iou=lambda a, b: 0.3)
        assert plan.merged == ()
    assert len(tm) == 2


def test_max_objects_highest_scores_first() -> None:
    tm = TrackManager(demo_cfg(max_objects=2))
    boxes = [
        ("ball", (i * 50.0, 0.0, i * 50.0 + 40, 40.0), s) for i, s in enumerate([0.5, 0.9, 0.7])
    ]
    plan = tm.on_detections(0, dets(*boxes), {})
    assert [n.id for n in plan.new] == [1, 2]
    assert [n.score for n in plan.new] == pytest.approx([0.9, 0.7])
    with pytest.raises(RequestError, match="max_objects"):
        tm.add_manual("ball", (0, 0, 5, 5))


def test_manual_remove_set_labels_reset() -> None:
    tm = TrackManager(demo_cfg(max_unseen=1, reid_frames=0))
    a = tm.add_manual("cup", (0, 0, 10, 10), seq=3)
    tm.on_detections(
        4, dets(("ball", (50, 50, 60, 60), 0.9), ("person", (80, 0, 120, 90), 0.9)), {}
    )
    assert [i.id for i in tm.tracks()] == [a, 2, 3]
    assert tm.on_detections(5, dets(("ball", (50, 50, 60, 60), 0.9)), {}).ended == (3,)
    assert a in tm  # manual tracks are not ended by re-grounding
    assert tm.set_labels(["person"]) == [2]
    assert [i.id for i in tm.tracks()] == [a]  # manual tracks survive a prompt change
    with pytest.raises(RequestError, match="no tracked object with id 99"):
        tm.remove(99)
    with pytest.raises(PromptError, match="no area"):
        tm.add_manual("cup", (10, 10, 5, 20))
    with pytest.raises(PromptError, match="empty"):
        tm.add_manual("  ", (0, 0, 5, 5))
    assert tm.remove(a) is Removal.ENDED and a not in tm  # a manual object removed ends
    b = tm.add_manual("cup", (0, 0, 10, 10))
    assert tm.reset() == [b]
    assert tm.add_manual("cup", (0, 0, 10, 10)) == b + 1


# ---------------------------------------------------------------------- removal: suppression


def _two_balls(tm: TrackManager) -> tuple[int, int]:
    """Two balls detected on frame 0, observed on frame 1; returns their IDs (left, right)."""
    plan = tm.on_detections(
        0, dets(("ball", (0, 100, 20, 120), 0.9), ("ball", (300, 100, 320, 120), 0.9)), {}
    )
    a, b = (n.id for n in plan.new)
    tm.on_frame(
        1, {a: Observation((0, 100, 20, 120), 2.0), b: Observation((300, 100, 320, 120), 2.0)}
    )
    return a, b


def test_removed_detected_object_is_suppressed_while_in_view() -> None:
    """Remove used to end the track, and the next re-grounding found the object again under a
    new ID. Now no new ID is born on it over many re-groundings (its detections are absorbed,
    also one that moved off its box: the suppressed track is re-prompted), it is not among the
    published tracks, and the other ball is unaffected."""
    tm = TrackManager(demo_cfg(max_unseen=3, reid_frames=30))
    a, b = _two_balls(tm)
    assert tm.remove(a) is Removal.SUPPRESSED
    assert [i.id for i in tm.tracks()] == [b] and tm.suppressed_ids() == [a] and a in tm
    with pytest.raises(RequestError, match=f"no tracked object with id {a}"):
        tm.remove(a)  # removed already: not a tracked object any more
    for seq in range(2, 60, 2):
        dx = 2.0 * seq  # both balls move 2 px a frame
        at = {
            a: Observation((dx, 100, dx + 20, 120), 2.0),
            b: Observation((300 - dx, 100, 320 - dx, 120), 2.0),
        }
        tm.on_frame(seq, at)
        # the suppressed track's mask slid off its ball on some frames: re-prompted, not new
        off = 8.0 if seq % 10 == 0 else 0.0  # IoU 0.43: its ball, below drift_iou
        found = dets(
            ("ball", (dx + off, 100, dx + off + 20, 120), 0.9),
            ("ball", (300 - dx, 100, 320 - dx, 120), 0.8),
        )
        plan = tm.on_detections(seq, found, at)
        assert plan.new == () and plan.removed == () and plan.dormant == (), seq
        assert {m.id for m in plan.matches} == {a, b}
        assert [r.id for r in plan.reseed] == ([a] if off else [])
        assert [i.id for i in tm.tracks()] == [b] and tm.suppressed_ids() == [a]
    with pytest.raises(RequestError, match="no tracked object with id 99"):
        tm.remove(99)


def test_suppression_follows_the_track_through_dormancy_and_ends_with_it() -> None:
    """A suppressed object hidden for a while goes dormant and is re-identified as itself:
    still suppressed, nothing published. Once it has left for good (dormant past
    ``reid_frames``) the suppression ends with its track: back in view, it is a new object."""
    tm = TrackManager(demo_cfg(max_missed=3, max_unseen=100, reid_frames=20))
    tid = _moving_track(tm, range(11), RED)
    assert tm.remove(tid) is Removal.SUPPRESSED and tm.tracks() == []
    events = [e for t in range(11, 14) for e in tm.on_frame(t, {tid: Observation(None, -4.0)})]
    assert [e.kind for e in events] == ["lost", "dormant"] and tm.dormant_ids() == [tid]
    plan = tm.on_detections(20, dets(("ball", (80, 100, 100, 120), 0.8)), {}, colours=[RED])
    assert plan.new == () and [r.id for r in plan.reseed] == [tid]
    tm.on_frame(21, {tid: Observation((84, 100, 104, 120), 2.0, RED)})
    assert tm.tracks() == [] and tm.suppressed_ids() == [tid] and tm.dormant_ids() == []
    # It leaves: missed, dormant, and not back within reid_frames: it ends, suppression too.
    events = [e for t in range(22, 50) for e in tm.on_frame(t, {tid: Observation(None, -4.0)})]
    assert [e.kind for e in events] == ["lost", "dormant", "ended"] and tid not in tm
    assert tm.suppressed_ids() == []
    plan = tm.on_detections(60, dets(("ball", (80, 100, 100, 120), 0.8)), {}, colours=[RED])
    (new,) = plan.new
    assert new.id > tid and [i.id for i in tm.tracks()] == [new.id]


def test_suppressed_object_not_redetected_ends_and_comes_back_as_new() -> None:
    """Without re-identification (``reid_frames`` 0) a suppressed track that is not re-detected
    for ``max_unseen`` re-groundings ends, as any track would: its object left."""
    tm = TrackManager(demo_cfg(max_unseen=2, reid_frames=0))
    a, b = _two_balls(tm)
    tm.remove(a)
    right = dets(("ball", (300, 100, 320, 120), 0.9))
    at = {b: Observation((300, 100, 320, 120), 2.0)}
    assert tm.on_detections(2, right, at).ended == ()
    assert tm.on_detections(3, right, at).ended == (a,) and tm.suppressed_ids() == []
    both = dets(("ball", (0, 100, 20, 120), 0.9), ("ball", (300, 100, 320, 120), 0.9))
    (new,) = tm.on_detections(4, both, at).new
    assert new.id > b and [i.id for i in tm.tracks()] == [b, new.id]


def test_prompt_change_and_reset_lift_suppressions() -> None:
    tm = TrackManager(demo_cfg(max_unseen=100))
    a, b = _two_balls(tm)
    tm.remove(a)
    # The same prompt set again: the suppressed track ends (its memory is to be freed), the
    # other ball keeps its ID, and the next grounding finds the removed ball under a new ID.
    assert tm.set_labels(["ball"]) == [a] and tm.suppressed_ids() == []
    both = dets(("ball", (0, 100, 20, 120), 0.9), ("ball", (300, 100, 320, 120), 0.9))
    at = {b: Observation((300, 100, 320, 120), 2.0)}
    (new,) = tm.on_detections(2, both, at).new
    assert new.id > b and [i.id for i in tm.tracks()] == [b, new.id]
    tm.remove(new.id)
    assert tm.suppressed_ids() == [new.id]
    assert tm.reset() == [b, new.id] and tm.suppressed_ids() == []
    assert {n.id for n in tm.on_detections(3, both, {}).new} == {new.id + 1, new.id + 2}


def test_removed_object_in_a_noisy_scene_gets_no_new_id_until_it_comes_back() -> None:
    """The scene simulator with a noisy detector (misses, duplicate boxes, false positives):
    the user removes the ball's track on frame 30; while the ball stays in view no published
    track follows it (only the suppressed one does); after it left (its track ended) and came
    back, a new ID follows it; the person is followed by one ID throughout."""
    scene = Scene(
        [
            Obj("ball", (30, 30), (100, 200), (1.0, 0.0), [(0, 90), (150, 220)]),
            Obj("person", (50, 120), (450, 250), (-0.5, 0.0), [(0, 220)]),
        ],
        frames=220,
    )
    cfg = demo_cfg(max_missed=5, max_unseen=3, reid_frames=20, iou_threshold=0.3)
    for seed in range(3):
        sim = SimConfig(
            every=5, miss=0.1, duplicate=0.3, false_positive=0.2, box_noise=2.0, seed=seed
        )
        run, _ = simulate(scene, cfg, sim, removals={30: 0})
        (removed,) = run.follow[29][0]
        assert all(run.follow[t].get(0) is None for t in range(30, 90)), seed
        assert all(run.silent[t].get(0) == [removed] for t in range(30, 90)), seed
        back = [run.follow[t].get(0) for t in range(170, 220)]
        assert all(ids and len(ids) == 1 and ids[0] > removed for ids in back), (seed, back)
        assert len({tuple(run.follow[t].get(1) or ()) for t in range(10, 220)}) == 1, seed


# ---------------------------------------------------------------------- properties

box_st = st.tuples(st.floats(0, 200), st.floats(0, 200), st.floats(1, 80), st.floats(1, 80)).map(
    lambda v: (v[0], v[1], v[0] + v[2], v[1] + v[3])
)
label_st = st.sampled_from(PHRASES)


@settings(max_examples=150, deadline=None)
@given(
    tracks=st.lists(st.tuples(label_st, box_st), max_size=8),
    detections=st.lists(st.tuples(label_st, box_st, st.floats(0.01, 1.0)), max_size=10),
    iou_threshold=st.floats(0.05, 0.9),
    max_objects=st.integers(1, 12),
)
def test_assignment_invariants(
    tracks: list[tuple[str, Box]],
    detections: list[tuple[str, Box, float]],
    iou_threshold: float,
    max_objects: int,
) -> None:
    cfg = demo_cfg(iou_threshold=iou_threshold, max_objects=max_objects, merge_iou=0.95)
    tm = TrackManager(cfg)
    ids = []
    for label, box in tracks[:max_objects]:
        ids.append(tm.add_manual(label, box, seq=0))
    at = {i: Observation(b, 1.0) for i, (_, b) in zip(ids, tracks, strict=False)}
    before = tm.next_id
    d = dets(*detections)
    plan = tm.on_detections(1, d, at)

    # One-to-one.
    assert len({m.id for m in plan.matches}) == len(plan.matches)
    assert len({m.detection for m in plan.matches}) == len(plan.matches)
    label_of = dict(zip(ids, (t[0] for t in tracks), strict=False))
    for m in plan.matches:
        # Matched pairs are above threshold and of one label.
        tbox = at[m.id].box
        assert tbox is not None
        iou = float(iou_matrix(d.xyxy[m.detection : m.detection + 1], [tbox])[0, 0])
        assert iou >= iou_threshold - 1e-9 and m.iou == pytest.approx(iou)
        assert detections[m.detection][0] == label_of[m.id]
    # Maximal: no unmatched track and unmatched detection could still pair.
    free_tracks = [i for i in ids if i not in {m.id for m in plan.matches}]
    used = {m.detection for m in plan.matches}
    for j, (label, _, _) in enumerate(detections):
        if j in used:
            continue
        xyxy = d.xyxy[j]
        for i in free_tracks:
            iou = float(iou_matrix(np.array([xyxy]), np.array([at[i].box]))[0, 0])
            if label == label_of[i] and iou >= iou_threshold + 1e-9:
                # Only allowed when NMS removed this detection in favour of another one (of a
                # higher score, or of the same score and listed first) of its label.
                assert any(
                    detections[k][0] == label
                    and float(iou_matrix(np.array([xyxy]), np.array([detections[k][1]]))[0, 0])
                    >= min(DUPLICATE_IOU, cfg.merge_iou) - 1e-9
                    for k in range(len(detections))
                    if k != j
                )
    # New IDs unique, increasing, never seen before; the total stays within max_objects.
    new_ids = [n.id for n in plan.new]
    assert new_ids == list(range(before, before + len(new_ids)))
    assert len(tm) <= max_objects
    assert not set(new_ids) & set(plan.removed)
    assert {i.id for i in tm.tracks()} == (set(ids) - set(plan.removed)) | set(new_ids)


@settings(max_examples=60, deadline=None)
@given(
    steps=st.lists(
        st.one_of(
            st.tuples(
                st.just("det"), st.lists(st.tuples(label_st, box_st, st.floats(0.1, 1)), max_size=5)
            ),
            st.tuples(st.just("frame"), st.lists(st.booleans(), max_size=8)),
            st.tuples(st.just("remove"), st.integers(0, 7)),
            st.tuples(st.just("reset"), st.none()),
        ),
        max_size=30,
    )
)
def test_ids_never_reused_over_any_sequence(steps: list[tuple[str, object]]) -> None:
    tm = TrackManager(demo_cfg(max_missed=2, max_unseen=2, max_objects=6))
    seen: list[int] = []
    for seq, (kind, arg) in enumerate(steps):
        live = [i.id for i in tm.tracks()]
        if kind == "det":
            assert isinstance(arg, list)
            plan = tm.on_detections(seq, dets(*arg), {})
            seen.extend(n.id for n in plan.new)
        elif kind == "frame":
            assert isinstance(arg, list)
            hits = list(arg)
            obs = {
                tid: Observation((0, 0, 5, 5) if h else None, 1.0)
                for tid, h in zip(live, hits, strict=False)
            }
            tm.on_frame(seq, obs)
        elif kind == "remove" and live:
            assert isinstance(arg, int)
            tm.remove(live[arg % len(live)])
        elif kind == "reset":
            tm.reset()
        assert len(tm) <= 6
    assert seen == sorted(set(seen))


# ---------------------------------------------------------------------- dormant tracks, re-identification

RED, BLUE = (0.15, 0.15, 0.85), (0.85, 0.45, 0.1)


def _moving_track(tm: TrackManager, frames: range, colour: tuple[float, float, float]) -> int:
    """One ball detected on frame 0 at x=0..20 and observed moving 4 px/frame to the right."""
    (new,) = tm.on_detections(0, dets(("ball", (0, 100, 20, 120), 0.9)), {}).new
    for t in frames:
        tm.on_frame(t, {new.id: Observation((4.0 * t, 100, 4.0 * t + 20, 120), 2.0, colour)})
    return new.id


def test_missed_track_goes_dormant_and_is_reidentified_where_its_motion_puts_it() -> None:
    tm = TrackManager(demo_cfg(max_missed=5, max_unseen=100, reid_frames=100))
    tid = _moving_track(tm, range(11), RED)  # last seen on frame 10 at x=40..60
    events = [e for t in range(11, 16) for e in tm.on_frame(t, {tid: Observation(None, -4.0)})]
    assert [(e.kind, e.reason) for e in events] == [("lost", ""), ("dormant", "missed")]
    assert tm.tracks() == [] and len(tm) == 0 and tid in tm and tm.dormant_ids() == [tid]
    # Observations of a dormant track are ignored (the engine freed its memory).
    assert tm.on_frame(16, {tid: Observation((0, 0, 5, 5), 3.0)}) == []
    # Hidden for 20 frames: it reappears at x=120..140 (no overlap with its last box).
    plan = tm.on_detections(30, dets(("ball", (121, 101, 141, 121), 0.8)), {}, colours=[RED])
    assert plan.new == () and [r.id for r in plan.reseed] == [tid]
    assert [i.id for i in tm.tracks()] == [tid] and tm.dormant_ids() == []
    (ev,) = tm.on_frame(31, {tid: Observation((124, 100, 144, 120), 2.0, RED)})
    assert ev.kind == "recovered" and tm.tracks()[0].state == "tracked"


def test_reidentification_gate_position_size_colour_label() -> None:
    cfg = demo_cfg(max_missed=3, max_unseen=100, reid_frames=100, reid_distance=1.5)
    far = ("ball", (400.0, 300.0, 420.0, 320.0), 0.8)  # far from where it should be
    big = ("ball", (90.0, 70.0, 170.0, 150.0), 0.8)  # at the right place, 4x the size
    person = ("person", (120.0, 100.0, 140.0, 120.0), 0.8)
    near = ("ball", (120.0, 100.0, 140.0, 120.0), 0.8)
    for det, colour, reidentified in [
        (far, RED, False),
        (big, RED, False),
        (person, RED, False),
        (near, BLUE, False),
        (near, RED, True),
        (near, None, True),  # colour unknown (an external detection): position and size decide
    ]:
        tm = TrackManager(cfg)
        tid = _moving_track(tm, range(11), RED)
        for t in range(11, 14):
            tm.on_frame(t, {tid: Observation(None, -4.0)})
        assert tm.dormant_ids() == [tid]
        plan = tm.on_detections(30, dets(det), {}, colours=[colour])
        assert ([r.id for r in plan.reseed] == [tid]) is reidentified, (det, colour)
        assert len(plan.new) == (0 if reidentified else 1)


def test_lost_track_is_reidentified_by_motion_before_it_goes_dormant() -> None:
    tm = TrackManager(demo_cfg(max_missed=30, max_unseen=100))
    tid = _moving_track(tm, range(11), RED)
    for t in range(11, 20):
        tm.on_frame(t, {tid: Observation(None, -4.0)})
    # Lost (still in the segmenter) for 10 frames: the detection does not overlap its last box.
    at = {tid: Observation(None, -4.0)}
    plan = tm.on_detections(20, dets(("ball", (80, 100, 100, 120), 0.8)), at, colours=[RED])
    assert plan.new == () and [r.id for r in plan.reseed] == [tid]


def test_dormant_track_ends_after_reid_frames_and_unseen_tracks_go_dormant() -> None:
    tm = TrackManager(demo_cfg(max_missed=100, max_unseen=2, reid_frames=10))
    tm.on_detections(0, dets(("ball", (0, 0, 10, 10), 0.9)), {})
    at = {1: Observation((0, 0, 10, 10), 1.0)}
    tm.on_frame(1, at)
    assert tm.on_detections(2, dets(), at).dormant == ()
    plan = tm.on_detections(4, dets(), at)
    assert plan.dormant == (1,) and plan.ended == () and tm.dormant_ids() == [1]
    assert all(e.kind != "ended" for t in range(5, 14) for e in tm.on_frame(t, {}))
    (ev,) = tm.on_frame(14, {})
    assert (ev.kind, ev.reason, ev.id) == ("ended", "dormant", 1) and 1 not in tm
    # Its ID is never given again.
    assert tm.on_detections(15, dets(("ball", (0, 0, 10, 10), 0.9)), {}).new[0].id == 2


def test_manual_track_still_ends_after_max_missed_and_dormant_ones_do_not_count() -> None:
    tm = TrackManager(demo_cfg(max_missed=2, max_objects=1, reid_frames=50))
    a = tm.add_manual("cup", (0, 0, 10, 10), seq=0)
    tm.on_frame(0, {a: Observation((0, 0, 10, 10), 1.0)})
    tm.on_frame(1, {a: Observation(None, -1.0)})
    (ev,) = tm.on_frame(2, {a: Observation(None, -1.0)})
    assert (ev.kind, ev.reason) == ("ended", "missed") and a not in tm
    # A dormant track does not take one of the max_objects places.
    tm.on_detections(3, dets(("ball", (0, 0, 10, 10), 0.9)), {})
    tm.on_frame(4, {2: Observation(None, -1.0)})
    tm.on_frame(5, {2: Observation(None, -1.0)})
    assert tm.dormant_ids() == [2]
    assert [n.id for n in tm.on_detections(6, dets(("ball", (300, 0, 310, 10), 0.9)), {}).new] == [
        3
    ]


def test_tracks_whose_masks_coincide_for_frames_are_one_object() -> None:
    tm = TrackManager(demo_cfg(merge_iou=0.8, max_unseen=100, reid_frames=50))
    tm.on_detections(0, dets(("ball", (0, 0, 20, 20), 0.9), ("ball", (100, 0, 120, 20), 0.9)), {})
    same = {1: Observation((50, 0, 70, 20), 2.0), 2: Observation((51, 0, 71, 20), 2.0)}
    events = []
    for t in range(1, DUPLICATE_FRAMES):
        events += tm.on_frame(t, same, mask_iou=lambda a, b: 0.95)
    # One frame apart breaks the run: crossing objects are not taken for one.
    tm.on_frame(DUPLICATE_FRAMES, same, mask_iou=lambda a, b: 0.3)
    for t in range(DUPLICATE_FRAMES + 1, 2 * DUPLICATE_FRAMES):
        events += tm.on_frame(t, same, mask_iou=lambda a, b: 0.95)
    # No retirement; from the 2nd coinciding frame on, the younger is hidden while the run lasts.
    assert {(e.id, e.kind) for e in events} == {(2, "hidden")}
    (ev,) = tm.on_frame(2 * DUPLICATE_FRAMES, same, mask_iou=lambda a, b: 0.95)
    assert (ev.id, ev.kind, ev.reason) == (2, "dormant", "duplicate")
    assert [i.id for i in tm.tracks()] == [1] and tm.dormant_ids() == [2]


@pytest.mark.parametrize(
    ("named", "kept", "retired"), [("person", 2, 1), ("ball", 1, 2), (None, 1, 2)]
)
def test_coinciding_tracks_named_apart_keep_the_detectors_latest_name(
    named: str | None, kept: int, retired: int
) -> None:
    """A ball (1) and a person (2) whose masks come to coincide: one object under two names.
    The track the last re-grounding found under its name is kept, whichever is older; found
    under neither (or both), the older."""
    tm = TrackManager(demo_cfg(merge_iou=0.8, max_unseen=100, reid_frames=50))
    tm.on_detections(0, dets(("ball", (0, 0, 20, 20), 0.9), ("person", (100, 0, 120, 20), 0.9)), {})
    same = {1: Observation((50, 0, 70, 20), 2.0), 2: Observation((51, 0, 71, 20), 2.0)}
    found = dets((named, (50, 0, 70, 20), 0.9)) if named else dets()
    plan = tm.on_detections(5, found, same)
    assert plan.new == () and [m.id for m in plan.matches] == ([kept] if named else [])
    events = []
    for t in range(6, 6 + DUPLICATE_FRAMES):
        events += tm.on_frame(t, same, mask_iou=lambda a, b: 0.95)
    assert [(e.id, e.kind, e.reason) for e in events if e.kind != "hidden"] == [
        (retired, "dormant", "duplicate")
    ]
    assert {e.id for e in events if e.kind == "hidden"} == {retired}  # the one the rule retires
    assert [i.id for i in tm.tracks()] == [kept] and tm.dormant_ids() == [retired]


def _retired(events: list[TrackEvent]) -> list[TrackEvent]:
    """``events`` without the duplicate rule's ``hidden`` (tested on their own below)."""
    return [e for e in events if e.kind != "hidden"]


@pytest.mark.parametrize("hide", [2, 0])
def test_the_track_a_duplicate_run_would_retire_is_hidden_while_it_runs(hide: int) -> None:
    """Balls 1 and 2 coinciding: from the ``duplicate_hide_frames``-th coinciding frame on,
    the younger (the one the rule retires) is ``hidden`` on each frame until it retires; a frame
    apart ends the run and shows it again. 0: never hidden."""
    tm = _two_balls_under(LifecycleConfig(profile="demo", duplicate_hide_frames=hide))
    same = {1: Observation((50, 0, 70, 20), 2.0), 2: Observation((51, 0, 71, 20), 2.0)}
    kinds: list[list[tuple[int, str]]] = []
    for t, m in enumerate([0.95, 0.95, 0.95, 0.3, 0.95, 0.95, 0.95, 0.95, 0.95], start=1):
        kinds.append([(e.id, e.kind) for e in tm.on_frame(t, same, mask_iou=_overlap(m))])
    hidden, retired = [(2, "hidden")], [(2, "dormant")]
    apart: list[tuple[int, str]] = []
    if hide:
        assert kinds == [[], hidden, hidden, apart, [], hidden, hidden, hidden, retired]
    else:
        assert kinds == [[], [], [], apart, [], [], [], [], retired]


def _overlap(m: float) -> Callable[[int, int], float]:
    return lambda a, b: m


def _two_balls_under(life: LifecycleConfig) -> TrackManager:
    """Balls 1 and 2 apart on frame 0, under ``life``'s rules."""
    cfg = demo_cfg(merge_iou=0.8, max_unseen=100, reid_frames=50)
    tm = TrackManager(cfg.model_copy(update={"lifecycle": life}))
    tm.on_detections(0, dets(("ball", (0, 0, 20, 20), 0.9), ("ball", (100, 0, 120, 20), 0.9)), {})
    return tm


@pytest.mark.parametrize("hold", [0.5, 0.0])
def test_a_duplicate_run_is_held_by_a_frame_of_lesser_overlap(hold: float) -> None:
    """Masks coinciding on 3 frames, overlapping 0.6 on one (a mask flickers), then coinciding
    on 2 more: with ``duplicate_hold_iou`` 0.5 the run is held and the 5th coinciding frame
    makes them one object; without, the run starts again. 0.3 ends it either way."""
    life = LifecycleConfig(profile="demo", duplicate_hold_iou=hold)
    tm = _two_balls_under(life)
    same = {1: Observation((50, 0, 70, 20), 2.0), 2: Observation((51, 0, 71, 20), 2.0)}
    events = []
    for t, m in enumerate([0.95, 0.95, 0.95, 0.6, 0.95, 0.95], start=1):
        events += tm.on_frame(t, same, mask_iou=_overlap(m))
    assert [(e.id, e.reason) for e in _retired(events)] == ([(2, "duplicate")] if hold else [])
    tm = _two_balls_under(life)
    for t, m in enumerate([0.95, 0.95, 0.95, 0.3, 0.95, 0.95], start=1):
        assert _retired(tm.on_frame(t, same, mask_iou=_overlap(m))) == []


@pytest.mark.parametrize("inside", [0.9, 0.0])
def test_a_mask_inside_another_for_frames_is_one_object(inside: float) -> None:
    """Track 2's mask lies inside track 1's (IoU 0.3, the larger bled past the object; 95 % of
    the smaller inside): with ``duplicate_contained`` 0.9 that is coinciding, and after
    ``duplicate_frames`` frames the younger is a duplicate; without, two objects."""
    life = LifecycleConfig(profile="demo", duplicate_contained=inside)
    tm = _two_balls_under(life)
    nested = {1: Observation((40, 0, 100, 40), 2.0), 2: Observation((50, 5, 70, 25), 2.0)}
    events = []
    for t in range(1, DUPLICATE_FRAMES + 1):
        events += tm.on_frame(t, nested, lambda a, b: 0.3, lambda a, b: 0.95)
    assert [(e.id, e.reason) for e in _retired(events)] == ([(2, "duplicate")] if inside else [])
    # the boxes nested but the masks not (85 % inside): two objects
    tm = _two_balls_under(life)
    for t in range(1, 2 * DUPLICATE_FRAMES):
        assert tm.on_frame(t, nested, lambda a, b: 0.3, lambda a, b: 0.85) == []


def test_manual_tracks_are_not_taken_for_duplicates() -> None:
    tm = TrackManager(demo_cfg(merge_iou=0.8))
    a = tm.add_manual("cup", (0, 0, 20, 20), seq=0)
    b = tm.add_manual("mug", (1, 0, 21, 20), seq=0)
    same = {a: Observation((0, 0, 20, 20), 2.0), b: Observation((1, 0, 21, 20), 2.0)}
    for t in range(3 * DUPLICATE_FRAMES):
        assert tm.on_frame(t, same, mask_iou=lambda x, y: 1.0) == []
    assert [i.id for i in tm.tracks()] == [a, b]


@pytest.mark.parametrize("jump", [False, True], ids=["slides", "jumps"])
def test_track_whose_mask_turns_another_colour_is_not_shown_and_drifts(jump: bool) -> None:
    """A mask on a blue object, next to the track's red one (slides) or far away (jumps): each
    such frame is reported (``off_colour``: the engine does not publish it; a jump: a miss,
    ``jumped``), one of the track's own colour ends the count, and ``drift_frames`` (3) in a row
    retire it as drifted, from where a jump comes as from where a slide does."""
    tm = TrackManager(demo_cfg(max_missed=30, max_unseen=100, reid_frames=100))
    tid = _moving_track(tm, range(11), RED)  # last good box on frame 10: x=40..60
    on_blue = Observation((200, 100, 220, 120) if jump else (52, 100, 72, 120), 2.0, BLUE)
    kinds = [[e.kind for e in tm.on_frame(t, {tid: on_blue})] for t in (11, 12)]
    assert kinds == ([["jumped", "lost"], ["jumped"]] if jump else [["off_colour"]] * 2)
    own = tm.on_frame(13, {tid: Observation((52, 100, 72, 120), 2.0, RED)})
    assert [e.kind for e in own] == (["recovered"] if jump else [])
    events = [e for t in (14, 15, 16) for e in tm.on_frame(t, {tid: on_blue})]
    assert [(e.kind, e.reason) for e in events][-1] == ("dormant", "drifted")
    assert len(events) == (4 if jump else 3) and tm.dormant_ids() == [tid]
    # The off-colour frames moved nothing: it is looked for where its motion puts it (x~64 at
    # frame 16, not at the blue object's x=200), under its own colour.
    plan = tm.on_detections(16, dets(("ball", (200, 100, 220, 120), 0.8)), {}, colours=[BLUE])
    assert [n.label for n in plan.new] == ["ball"] and plan.reseed == ()
    plan = tm.on_detections(17, dets(("ball", (66, 100, 86, 120), 0.8)), {}, colours=[RED])
    assert [r.id for r in plan.reseed] == [tid]


def test_an_off_colour_mask_is_no_duplicate() -> None:
    """A track whose mask slid onto the neighbouring blue object, where a younger track
    follows that object: not that track's duplicate (the younger is neither hidden nor
    retired); the older drifts after ``drift_frames``."""
    tm = TrackManager(demo_cfg(max_missed=30, merge_iou=0.8, max_unseen=100, reid_frames=100))
    old = _moving_track(tm, range(6), RED)  # x=20..40 on frame 5
    (new,) = tm.on_detections(6, dets(("ball", (300, 100, 320, 120), 0.9)), {}).new
    on_young = Observation((30, 100, 50, 120), 2.0, BLUE)  # the blue object came next to it
    events = []
    for t in range(6, 6 + 2 * DUPLICATE_FRAMES):
        events += tm.on_frame(t, {old: on_young, new.id: on_young}, mask_iou=lambda a, b: 1.0)
    assert {e.id for e in events} == {old} and events[-1].reason == "drifted"
    assert [i.id for i in tm.tracks() if i.state == "tracked"] == [new.id]


@pytest.mark.parametrize(
    "cfg, manual",
    [(demo_cfg(drift_colour=0.0), False), (demo_cfg(), True)],
    ids=["rule-off", "manual-track"],
)
def test_colour_drift_rule_off_and_manual_tracks(cfg: EngineConfig, manual: bool) -> None:
    tm = TrackManager(cfg)
    if manual:
        tid = tm.add_manual("cup", (0, 100, 20, 120), seq=0)
    else:
        (new,) = tm.on_detections(0, dets(("ball", (0, 100, 20, 120), 0.9)), {}).new
        tid = new.id
    tm.on_frame(0, {tid: Observation((0, 100, 20, 120), 2.0, RED)})
    for t in range(1, 10):
        assert (
            tm.on_frame(t, {tid: Observation((4.0 * t, 100, 4.0 * t + 20, 120), 2.0, BLUE)}) == []
        )
    assert [i.id for i in tm.tracks()] == [tid] and tm.tracks()[0].box == (36, 100, 56, 120)


def test_confirming_detection_moves_the_anchor_colour() -> None:
    """Light that changes slowly: each detection that confirms the track takes its colour as
    the new anchor, so a change that comes in steps under ``drift_colour`` never drifts it."""
    tm = TrackManager(demo_cfg(max_unseen=100, reid_frames=100))
    (new,) = tm.on_detections(0, dets(("ball", (0, 100, 20, 120), 0.9)), {}).new
    box = (0.0, 100.0, 20.0, 120.0)
    for step in range(6):  # 0.3 a step (L1) from RED: 1.5 off after five steps
        colour = (RED[0] + 0.1 * step, RED[1] + 0.1 * step, RED[2] - 0.1 * step)
        for t in range(20 * step + 1, 20 * step + 20):
            assert tm.on_frame(t, {new.id: Observation(box, 2.0, colour)}) == []
        at = {new.id: Observation(box, 2.0, colour)}
        assert tm.on_detections(20 * step + 20, dets(("ball", box, 0.9)), at).matches
    assert [i.id for i in tm.tracks()] == [new.id]


def test_reidentification_compares_detection_colours_like_for_like() -> None:
    """A mask's mean colour takes in its blurred edges; the detections' box colour does not. A
    track created from a detection is re-identified by its detections' colour."""
    tm = TrackManager(demo_cfg(max_missed=3, max_unseen=100, reid_frames=100))
    edge = (0.4, 0.35, 0.55)  # the mask's mean: RED mixed with the background, 0.75 off RED
    (new,) = tm.on_detections(0, dets(("ball", (0, 100, 20, 120), 0.9)), {}, colours=[RED]).new
    for t in range(11):
        tm.on_frame(t, {new.id: Observation((4.0 * t, 100, 4.0 * t + 20, 120), 2.0, edge)})
    for t in range(11, 14):
        tm.on_frame(t, {new.id: Observation(None, -4.0)})
    plan = tm.on_detections(30, dets(("ball", (120, 100, 140, 120), 0.8)), {}, colours=[RED])
    assert [r.id for r in plan.reseed] == [new.id] and plan.new == ()


def _dormant_red_ball(tm: TrackManager, x: float) -> int:
    """A red ball detected on frame 0 at ``x`` that is then missed until it goes dormant."""
    box = (x, 100.0, x + 20, 120.0)
    plan = tm.on_detections(0, dets(("ball", box, 0.9)), {}, colours=[RED])
    (new,) = plan.new
    tm.on_frame(1, {new.id: Observation(box, 2.0, RED)})
    for t in range(2, 2 + tm.cfg.max_missed):
        tm.on_frame(t, {new.id: Observation(None, -4.0)})
    assert new.id in tm.dormant_ids()
    return new.id


def test_object_back_far_from_where_it_left_is_recognised_by_look_if_unambiguous() -> None:
    cfg = demo_cfg(max_missed=3, max_unseen=100, reid_frames=100)
    back = ("ball", (600.0, 300.0, 620.0, 320.0), 0.8)  # far beyond the motion gate
    twin = ("ball", (300.0, 400.0, 320.0, 420.0), 0.8)
    near_red = (RED[0] + 0.05, RED[1] + 0.05, RED[2])  # within REID_LOOK_COLOUR
    off_red = (RED[0] + 0.1, RED[1] + 0.1, RED[2] - 0.05)  # 0.25 off: too far for look alone

    tm = TrackManager(cfg)
    tid = _dormant_red_ball(tm, 0.0)
    plan = tm.on_detections(20, dets(back), {}, colours=[near_red])
    assert [r.id for r in plan.reseed] == [tid] and plan.new == ()

    tm = TrackManager(cfg)
    _dormant_red_ball(tm, 0.0)
    assert len(tm.on_detections(20, dets(back), {}, colours=[off_red]).new) == 1

    tm = TrackManager(cfg)  # two red balls away: which came back cannot be told
    _dormant_red_ball(tm, 0.0)
    _dormant_red_ball(tm, 200.0)
    assert len(tm.on_detections(20, dets(back), {}, colours=[RED]).new) == 1

    tm = TrackManager(cfg)  # two red balls in view: neither is taken for the one away
    _dormant_red_ball(tm, 0.0)
    plan = tm.on_detections(20, dets(back, twin), {}, colours=[RED, RED])
    assert plan.reseed == () and len(plan.new) == 2

    tm = TrackManager(cfg)  # a detection colour unknown (an external detector): never by look
    _dormant_red_ball(tm, 0.0)
    assert len(tm.on_detections(20, dets(back), {}, colours=[None]).new) == 1


@pytest.mark.parametrize("after", [3, 0], ids=["rule-on", "rule-off"])
def test_a_mask_that_jumps_away_from_its_track_is_a_miss(after: int) -> None:
    """A ball moving 4 px/frame whose mask lands on frame 11 far away (its object left the view,
    the memory took another): with ``jump_after_hits`` 3 the frame is a miss (``jumped``, then
    ``lost``), the box stays where the motion says, the masks keep missing until the track
    goes dormant, and it is looked for at its own place; with the rule off the track follows
    the mask."""
    cfg = demo_cfg(max_missed=3, max_unseen=100, reid_frames=100)
    tm = TrackManager(
        cfg.model_copy(update={"lifecycle": LifecycleConfig(profile="demo", jump_after_hits=after)})
    )
    tid = _moving_track(tm, range(11), RED)  # last good box on frame 10: x=40..60
    far = Observation((500, 300, 520, 320), 2.0, RED)  # same look, far away
    events = tm.on_frame(11, {tid: far})
    if not after:
        assert events == [] and tm.tracks()[0].state == "tracked"
        return
    assert [e.kind for e in events] == ["jumped", "lost"] and tm.tracks()[0].state == "lost"
    events = [e for t in (12, 13) for e in tm.on_frame(t, {tid: far})]
    assert [(e.kind, e.reason) for e in events] == [
        ("jumped", ""),
        ("jumped", ""),
        ("dormant", "missed"),
    ]
    plan = tm.on_detections(13, dets(("ball", (500, 300, 520, 320), 0.9)), {}, colours=[RED])
    assert plan.reseed == () and len(plan.new) == 1  # the far object is another one
    plan = tm.on_detections(14, dets(("ball", (56, 100, 76, 120), 0.9)), {}, colours=[RED])
    assert [r.id for r in plan.reseed] == [tid]  # found again where its motion puts it


@pytest.mark.parametrize("ratio", [2.0, 0.0], ids=["rule-on", "rule-off"])
def test_a_mask_that_bleeds_past_its_object_is_a_miss(ratio: float) -> None:
    """A 20 px ball whose mask suddenly covers a 64 px square around it (bled onto the
    background or a neighbour; it overlaps its last box, so no jump): with ``bleed_ratio`` 2
    the frame is a miss (``jumped``, then ``lost``) and the track's box and size stay; the
    mask back on the ball is a hit again. Off: the track takes the bled box."""
    cfg = demo_cfg(max_missed=30)
    life = LifecycleConfig(profile="demo", bleed_ratio=ratio)
    tm = TrackManager(cfg.model_copy(update={"lifecycle": life}))
    tid = _moving_track(tm, range(11), RED)  # last good box on frame 10: x=40..60
    bled = Observation((20, 80, 84, 144), 2.0, RED)
    events = tm.on_frame(11, {tid: bled})
    if not ratio:
        assert events == [] and tm.tracks()[0].box == (20, 80, 84, 144)
        return
    assert [e.kind for e in events] == ["jumped", "lost"]
    assert tm._tracks[tid].last_box == (40, 100, 60, 120) and tm.tracks()[0].state == "lost"
    back = tm.on_frame(12, {tid: Observation((48, 100, 68, 120), 2.0, RED)})
    assert [e.kind for e in back] == ["recovered"] and tm.tracks()[0].state == "tracked"


def test_an_object_growing_as_it_comes_closer_is_no_bleed() -> None:
    """15 % larger a frame (an object approaching the camera): never a miss at ratio 2.5."""
    life = LifecycleConfig(profile="demo", bleed_ratio=2.5)
    tm = TrackManager(demo_cfg(max_missed=3).model_copy(update={"lifecycle": life}))
    (new,) = tm.on_detections(0, dets(("ball", (100, 100, 120, 120), 0.9)), {}).new
    side = 20.0
    for t in range(15):
        box = (100.0, 100.0, 100.0 + side, 100.0 + side)
        assert tm.on_frame(t, {new.id: Observation(box, 2.0, RED)}) == []
        side *= 1.15
    assert tm.tracks()[0].state == "tracked"


def test_a_fast_object_leaving_its_last_box_behind_is_no_jump() -> None:
    """30 px/frame with a 20 px box: no overlap with the last box, but with the predicted one."""
    tm = TrackManager(demo_cfg(max_missed=3))
    (new,) = tm.on_detections(0, dets(("ball", (0, 100, 20, 120), 0.9)), {}).new
    for t in range(8):
        assert (
            tm.on_frame(t, {new.id: Observation((30.0 * t, 100, 30.0 * t + 20, 120), 2.0, RED)})
            == []
        )
    assert tm.tracks()[0].state == "tracked"


def test_a_jump_is_no_duplicate() -> None:
    """A track whose mask jumped onto another track's object is not that object's duplicate:
    the other (younger) track, on its own object, is kept."""
    tm = TrackManager(demo_cfg(max_missed=30, merge_iou=0.8))
    old = _moving_track(tm, range(6), RED)  # x=20..40 on frame 5
    (new,) = tm.on_detections(6, dets(("ball", (300, 100, 320, 120), 0.9)), {}).new
    young = new.id
    on_young = Observation((300, 100, 320, 120), 2.0, RED)
    events = []
    for t in range(6, 6 + 2 * DUPLICATE_FRAMES):
        events += tm.on_frame(t, {old: on_young, young: on_young}, mask_iou=lambda a, b: 1.0)
    assert {e.kind for e in events} == {"jumped", "lost"} and all(e.id == old for e in events)
    assert [i.id for i in tm.tracks() if i.state == "tracked"] == [young]
