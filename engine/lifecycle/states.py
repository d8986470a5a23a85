"""The track lifecycle's states, its events and its one transition function.

::

    TENTATIVE (HIT, MISS: stays; not published unless manual)
        |-- CONFIRM (probation_frames good frames) --> ACTIVE
        |-- RETIRE --> DORMANT
    ACTIVE  -- HIT --> ACTIVE    -- MISS --> LOST    -- RETIRE --> DORMANT
    LOST    -- HIT --> ACTIVE    -- MISS --> LOST    -- RETIRE --> DORMANT
    DORMANT -- REIDENTIFY --> LOST (re-prompted; ACTIVE on its next good frame)
    any state but ENDED -- END --> ENDED

Every place that changes a track's state calls :func:`transition`; an event a state does not
accept raises :class:`IllegalTransition` (a programming error, never a user's input).
"""

from __future__ import annotations

from enum import Enum


class TrackState(str, Enum):
    """Where a track is in its life."""

    TENTATIVE = "tentative"  # on probation: not confirmed by enough good frames yet
    ACTIVE = "active"  # followed, its mask on its object
    LOST = "lost"  # followed, but the segmenter's score is below threshold (no box)
    DORMANT = "dormant"  # memory freed, nothing published, kept for re-identification
    ENDED = "ended"  # gone for good; its ID is never given again


class LifecycleEvent(str, Enum):
    """What happens to a track."""

    HIT = "hit"  # a good mask (score at or above threshold)
    CONFIRM = "confirm"  # its probation passed
    MISS = "miss"  # no good mask on a frame
    RETIRE = "retire"  # missed, unseen, drifted or a duplicate: kept for re-identification
    REIDENTIFY = "reidentify"  # a detection matched it while dormant: re-prompted
    END = "end"  # gone for good (see EndReason)


class EndReason(str, Enum):
    """Why a track ended or went dormant (the ``reason`` of a ``TrackEvent``)."""

    NONE = ""  # not an end (lost, recovered)
    MISSED = "missed"  # no good mask on ``max_missed`` frames in a row
    UNSEEN = "unseen"  # not re-detected on ``max_unseen`` re-groundings in a row
    DORMANT = "dormant"  # dormant for ``reid_frames`` frames without re-identification
    DUPLICATE = "duplicate"  # its mask coincided with an older track's for several frames
    DRIFTED = "drifted"  # its mask slid onto another object (appearance)
    MERGED = "merged"  # its box and mask coincided with an older track's at re-groundings
    REMOVED = "removed"  # control ``remove_object`` on a manual track
    PROMPT = "prompt"  # its label left the prompt, or its suppression was lifted
    RESET = "reset"  # control ``reset``
    SEED_FAILED = "seed_failed"  # the segmenter could not be prompted with it


class IllegalTransition(RuntimeError):
    """An event the track's state does not accept."""


_S, _E = TrackState, LifecycleEvent
_TABLE: dict[tuple[TrackState, LifecycleEvent], TrackState] = {
    (_S.TENTATIVE, _E.HIT): _S.TENTATIVE,
    (_S.TENTATIVE, _E.CONFIRM): _S.ACTIVE,
    (_S.TENTATIVE, _E.MISS): _S.TENTATIVE,
    (_S.TENTATIVE, _E.RETIRE): _S.DORMANT,
    (_S.ACTIVE, _E.HIT): _S.ACTIVE,
    (_S.ACTIVE, _E.MISS): _S.LOST,
    (_S.ACTIVE, _E.RETIRE): _S.DORMANT,
    (_S.LOST, _E.HIT): _S.ACTIVE,
    (_S.LOST, _E.MISS): _S.LOST,
    (_S.LOST, _E.RETIRE): _S.DORMANT,
    (_S.DORMANT, _E.REIDENTIFY): _S.LOST,
}


def transition(state: TrackState, event: LifecycleEvent) -> TrackState:
    """The state after ``event``; :class:`IllegalTransition` when ``state`` does not accept it.
    ``END`` is accepted from every state but ``ENDED``."""
    if event is LifecycleEvent.END and state is not TrackState.ENDED:
        return TrackState.ENDED
    nxt = _TABLE.get((state, event))
    if nxt is None:
        raise IllegalTransition(f"a {state.value} track cannot take event {event.value!r}")
    return nxt


def allowed_events(state: TrackState) -> frozenset[LifecycleEvent]:
    """The events ``state`` accepts."""
    return frozenset(e for e in LifecycleEvent if _accepts(state, e))


def _accepts(state: TrackState, event: LifecycleEvent) -> bool:
    try:
        transition(state, event)
    except IllegalTransition:
        return False
    return True
