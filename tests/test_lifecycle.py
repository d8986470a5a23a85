"""The track lifecycle's parts: the state machine, the config and its profiles, the Kalman
motion model and its gate, the lifecycle factory."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np
import pytest
from pydantic import ValidationError

from engine.detectors.base import make_detections
from engine.ids import IdAllocator
from engine.lifecycle.association import Stage, default_cascade
from engine.lifecycle.config import LifecycleConfig, thresholds
from engine.lifecycle.kalman import CHI2_2DOF_99, KalmanBox
from engine.lifecycle.states import (
    EndReason,
    IllegalTransition,
    LifecycleEvent,
    TrackState,
    allowed_events,
    transition,
)
from engine.track_manager import Box, Observation, TrackManager
from stream.config import EngineConfig

if TYPE_CHECKING:
    from engine.camera import CameraTracker
    from engine.core.types import FrameInput, SegmentOutput

S, E = TrackState, LifecycleEvent

LEGAL = [
    (S.TENTATIVE, E.HIT, S.TENTATIVE),
    (S.TENTATIVE, E.CONFIRM, S.ACTIVE),
    (S.TENTATIVE, E.MISS, S.TENTATIVE),
    (S.TENTATIVE, E.RETIRE, S.DORMANT),
    (S.TENTATIVE, E.END, S.ENDED),
    (S.ACTIVE, E.HIT, S.ACTIVE),
    (S.ACTIVE, E.MISS, S.LOST),
    (S.ACTIVE, E.RETIRE, S.DORMANT),
    (S.ACTIVE, E.END, S.ENDED),
    (S.LOST, E.HIT, S.ACTIVE),
    (S.LOST, E.MISS, S.LOST),
    (S.LOST, E.RETIRE, S.DORMANT),
    (S.LOST, E.END, S.ENDED),
    (S.DORMANT, E.REIDENTIFY, S.LOST),
    (S.DORMANT, E.END, S.ENDED),
]


@pytest.mark.parametrize(("state", "event", "after"), LEGAL)
def test_each_transition(state: TrackState, event: LifecycleEvent, after: TrackState) -> None:
    assert transition(state, event) is after


ILLEGAL = [
    (s, e)
    for s in TrackState
    for e in LifecycleEvent
    if (s, e) not in {(a, b) for a, b, _ in LEGAL}
]


@pytest.mark.parametrize(("state", "event"), ILLEGAL)
def test_each_illegal_transition_is_refused(state: TrackState, event: LifecycleEvent) -> None:
    with pytest.raises(IllegalTransition, match=state.value):
        transition(state, event)


def test_illegal_set_is_what_the_diagram_leaves_out() -> None:
    # ended takes nothing; dormant takes no frame events; only a tentative track is confirmed
    assert allowed_events(S.ENDED) == frozenset()
    assert allowed_events(S.DORMANT) == {E.REIDENTIFY, E.END}
    assert {s for s in TrackState if E.CONFIRM in allowed_events(s)} == {S.TENTATIVE}
    assert len(ILLEGAL) == len(TrackState) * len(LifecycleEvent) - len(LEGAL) == 15


def test_end_reasons_are_the_wire_strings() -> None:
    assert isinstance(EndReason.MISSED, str) and EndReason.MISSED.value == "missed"
    assert EndReason.DORMANT.value == "dormant" and EndReason.NONE.value == ""


def _one_track_manager(**over: object) -> tuple[TrackManager, int]:
    cfg = EngineConfig(prompt="", max_missed=2, reid_frames=10, **over)
    tm = TrackManager(cfg)
    tid = tm.add_manual("ball", (10, 10, 30, 30), seq=0)
    tm._tracks[tid].manual = False  # a detector-found track (dormancy applies)
    return tm, tid


def test_manager_walks_the_state_diagram() -> None:
    tm, tid = _one_track_manager()
    hit, miss = Observation((10, 10, 30, 30), 2.0), Observation(None, -5.0)
    assert tm.state(tid) is S.TENTATIVE
    tm.on_frame(0, {tid: hit})
    assert tm.state(tid) is S.ACTIVE
    tm.on_frame(1, {tid: miss})
    assert tm.state(tid) is S.LOST
    (ev,) = tm.on_frame(2, {tid: miss})
    assert tm.state(tid) is S.DORMANT and ev.reason is EndReason.MISSED
    dets = make_detections([[12, 10, 32, 30]], [0.9], ["ball"], ["ball"])
    plan = tm.on_detections(3, dets, {})
    assert [r.id for r in plan.reseed] == [tid] and tm.state(tid) is S.LOST
    (ev,) = tm.on_frame(4, {tid: hit})
    assert ev.kind == "recovered" and tm.state(tid) is S.ACTIVE
    tm.reset()
    assert tm.state(tid) is S.ENDED


# ---------------------------------------------------------------------- config and profiles

RED = (40 / 255, 40 / 255, 220 / 255)
BLUE = (215 / 255, 110 / 255, 30 / 255)


def _dim(c: tuple[float, float, float], k: float) -> tuple[float, float, float]:
    return (c[0] * k, c[1] * k, c[2] * k)


def test_profiles_give_defaults_and_explicit_fields_win() -> None:
    general, demo = LifecycleConfig(), LifecycleConfig(profile="demo")
    assert general.profile == "general" and general.colour_space == "grey-world"
    assert (general.motion_model, demo.motion_model) == ("kalman", "velocity")
    assert (demo.colour_space, demo.drift_colour, demo.reid_look_colour) == ("bgr", 0.45, 0.12)
    assert LifecycleConfig(profile="demo", reid_colour=0.2).reid_colour == 0.2
    eng = EngineConfig.model_validate({"lifecycle": {"profile": "demo"}})
    assert thresholds(eng).life.colour_space == "bgr" and thresholds(eng).drift_colour == 0.45
    assert thresholds(EngineConfig(drift_colour=0.9)).drift_colour == 0.9  # explicit engine.*
    assert thresholds(EngineConfig()).drift_colour == LifecycleConfig().drift_colour
    with pytest.raises(ValidationError):
        LifecycleConfig.model_validate({"profile": "studio"})
    with pytest.raises(ValidationError):
        LifecycleConfig(probation_frames=0)


def test_every_field_is_documented_and_bounded() -> None:
    for name, f in LifecycleConfig.model_fields.items():
        assert f.description, name
        if f.annotation in (int, float):
            bounds = {type(m).__name__ for m in f.metadata}
            assert bounds & {"Ge", "Gt"} and bounds & {"Le", "Lt"}, name


def _drift_events(profile: str, colour: tuple[float, float, float]) -> list[str]:
    tm = TrackManager(EngineConfig(lifecycle=LifecycleConfig(profile=profile)))
    (new,) = tm.on_detections(
        0, make_detections([[0, 0, 20, 20]], [0.9], ["ball"], ["ball"]), {}
    ).new
    box = (0.0, 0.0, 20.0, 20.0)
    tm.on_frame(0, {new.id: Observation(box, 2.0, RED)})  # the anchor
    out = []
    for t in range(1, 6):
        out += [
            f"{e.kind}:{e.reason.value}"
            for e in tm.on_frame(t, {new.id: Observation(box, 2.0, colour)})
        ]
    return out


def test_profile_switch_colour_drift_under_a_shadow() -> None:
    """A shadow halves the light on the track's own object: the demo profile's raw-colour rule
    takes it for another object, the general profile's chromaticity does not; a real change of
    object (red to blue) drifts in both (after two frames not shown, ``off_colour``)."""
    drifted = ["off_colour:", "off_colour:", "dormant:drifted"]
    assert _drift_events("demo", _dim(RED, 0.5)) == drifted
    assert _drift_events("general", _dim(RED, 0.5)) == []
    assert _drift_events("general", BLUE) == drifted
    assert _drift_events("demo", BLUE) == drifted


def _back_by_look(profile: str, colour: tuple[float, float, float]) -> bool:
    """A red ball goes dormant; a ball of ``colour`` comes in far away: recognised by look?"""
    cfg = EngineConfig(
        max_missed=3, max_unseen=100, reid_frames=100, lifecycle=LifecycleConfig(profile=profile)
    )
    tm = TrackManager(cfg)
    box = (0.0, 100.0, 20.0, 120.0)
    (new,) = tm.on_detections(
        0, make_detections([box], [0.9], ["ball"], ["ball"]), {}, colours=[RED]
    ).new
    tm.on_frame(1, {new.id: Observation(box, 2.0, RED)})
    for t in range(2, 5):
        tm.on_frame(t, {new.id: Observation(None, -4.0)})
    back = make_detections([[600.0, 300.0, 620.0, 320.0]], [0.8], ["ball"], ["ball"])
    plan = tm.on_detections(20, back, {}, colours=[colour])
    return [r.id for r in plan.reseed] == [new.id] and plan.new == ()


def test_profile_switch_recognition_by_look_under_dusk() -> None:
    assert _back_by_look("demo", RED) and _back_by_look("general", RED)
    assert not _back_by_look("demo", _dim(RED, 0.6))  # raw colour: 0.4 darker is another object
    assert _back_by_look("general", _dim(RED, 0.6))  # chromaticity: the same red
    assert not _back_by_look("general", BLUE)


# ---------------------------------------------------------------------- Kalman motion model


def test_kalman_learns_a_constant_velocity_and_predicts_ahead() -> None:
    k = KalmanBox((0.0, 100.0, 20.0, 120.0), 0)
    for t in range(1, 15):
        k.update((4.0 * t, 100.0, 4.0 * t + 20, 120.0), t)
    x1, _, x2, _ = k.predicted_box(24)  # 10 frames without a box: 40 px further
    assert abs((x1 + x2) / 2 - (10 + 4 * 24)) < 3.0


def test_kalman_gate_passes_the_predicted_place_refuses_far_and_widens_with_time() -> None:
    k = KalmanBox((0.0, 100.0, 20.0, 120.0), 0)
    for t in range(1, 15):
        k.update((4.0 * t, 100.0, 4.0 * t + 20, 120.0), t)
    at = (4.0 * 16, 100.0, 4.0 * 16 + 20, 120.0)  # where the motion puts it 2 frames on
    back = (4.0 * 14 - 30, 100.0, 4.0 * 14 - 10, 120.0)  # 30 px behind: against the motion
    assert k.gate_distance(at, 16) < CHI2_2DOF_99
    assert k.gate_distance(back, 16) > CHI2_2DOF_99
    far_later = (4.0 * 60 + 40, 100.0, 4.0 * 60 + 60, 120.0)  # 40 px off after 46 frames
    assert (
        k.gate_distance(far_later, 60)
        < CHI2_2DOF_99
        < k.gate_distance((4.0 * 16 + 40, 100.0, 4.0 * 16 + 60, 120.0), 16)
    )


# ---------------------------------------------------------------------- association stages


def _without(stages: list[Stage], stage: str, cue: str) -> list[Stage]:
    """The cascade with one cue of one stage removed."""
    return [
        replace(s, cues=tuple(c for c in s.cues if c.name != cue)) if s.name == stage else s
        for s in stages
    ]


def _lost_red_ball(tm: TrackManager, x: float = 0.0) -> int:
    """A red ball detected on frame 0, moving right 4 px a frame, then lost (still live)."""
    box = (x, 100.0, x + 20, 120.0)
    (new,) = tm.on_detections(
        0, make_detections([box], [0.9], ["ball"], ["ball"]), {}, colours=[RED]
    ).new
    for t in range(0, 10):
        tm.on_frame(t, {new.id: Observation((x + 4 * t, 100, x + 4 * t + 20, 120), 2.0, RED)})
    for t in range(10, 13):
        tm.on_frame(t, {new.id: Observation(None, -4.0)})
    return new.id


def _matched(tm: TrackManager, stages: list[Stage], seq: int, items: list[tuple[str, Box]],
             colours: list[tuple[float, float, float]] | None = None,
             at_seq: dict[int, Observation] | None = None) -> list[int]:  # fmt: skip
    tm._stages = stages
    boxes = [b for _, b in items]
    dets = make_detections(boxes, [0.8] * len(items), [lbl for lbl, _ in items], ["ball", "box"])
    plan = tm.on_detections(seq, dets, at_seq or {}, colours=colours)
    return sorted(m.id for m in plan.matches)


def _manager(profile: str = "general") -> TrackManager:
    cfg = EngineConfig(max_missed=30, max_unseen=100, reid_frames=100,
                       lifecycle=LifecycleConfig(profile=profile))  # fmt: skip
    return TrackManager(cfg)


def test_overlap_stage_gates_on_label_and_iou() -> None:
    tm = _manager()
    tid = _lost_red_ball(tm)
    here = Observation((36.0, 100.0, 56.0, 120.0), 2.0)
    full = default_cascade(tm._th)
    overlap = [s for s in full if s.name == "overlap"]
    assert _matched(tm, overlap, 9, [("ball", (38.0, 100, 58, 120))], at_seq={tid: here}) == [tid]
    tm = _manager()
    tid = _lost_red_ball(tm)
    assert _matched(tm, overlap, 9, [("box", (38.0, 100, 58, 120))], at_seq={tid: here}) == []
    tm = _manager()
    tid = _lost_red_ball(tm)
    no_label = _without(overlap, "overlap", "label")
    assert _matched(tm, no_label, 9, [("box", (38.0, 100, 58, 120))], at_seq={tid: here}) == [tid]
    tm = _manager()
    tid = _lost_red_ball(tm)
    far: list[tuple[str, Box]] = [("ball", (200.0, 100, 220, 120))]
    assert _matched(tm, overlap, 9, far, at_seq={tid: here}) == []
    tm = _manager()
    tid = _lost_red_ball(tm)
    assert _matched(tm, _without(overlap, "overlap", "iou"), 9, far, at_seq={tid: here}) == [tid]


def test_motion_stage_reidentifies_where_the_motion_puts_the_track() -> None:
    """Lost after frame 9 at x 36 moving +4 px a frame: on frame 20, 44 px on, it is at ~x 80.
    Each gate of the stage refuses a detection the stage without it takes."""
    ahead, behind = ("ball", (82.0, 100, 102, 120)), ("ball", (-40.0, 100, -20, 120))
    big = ("ball", (60.0, 80, 124, 144))  # 3.2 times its side
    cases = [
        (ahead, RED, None),
        (behind, RED, "motion"),
        (big, RED, "size"),
        (ahead, BLUE, "colour"),
    ]
    for det, colour, refused_by in cases:
        tm = _manager()
        tid = _lost_red_ball(tm)
        stages = [s for s in default_cascade(tm._th) if s.name != "look"]
        got = _matched(tm, stages, 20, [det], [colour])
        assert got == ([] if refused_by else [tid]), (det, refused_by)
        if refused_by:
            tm = _manager()
            tid = _lost_red_ball(tm)
            assert _matched(tm, _without(stages, "motion", refused_by), 20, [det], [colour]) == [
                tid
            ]


def test_motion_stage_takes_a_detection_inside_a_live_track_whose_mask_bled() -> None:
    """A live ball whose mask bled over 120 px (box IoU with its detection 0.03, below the
    overlap stage's gate): with ``covering`` the detection inside its box is its object and the
    track is re-seeded from it; without, a second track is born on the same ball."""
    bled = {1: Observation((0.0, 80, 120, 200), 2.0, RED)}
    inside: list[tuple[str, Box]] = [("ball", (40.0, 100, 60, 120))]
    for covering, matched in ((0.9, [1]), (0.0, [])):
        cfg = EngineConfig(max_missed=30, max_unseen=100, reid_frames=100,
                           lifecycle=LifecycleConfig(covering=covering))  # fmt: skip
        tm = TrackManager(cfg)
        assert _lost_red_ball(tm) == 1
        dets = make_detections([b for _, b in inside], [0.8], ["ball"], ["ball", "box"])
        plan = tm.on_detections(20, dets, bled, colours=[RED])
        assert sorted(m.id for m in plan.matches) == matched
        assert [r.id for r in plan.reseed] == matched
        assert len(plan.new) == 1 - len(matched)
    # the share is the detection's own: a detection half outside the track's box is not inside
    for det, matched in (((100.0, 100, 120, 120), [1]), ((110.0, 100, 130, 120), [])):
        tm = TrackManager(EngineConfig(max_missed=30, max_unseen=100, reid_frames=100,
                                       lifecycle=LifecycleConfig(covering=0.9)))  # fmt: skip
        _lost_red_ball(tm)
        assert _matched(tm, tm._stages, 20, [("ball", det)], [RED], at_seq=bled) == matched


def test_look_stage_recognises_only_an_unambiguous_look_alike() -> None:
    far = ("ball", (500.0, 300, 520, 320))
    tm = _manager()
    tid = _lost_red_ball(tm)
    assert _matched(tm, default_cascade(tm._th), 20, [far], [RED]) == [tid]
    tm = _manager()
    _lost_red_ball(tm)
    no_look = [s for s in default_cascade(tm._th) if s.name != "look"]
    assert _matched(tm, no_look, 20, [far], [RED]) == []
    tm = _manager()  # two red balls away: which came back cannot be told
    _lost_red_ball(tm)
    _lost_red_ball(tm, 300.0)
    assert _matched(tm, default_cascade(tm._th), 20, [far], [RED]) == []
    tm = _manager()
    _lost_red_ball(tm)
    assert _matched(tm, default_cascade(tm._th), 20, [far], [BLUE]) == []


def test_kalman_motion_model_reidentifies_a_jittery_track_where_velocity_misses() -> None:
    """A ball moving +4 px a frame whose masks jitter +-6 px: the smoothed last displacement
    swings between 0 and 8 px a frame, the Kalman filter's velocity stays near 4; 30 frames after
    it was lost it comes back where a constant 4 px a frame puts it."""

    def run(model: str) -> list[int]:
        cfg = EngineConfig(max_missed=100, max_unseen=100, reid_frames=100, lifecycle=LifecycleConfig(motion_model=model))  # fmt: skip
        tm = TrackManager(cfg)
        (new,) = tm.on_detections(0, make_detections([(0.0, 100, 20, 120)], [0.9], ["ball"], ["ball"]), {}).new  # fmt: skip
        for t in range(0, 20):
            x = 4.0 * t + (6 if t % 2 else -6)
            tm.on_frame(t, {new.id: Observation((x, 100, x + 20, 120), 2.0)})
        back = ("ball", (4.0 * 50, 100, 4.0 * 50 + 20, 120))
        stages = [s for s in default_cascade(tm._th) if s.name != "look"]
        return _matched(tm, stages, 50, [back])

    assert run("kalman") == [1]
    assert run("velocity") == []


# ---------------------------------------------------------------------- the factory


def test_camera_tracker_receives_its_lifecycle_from_the_factory() -> None:
    from engine.camera import CameraTracker
    from engine.lifecycle.protocol import Lifecycle, default_lifecycle

    made: list[tuple[int, int | None]] = []

    def factory(cfg: EngineConfig, *, first_id: int = 1, id_limit: int | None = None,
                ids: IdAllocator | None = None) -> Lifecycle:  # fmt: skip
        made.append((first_id, id_limit))
        return default_lifecycle(cfg, first_id=first_id, id_limit=id_limit, ids=ids)

    cam = CameraTracker("cam", EngineConfig(prompt=""), None, None, first_id=100, id_limit=200,  # type: ignore[arg-type]
                        lifecycle_factory=factory)  # fmt: skip
    assert made == [(100, 200)] and cam.manager.next_id == 100
    assert isinstance(CameraTracker("c", EngineConfig(prompt=""), None, None).manager, TrackManager)  # type: ignore[arg-type]


# ---------------------------------------------------------------------- probation


def _published(probation: int) -> list[list[tuple[int, str]]]:
    """What ``tracks()`` publishes on each of 5 frames: a detector-found track hit, missed, hit,
    hit, hit; and a manual one."""
    cfg = EngineConfig(lifecycle=LifecycleConfig(probation_frames=probation))
    tm = TrackManager(cfg)
    (new,) = tm.on_detections(0, make_detections([(0.0, 0, 20, 20)], [0.9], ["ball"], ["ball"]), {}).new  # fmt: skip
    manual = tm.add_manual("cup", (100, 100, 140, 140), seq=0)
    out: list[list[tuple[int, str]]] = []
    for t, hit in enumerate([True, False, True, True, True]):
        obs = Observation((0.0, 0, 20, 20), 2.0) if hit else Observation(None, -3.0)
        tm.on_frame(t, {new.id: obs, manual: Observation((100.0, 100, 140, 140), 2.0)})
        out.append([(i.id, i.state) for i in tm.tracks()])
    return out


def test_probation_hides_a_track_until_enough_good_frames() -> None:
    """With 3 good frames of probation the detector's track is first published on its third
    good frame (as ``new``), a miss on probation does not publish it as lost; the manual track is
    published from its first frame. Without probation (1), it is published at once."""
    on = _published(3)
    assert [[tid for tid, _ in f] for f in on] == [[2], [2], [2], [1, 2], [1, 2]]
    assert on[3][0] == (1, "new") and on[4][0] == (1, "tracked") and on[0] == [(2, "new")]
    off = _published(1)
    assert off[0] == [(1, "new"), (2, "new")] and off[1][0] == (1, "lost")


# ---------------------------------------------------------------------- a mask that jumps


def _one_ball_camera(
    cfg: EngineConfig, image: np.ndarray
) -> tuple[CameraTracker, int, Callable[[int, int], tuple[FrameInput, dict[int, SegmentOutput]]]]:
    """A camera tracker (no session, no detector) with one detected ball, and ``frame(seq, x)``:
    frame ``seq`` of ``image`` with the ball's 20 px mask at column ``x``."""
    from engine.camera import CameraTracker
    from engine.core.types import FrameInput, SegmentOutput

    cam = CameraTracker("cam", cfg, None, None)  # type: ignore[arg-type]
    dets = make_detections([(0.0, 0, 20, 20)], [0.9], ["ball"], ["ball"])
    (new,) = cam.manager.on_detections(0, dets, {}).new

    def frame(seq: int, x: int) -> tuple[FrameInput, dict[int, SegmentOutput]]:
        mask = np.zeros(image.shape[:2], bool)
        mask[0:20, x : x + 20] = True
        out = SegmentOutput(new.id, mask, 2.0, (float(x), 0.0, float(x + 20), 20.0))
        return FrameInput(seq, seq * 1000, image), {new.id: out}

    return cam, new.id, frame


def test_camera_publishes_no_mask_for_a_track_whose_mask_jumped() -> None:
    """The camera tracker publishes a track whose mask jumped onto another object (the
    lifecycle's ``jumped``) as ``lost`` with an empty mask and its last good box, so a viewer
    and the quality bench see no second ID on the other object; the next good frame of its own
    object publishes it again."""
    cam, _, frame = _one_ball_camera(
        EngineConfig(prompt="", max_missed=5), np.zeros((240, 320, 3), np.uint8)
    )
    for seq in range(5):
        result = cam.finish(*frame(seq, 4 * seq), {})
    assert [(o.state, o.mask.sum()) for o in result.objects] == [("tracked", 400)]
    (obj,) = cam.finish(*frame(5, 280), {}).objects  # far away in one frame
    assert obj.state == "lost" and not obj.mask.any() and obj.box == (16.0, 0.0, 36.0, 20.0)
    (obj,) = cam.finish(*frame(6, 24), {}).objects  # its own object again
    assert obj.state == "tracked" and obj.mask.sum() == 400


def test_camera_does_not_publish_a_track_whose_mask_turned_another_colour() -> None:
    """A track on a red object whose mask slides onto the blue object beside it (the
    lifecycle's ``off_colour``): not published on that frame, and its box there is not kept
    for matching late detections; its own object again publishes it."""
    image = np.full((240, 320, 3), 128, np.uint8)
    image[:, :20] = (40, 40, 220)  # red (BGR) where the track's object is
    image[:, 20:60] = (220, 120, 30)  # blue beside it
    cam, tid, frame = _one_ball_camera(EngineConfig(prompt=""), image)
    for seq in range(5):
        assert [o.id for o in cam.finish(*frame(seq, 0), {}).objects] == [tid]
    assert cam.finish(*frame(5, 15), {}).objects == []  # mostly on the blue object
    seen = [cam.history.observations(seq) or {} for seq in (4, 5)]
    assert tid in seen[0] and tid not in seen[1]
    (obj,) = cam.finish(*frame(6, 1), {}).objects  # its own object again
    assert obj.state == "tracked" and obj.box == (1.0, 0.0, 21.0, 20.0)


def test_camera_does_not_publish_the_track_a_duplicate_run_would_retire() -> None:
    """Two detector tracks whose masks coincide: the younger is published on the first
    coinciding frame, hidden from the second (``duplicate_hide_frames`` 2) until the rule
    retires it; the older is published throughout."""
    from engine.camera import CameraTracker
    from engine.core.types import FrameInput, SegmentOutput

    cam = CameraTracker("cam", EngineConfig(prompt=""), None, None)  # type: ignore[arg-type]
    dets = make_detections([(0.0, 0, 20, 20), (100.0, 0, 120, 20)], [0.9, 0.9], ["ball"] * 2, ["ball"])  # fmt: skip
    old, young = (n.id for n in cam.manager.on_detections(0, dets, {}).new)
    image = np.zeros((240, 320, 3), np.uint8)
    mask = np.zeros((240, 320), bool)
    mask[0:20, 50:70] = True
    published = []
    for seq in range(1, 7):
        outs = {t: SegmentOutput(t, mask, 2.0, (50.0, 0.0, 70.0, 20.0)) for t in (old, young)}
        cam._seeder.sleep = lambda tid: None  # type: ignore[method-assign]  # no session here
        published.append(
            [o.id for o in cam.finish(FrameInput(seq, seq * 1000, image), outs, {}).objects]
        )
    assert published == [[old, young]] + [[old]] * 5
    assert cam.manager.dormant_ids() == [young]
