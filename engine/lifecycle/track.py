"""What the lifecycle reads and decides: observations, detections, events, plans, and its
per-track record (:class:`Track`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Literal, Protocol

from numpy.typing import NDArray

from engine.core.types import Box
from engine.lifecycle.embedder import GALLERY_SIZE, Gallery, Vector
from engine.lifecycle.geometry import Colour, _shift
from engine.lifecycle.kalman import KalmanBox
from engine.lifecycle.states import EndReason, LifecycleEvent, TrackState, transition

PublishedState = Literal["new", "tracked", "lost"]  # CONTRACT.md: a published track's state


class DetectionsLike(Protocol):
    """What :meth:`TrackManager.on_detections` reads: ``supervision.Detections`` with
    ``data["label"]`` (as produced by ``engine.grounder``) fits."""

    @property
    def xyxy(self) -> NDArray[Any]: ...

    @property
    def confidence(self) -> NDArray[Any] | None: ...

    @property
    def data(self) -> Mapping[str, Any]: ...

    def __len__(self) -> int: ...


@dataclass(frozen=True)
class Observation:
    """One tracked object on one frame, from the segmenter: mask box (None: empty mask) and
    object score logit."""

    box: Box | None
    score: float
    colour: Colour | None = None  # mean colour inside the mask (see ``mean_colour``)
    embedding: Vector | None = field(default=None, compare=False)  # engine.lifecycle.embedder


@dataclass(frozen=True)
class TrackEvent:
    """A state change reported by :meth:`TrackManager.on_frame`.

    ``kind``: ``lost`` (score fell below threshold), ``recovered`` (back above it), ``jumped``
    (the frame's mask left the track's object for another: a miss, and the engine publishes no
    mask for it on this frame; ``lost`` follows where it was active), ``off_colour`` (the
    frame's mask is another colour than the track's, before the drift rule retires it: not
    published on this frame), ``hidden`` (its mask
    coincides with another track's while the duplicate rule decides: not published on this
    frame), ``dormant``
    (missed ``max_missed`` frames but kept for re-identification: the engine frees the
    object's memory and publishes nothing for it) or ``ended`` (``reason`` ``"missed"``: the
    engine must free the object's memory)."""

    seq: int
    id: int
    kind: Literal["lost", "recovered", "jumped", "off_colour", "hidden", "dormant", "ended"]
    reason: EndReason = EndReason.NONE


class Removal(Enum):
    """What :meth:`TrackManager.remove` did with a track."""

    ENDED = "ended"  # a manual track: gone, the engine frees its memory
    SUPPRESSED = "suppressed"  # a detector-found track: followed silently, not published


@dataclass(frozen=True)
class NewTrack:
    """Start tracking ``label`` with a box prompt ``box`` on frame ``Plan.seq``."""

    id: int
    label: str
    box: Box
    score: float
    detection: int = -1  # index into the detections given (its mask, where they carry masks)


@dataclass(frozen=True)
class Reseed:
    """Re-prompt track ``id`` with ``box`` on frame ``Plan.seq`` (it drifted or was lost)."""

    id: int
    box: Box
    score: float
    detection: int = -1  # index into the detections given


@dataclass(frozen=True)
class Match:
    """Detection ``detection`` (index into the detections given) matched track ``id``."""

    id: int
    detection: int
    iou: float


@dataclass(frozen=True)
class Plan:
    """What the engine applies after one re-grounding (boxes are in frame ``seq``'s pixels).

    ``ended`` and ``merged`` tracks are already removed from the manager: free their memory.
    ``dormant`` tracks stay in the manager for re-identification: free their memory too (a
    ``reseed`` of a dormant track starts it again in the segmenter under its own ID)."""

    seq: int
    new: tuple[NewTrack, ...] = ()
    reseed: tuple[Reseed, ...] = ()
    ended: tuple[int, ...] = ()
    merged: tuple[int, ...] = ()
    matches: tuple[Match, ...] = ()
    dormant: tuple[int, ...] = ()

    @property
    def removed(self) -> tuple[int, ...]:
        """Every ID that ended in this plan (unseen or merged)."""
        return self.ended + self.merged


@dataclass(frozen=True)
class TrackInfo:
    id: int
    label: str
    state: PublishedState
    age: int
    score: float
    box: Box | None
    manual: bool


@dataclass
class Track:
    id: int
    label: str
    manual: bool
    first_seq: int | None  # None: manual track not observed yet
    last_box: Box  # last known good box (seed box until observed)
    score: float = 0.0
    observed: int = 0  # frames observed
    missed: int = 0  # consecutive missed frames
    unseen: int = 0  # consecutive re-groundings without re-detection
    state: TrackState = TrackState.TENTATIVE  # changed only by ``Track.apply``
    last_seq: int | None = None
    hit_seq: int | None = None  # frame of last_box (None: the seed box, not observed yet)
    velocity: tuple[float, float] = (0.0, 0.0)  # box centre, pixels per frame
    colour: Colour | None = None  # mean colour inside the mask on the last hit
    side: float = 0.0  # smoothed box side over hits (a mask that shrinks away leaves it)
    dormant_since: int | None = None  # frame it went dormant (memory freed, not published)
    anchor: Colour | None = None  # colour when prompted or last confirmed (None: set on next hit)
    off_colour: int = 0  # consecutive hits whose mask colour is far from the anchor
    box_colour: Colour | None = None  # ``colours`` of the last detection that created or matched it
    suppressed: bool = False  # removed by the user: followed silently, not published (``remove``)
    hits: int = 0  # good frames (probation: ``probation_frames``)
    confirmed_seq: int | None = None  # frame its probation ended (its first published frame)
    gallery: Gallery = field(default_factory=lambda: Gallery(GALLERY_SIZE))  # appearance
    motion: KalmanBox | None = None  # the Kalman motion model (engine.lifecycle.motion_model)

    def apply(self, event: LifecycleEvent, seq: int | None = None) -> TrackState:
        """The one place a track's state changes (``states.transition``); returns the old state.
        ``seq``: the frame of a ``RETIRE`` (the dormancy's start)."""
        old, self.state = self.state, transition(self.state, event)
        if self.state is TrackState.DORMANT and old is not TrackState.DORMANT:
            self.dormant_since = seq
        elif self.state is not TrackState.DORMANT:
            self.dormant_since = None
        return old

    def predicted_box(self, seq: int) -> Box:
        """Where its motion puts it on ``seq``: the Kalman filter's prediction, or its last box
        moved by its velocity over the frames since that box."""
        if self.motion is not None:
            return self.motion.predicted_box(seq)
        elapsed = 0 if self.hit_seq is None else max(0, seq - self.hit_seq)
        return _shift(self.last_box, self.velocity[0] * elapsed, self.velocity[1] * elapsed)

    @property
    def dormant(self) -> bool:
        return self.state is TrackState.DORMANT

    @property
    def lost(self) -> bool:
        """No box to publish: lost or dormant."""
        return self.state in (TrackState.LOST, TrackState.DORMANT)


@dataclass
class Candidate:
    track: Track
    box: Box
    at_seq: bool  # box is the track's box on the detection frame (not a fallback)
    dormant: bool = False  # dormant on the detection frame: re-identification only


class TrackStore:
    """What the lifecycle's parts share: the tracks by ID and the one way a track leaves."""

    _tracks: dict[int, Track]

    def _end(self, t: Track) -> None:
        """``t`` ends: ENDED, out of the manager (its ID is never given again)."""
        t.apply(LifecycleEvent.END)
        del self._tracks[t.id]
