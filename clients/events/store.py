"""SQLite storage of events and review items (standard library ``sqlite3``, WAL mode).

One row per event (and per review item), written on every ``new``/``update``/``end`` (upsert
by id), so the table holds each event's latest state. Queries take every value as an SQL
parameter, never built into the text; bad filters (a limit outside 1..MAX_LIMIT, times that are
not non-negative integers, ``after`` > ``before``, over-long strings) are ``ValueError``.
Retention deletes ended rows older than ``retention_days`` and the oldest rows beyond
``max_events``. A write the database refuses (disk full, read-only, locked) is logged in one
line and kept in a bounded in-memory queue that the next write retries first: nothing already
stored is touched, nothing pending is lost unless the queue overflows (counted in ``dropped``).
Reopening the file carries on; rows of events still open when the service stopped are closed
by ``close_open`` at start.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
import time
from collections import deque
from pathlib import Path
from typing import cast

from clients.events.model import EventDict, EventMessage, EventType, Kind
from clients.events.snapshots import SnapshotFiles

log = logging.getLogger(__name__)

MAX_LIMIT = 1000
MAX_FILTER_CHARS = 200
MAX_NS = 2**63 - 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    camera TEXT NOT NULL,
    object_id INTEGER NOT NULL,
    label TEXT NOT NULL,
    start_ns INTEGER NOT NULL,
    end_ns INTEGER,
    top_score REAL NOT NULL,
    zones TEXT NOT NULL,
    body TEXT NOT NULL,
    updated_ns INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS events_time ON events (kind, camera, start_ns);
"""


def _filter_text(name: str, value: str | None) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > MAX_FILTER_CHARS:
        raise ValueError(f"{name}: expected a string of at most {MAX_FILTER_CHARS} characters")
    return value


def _filter_ns(name: str, value: int | None) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_NS:
        raise ValueError(f"{name}: expected an integer time in ns, 0 to {MAX_NS}")
    return value


def query_sql(
    columns: str,
    camera: str | None,
    label: str | None,
    zone: str | None,
    after: int | None,
    before: int | None,
    limit: int,
    kind: Kind,
) -> tuple[str, list[str | int]]:
    """The SELECT of ``columns`` of the events matching the filters, newest first, and its
    parameters (every value a parameter, never in the SQL text); ``ValueError`` for a bad one.
    ``after``/``before``: start time bounds in ns (inclusive/exclusive)."""
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise ValueError(f"limit: expected an integer from 1 to {MAX_LIMIT}")
    camera, label, zone = (
        _filter_text(n, v) for n, v in (("camera", camera), ("label", label), ("zone", zone))
    )
    after, before = _filter_ns("after", after), _filter_ns("before", before)
    if after is not None and before is not None and after > before:
        raise ValueError("after is later than before")
    sql = f"SELECT {columns} FROM events WHERE kind = ?"
    params: list[str | int] = [Kind(kind).value]
    if camera is not None:
        sql += " AND camera = ?"
        params.append(camera)
    if label is not None and Kind(kind) is Kind.REVIEW:  # any of the item's objects' labels
        sql += " AND EXISTS (SELECT 1 FROM json_each(events.body, '$.labels') WHERE value = ?)"
        params.append(label)
    elif label is not None:
        sql += " AND label = ?"
        params.append(label)
    if zone is not None:
        sql += " AND EXISTS (SELECT 1 FROM json_each(events.zones) WHERE value = ?)"
        params.append(zone)
    if after is not None:
        sql += " AND start_ns >= ?"
        params.append(after)
    if before is not None:
        sql += " AND start_ns < ?"
        params.append(before)
    return sql + " ORDER BY start_ns DESC, id LIMIT ?", [*params, limit]


class EventStore:
    """Events and review items in one SQLite file (see the module docstring)."""

    def __init__(
        self,
        path: str | Path,
        retention_days: float = 30.0,
        max_events: int = 100000,
        pending_limit: int = 10000,
        max_snapshot_mb: float = 1024.0,
    ) -> None:
        self.path = Path(path).expanduser()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.snapshots = SnapshotFiles(self.path.parent / "snapshots")
        self.max_snapshot_bytes = int(max_snapshot_mb * 2**20)
        self.retention_ns = int(retention_days * 86400e9)
        self.max_events = max_events
        self.pending: deque[tuple[str, EventMessage]] = deque()
        self.pending_limit = pending_limit
        self.dropped = 0
        self.write_errors = 0
        self.db = sqlite3.connect(str(self.path), timeout=5.0, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.executescript(_SCHEMA)

    def close(self) -> None:
        self.db.close()

    # ------------------------------------------------------------------ writes

    def write(self, msg: EventMessage) -> bool:
        """Store ``msg`` (after anything pending); False when the database refused (logged)."""
        if len(self.pending) >= self.pending_limit:
            self.pending.popleft()
            self.dropped += 1
        self.pending.append((msg.camera, msg))
        return self.flush()

    def flush(self) -> bool:
        try:
            self.db.execute("BEGIN")
            for _, msg in self.pending:
                self._upsert(msg)
            self.db.execute("COMMIT")
        except sqlite3.Error as e:
            self._rollback()
            self.write_errors += 1
            if self.write_errors <= 10 or self.write_errors % 1000 == 0:
                log.error(
                    "events database %s refused a write (%s): %d pending, kept in memory",
                    self.path,
                    e,
                    len(self.pending),
                )
            return False
        self.pending.clear()
        return True

    def _rollback(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self.db.execute("ROLLBACK")

    def _upsert(self, msg: EventMessage) -> None:
        ev = msg.event
        self.db.execute(
            "INSERT INTO events (id, kind, camera, object_id, label, start_ns, end_ns, top_score,"
            " zones, body, updated_ns) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT(id) DO UPDATE SET label=excluded.label, end_ns=excluded.end_ns,"
            " top_score=excluded.top_score, zones=excluded.zones, body=excluded.body,"
            " updated_ns=excluded.updated_ns",
            (
                ev["id"],
                msg.kind.value,
                msg.camera,
                ev["object_id"],
                ev["label"],
                ev["start_ns"],
                ev["end_ns"],
                ev["top_score"],
                json.dumps(ev["entered_zones"]),
                json.dumps(ev),
                time.time_ns(),
            ),
        )

    def close_open(self, end_ns: int | None = None) -> list[EventMessage]:
        """End rows left open by a stop (at ``end_ns``, default the wall time of their last
        write, which is within the pipeline's latency of the capture time of a live camera):
        returns their ``end`` messages (``before``: the state stored), for the service to
        publish, so that a subscriber that saw ``new`` sees ``end``."""
        try:
            with self.db:
                rows = self.db.execute(
                    "SELECT camera, kind, body, COALESCE(?, updated_ns) FROM events"
                    " WHERE end_ns IS NULL ORDER BY start_ns, id",
                    (end_ns,),
                ).fetchall()
                self.db.execute(
                    "UPDATE events SET end_ns = COALESCE(?, updated_ns), body = json_set(body,"
                    " '$.end_ns', COALESCE(?, updated_ns)) WHERE end_ns IS NULL",
                    (end_ns, end_ns),
                )
        except sqlite3.Error as e:
            log.error("events database %s: cannot close open events (%s)", self.path, e)
            return []
        out = []
        for camera, kind, body, end in rows:
            try:
                before = json.loads(body)
                event = cast(EventDict, {**before, "end_ns": end})
                out.append(EventMessage(camera, EventType.END, Kind(kind), event, before))
            except (ValueError, TypeError):  # a row this version cannot read: closed, not sent
                continue
        return out

    def retain(self, now_ns: int | None = None) -> int:
        """Apply retention (age, then row count, then the snapshot folder's size); returns
        rows deleted. Deleted rows take their snapshot files with them; files pruned for size
        (the oldest ended events' first) leave their rows with ``has_snapshot`` false."""
        now_ns = time.time_ns() if now_ns is None else now_ns
        try:
            a = self.db.execute(
                "DELETE FROM events WHERE end_ns IS NOT NULL AND end_ns < ? RETURNING id",
                (now_ns - self.retention_ns,),
            ).fetchall()
            b = self.db.execute(
                "DELETE FROM events WHERE id IN (SELECT id FROM events ORDER BY start_ns DESC"
                " LIMIT -1 OFFSET ?) RETURNING id",
                (self.max_events,),
            ).fetchall()
        except sqlite3.Error as e:
            log.error("events database %s: retention failed (%s)", self.path, e)
            return 0
        for (eid,) in [*a, *b]:
            self.snapshots.delete(eid)
        self.prune_snapshots()
        return len(a) + len(b)

    def prune_snapshots(self) -> None:
        """Keep the snapshot folder within ``max_snapshot_mb`` (oldest ended events first)."""
        try:
            ended = [
                r[0]
                for r in self.db.execute(
                    "SELECT id FROM events WHERE end_ns IS NOT NULL ORDER BY end_ns, id"
                )
            ]
            known = {r[0] for r in self.db.execute("SELECT id FROM events")}
        except sqlite3.Error as e:
            log.error("events database %s: snapshot retention failed (%s)", self.path, e)
            return
        pending = {m.event["id"] for _, m in self.pending}
        gone = self.snapshots.prune(
            self.max_snapshot_bytes, ended, lambda eid: eid in known or eid in pending
        )
        if not gone:
            return
        try:
            self.db.executemany(
                "UPDATE events SET body = json_set(body, '$.has_snapshot', json('false'))"
                " WHERE id = ?",
                [(eid,) for eid in gone],
            )
        except sqlite3.Error as e:
            log.error("events database %s: cannot mark pruned snapshots (%s)", self.path, e)

    def snapshot_jpeg(self, event_id: str) -> bytes | None:
        """The event's snapshot JPEG, or None (no snapshot, or not a valid event id)."""
        return self.snapshots.read_jpeg(event_id)

    # ------------------------------------------------------------------ queries

    def query(
        self,
        camera: str | None = None,
        label: str | None = None,
        zone: str | None = None,
        after: int | None = None,
        before: int | None = None,
        limit: int = 100,
        kind: Kind = Kind.OBJECT,
    ) -> list[dict[str, object]]:
        """Latest state of matching events, newest first. ``after``/``before``: start time
        bounds in ns (inclusive/exclusive)."""
        sql, params = query_sql("body", camera, label, zone, after, before, limit, kind)
        return [json.loads(row[0]) for row in self.db.execute(sql, params)]

    def count(self) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM events").fetchone()[0])
