"""Association: which detection is which track, as a cascade of stages.

Each :class:`Stage` pairs the detections and tracks the stages before it left over. A pair is
scored by the stage's cues (:class:`Cue`): each cue is a gate (``None``: the pair is refused)
and a cost; a pair's cost is the sum of its cues'. ``hungarian`` stages assign one-to-one at
least total cost (``scipy.optimize.linear_sum_assignment``); the ``unique`` stage takes a pair
only where each side has no other candidate (by look alone, two look-alikes are never told
apart by guessing).

The cascade (:func:`default_cascade`), in order:

1. ``overlap``: same label, box IoU (supervision's ``box_iou_batch``) at least
   ``engine.iou_threshold``; cost 1 - IoU. Tracks not dormant.
2. ``motion`` (re-identification near the predicted place): same label, similar size
   (``reid_size_ratio``), the motion cue (a live track: its box inside the detection,
   ``contained``, or the detection inside its box, ``covering``: its mask bled past its
   object; a lost or dormant one: within ``engine.reid_distance`` box sides of its
   predicted centre, widening by ``reid_growth`` per frame, or, with the Kalman motion model,
   inside its Kalman gate), a similar colour (``reid_colour``) where both are known.
3. ``look`` (re-identification by look alone, anywhere): same label, similar size, a lost or
   dormant track whose detections had the detection's colour (``reid_look_colour``); unique.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np
import supervision as sv
from numpy.typing import NDArray
from scipy.optimize import linear_sum_assignment

from engine.core.types import Box
from engine.lifecycle.config import Thresholds
from engine.lifecycle.geometry import (
    Colour,
    _box_at,
    _centre,
    _colour_distance,
    _contained,
    _side,
    _similar_size,
    iou_matrix,
)
from engine.lifecycle.kalman import CHI2_2DOF_99
from engine.lifecycle.track import Candidate, Match

log = logging.getLogger("engine.track_manager")
NO_MATCH = 1e6


@dataclass(frozen=True)
class Query:
    """One detection and one candidate track, as a cue sees them."""

    seq: int
    det: int  # index into the detections
    box: Box
    label: str
    colour: Colour | None
    cand: Candidate
    predicted: Box  # the candidate's box on ``seq``, or where its motion puts it
    elapsed: int  # frames since the candidate's last good box


class Cue(Protocol):
    @property
    def name(self) -> str: ...

    def cost(self, q: Query) -> float | None:
        """The pair's cost under this cue, or None where its gate refuses the pair."""
        ...


@dataclass(frozen=True)
class LabelGate:
    name: str = "label"

    def cost(self, q: Query) -> float | None:
        return 0.0 if q.label == q.cand.track.label else None


@dataclass(frozen=True)
class IouCue:
    threshold: float
    name: str = "iou"

    def cost(self, q: Query) -> float | None:
        iou = float(sv.box_iou_batch(np.array([q.box]), np.array([q.cand.box]))[0, 0])
        return 1.0 - iou if iou >= self.threshold - 1e-6 else None


@dataclass(frozen=True)
class SizeGate:
    ratio: float
    name: str = "size"

    def cost(self, q: Query) -> float | None:
        t = q.cand.track
        side = max(_side(t.last_box), t.side)
        return 0.0 if _similar_size(side, _side(q.box), self.ratio) else None


@dataclass(frozen=True)
class MotionCue:
    """A live track: its box inside the detection, or (``covering`` > 0) the detection inside its
    box. A lost or dormant one: the detection's centre near the predicted centre (box sides, the
    gate widening with time; or the Kalman gate)."""

    distance: float
    growth: float
    contained: float
    kalman: bool = False
    covering: float = 0.0  # > 0: also a detection inside a live track's box (the mask bled)
    name: str = "motion"

    def cost(self, q: Query) -> float | None:
        t = q.cand.track
        if q.cand.at_seq:
            if _contained(q.cand.box, q.box) >= self.contained:
                return 0.0
            covered = self.covering > 0 and _contained(q.box, q.cand.box) >= self.covering
            return 0.0 if covered else None
        side = max(_side(t.last_box), t.side)
        gate = self.distance + self.growth * q.elapsed
        (px, py), (cx, cy) = _centre(q.predicted), _centre(q.box)
        dist = float(np.hypot(cx - px, cy - py)) / side
        if dist <= gate:
            return dist / gate
        if self.kalman and t.motion is not None:
            m = t.motion.gate_distance(q.box, q.seq)
            if m <= CHI2_2DOF_99:
                return m / CHI2_2DOF_99
        return None


@dataclass(frozen=True)
class ColourCue:
    """The detection's colour against the track's detections' (like for like), or its mask
    colour where it has none; no colour on either side: no cost, no gate."""

    limit: float
    look: bool = False  # by look alone: a lost or dormant track with detection colours only
    name: str = "colour"

    def cost(self, q: Query) -> float | None:
        t = q.cand.track
        if self.look and (q.cand.at_seq or t.box_colour is None or q.colour is None):
            return None
        ref = t.box_colour if self.look else (t.box_colour or t.colour)
        if q.colour is None or ref is None:
            return 0.0
        dc = _colour_distance(q.colour, ref)
        return None if dc > self.limit else dc / max(self.limit, 1e-9)


@dataclass(frozen=True)
class Stage:
    name: str
    cues: tuple[Cue, ...]
    assign: Literal["hungarian", "unique"] = "hungarian"
    left_over_only: bool = True  # False: the first stage (every detection, tracks not dormant)

    def cost(self, q: Query) -> float | None:
        total = 0.0
        for cue in self.cues:
            c = cue.cost(q)
            if c is None:
                return None
            total += c
        return total


def default_cascade(th: Thresholds) -> list[Stage]:
    """The three stages of the module docstring, from the thresholds."""
    life = th.life
    stages = [
        Stage("overlap", (LabelGate(), IouCue(th.iou_threshold)), left_over_only=False),
    ]
    if th.reid_distance > 0:
        size = SizeGate(life.reid_size_ratio)
        motion = MotionCue(
            th.reid_distance,
            life.reid_growth,
            life.contained,
            life.motion_model == "kalman",
            life.covering,
        )
        stages.append(Stage("motion", (LabelGate(), size, motion, ColourCue(life.reid_colour))))
        look = ColourCue(life.reid_look_colour, look=True)
        stages.append(Stage("look", (LabelGate(), size, look), assign="unique"))
    return stages


def predicted_box(c: Candidate, seq: int) -> tuple[Box, int]:
    """Where ``c``'s track is on ``seq`` (its box there, or its motion's prediction) and the
    frames since its last good box."""
    t = c.track
    elapsed = 0 if t.hit_seq is None else max(0, seq - t.hit_seq)
    return (c.box if c.at_seq else t.predicted_box(seq)), elapsed


def run_cascade(
    stages: Sequence[Stage],
    seq: int,
    boxes: NDArray[np.float64],
    labels: list[str],
    keep: list[int],
    cands: list[Candidate],
    colours: Sequence[Colour | None] | None,
) -> list[Match]:
    """Every stage in turn over what the stages before it left over."""
    matches: list[Match] = []
    for stage in stages:
        if stage.left_over_only:
            dets, pool = left_over(seq, keep, cands, matches)
        else:
            dets, pool = list(keep), [c for c in cands if not c.dormant]
        if dets and pool:
            matches += _run_stage(stage, seq, boxes, labels, dets, pool, colours)
    return matches


def _run_stage(
    stage: Stage,
    seq: int,
    boxes: NDArray[np.float64],
    labels: list[str],
    dets: list[int],
    pool: list[Candidate],
    colours: Sequence[Colour | None] | None,
) -> list[Match]:
    cost = np.full((len(dets), len(pool)), NO_MATCH)
    predicted = [predicted_box(c, seq) for c in pool]
    for j, c in enumerate(pool):
        for i, d in enumerate(dets):
            q = Query(seq, d, _box_at(boxes, d), labels[d], colour_at(colours, d), c, *predicted[j])
            v = stage.cost(q)
            if v is not None:
                cost[i, j] = v
    if stage.assign == "unique":
        ok = cost < NO_MATCH
        pairs = [(i, j) for i, j in zip(*np.nonzero(ok), strict=True)]
        pairs = [(i, j) for i, j in pairs if ok[i].sum() == 1 and ok[:, j].sum() == 1]
    else:
        rows, cols = linear_sum_assignment(cost)
        pairs = [(r, c) for r, c in zip(rows.tolist(), cols.tolist(), strict=True)]
    out: list[Match] = []
    for i, j in pairs:
        if cost[i, j] >= NO_MATCH:
            continue
        d, t = dets[int(i)], pool[int(j)].track
        box = predicted[int(j)][0] if stage.left_over_only else pool[int(j)].box
        iou = 0.0 if stage.assign == "unique" else float(iou_matrix(boxes[d : d + 1], [box])[0, 0])
        if stage.left_over_only:
            log.info("track %d (%s) re-identified (%s) on frame %d", t.id, t.label, stage.name, seq)
        out.append(Match(t.id, d, iou))
    return out


def colour_at(colours: Sequence[Colour | None] | None, d: int) -> Colour | None:
    return None if colours is None or not 0 <= d < len(colours) else colours[d]


def left_over(
    seq: int, keep: list[int], cands: list[Candidate], matches: list[Match]
) -> tuple[list[int], list[Candidate]]:
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
