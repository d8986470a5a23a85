"""The track lifecycle's parts: the state machine, the config and its profiles, the Kalman
motion model and its gate, the lifecycle factory."""

from __future__ import annotations

import pytest

from engine.grounder import make_detections
from engine.lifecycle.states import (
    EndReason,
    IllegalTransition,
    LifecycleEvent,
    TrackState,
    allowed_events,
    transition,
)
from engine.track_manager import Observation, TrackManager
from stream.config import EngineConfig

S, E = TrackState, LifecycleEvent

LEGAL = [
    (S.TENTATIVE, E.HIT, S.TENTATIVE),
    (S.TENTATIVE, E.CONFIRM, S.ACTIVE),
    (S.TENTATIVE, E.MISS, S.LOST),
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
    assert EndReason.MISSED == "missed" and EndReason.DORMANT.value == "dormant"
    assert EndReason.NONE == ""


def _one_track_manager(**over: object) -> tuple[TrackManager, int]:
    cfg = EngineConfig(prompt="", max_missed=2, reid_frames=10, **over)  # type: ignore[arg-type]
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
