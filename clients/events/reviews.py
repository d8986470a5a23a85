"""Review items of one camera: one per activity (objects whose events overlap in time are
grouped), so one person walking past is one alert, not one per update."""

from __future__ import annotations

from collections.abc import Callable

from clients.events.model import EventBody, EventDict, EventMessage, EventType, Kind


class ReviewGroup:
    """The open review item of a camera: opened by the first active object, joined by every
    object that becomes active while it is open, ended by ``tick`` a gap (capture time) after
    its last object's event ended, unless an object became active meanwhile."""

    def __init__(self, camera: str, new_id: Callable[[], str]) -> None:
        self.camera = camera
        self._new_id = new_id
        self._body: EventBody | None = None
        self._members: set[int] = set()
        self._published: EventDict | None = None
        self._left_ns: int | None = None  # when its last object left (the item is pending)

    def _emit(self, kind: EventType) -> list[EventMessage]:
        assert self._body is not None
        body = self._body.as_dict()
        msg = EventMessage(self.camera, kind, Kind.REVIEW, body, self._published)
        self._published = body
        return [msg]

    def join(self, ev: EventBody) -> list[EventMessage]:
        self._left_ns = None
        if self._body is None:
            self._body = EventBody(
                self._new_id(), ev.object_id, ev.label, ev.start_ns, object_ids=[], labels=[]
            )
            self._members = set()
            kind = EventType.NEW
        else:
            kind = EventType.UPDATE
        b = self._body
        self._members.add(ev.object_id)
        assert b.object_ids is not None and b.labels is not None
        b.object_ids.append(ev.object_id)
        if ev.label not in b.labels:
            b.labels.append(ev.label)
        self._merge(ev)
        return self._emit(kind)

    def _merge(self, ev: EventBody) -> bool:
        b = self._body
        assert b is not None
        before = (list(b.entered_zones), len(b.lines), b.top_score)
        for z in ev.entered_zones:
            if z not in b.entered_zones:
                b.entered_zones.append(z)
        known = {(c.line, c.direction, c.t_ns) for c in b.lines}
        b.lines += [c for c in ev.lines if (c.line, c.direction, c.t_ns) not in known]
        b.top_score = max(b.top_score, ev.top_score)
        b.zones = sorted(set(b.entered_zones))
        return (list(b.entered_zones), len(b.lines), b.top_score) != before

    def update(self, ev: EventBody) -> list[EventMessage]:
        if self._body is None or ev.object_id not in self._members:
            return []
        return self._emit(EventType.UPDATE) if self._merge(ev) else []

    def leave(self, object_id: int, t_ns: int) -> None:
        """An object's event ended; the last one's leaves the item pending (``tick`` or
        ``close`` ends it)."""
        if self._body is None or object_id not in self._members:
            return
        self._members.discard(object_id)
        if not self._members:
            self._left_ns = t_ns

    def tick(self, t_ns: int, gap_ns: int) -> list[EventMessage]:
        """Capture time ``t_ns`` reached: a pending item whose last object left ``gap_ns`` ago
        or more ends (0: on the message its last object's event ended)."""
        if self._left_ns is None or t_ns - self._left_ns < gap_ns:
            return []
        return self._end()

    def close(self) -> list[EventMessage]:
        """End a pending item now (the engine restarted, the service stops)."""
        return [] if self._left_ns is None else self._end()

    def _end(self) -> list[EventMessage]:
        assert self._body is not None and self._left_ns is not None
        self._body.end_ns = self._left_ns
        out = self._emit(EventType.END)
        self._body, self._published, self._left_ns = None, None, None
        return out
