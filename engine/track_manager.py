"""Track manager: which objects exist, under which IDs, and what to do when the detector looks again.

Pure logic (numpy + scipy, no torch); the engine owns the models and applies what this module
decides. Two inputs drive it:

* ``on_frame(seq, observations)``: after SAM 2 propagated frame ``seq``, one :class:`Observation`
  (mask box or ``None``, object score logit, mean colour inside the mask) per tracked object. A
  frame whose score is below ``score_threshold`` or whose mask is empty is a *miss*; after
  ``max_missed`` consecutive misses the track goes *dormant* (``TrackEvent(kind="dormant")``:
  the engine frees its memory and publishes nothing for it, the manager keeps its last box,
  velocity and colour); a dormant track not re-identified within ``reid_frames`` frames ends
  (``kind="ended"``, reason ``"dormant"``). With ``reid_frames`` 0 it ends at once (reason
  ``"missed"``). With ``mask_iou`` given, two tracks whose masks overlap by ``merge_iou`` on
  ``DUPLICATE_FRAMES`` (5) frames in a row are one object: the younger goes dormant (reason
  ``"duplicate"``; it may have drifted onto the other's object while its own is hidden).
  With ``drift_colour`` above 0, a track whose mask's mean colour stays more than that (L1 over
  b, g, r in [0, 1]) from its *anchor* colour on ``DRIFT_FRAMES`` (3) frames in a row has slid
  onto another object: it goes dormant (reason ``"drifted"``; ``"ended"`` when ``reid_frames``
  is 0). The anchor is the mask colour on the first frame after the track was prompted, and its
  smoothed colour whenever a detection confirms it; the off-colour frames do not move its box,
  velocity or colour, so re-identification looks for it where and as it was.
* ``on_detections(seq, detections, tracks_at_seq)``: a grounding result computed on frame ``seq``
  (possibly several frames ago: grounding runs beside propagation), matched against the tracks'
  boxes *of that frame*. Returns a :class:`Plan` for the engine to apply:

  - ``new``: unmatched detections become tracks with fresh IDs (box prompt on frame ``seq``),
    highest score first, while fewer than ``max_objects`` tracks are live;
  - ``reseed``: a matched track whose box at ``seq`` has drifted (IoU with its detection below
    ``drift_iou``, or no box at all because it was lost) is re-prompted from the detection;
  - ``dormant``: tracks not re-detected for ``max_unseen`` consecutive re-groundings (``ended``
    instead when ``reid_frames`` is 0);
  - ``merged``: the younger of two same-label tracks whose boxes (and masks, when the engine
    passes ``mask_iou``) at ``seq`` overlap at least ``merge_iou`` on ``MERGE_AFTER`` (2) consecutive re-groundings while not both were
    re-detected (the older, lower ID is kept; two objects crossing are not merged).

Re-identification. Detections left over by the IoU assignment are matched (Hungarian again) to
tracks of their label: a live one whose box on ``seq`` lies inside the detection (its mask
shrank away from its object), or a lost or dormant one with no box on ``seq`` near the centre
the track's motion predicts (its last box moved by its velocity; within ``reid_distance`` box sides, the gate
widening with the time since its last good box), of a similar size and, where both are known,
of a similar colour. Then, by look alone (an object that left the view and came in elsewhere):
a left-over detection and a lost or dormant track of its label and size whose detections had
its colour (``REID_LOOK_COLOUR``), each the other's only such candidate. Such a track is
re-prompted (``reseed``) under its own ID: it never ended, so IDs are still never reused.

Matching rules. Detections are first de-duplicated per label (greedy NMS at ``DUPLICATE_IOU``
= 0.5, or ``merge_iou`` if lower: Grounding DINO does no NMS). Assignment is one-to-one, by IoU, with the Hungarian algorithm
(``scipy.optimize.linear_sum_assignment``); a pair counts only if its IoU is at least
``iou_threshold`` and detection and track have the same label (a track keeps its label for
life; a synonym phrase makes a separate track). A track absent from ``tracks_at_seq`` (created
after ``seq``, or not reported) and a lost track with no box at ``seq`` are matched on their last
known box; such a track is never penalised for a re-grounding older than its creation. An
unmatched detection that overlaps a live same-label track by that same IoU or more is a duplicate,
not a new object (so a second object hidden behind a first of the same label gets its own track
only once they overlap less); one that overlaps a live track of another label by
``CROSS_LABEL_DUPLICATE_IOU`` (0.7) is that object under another name (a half-hidden box taken
for a ball), not a new object either.

States (CONTRACT.md): ``new`` on the first frame a track is observed, then ``tracked`` while its
score is at or above ``score_threshold``, ``lost`` while below but not yet dormant. Dormant
tracks are not live: :meth:`tracks` and ``len`` leave them out, ``in`` finds them, and they take
no ``max_objects`` place. ``age`` is frames
since the track's first frame (its detection frame, or the first observed frame of a manual
track). IDs come from an ``engine.ids.IdAllocator`` (``ids``; default: from 1, or ``first_id``):
they increase and are never reused (not even after :meth:`reset`, nor across engine restarts when
the allocator's reservations are persisted). ID blocks (a fleet leases them so that IDs are unique
across engines): with ``id_limit`` set, IDs stay below it; blocks added with :meth:`add_id_block`
are used in turn when one runs out; with none left, no track is created (a detection is skipped
and counted in ``ids_exhausted``, a manual object is refused), so an ID outside the leased blocks
is never given.

Manual tracks (``add_manual``, control ``add_object``) are not ended by ``max_unseen`` or by a
prompt change (their label need not be a prompt phrase), never go dormant and are left out of
the per-frame duplicate rule (two objects the user named stay two); they end by ``max_missed``,
``remove`` or ``reset``.

Removal (control ``remove_object``, :meth:`remove`) means "stop following this one". A manual
track ends (the user added it; removing it is ending it). A track the detector found is
*suppressed* instead of ended: had it ended, the next re-grounding would find its object again
and start a new track on it. A suppressed track lives on under the same rules as any other (it
is followed by the segmenter, takes its ``max_objects`` place, matches detections, goes lost,
dormant, is re-identified, is merged), so the detections that fall on its object are absorbed
and no new track is born there; it is only left out of :meth:`tracks` (not published, not
drawn). The suppression lasts as long as the track: it ends with it (the object left the view:
``max_missed``, ``max_unseen``, dormant past ``reid_frames``), on a prompt change
(:meth:`set_labels` ends every suppressed track: the next grounding finds the object again under
a new ID) and on :meth:`reset`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Literal, Protocol

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.optimize import linear_sum_assignment

from engine.ids import IdAllocator
from engine.lifecycle.appearance import colour_cue
from engine.lifecycle.config import LifecycleConfig, Thresholds, thresholds
from engine.lifecycle.states import EndReason, LifecycleEvent, TrackState, transition
from stream.config import EngineConfig
from stream.errors import PromptError

log = logging.getLogger(__name__)

Box = tuple[float, float, float, float]
Colour = tuple[float, float, float]  # mean (b, g, r) in [0, 1]
PublishedState = Literal["new", "tracked", "lost"]  # CONTRACT.md: a published track's state
_NO_MATCH_COST = 1e6
_DEFAULTS = LifecycleConfig(profile="demo")  # the former module constants (engine.lifecycle now)
DUPLICATE_IOU = _DEFAULTS.duplicate_iou
CROSS_LABEL_DUPLICATE_IOU = _DEFAULTS.cross_label_duplicate_iou
REID_SIZE_RATIO = _DEFAULTS.reid_size_ratio
REID_LOOK_COLOUR = _DEFAULTS.reid_look_colour
MERGE_AFTER = _DEFAULTS.merge_after
DUPLICATE_FRAMES = _DEFAULTS.duplicate_frames
DRIFT_FRAMES = _DEFAULTS.drift_frames


def as_box(box: Sequence[float] | NDArray[np.floating]) -> Box:
    """A validated ``(x1, y1, x2, y2)`` float tuple; raises :class:`PromptError` on a bad box."""
    values = [float(v) for v in box]
    if len(values) != 4 or not all(np.isfinite(values)):
        raise PromptError(f"a box needs 4 finite numbers x1,y1,x2,y2, got {values}")
    x1, y1, x2, y2 = values
    if not (x2 > x1 and y2 > y1):
        raise PromptError(f"box {values} has no area (need x2 > x1 and y2 > y1)")
    return (x1, y1, x2, y2)


def iou_matrix(a: ArrayLike, b: ArrayLike) -> NDArray[np.float64]:
    """Pairwise IoU of boxes ``a`` (N, 4) and ``b`` (M, 4) in xyxy; (N, M)."""
    aa = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    bb = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    area_a = np.clip(aa[:, 2] - aa[:, 0], 0, None) * np.clip(aa[:, 3] - aa[:, 1], 0, None)
    area_b = np.clip(bb[:, 2] - bb[:, 0], 0, None) * np.clip(bb[:, 3] - bb[:, 1], 0, None)
    lt = np.maximum(aa[:, None, :2], bb[None, :, :2])
    rb = np.minimum(aa[:, None, 2:], bb[None, :, 2:])
    wh = np.clip(rb - lt, 0, None)
    inter = wh[..., 0] * wh[..., 1]
    union = area_a[:, None] + area_b[None, :] - inter
    out: NDArray[np.float64] = np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)
    return out


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


@dataclass(frozen=True)
class TrackEvent:
    """A state change reported by :meth:`TrackManager.on_frame`.

    ``kind``: ``lost`` (score fell below threshold), ``recovered`` (back above it), ``dormant``
    (missed ``max_missed`` frames but kept for re-identification: the engine frees the
    object's memory and publishes nothing for it) or ``ended`` (``reason`` ``"missed"``: the
    engine must free the object's memory)."""

    seq: int
    id: int
    kind: Literal["lost", "recovered", "dormant", "ended"]
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
class _Track:
    id: int
    label: str
    manual: bool
    first_seq: int | None  # None: manual track not observed yet
    last_box: Box  # last known good box (seed box until observed)
    score: float = 0.0
    observed: int = 0  # frames observed
    missed: int = 0  # consecutive missed frames
    unseen: int = 0  # consecutive re-groundings without re-detection
    state: TrackState = TrackState.TENTATIVE  # changed only by ``_Track.apply``
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

    def apply(self, event: LifecycleEvent, seq: int | None = None) -> TrackState:
        """The one place a track's state changes (``states.transition``); returns the old state.
        ``seq``: the frame of a ``RETIRE`` (the dormancy's start)."""
        old, self.state = self.state, transition(self.state, event)
        if self.state is TrackState.DORMANT and old is not TrackState.DORMANT:
            self.dormant_since = seq
        elif self.state is not TrackState.DORMANT:
            self.dormant_since = None
        return old

    @property
    def dormant(self) -> bool:
        return self.state is TrackState.DORMANT

    @property
    def lost(self) -> bool:
        """No box to publish: lost or dormant."""
        return self.state in (TrackState.LOST, TrackState.DORMANT)


@dataclass
class _Candidate:
    track: _Track
    box: Box
    at_seq: bool  # box is the track's box on the detection frame (not a fallback)
    dormant: bool = False  # dormant on the detection frame: re-identification only


@dataclass
class TrackManager:
    """Owns track IDs, labels and lifecycle; see the module docstring for the rules."""

    cfg: EngineConfig
    first_id: int = 1  # IDs start here (when ``ids`` is not given)
    id_limit: int | None = None  # IDs stay below this (None: unbounded; when ``ids`` is not given)
    ids: IdAllocator | None = None  # where IDs come from (default: first_id, id_limit)
    ids_exhausted: int = field(default=0, init=False)  # tracks not created: no ID left
    _tracks: dict[int, _Track] = field(default_factory=dict, init=False)
    _ids: IdAllocator = field(init=False)
    _th: Thresholds = field(init=False)
    _last_seq: int | None = field(default=None, init=False)
    _pair_hits: dict[tuple[int, int], int] = field(default_factory=dict, init=False)
    _dup_frames: dict[tuple[int, int], int] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        self._ids = self.ids or IdAllocator(self.first_id, self.id_limit)
        self._th = thresholds(self.cfg)

    def _cue(self, colour: Colour | None) -> Colour | None:
        """A mean colour as the profile compares it (``engine.lifecycle.colour_space``)."""
        return colour_cue(colour, self._th.life.colour_space)

    # ------------------------------------------------------------------ frames

    def on_frame(
        self,
        seq: int,
        observations: Mapping[int, Observation],
        mask_iou: Callable[[int, int], float] | None = None,
    ) -> list[TrackEvent]:
        """Update tracks from the segmenter's output for frame ``seq``.

        Tracks absent from ``observations`` are left unchanged; observations of unknown (e.g.
        just ended) IDs are ignored. ``mask_iou(a, b)``: optional IoU of two tracks' masks on
        this frame; when given, two tracks whose masks overlap by ``merge_iou`` on
        ``DUPLICATE_FRAMES`` consecutive frames are one object: the younger goes dormant (it
        may have drifted onto the other's object; it ends when ``reid_frames`` is 0)."""
        self._last_seq = seq if self._last_seq is None else max(self._last_seq, seq)
        events: list[TrackEvent] = []
        for tid, obs in observations.items():
            t = self._tracks.get(tid)
            if t is None or t.dormant:
                log.debug("observation of unknown track %d on frame %d ignored", tid, seq)
                continue
            if t.first_seq is None:
                t.first_seq = seq
            t.observed += 1
            t.last_seq = seq
            t.score = float(obs.score)
            hit = obs.box is not None and obs.score >= self._th.score_threshold
            colour = self._cue(obs.colour)
            if hit and self._off_colour(t, colour):
                t.off_colour += 1
                if t.off_colour >= self._th.life.drift_frames:
                    events.append(self._retire(t, seq, EndReason.DRIFTED))
                    log.info("track %d (%s) slid onto another object (colour)", tid, t.label)
                continue  # a mask on another object: the track's box and colour stay as they were
            if hit:
                assert obs.box is not None
                t.off_colour = 0
                self._hit(t, seq, as_box(obs.box), colour)
                t.missed = 0
                if t.apply(LifecycleEvent.HIT) is TrackState.LOST:
                    events.append(TrackEvent(seq, tid, "recovered"))
                if t.state is TrackState.TENTATIVE:
                    t.apply(LifecycleEvent.CONFIRM)
                continue
            t.missed += 1
            if t.missed >= self._th.max_missed:
                ev = self._retire(t, seq, EndReason.MISSED)
                events.append(ev)
                log.info("track %d (%s) %s: missed %d frames", tid, t.label, ev.kind, t.missed)
            elif t.apply(LifecycleEvent.MISS) is not TrackState.LOST:
                events.append(TrackEvent(seq, tid, "lost"))
        if mask_iou is not None:
            events += self._duplicates(seq, observations, mask_iou)
        for t in list(self._tracks.values()):
            slept = None if t.dormant_since is None else seq - t.dormant_since
            if slept is not None and slept >= self._th.reid_frames:
                self._end(t)
                events.append(TrackEvent(seq, t.id, "ended", EndReason.DORMANT))
                log.info("track %d (%s) ended: dormant %d frames", t.id, t.label, slept)
        return events

    def _duplicates(
        self,
        seq: int,
        observations: Mapping[int, Observation],
        mask_iou: Callable[[int, int], float],
    ) -> list[TrackEvent]:
        """Tracks whose masks coincide (``merge_iou``) on ``DUPLICATE_FRAMES`` frames in a row:
        the younger goes dormant (or ends), the older (lower ID) is kept."""
        hits = [
            (tid, obs.box)
            for tid, obs in sorted(observations.items())
            if obs.box is not None
            and tid in self._tracks
            and not self._tracks[tid].dormant
            and not self._tracks[tid].manual
            and obs.score >= self._th.score_threshold
        ]
        counts: dict[tuple[int, int], int] = {}
        events: list[TrackEvent] = []
        gone: set[int] = set()
        if len(hits) >= 2:
            iou = iou_matrix([b for _, b in hits], [b for _, b in hits])
            for j in range(len(hits)):
                for i in range(j):
                    a, b = hits[i][0], hits[j][0]
                    if (
                        a in gone
                        or b in gone
                        or iou[i, j] < self._th.merge_iou * self._th.life.duplicate_box_share
                    ):
                        continue
                    if mask_iou(a, b) < self._th.merge_iou:
                        continue
                    pair = (a, b)
                    counts[pair] = self._dup_frames.get(pair, 0) + 1
                    if counts[pair] < self._th.life.duplicate_frames:
                        continue
                    gone.add(b)
                    t, keep = self._tracks[b], self._tracks[a]
                    keep.unseen = min(keep.unseen, t.unseen)
                    events.append(self._retire(t, seq, EndReason.DUPLICATE))
                    log.info("track %d (%s) is track %d's object on frame %d", b, t.label, a, seq)
        self._dup_frames = counts
        return events

    def _end(self, t: _Track) -> None:
        """``t`` ends: ENDED, out of the manager (its ID is never given again)."""
        t.apply(LifecycleEvent.END)
        del self._tracks[t.id]

    def _retire(self, t: _Track, seq: int, reason: EndReason) -> TrackEvent:
        """``t`` goes dormant, or ends where re-identification is off (``reid_frames`` 0) and
        for a manual track (never dormant)."""
        if self._th.reid_frames > 0 and not t.manual:
            t.apply(LifecycleEvent.RETIRE, seq)
            return TrackEvent(seq, t.id, "dormant", reason)
        self._end(t)
        return TrackEvent(seq, t.id, "ended", reason)

    def _off_colour(self, t: _Track, colour: Colour | None) -> bool:
        """Whether a mask of colour ``colour`` lies on another object than ``t``'s."""
        if self._th.drift_colour <= 0 or t.manual or t.anchor is None or colour is None:
            return False
        return _colour_distance(colour, t.anchor) > self._th.drift_colour

    def _hit(self, t: _Track, seq: int, box: Box, colour: Colour | None) -> None:
        """A good box on frame ``seq``: the last box, the centre velocity, the colour."""
        if t.hit_seq is not None and seq > t.hit_seq:
            (cx, cy), (px, py) = _centre(box), _centre(t.last_box)
            dt = seq - t.hit_seq
            a = self._th.life.velocity_smoothing
            vx, vy = t.velocity
            t.velocity = (a * (cx - px) / dt + (1 - a) * vx, a * (cy - py) / dt + (1 - a) * vy)
        t.last_box = box
        t.hit_seq = seq
        t.side = (
            _side(box)
            if t.side <= 0
            else (1 - self._th.life.side_smoothing) * t.side
            + self._th.life.side_smoothing * _side(box)
        )
        if colour is not None:
            a = self._th.life.colour_smoothing
            t.colour = colour if t.colour is None else _mix(t.colour, colour, a)
            if t.anchor is None:
                t.anchor = colour

    # ------------------------------------------------------------------ detections

    def on_detections(
        self,
        seq: int,
        detections: DetectionsLike,
        tracks_at_seq: Mapping[int, Observation],
        mask_iou: Callable[[int, int], float] | None = None,
        colours: Sequence[Colour | None] | None = None,
    ) -> Plan:
        """Match a grounding result computed on frame ``seq`` and decide new/reseed/end/merge.

        ``mask_iou(a, b)``: optional IoU of two tracks' masks on frame ``seq``; when given it
        decides merging (a pair whose boxes overlap by ``merge_iou`` must also have masks that
        do), so an object partly hidden behind another of the same label is not merged into it.
        ``colours``: optional mean colour of each detection (``box_colour``), for
        re-identification."""
        boxes, scores, labels = _unpack(detections)
        dup_iou = self._th.dedup_iou
        colours = None if colours is None else [self._cue(c) for c in colours]
        keep = _nms_per_label(boxes, scores, labels, dup_iou)
        cands = self._candidates(seq, tracks_at_seq)

        matches = self._assign(boxes, labels, keep, [c for c in cands if not c.dormant])
        matches += self._reidentify(seq, boxes, labels, keep, cands, matches, colours)
        matches += self._recognise(seq, boxes, labels, keep, cands, matches, colours)
        matched_tracks = {m.id for m in matches}
        matched_dets = {m.detection for m in matches}
        by_id = {c.track.id: c for c in cands}

        reseed: list[Reseed] = []
        for m in matches:
            c = by_id[m.id]
            c.track.unseen = 0
            c.track.missed = 0
            if c.track.dormant:
                c.track.apply(LifecycleEvent.REIDENTIFY)
            c.track.off_colour = 0
            c.track.box_colour = _colour_at(colours, m.detection) or c.track.box_colour
            prompted = not c.at_seq or m.iou < self._th.drift_iou
            c.track.anchor = None if prompted else c.track.colour  # confirmed, or set anew
            if prompted:
                reseed.append(
                    Reseed(
                        m.id, _box_at(boxes, m.detection), float(scores[m.detection]), m.detection
                    )
                )
                c.track.last_box = _box_at(boxes, m.detection)
                if c.track.hit_seq is None or c.track.hit_seq <= seq:
                    c.track.hit_seq = seq

        ended: list[int] = []
        dormant: list[int] = []
        for c in cands:
            t = c.track
            existed = t.first_seq is not None and t.first_seq <= seq
            if t.id in matched_tracks or t.manual or not existed or c.dormant:
                continue
            t.unseen += 1
            if t.unseen < self._th.max_unseen:
                continue
            if self._th.reid_frames > 0:
                t.apply(LifecycleEvent.RETIRE, seq)
                dormant.append(t.id)
                log.info(
                    "track %d (%s) dormant: not re-detected for %d re-groundings",
                    t.id,
                    t.label,
                    t.unseen,
                )
            else:
                ended.append(t.id)
        for tid in ended:
            t = self._tracks[tid]
            self._end(t)
            log.info(
                "track %d (%s) ended: not re-detected for %d re-groundings", tid, t.label, t.unseen
            )

        alive = [c for c in cands if c.track.id in self._tracks and not c.track.dormant]
        merged = self._merge(seq, [c for c in alive if c.at_seq], matched_tracks, mask_iou)
        alive = [c for c in alive if c.track.id in self._tracks]
        new = self._new_tracks(seq, boxes, scores, labels, keep, matched_dets, alive, dup_iou)
        for n in new:
            self._tracks[n.id].box_colour = _colour_at(colours, n.detection)
        return Plan(
            seq=seq,
            new=tuple(new),
            reseed=tuple(r for r in reseed if r.id in self._tracks),
            ended=tuple(ended),
            merged=tuple(merged),
            matches=tuple(matches),
            dormant=tuple(dormant),
        )

    def _candidates(self, seq: int, tracks_at_seq: Mapping[int, Observation]) -> list[_Candidate]:
        cands: list[_Candidate] = []
        for tid in sorted(self._tracks):
            t = self._tracks[tid]
            obs = tracks_at_seq.get(tid)
            dormant = t.dormant
            if obs is not None and obs.box is not None and not dormant:
                cands.append(_Candidate(t, as_box(obs.box), at_seq=True))
            else:
                cands.append(_Candidate(t, t.last_box, at_seq=False, dormant=dormant))
        return cands

    def _reidentify(
        self,
        seq: int,
        boxes: NDArray[np.float64],
        labels: list[str],
        keep: list[int],
        cands: list[_Candidate],
        matches: list[Match],
        colours: Sequence[Colour | None] | None,
    ) -> list[Match]:
        """Second stage: detections left over matched to tracks of their label: a live track
        whose box on ``seq`` lies inside the detection (``CONTAINED``: its mask shrank away from
        its object), or a lost or dormant one (no box on ``seq``) near where the track's motion
        puts it: within ``reid_distance``
        box sides of its predicted centre (the gate widens by ``REID_GROWTH`` per frame since
        its last good box), of a similar size (``REID_SIZE_RATIO``) and, where both colours are
        known, of a similar colour (``REID_COLOUR``). ``Match.iou`` is the IoU with the
        predicted box."""
        if self._th.reid_distance <= 0:
            return []
        dets, pool = _left_over(seq, keep, cands, matches)
        if not dets or not pool:
            return []
        cost = np.full((len(dets), len(pool)), _NO_MATCH_COST)
        predicted: list[Box] = []
        for j, c in enumerate(pool):
            t = c.track
            elapsed = 0 if t.hit_seq is None else max(0, seq - t.hit_seq)
            pred = (
                c.box
                if c.at_seq
                else _shift(t.last_box, t.velocity[0] * elapsed, t.velocity[1] * elapsed)
            )
            predicted.append(pred)
            side = max(_side(t.last_box), t.side)
            gate = self._th.reid_distance + self._th.life.reid_growth * elapsed
            (px, py) = _centre(pred)
            for i, d in enumerate(dets):
                if labels[d] != t.label:
                    continue
                box = _box_at(boxes, d)
                dside = _side(box)
                if not _similar_size(side, dside, self._th.life.reid_size_ratio):
                    continue
                cx, cy = _centre(box)
                dist = float(np.hypot(cx - px, cy - py)) / side
                if c.at_seq:  # a live track: only its own mask, shrunk inside the detection
                    if _contained(c.box, box) < self._th.life.contained:
                        continue
                    dist = 0.0
                if dist > gate:
                    continue
                # like for like: the detection colour against its detections' (a mask's mean
                # colour takes in its edges and differs), the mask colour where there is none
                colour, ref = _colour_at(colours, d), t.box_colour or t.colour
                dc = 0.0
                if colour is not None and ref is not None:
                    dc = _colour_distance(colour, ref)
                    if dc > self._th.life.reid_colour:
                        continue
                cost[i, j] = dist / gate + dc / max(self._th.life.reid_colour, 1e-9)
        rows, cols = linear_sum_assignment(cost)
        out: list[Match] = []
        for r, c in zip(rows.tolist(), cols.tolist(), strict=True):
            if cost[r, c] >= _NO_MATCH_COST:
                continue
            d, t = dets[r], pool[c].track
            iou = float(iou_matrix(boxes[d : d + 1], np.array([predicted[c]]))[0, 0])
            log.info("track %d (%s) re-identified on frame %d", t.id, t.label, seq)
            out.append(Match(t.id, d, iou))
        return out

    def _recognise(
        self,
        seq: int,
        boxes: NDArray[np.float64],
        labels: list[str],
        keep: list[int],
        cands: list[_Candidate],
        matches: list[Match],
        colours: Sequence[Colour | None] | None,
    ) -> list[Match]:
        """Third stage, by look alone: a detection left over and a lost or dormant track (no
        box on ``seq``) of its label, of a similar size, whose detections had the detection's
        colour (``REID_LOOK_COLOUR``), are one object wherever it came back (it left the view
        and came in elsewhere), if each is the other's only such candidate: with two
        look-alikes away, or two in view, neither is taken."""
        if self._th.reid_distance <= 0 or colours is None:
            return []
        dets, pool = _left_over(seq, keep, cands, matches)
        pairs: list[tuple[int, int]] = []
        for c in pool:
            t = c.track
            if c.at_seq or t.box_colour is None:
                continue
            side = max(_side(t.last_box), t.side)
            for d in dets:
                colour = _colour_at(colours, d)
                if colour is None or labels[d] != t.label:
                    continue
                dside = _side(_box_at(boxes, d))
                if not _similar_size(side, dside, self._th.life.reid_size_ratio):
                    continue
                if _colour_distance(colour, t.box_colour) <= self._th.life.reid_look_colour:
                    pairs.append((d, t.id))
        out: list[Match] = []
        for d, tid in pairs:
            if sum(p[0] == d for p in pairs) == 1 and sum(p[1] == tid for p in pairs) == 1:
                log.info("track %d (%s) recognised on frame %d", tid, labels[d], seq)
                out.append(Match(tid, d, 0.0))
        return out

    def _assign(
        self,
        boxes: NDArray[np.float64],
        labels: list[str],
        keep: list[int],
        cands: list[_Candidate],
    ) -> list[Match]:
        if not keep or not cands:
            return []
        iou = iou_matrix(boxes[keep], np.array([c.box for c in cands], dtype=np.float64))
        same = np.array([[labels[d] == c.track.label for c in cands] for d in keep], dtype=bool)
        valid = same & (iou >= self._th.iou_threshold)
        cost = np.where(valid, 1.0 - iou, _NO_MATCH_COST)
        rows, cols = linear_sum_assignment(cost)
        return [
            Match(cands[c].track.id, keep[r], float(iou[r, c]))
            for r, c in zip(rows.tolist(), cols.tolist(), strict=True)
            if valid[r, c]
        ]

    def _merge(
        self,
        seq: int,
        cands: list[_Candidate],
        matched: set[int],
        mask_iou: Callable[[int, int], float] | None,
    ) -> list[int]:
        """End the younger of same-label pairs that overlap by ``merge_iou`` at ``seq`` on
        ``MERGE_AFTER`` consecutive re-groundings, unless both were re-detected (two detections:
        two objects). The persistence keeps two objects that cross from being merged."""
        hits: dict[tuple[int, int], int] = {}
        merged: list[int] = []
        if len(cands) >= 2:
            boxes = np.array([c.box for c in cands])
            iou = iou_matrix(boxes, boxes)
            for j in range(len(cands)):  # ascending IDs: the older track of a pair is kept
                tj = cands[j].track
                for i in range(j):
                    ti = cands[i].track
                    if ti.label != tj.label or iou[i, j] < self._th.merge_iou:
                        continue
                    if ti.id in matched and tj.id in matched:
                        continue
                    if mask_iou is not None and mask_iou(ti.id, tj.id) < self._th.merge_iou:
                        continue
                    pair = (ti.id, tj.id)
                    hits[pair] = self._pair_hits.get(pair, 0) + 1
                    if hits[pair] < self._th.life.merge_after or ti.id in merged or tj.id in merged:
                        continue
                    merged.append(tj.id)
                    ti.unseen = min(ti.unseen, tj.unseen)
                    self._end(tj)
                    log.info(
                        "track %d merged into %d on frame %d (box IoU %.2f)",
                        tj.id,
                        ti.id,
                        seq,
                        iou[i, j],
                    )
        self._pair_hits = {k: v for k, v in hits.items() if k[1] in self._tracks}
        return merged

    def _new_tracks(
        self,
        seq: int,
        boxes: NDArray[np.float64],
        scores: NDArray[np.float64],
        labels: list[str],
        keep: list[int],
        matched_dets: set[int],
        alive: list[_Candidate],
        dup_iou: float,
    ) -> list[NewTrack]:
        new: list[NewTrack] = []
        live = [(c.track.label, c.box) for c in alive]
        for d in sorted((d for d in keep if d not in matched_dets), key=lambda d: -scores[d]):
            box = _box_at(boxes, d)
            same = [b for lbl, b in live if lbl == labels[d]]
            if same and float(iou_matrix(boxes[d : d + 1], np.array(same)).max()) >= dup_iou:
                continue  # a duplicate of a live track, not a new object
            other = [b for lbl, b in live if lbl != labels[d]]
            if other and float(iou_matrix(boxes[d : d + 1], np.array(other)).max()) >= (
                self._th.life.cross_label_duplicate_iou
            ):
                continue  # a live track's object under another name (a box taken for a ball)
            if self._live() >= self._th.max_objects:
                log.info(
                    "max_objects=%d reached: detection %r on frame %d not tracked",
                    self._th.max_objects,
                    labels[d],
                    seq,
                )
                break
            tid = self._ids.take()
            if tid is None:
                self.ids_exhausted += 1
                log.warning("no ID left in the leased blocks: detection %r not tracked", labels[d])
                continue
            t = self._create(tid, labels[d], box, manual=False, first_seq=seq)
            t.score = float(scores[d])
            live.append((t.label, box))
            new.append(NewTrack(t.id, t.label, box, float(scores[d]), int(d)))
        return new

    # ------------------------------------------------------------------ control

    def add_manual(self, label: str, box: Sequence[float], seq: int | None = None) -> int:
        """Start a manual track (control ``add_object``); returns its new ID.

        ``seq``: the frame the box is given on (default: its first observed frame)."""
        if not label.strip():
            raise PromptError("an object label must not be empty")
        if self._live() >= self._th.max_objects:
            raise PromptError(
                f"cannot add an object: max_objects={self._th.max_objects} are tracked"
            )
        tid = self._ids.take()
        if tid is None:
            self.ids_exhausted += 1
            raise PromptError(
                f"cannot add an object: the IDs leased to this camera are used up (below {self._ids.limit})"
            )
        return self._create(tid, label.strip(), as_box(box), manual=True, first_seq=seq).id

    def remove(self, track_id: int) -> Removal:
        """Control ``remove_object``: a manual track ends, one the detector found is suppressed
        (see the module docstring). An unknown ID, or one removed already, is a
        :class:`PromptError` (it is not a tracked object any more)."""
        t = self._tracks.get(track_id)
        if t is None or t.suppressed:
            raise PromptError(f"no tracked object with id {track_id}")
        if t.manual:
            self._end(t)
            return Removal.ENDED
        t.suppressed = True
        log.info("track %d (%s) removed: suppressed while it stays in view", t.id, t.label)
        return Removal.SUPPRESSED

    def end(self, track_id: int) -> None:
        """End one track at once, whatever it is (its seeding failed); an unknown ID is a
        :class:`PromptError`."""
        if track_id not in self._tracks:
            raise PromptError(f"no tracked object with id {track_id}")
        self._end(self._tracks[track_id])

    def set_labels(self, labels: Iterable[str]) -> list[int]:
        """Prompt change: end (and return) the non-manual tracks whose label is not in
        ``labels``, and every suppressed track (a new prompt lifts the suppressions)."""
        allowed = set(labels)
        gone = [
            tid
            for tid, t in self._tracks.items()
            if not t.manual and (t.label not in allowed or t.suppressed)
        ]
        for tid in gone:
            self._end(self._tracks[tid])
        return sorted(gone)

    def reset(self) -> list[int]:
        """End every track; returns their IDs. IDs are still never reused afterwards."""
        gone = sorted(self._tracks)
        for tid in gone:
            self._end(self._tracks[tid])
        return gone

    # ------------------------------------------------------------------ queries

    def tracks(self) -> list[TrackInfo]:
        """Live tracks to publish, by ID, as of the latest frame (dormant and suppressed ones are
        left out)."""
        return [
            self._info(t)
            for _, t in sorted(self._tracks.items())
            if not t.dormant and not t.suppressed
        ]

    def suppressed_ids(self) -> list[int]:
        """Tracks removed by the user but followed until their object leaves, by ID (live or
        dormant)."""
        return sorted(t.id for t in self._tracks.values() if t.suppressed)

    def state(self, track_id: int) -> TrackState:
        """A track's lifecycle state (``ENDED`` for an ID not in the manager)."""
        t = self._tracks.get(track_id)
        return TrackState.ENDED if t is None else t.state

    def dormant_ids(self) -> list[int]:
        """Tracks kept for re-identification (memory freed, not published), by ID."""
        return sorted(t.id for t in self._tracks.values() if t.dormant)

    def _live(self) -> int:
        return sum(1 for t in self._tracks.values() if not t.dormant)

    def __contains__(self, track_id: object) -> bool:
        return track_id in self._tracks

    def __len__(self) -> int:
        """Live tracks, suppressed ones included (dormant ones not counted; ``in`` finds them)."""
        return self._live()

    @property
    def next_id(self) -> int:
        return self._ids.next_id

    @property
    def ids_left(self) -> int | None:
        """IDs still available in the current and the queued blocks (None: not leased)."""
        return self._ids.ids_left

    @property
    def id_allocator(self) -> IdAllocator:
        return self._ids

    def add_id_block(self, first: int, limit: int) -> None:
        """Queue the leased block ``[first, limit)`` (``IdAllocator.add_block``)."""
        self._ids.add_block(first, limit)

    def _info(self, t: _Track) -> TrackInfo:
        state: PublishedState = "new" if t.observed <= 1 else ("lost" if t.lost else "tracked")
        ref = t.last_seq if t.last_seq is not None else self._last_seq
        age = 0 if t.first_seq is None or ref is None else max(0, ref - t.first_seq)
        return TrackInfo(
            t.id, t.label, state, age, t.score, None if t.lost else t.last_box, t.manual
        )

    def _create(
        self, tid: int, label: str, box: Box, manual: bool, first_seq: int | None
    ) -> _Track:
        t = _Track(tid, label, manual, first_seq, box)
        self._tracks[t.id] = t
        return t


# ---------------------------------------------------------------------- helpers


def _unpack(
    detections: DetectionsLike,
) -> tuple[NDArray[np.float64], NDArray[np.float64], list[str]]:
    n = len(detections)
    boxes = np.asarray(detections.xyxy, dtype=np.float64).reshape(n, 4)
    conf = detections.confidence
    scores = np.ones(n) if conf is None else np.asarray(conf, dtype=np.float64).reshape(n)
    raw = detections.data.get("label")
    if raw is None or len(raw) != n:
        raise ValueError(f"detections need data['label'] with {n} entries")
    return boxes, scores, [str(x) for x in raw]


def _left_over(
    seq: int, keep: list[int], cands: list[_Candidate], matches: list[Match]
) -> tuple[list[int], list[_Candidate]]:
    """Detections and tracks the matches so far left over, for re-identification: tracks not
    manual, with a box on ``seq`` or a good box no later than ``seq``."""
    taken_d = {m.detection for m in matches}
    taken_t = {m.id for m in matches}
    dets = [d for d in keep if d not in taken_d]
    pool = [
        c
        for c in cands
        if c.track.id not in taken_t
        and not c.track.manual
        and (c.at_seq or (c.track.hit_seq is not None and c.track.hit_seq <= seq))
    ]
    return dets, pool


def _colour_at(colours: Sequence[Colour | None] | None, d: int) -> Colour | None:
    return None if colours is None or not 0 <= d < len(colours) else colours[d]


def _colour_distance(a: Colour, b: Colour) -> float:
    """L1 distance of two mean colours (b, g, r in [0, 1])."""
    return float(np.abs(np.subtract(a, b)).sum())


def _similar_size(side: float, other: float, ratio: float) -> bool:
    """Two box sides within ``ratio`` of each other, either way."""
    return side > 0 and other > 0 and max(side / other, other / side) <= ratio


def _centre(box: Box) -> tuple[float, float]:
    return ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)


def _mix(old: Colour, new: Colour, a: float) -> Colour:
    return (
        (1 - a) * old[0] + a * new[0],
        (1 - a) * old[1] + a * new[1],
        (1 - a) * old[2] + a * new[2],
    )


def _contained(inner: Box, outer: Box) -> float:
    """The share of ``inner``'s area inside ``outer``."""
    w = min(inner[2], outer[2]) - max(inner[0], outer[0])
    h = min(inner[3], outer[3]) - max(inner[1], outer[1])
    area = (inner[2] - inner[0]) * (inner[3] - inner[1])
    return max(0.0, w) * max(0.0, h) / area if area > 0 else 0.0


def _side(box: Box) -> float:
    """The side of the square of the box's area."""
    return float(np.sqrt(max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1])))


def _shift(box: Box, dx: float, dy: float) -> Box:
    return (box[0] + dx, box[1] + dy, box[2] + dx, box[3] + dy)


def _box_at(boxes: NDArray[np.float64], i: int) -> Box:
    x1, y1, x2, y2 = (float(v) for v in boxes[i])
    return (x1, y1, x2, y2)


def _nms_per_label(
    boxes: NDArray[np.float64], scores: NDArray[np.float64], labels: list[str], thr: float
) -> list[int]:
    """Indices kept by greedy NMS within each label, plus validity (finite, positive area)."""
    valid = [
        i
        for i in range(len(labels))
        if np.isfinite(boxes[i]).all() and boxes[i, 2] > boxes[i, 0] and boxes[i, 3] > boxes[i, 1]
    ]
    order = sorted(valid, key=lambda i: (-scores[i], i))
    kept: list[int] = []
    for i in order:
        same = [k for k in kept if labels[k] == labels[i]]
        if same and float(iou_matrix(boxes[i : i + 1], boxes[same]).max()) >= thr:
            continue
        kept.append(i)
    return sorted(kept)
