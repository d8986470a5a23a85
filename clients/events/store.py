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
from typing import Any

from clients.events.model import EventMessage, Kind

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


class EventStore:
    """Events and review items in one SQLite file (see the module docstring)."""

    def __init__(
        self,
        path: str | Path,
        retention_days: float = 30.0,
        max_events: int = 100000,
        pending_limit: int = 10000,
    ) -> None:
        self.path = Path(path).expanduser()
        self.path.parent.mkdir(parents=True, exist_ok=True)
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

    def close_open(self, end_ns: int | None = None) -> int:
        """End rows left open by a stop (at ``end_ns``, default the wall time of their last
        write): returns how many."""
        try:
            cur = self.db.execute(
                "UPDATE events SET end_ns = COALESCE(?, updated_ns),"
                " body = json_set(body, '$.end_ns', COALESCE(?, updated_ns)) WHERE end_ns IS NULL",
                (end_ns, end_ns),
            )
        except sqlite3.Error as e:
            log.error("events database %s: cannot close open events (%s)", self.path, e)
            return 0
        return cur.rowcount

    def retain(self, now_ns: int | None = None) -> int:
        """Apply retention (age, then row count); returns rows deleted."""
        now_ns = time.time_ns() if now_ns is None else now_ns
        try:
            a = self.db.execute(
                "DELETE FROM events WHERE end_ns IS NOT NULL AND end_ns < ?",
                (now_ns - self.retention_ns,),
            ).rowcount
            b = self.db.execute(
                "DELETE FROM events WHERE id IN (SELECT id FROM events ORDER BY start_ns DESC"
                " LIMIT -1 OFFSET ?)",
                (self.max_events,),
            ).rowcount
        except sqlite3.Error as e:
            log.error("events database %s: retention failed (%s)", self.path, e)
            return 0
        return a + b

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
    ) -> list[dict[str, Any]]:
        """Latest state of matching events, newest first. ``after``/``before``: start time
        bounds in ns (inclusive/exclusive)."""
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
            raise ValueError(f"limit: expected an integer from 1 to {MAX_LIMIT}")
        camera, label, zone = (
            _filter_text(n, v) for n, v in (("camera", camera), ("label", label), ("zone", zone))
        )
        after, before = _filter_ns("after", after), _filter_ns("before", before)
        if after is not None and before is not None and after > before:
            raise ValueError("after is later than before")
        sql = "SELECT body FROM events WHERE kind = ?"
        params: list[Any] = [Kind(kind).value]
        if camera is not None:
            sql += " AND camera = ?"
            params.append(camera)
        if label is not None:
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
        sql += " ORDER BY start_ns DESC, id LIMIT ?"
        params.append(limit)
        return [json.loads(row[0]) for row in self.db.execute(sql, params)]

    def count(self) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM events").fetchone()[0])
