"""``TrackManager``: the default lifecycle (the rules: engine/track_manager.py's docstring)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from engine.ids import IdAllocator
from engine.lifecycle.association import Stage, colour_at, default_cascade, run_cascade
from engine.lifecycle.config import Thresholds, thresholds
from engine.lifecycle.frames import FrameRules
from engine.lifecycle.geometry import Colour, _box_at, _nms_per_label, as_box, iou_matrix
from engine.lifecycle.registry import Registry
from engine.lifecycle.states import LifecycleEvent
from engine.lifecycle.track import (
    Candidate,
    DetectionsLike,
    Match,
    NewTrack,
    Observation,
    Plan,
    Reseed,
    Track,
)
from stream.config import EngineConfig

log = logging.getLogger("engine.track_manager")


@dataclass
class TrackManager(FrameRules, Registry):
    """Owns track IDs, labels and lifecycle; see engine/track_manager.py for the rules."""

    cfg: EngineConfig
    first_id: int = 1  # IDs start here (when ``ids`` is not given)
    id_limit: int | None = None  # IDs stay below this (None: unbounded; when ``ids`` is not given)
    ids: IdAllocator | None = None  # where IDs come from (default: first_id, id_limit)
    ids_exhausted: int = field(default=0, init=False)  # tracks not created: no ID left
    _tracks: dict[int, Track] = field(default_factory=dict, init=False)
    _ids: IdAllocator = field(init=False)
    _th: Thresholds = field(init=False)
    _last_seq: int | None = field(default=None, init=False)
    _pair_hits: dict[tuple[int, int], int] = field(default_factory=dict, init=False)
    _dup_frames: dict[tuple[int, int], int] = field(default_factory=dict, init=False)
    _stages: list[Stage] = field(init=False)

    def __post_init__(self) -> None:
        self._ids = self.ids or IdAllocator(self.first_id, self.id_limit)
        self._th = thresholds(self.cfg)
        self._stages = default_cascade(self._th)

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

        matches = run_cascade(self._stages, seq, boxes, labels, keep, cands, colours)
        matched_tracks = {m.id for m in matches}
        matched_dets = {m.detection for m in matches}
        reseed = self._confirm(seq, matches, cands, boxes, scores, colours)
        ended, dormant = self._unseen(seq, cands, matched_tracks)

        alive = [c for c in cands if c.track.id in self._tracks and not c.track.dormant]
        merged = self._merge(seq, [c for c in alive if c.at_seq], matched_tracks, mask_iou)
        alive = [c for c in alive if c.track.id in self._tracks]
        new = self._new_tracks(seq, boxes, scores, labels, keep, matched_dets, alive, dup_iou)
        for n in new:
            self._tracks[n.id].box_colour = colour_at(colours, n.detection)
        return Plan(
            seq=seq,
            new=tuple(new),
            reseed=tuple(r for r in reseed if r.id in self._tracks),
            ended=tuple(ended),
            merged=tuple(merged),
            matches=tuple(matches),
            dormant=tuple(dormant),
        )

    def _confirm(
        self,
        seq: int,
        matches: list[Match],
        cands: list[Candidate],
        boxes: NDArray[np.float64],
        scores: NDArray[np.float64],
        colours: Sequence[Colour | None] | None,
    ) -> list[Reseed]:
        """Matched tracks: re-detected (a dormant one re-identified); those whose box at ``seq``
        drifted from their detection, or that had none, are re-prompted from it."""
        by_id = {c.track.id: c for c in cands}
        reseed: list[Reseed] = []
        for m in matches:
            c = by_id[m.id]
            c.track.unseen = 0
            c.track.missed = 0
            if c.track.dormant:
                c.track.apply(LifecycleEvent.REIDENTIFY)
            c.track.off_colour = 0
            c.track.box_colour = colour_at(colours, m.detection) or c.track.box_colour
            prompted = not c.at_seq or m.iou < self._th.drift_iou
            c.track.anchor = None if prompted else c.track.colour  # confirmed, or set anew
            if not prompted:
                continue
            box = _box_at(boxes, m.detection)
            reseed.append(Reseed(m.id, box, float(scores[m.detection]), m.detection))
            c.track.last_box = box
            if c.track.hit_seq is None or c.track.hit_seq <= seq:
                c.track.hit_seq = seq
            if c.track.motion is not None:
                c.track.motion.update(box, seq)
        return reseed

    def _unseen(
        self, seq: int, cands: list[Candidate], matched: set[int]
    ) -> tuple[list[int], list[int]]:
        """Tracks not re-detected for ``max_unseen`` re-groundings: dormant, or ended where
        re-identification is off. Returns (ended, dormant)."""
        ended: list[int] = []
        dormant: list[int] = []
        for c in cands:
            t = c.track
            existed = t.first_seq is not None and t.first_seq <= seq
            if t.id in matched or t.manual or not existed or c.dormant:
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
        return ended, dormant

    def _candidates(self, seq: int, tracks_at_seq: Mapping[int, Observation]) -> list[Candidate]:
        cands: list[Candidate] = []
        for tid in sorted(self._tracks):
            t = self._tracks[tid]
            obs = tracks_at_seq.get(tid)
            dormant = t.dormant
            if obs is not None and obs.box is not None and not dormant:
                cands.append(Candidate(t, as_box(obs.box), at_seq=True))
            else:
                cands.append(Candidate(t, t.last_box, at_seq=False, dormant=dormant))
        return cands

    def _merge(
        self,
        seq: int,
        cands: list[Candidate],
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
        alive: list[Candidate],
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
