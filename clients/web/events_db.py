"""Read-only queries of the events database for the web server: the events (as
``EventStore.query`` filters them, with their camera and kind) and the counts.

The file is opened read-only (sqlite ``mode=ro`` URI), one connection per request in an executor
thread, so the web server can never write to it or hold a lock the events service waits on.
Every value is an SQL parameter; filters are checked by the store's own rules first. A database
that does not exist yet (the events service has not run) reads as empty.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import TypeAlias, TypedDict

from clients.events.model import Kind
from clients.events.store import _filter_ns, _filter_text, query_sql
from clients.jsontypes import JsonObject

BUSY_TIMEOUT_S = 2.0


@contextlib.contextmanager
def _connect(path: Path) -> Iterator[sqlite3.Connection | None]:
    if not path.is_file():
        yield None
        return
    db = sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True, timeout=BUSY_TIMEOUT_S)
    try:
        yield db
    finally:
        db.close()


def _has_table(db: sqlite3.Connection) -> bool:
    row = db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'events'")
    return row.fetchone() is not None


CountTree: TypeAlias = dict[str, "int | CountTree"]  # counts, nested by the keys named


class EventFilters(TypedDict):
    """``query_events``'s filters, as the events API reads them from a request."""

    camera: str | None
    label: str | None
    zone: str | None
    after: int | None
    before: int | None
    limit: int
    kind: Kind


def query_events(
    path: Path,
    camera: str | None = None,
    label: str | None = None,
    zone: str | None = None,
    after: int | None = None,
    before: int | None = None,
    limit: int = 100,
    kind: Kind = Kind.OBJECT,
) -> list[JsonObject]:
    """Latest state of matching events, newest first, each with ``camera`` and ``kind``
    (the filters as ``EventStore.query``: ``ValueError`` when bad; ``sqlite3.Error`` when the
    file cannot be read)."""
    sql, params = query_sql("camera, kind, body", camera, label, zone, after, before, limit, kind)
    with _connect(path) as db:
        if db is None or not _has_table(db):
            return []
        out = []
        for cam, knd, body in db.execute(sql, params):
            ev = json.loads(body)
            if isinstance(ev, dict):
                out.append({"camera": cam, "kind": knd, **ev})
        return out


def _bump(tree: CountTree, keys: list[str], n: int) -> None:
    for k in keys[:-1]:
        sub = tree.setdefault(k, {})
        assert isinstance(sub, dict), f"count {k!r} is a number, not a tree"
        tree = sub
    old = tree.get(keys[-1], 0)
    assert isinstance(old, int), f"count {keys[-1]!r} is a tree, not a number"
    tree[keys[-1]] = old + n


def query_counts(
    path: Path, camera: str | None = None, after: int | None = None
) -> dict[str, dict[str, CountTree]]:
    """Counts per camera, as the events service's ``counts()`` names them: ``labels`` (objects
    active now, per label), ``zones`` (objects in each zone now, per label), ``lines``
    (crossings per line, direction and label) and ``entered`` (objects that entered each zone,
    per label); crossings and entries of events that started at ``after`` (ns) or later."""
    camera = _filter_text("camera", camera)
    after = _filter_ns("after", after) or 0
    cam_sql, cam_params = (" AND camera = ?", [camera]) if camera is not None else ("", [])
    out: dict[str, dict[str, CountTree]] = {}

    def cam(name: str) -> dict[str, CountTree]:
        return out.setdefault(name, {"labels": {}, "zones": {}, "lines": {}, "entered": {}})

    with _connect(path) as db:
        if db is None or not _has_table(db):
            return out
        active = db.execute(
            "SELECT camera, label, json_extract(body, '$.zones') FROM events"
            " WHERE kind = 'object' AND end_ns IS NULL" + cam_sql,
            cam_params,
        )
        for name, label, zones in active:
            _bump(cam(name)["labels"], [label], 1)
            for z in json.loads(zones or "[]"):
                _bump(cam(name)["zones"], [str(z), label], 1)
        entered = db.execute(
            "SELECT camera, z.value, label, COUNT(*) FROM events, json_each(events.zones) z"
            " WHERE kind = 'object' AND start_ns >= ?" + cam_sql + " GROUP BY 1, 2, 3",
            [after, *cam_params],
        )
        for name, zone, label, n in entered:
            _bump(cam(name)["entered"], [str(zone), label], n)
        lines = db.execute(
            "SELECT camera, json_extract(l.value, '$.line'), json_extract(l.value, '$.direction'),"
            " label, COUNT(*) FROM events, json_each(events.body, '$.lines') l"
            " WHERE kind = 'object' AND start_ns >= ?" + cam_sql + " GROUP BY 1, 2, 3, 4",
            [after, *cam_params],
        )
        for name, line, direction, label, n in lines:
            _bump(cam(name)["lines"], [str(line), str(direction), label], n)
    return out
