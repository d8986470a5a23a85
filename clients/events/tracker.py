"""The event logic of one camera, pure (no I/O): tracks messages in, events messages out.

Per object (``ObjectState``): PROBATION while seen fewer than ``probation_frames`` frames (a
ghost that goes away first raises nothing), then ACTIVE (``new``), then ENDED (``end``) when it is
missing from ``end_after`` consecutive tracks messages of the camera, or at once when the
engine's ``epoch`` changes (or ``seq`` goes back: a restart). An object with state ``lost`` in a
tracks message counts as missing. ``update`` when a zone is entered or left, a line is
crossed, the label changes or the top score rises by ``score_step``.

Zones: an object's presence in a zone is judged per frame (share of its mask inside the polygon
>= ``min_share``, or its box's bottom centre inside); presence must differ from the current state
for ``inertia`` consecutive frames of the object before the state flips (a frame without the
object resets that count); after a flip to inside, the object counts as entered once it has
stayed ``loitering`` seconds. Lines: an object crosses when its reference point (its mask's
centre, its box's centre or bottom centre) moves across the segment between two consecutive
messages that both show it and stays across for ``inertia`` messages in all (the crossing's
time is the first of them); one that goes back sooner never crossed. A gap of up to ``max_gap`` messages without the object (a
mask lost for a moment) does not forget its side when it moved at most one box side per message
(so an object that leaves the view and comes back elsewhere crosses nothing). Towards
``in_side`` is "in", away "out". Review items: one per activity on the camera, from the first
active object until no active object is left.
"""

from __future__ import annotations

import functools
import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from clients.bench.evaluate import MAX_FRAME_PIXELS
from clients.events.config import CameraEventsConfig, EventsConfig, ZoneConfig
from clients.events.geometry import Point, point_in_polygon, polygon_mask, segments_cross, side
from clients.events.masks import decode_rle
from clients.events.model import (
    CameraCounts,
    Crossing,
    Direction,
    EventBody,
    EventDict,
    EventMessage,
    EventType,
    Kind,
    ObjectState,
)
from clients.events.reviews import ReviewGroup
from stream.wire import TrackedObject, TracksMessage, confidence_of

log = logging.getLogger(__name__)

MaskOnce = Callable[[], np.ndarray | None]  # an object's mask, decoded on the first call


@dataclass
class _LineState:
    settled: Point  # the reference point when its side of the line was last settled
    streak: int = 0  # consecutive frames across the line from ``settled``
    since_ns: int = 0  # the first of those frames


@dataclass
class _ZoneState:
    inside: bool = False  # after inertia
    streak: int = 0  # consecutive frames whose presence differs from ``inside``
    since_ns: int = 0  # when ``inside`` became True
    counted: bool = False  # inside and past loitering: listed in the event's zones


@dataclass
class _Track:
    object_id: int
    label: str
    start_ns: int
    event_id: str
    state: ObjectState = ObjectState.PROBATION
    seen: int = 0
    missing: int = 0
    last_ns: int = 0
    last_index: int = -1  # index of the camera's last message that showed the object
    last_box: Sequence[float] | None = None  # its box in that message
    top_score: float = 0.0
    reported_score: float = 0.0
    lines: dict[str, _LineState] = field(default_factory=dict)
    zones: dict[str, _ZoneState] = field(default_factory=dict)
    entered: list[str] = field(default_factory=list)
    crossings: list[Crossing] = field(default_factory=list)
    published: EventDict | None = None
    has_snapshot: bool = False

    def body(self) -> EventBody:
        return EventBody(
            id=self.event_id,
            object_id=self.object_id,
            label=self.label,
            start_ns=self.start_ns,
            end_ns=self.last_ns if self.state is ObjectState.ENDED else None,
            zones=sorted(z for z, s in self.zones.items() if s.counted),
            entered_zones=list(self.entered),
            lines=list(self.crossings),
            top_score=self.top_score,
            has_snapshot=self.has_snapshot,
        )


def _labels_ok(labels: list[str] | None, label: str) -> bool:
    return labels is None or label.lower() in (x.lower() for x in labels)


class CameraEvents:
    """Event logic of one camera (see the module docstring). ``process`` returns the events
    messages a tracks message causes, in order; ``counts`` the live counts."""

    def __init__(
        self,
        camera: str,
        cfg: EventsConfig,
        new_id: Callable[[], str] = lambda: uuid.uuid4().hex,
    ) -> None:
        self.camera = camera
        self.cfg = cfg
        self.geometry = cfg.cameras.get(camera, CameraEventsConfig())
        self._new_id = new_id
        self._tracks: dict[int, _Track] = {}
        self._index = 0  # messages processed
        self._epoch: str | None = None
        self._last_seq: int | None = None
        self._size: tuple[int, int] | None = None
        self._zone_masks: dict[str, np.ndarray] = {}
        self._zone_points: dict[str, list[Point]] = {}
        self._line_points: dict[str, list[Point]] = {}
        self.reviews = ReviewGroup(camera, new_id)
        self.line_counts: dict[tuple[str, str, str], int] = {}  # (line, direction, label) -> n
        self.bad_masks = 0
        self.rejected = 0  # tracks messages of a frame larger than any source's

    # ------------------------------------------------------------------ geometry per frame size

    def _frame(self, width: int, height: int) -> None:
        if self._size == (width, height):
            return
        self._size = (width, height)
        self._zone_points = {
            n: z.pixel_points(width, height) for n, z in self.geometry.zones.items()
        }
        self._zone_masks = {
            n: polygon_mask(p, height, width)
            for n, p in self._zone_points.items()
            if self.geometry.zones[n].presence == "mask"
        }
        self._line_points = {
            n: ln.pixel_points(width, height) for n, ln in self.geometry.lines.items()
        }

    # ------------------------------------------------------------------ messages

    def process(self, msg: TracksMessage) -> list[EventMessage]:
        h = msg.header
        if h.width * h.height > MAX_FRAME_PIXELS:
            self.rejected += 1
            if self.rejected <= 10 or self.rejected % 1000 == 0:
                log.warning(
                    "camera %s: rejected tracks message of a %dx%d frame (over %d pixels), "
                    "%d rejected so far",
                    self.camera,
                    h.width,
                    h.height,
                    MAX_FRAME_PIXELS,
                    self.rejected,
                )
            return []
        out: list[EventMessage] = []
        restarted = (
            h.epoch is not None and self._epoch is not None and h.epoch != self._epoch
        ) or (self._last_seq is not None and h.seq <= self._last_seq)
        if restarted:
            log.info(
                "camera %s: engine restarted (epoch %s, seq %d): open events end",
                self.camera,
                h.epoch,
                h.seq,
            )
            out += self.end_all()
        self._epoch = h.epoch if h.epoch is not None else self._epoch
        self._last_seq = h.seq
        self._frame(h.width, h.height)
        t = h.t_capture_ns
        present: set[int] = set()
        for obj in h.objects:
            if obj.state == "lost" or obj.id in present:
                continue
            present.add(obj.id)
            out += self._observe(obj, t, h.width, h.height)
        for oid, tr in list(self._tracks.items()):
            if oid in present:
                continue
            tr.missing += 1
            for z in tr.zones.values():
                z.streak = 0
            if tr.missing >= self.cfg.end_after:
                out += self._end(tr)
        out += self.reviews.tick(t, int(self.cfg.review_gap_s * 1e9))
        self._index += 1
        return out

    def set_geometry(self, cfg: EventsConfig) -> None:
        """Take the zones and lines of ``cfg`` for this camera. An object's state in a zone or
        line that is gone or changed is dropped (judged afresh from the next frame)."""
        new = cfg.cameras.get(self.camera, CameraEventsConfig())
        old = self.geometry
        self.cfg, self.geometry = cfg, new
        self._size = None  # zone masks and points are recomputed for the next frame
        for tr in self._tracks.values():
            for z in list(tr.zones):
                if z not in new.zones or new.zones[z] != old.zones.get(z):
                    del tr.zones[z]
            for ln in list(tr.lines):
                if ln not in new.lines or new.lines[ln] != old.lines.get(ln):
                    del tr.lines[ln]

    def active_events(self) -> dict[int, str]:
        """Object id -> event id of the objects whose event is open (past probation)."""
        return {
            oid: tr.event_id for oid, tr in self._tracks.items() if tr.state is ObjectState.ACTIVE
        }

    def mark_snapshot(self, event_id: str) -> list[EventMessage]:
        """The event's first snapshot was written: an ``update`` with ``has_snapshot`` true."""
        for tr in self._tracks.values():
            if tr.event_id == event_id and tr.state is ObjectState.ACTIVE and not tr.has_snapshot:
                tr.has_snapshot = True
                return [self._emit(tr, EventType.UPDATE)]
        return []

    def end_all(self) -> list[EventMessage]:
        out: list[EventMessage] = []
        for tr in list(self._tracks.values()):
            out += self._end(tr)
        return out + self.reviews.close()

    def _end(self, tr: _Track) -> list[EventMessage]:
        del self._tracks[tr.object_id]
        if tr.state is not ObjectState.ACTIVE:
            return []  # a ghost: never published
        tr.state = ObjectState.ENDED
        self.reviews.leave(tr.object_id, tr.last_ns)
        return [self._emit(tr, EventType.END)]

    def _emit(self, tr: _Track, kind: EventType) -> EventMessage:
        body = tr.body().as_dict()
        msg = EventMessage(self.camera, kind, Kind.OBJECT, body, tr.published)
        tr.published = body
        tr.reported_score = tr.top_score
        return msg

    # ------------------------------------------------------------------ one object

    def _observe(self, obj: TrackedObject, t: int, width: int, height: int) -> list[EventMessage]:
        tr = self._tracks.get(obj.id)
        if tr is None:
            tr = _Track(obj.id, obj.label, t, self._new_id())
            self._tracks[obj.id] = tr
        changed = False
        if obj.label != tr.label:
            tr.label, changed = obj.label, True
        score = obj.confidence if obj.confidence is not None else confidence_of(obj.score)
        tr.top_score = max(tr.top_score, score)
        gap = self._index - tr.last_index - 1 if tr.last_index >= 0 else None
        last_box, tr.last_box = tr.last_box, obj.box
        tr.seen += 1
        tr.missing = 0
        tr.last_ns = t
        tr.last_index = self._index
        mask = functools.cache(lambda: self._mask(obj, width, height))  # decoded once, if asked
        changed |= self._zones(tr, obj, t, mask)
        changed |= self._lines(tr, obj, t, _followed(gap, last_box, obj.box), mask)
        if tr.state is ObjectState.PROBATION:
            if tr.seen < self.cfg.probation_frames:
                return []
            tr.state = ObjectState.ACTIVE
            for c in tr.crossings:  # crossed during probation: counted once it is real
                self._count(c.line, c.direction, tr.label)
            out = [self._emit(tr, EventType.NEW)]
            out += self.reviews.join(tr.body())
            return out
        if changed or tr.top_score - tr.reported_score >= max(self.cfg.score_step, 1e-9):
            out = [self._emit(tr, EventType.UPDATE)]
            out += self.reviews.update(tr.body())
            return out
        return []

    def _mask(self, obj: TrackedObject, width: int, height: int) -> np.ndarray | None:
        """The object's mask, or None (logged, counted in ``bad_masks``) when malformed."""
        try:
            return decode_rle(obj.mask.counts, height, width)
        except ValueError as e:
            self.bad_masks += 1
            if self.bad_masks <= 10 or self.bad_masks % 1000 == 0:
                log.warning(
                    "camera %s: object %d: bad mask (%s), %d so far",
                    self.camera,
                    obj.id,
                    e,
                    self.bad_masks,
                )
            return None

    def _presence(
        self, name: str, zone: ZoneConfig, obj: TrackedObject, mask: np.ndarray | None
    ) -> bool:
        if zone.presence == "bottom_center":
            x1, _, x2, y2 = obj.box
            return point_in_polygon(self._zone_points[name], ((x1 + x2) / 2, y2))
        area = 0 if mask is None else int(np.count_nonzero(mask))
        if mask is None or area == 0:
            return False
        inside = int(np.count_nonzero(mask & self._zone_masks[name]))
        return inside >= zone.min_share * area

    def _zones(self, tr: _Track, obj: TrackedObject, t: int, mask: MaskOnce) -> bool:
        changed = False
        for name, zone in self.geometry.zones.items():
            if not _labels_ok(zone.labels, obj.label):
                continue
            st = tr.zones.setdefault(name, _ZoneState())
            p = self._presence(name, zone, obj, mask() if zone.presence == "mask" else None)
            st.streak = st.streak + 1 if p != st.inside else 0
            if st.streak >= zone.inertia:
                st.inside, st.streak, st.since_ns = p, 0, t
                if not p and st.counted:
                    st.counted, changed = False, True
            if st.inside and not st.counted and t - st.since_ns >= zone.loitering * 1e9:
                st.counted, changed = True, True
                if name not in tr.entered:
                    tr.entered.append(name)
        return changed

    def _lines(
        self, tr: _Track, obj: TrackedObject, t: int, gap: int | None, mask: MaskOnce
    ) -> bool:
        """``gap``: messages without the object since it was last seen (None: first seen, or
        it jumped too far to be followed)."""
        changed = False
        x1, y1, x2, y2 = obj.box
        for name, line in self.geometry.lines.items():
            if not _labels_ok(line.labels, obj.label):
                continue
            ref: Point = ((x1 + x2) / 2, y2 if line.anchor == "bottom_center" else (y1 + y2) / 2)
            if line.anchor == "mask_center":
                ref = _mask_center(mask()) or ref
            st = tr.lines.get(name)
            if st is None or gap is None or gap > line.max_gap:
                tr.lines[name] = _LineState(ref)
                continue
            direction = _crossing(self._line_points[name], st.settled, ref)
            if direction is None:  # on the settled side (back again: the crossing never was)
                st.settled, st.streak = ref, 0
                continue
            st.streak += 1
            if st.streak == 1:
                st.since_ns = t
            if st.streak >= line.inertia:
                tr.crossings.append(Crossing(name, direction, st.since_ns))
                if tr.state is ObjectState.ACTIVE:
                    self._count(name, direction, obj.label)
                st.settled, st.streak = ref, 0
                changed = True
        return changed

    # ------------------------------------------------------------------ counts

    def _count(self, line: str, direction: Direction, label: str) -> None:
        key = (line, direction.value, label)
        self.line_counts[key] = self.line_counts.get(key, 0) + 1

    def counts(self) -> CameraCounts:
        """Live counts: active objects per label, per zone and label (objects counted in the
        zone), and line crossings since start (of objects past probation: a ghost's do not
        count) per line, direction and label."""
        labels: dict[str, int] = {}
        zones: dict[str, dict[str, int]] = {}
        for tr in self._tracks.values():
            if tr.state is not ObjectState.ACTIVE:
                continue
            labels[tr.label] = labels.get(tr.label, 0) + 1
            for z, st in tr.zones.items():
                if st.counted:
                    zl = zones.setdefault(z, {})
                    zl[tr.label] = zl.get(tr.label, 0) + 1
        lines: dict[str, dict[str, dict[str, int]]] = {}
        for (line, d, label), n in self.line_counts.items():
            lines.setdefault(line, {}).setdefault(d, {})[label] = n
        return {"camera": self.camera, "labels": labels, "zones": zones, "lines": lines}


def _followed(
    gap: int | None,
    before: Sequence[float] | None,
    box: Sequence[float],
) -> int | None:
    """``gap`` when the object can be followed over it: seen before, and (after a gap) its box
    centre moved at most one box side (the larger of the two boxes') per message; else None."""
    if gap is None or before is None:
        return None
    if gap == 0:
        return 0
    side_px = max(box[2] - box[0], box[3] - box[1], before[2] - before[0], before[3] - before[1])
    dx = (box[0] + box[2] - before[0] - before[2]) / 2
    dy = (box[1] + box[3] - before[1] - before[3]) / 2
    return gap if (dx * dx + dy * dy) ** 0.5 <= (gap + 1) * side_px else None


def _mask_center(mask: np.ndarray | None) -> Point | None:
    """The mean of a mask's pixel centres (x + 0.5, y + 0.5), or None when it is empty."""
    if mask is None:
        return None
    ys, xs = np.nonzero(mask)
    if xs.size == 0:
        return None
    return (float(xs.mean()) + 0.5, float(ys.mean()) + 0.5)


def _crossing(line: list[Point], prev: Point, cur: Point) -> Direction | None:
    a, b, inner = line
    s_in = side(a, b, inner)
    was_in, is_in = side(a, b, prev) == s_in, side(a, b, cur) == s_in
    if was_in == is_in or not segments_cross(prev, cur, a, b):
        return None
    return Direction.IN if is_in else Direction.OUT
