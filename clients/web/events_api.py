"""Routes of the events layer (CONTRACT v1.2 "HTTP"), behind the same token rules and limits as
every other route of the web server:

- ``GET /api/events?camera=&label=&zone=&after=&before=&limit=&kind=``: a JSON list of events
  (latest state of each, with its ``camera``, ``kind``, and ``snapshot``/``mask`` URLs when the
  files exist), newest first. ``limit``: a whole number >= 1 (default 100), clamped to 1000 (the
  limit applied is in the ``X-Promptcam-Limit`` header); ``after``/``before``: start time bounds,
  ns since 1970 or ISO 8601 with a time zone; ``kind``: ``object`` (default) or ``review``.
- ``GET /api/events/<id>/snapshot.jpg`` and ``/mask.png``: the event's best snapshot and its
  mask, ``<folder of events.database>/snapshots/<id>.jpg`` and ``.png`` (written by the events
  service); 404 when absent. An id is 1-64 letters, digits, ``_`` or ``-``: no path escapes.
- ``GET /api/counts?camera=&after=``: per camera, objects active now per label, per zone and
  label, line crossings per line, direction and label, and zone entries (events_db.py).
- ``GET``/``PUT /api/cameras/<camera>/zones``: the camera's zones and lines
  (``{"zones": {...}, "lines": {...}}`` as in the config's ``events.cameras.<camera>``), validated
  by ``clients.events.config``; saved to ``zones.json`` beside the database, which the events
  service reloads when it changes (clients/events/zones_file.py).

A bad value is a 400 with one line naming it; a database that cannot be read is a 503.
The database is only ever opened read-only.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import sqlite3
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TypeVar

from aiohttp import web

from clients.events.config import CameraEventsConfig, EventsConfig
from clients.events.model import Kind
from clients.events.store import MAX_LIMIT, MAX_NS
from clients.events.zones_file import (
    load_zones,
    parse_camera,
    save_camera,
    snapshots_dir,
    zones_path,
)
from clients.jsontypes import JsonObject
from clients.web.context import STATE, WebState, read_json
from clients.web.events_db import EventFilters, query_counts, query_events
from stream.errors import PromptError
from stream.prompts import normalize_prompt

EVENT_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
DEFAULT_LIMIT = 100
MAX_LIMIT_DIGITS = 18
MAX_FILTER_CHARS = 200
FILES = {"snapshot.jpg": (".jpg", "image/jpeg"), "mask.png": (".png", "image/png")}
ZONES_LOCK = web.AppKey("zones_lock", asyncio.Lock)
T = TypeVar("T")


def _database(st: WebState) -> Path:
    return Path(st.cfg.events.database).expanduser()


async def _off_loop(fn: Callable[..., T], *args: object) -> T:
    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


# --------------------------------------------------------------------------- query values


def _text(request: web.Request, name: str) -> str | None:
    value = request.query.get(name)
    if value is None or value == "":
        return None
    if len(value) > MAX_FILTER_CHARS:
        raise web.HTTPBadRequest(text=f"{name}: longer than {MAX_FILTER_CHARS} characters")
    if not value.isprintable():
        raise web.HTTPBadRequest(text=f"{name}: contains control characters")
    return value


def parse_time(name: str, raw: str | None) -> int | None:
    """ns since 1970 (digits) or an ISO 8601 time with a time zone; ``ValueError`` otherwise."""
    if raw is None or raw == "":
        return None
    bad = f"{name}: expected ns since 1970 or an ISO 8601 time with a time zone, not {raw[:40]!r}"
    if raw.isascii() and raw.isdigit():
        if len(raw) > 19 or int(raw) > MAX_NS:
            raise ValueError(bad)
        return int(raw)
    if len(raw) > 40 or not raw.isascii():
        raise ValueError(bad)
    try:
        t = datetime.fromisoformat(raw)
    except ValueError:
        raise ValueError(bad) from None
    if t.tzinfo is None:
        raise ValueError(bad)
    ns = int(t.timestamp()) * 1_000_000_000 + t.microsecond * 1000
    if not 0 <= ns <= MAX_NS:
        raise ValueError(bad)
    return ns


def parse_limit(raw: str | None) -> int:
    """A whole number >= 1, clamped to ``MAX_LIMIT``; ``ValueError`` otherwise."""
    if raw is None or raw == "":
        return DEFAULT_LIMIT
    if not (raw.isascii() and raw.isdigit()) or len(raw) > MAX_LIMIT_DIGITS or int(raw) < 1:
        raise ValueError(f"limit: expected a whole number from 1 (at most {MAX_LIMIT} are sent)")
    return min(int(raw), MAX_LIMIT)


def _times(request: web.Request) -> tuple[int | None, int | None]:
    try:
        return (
            parse_time("after", request.query.get("after")),
            parse_time("before", request.query.get("before")),
        )
    except ValueError as e:
        raise web.HTTPBadRequest(text=str(e)) from None


# --------------------------------------------------------------------------- events, counts


def _with_files(ev: JsonObject, folder: Path) -> JsonObject:
    eid = ev.get("id")
    ok = isinstance(eid, str) and EVENT_ID_RE.match(eid) is not None
    for key, name in (("snapshot", "snapshot.jpg"), ("mask", "mask.png")):
        present = ok and (folder / f"{eid}{FILES[name][0]}").is_file()
        ev[key] = f"/api/events/{eid}/{name}" if present else None
    return ev


def _events(path: Path, filters: EventFilters) -> list[JsonObject]:
    folder = snapshots_dir(path)
    return [_with_files(ev, folder) for ev in query_events(path, **filters)]


async def api_events(request: web.Request) -> web.Response:
    st = request.app[STATE]
    after, before = _times(request)
    try:
        limit = parse_limit(request.query.get("limit"))
        kind = Kind(request.query.get("kind") or "object")
    except ValueError as e:
        msg = str(e) if str(e).startswith("limit") else "kind: expected 'object' or 'review'"
        raise web.HTTPBadRequest(text=msg) from None
    filters: EventFilters = {
        "camera": _text(request, "camera"),
        "label": _text(request, "label"),
        "zone": _text(request, "zone"),
        "after": after,
        "before": before,
        "limit": limit,
        "kind": kind,
    }
    try:
        events = await _off_loop(_events, _database(st), filters)
    except ValueError as e:
        raise web.HTTPBadRequest(text=str(e)) from None
    except sqlite3.Error as e:
        raise web.HTTPServiceUnavailable(text=f"events database cannot be read: {e}") from None
    return web.json_response(events, headers={"X-Promptcam-Limit": str(limit)})


async def api_event_file(request: web.Request) -> web.Response:
    st = request.app[STATE]
    eid, name = request.match_info["event_id"], request.match_info["file"]
    if name not in FILES or EVENT_ID_RE.match(eid) is None:
        raise web.HTTPNotFound(text=f"no such event file: {eid[:64]!r}/{name[:32]}")
    suffix, ctype = FILES[name]
    path = snapshots_dir(_database(st)) / f"{eid}{suffix}"
    try:
        body = await _off_loop(path.read_bytes)
    except OSError:
        raise web.HTTPNotFound(text=f"event {eid} has no {name}") from None
    return web.Response(body=body, content_type=ctype, headers={"Cache-Control": "max-age=3600"})


async def api_counts(request: web.Request) -> web.Response:
    st = request.app[STATE]
    camera = _text(request, "camera")
    after, _ = _times(request)
    try:
        counts = await _off_loop(query_counts, _database(st), camera, after)
    except ValueError as e:
        raise web.HTTPBadRequest(text=str(e)) from None
    except sqlite3.Error as e:
        raise web.HTTPServiceUnavailable(text=f"events database cannot be read: {e}") from None
    return web.json_response({"ok": True, "cameras": counts})


# --------------------------------------------------------------------------- zones


def _configured(st: WebState) -> list[str]:
    return list(st.cfg.cameras) if st.cfg.cameras else [st.cfg.camera]


def _camera(request: web.Request) -> str:
    st = request.app[STATE]
    name = request.match_info["camera"]
    if st.channels.get(name) is None and name not in _configured(st):
        raise web.HTTPNotFound(text=f"unknown camera {name[:64]!r}")
    return name


def _frame_of(st: WebState, camera: str) -> tuple[tuple[int, int] | None, str | None]:
    """The camera's frame size and prompt, from its newest tracks message (else the config)."""
    ch = st.channels.get(camera)
    msg = ch.tracks.latest()[0] if ch is not None else None
    if msg is not None:
        return (msg.header.width, msg.header.height), msg.header.prompt
    settings = st.cfg.camera_settings().get(camera)
    return None, settings.engine.prompt if settings is not None else None


def _zones_reply(st: WebState, camera: str) -> JsonObject:
    try:
        saved = load_zones(zones_path(_database(st)))
    except ValueError as e:
        raise web.HTTPConflict(text=f"{e}: fix or delete it") from None
    geom = saved.get(camera) or st.cfg.events.cameras.get(camera) or CameraEventsConfig()
    source = "file" if camera in saved else "config" if camera in st.cfg.events.cameras else None
    size, prompt = _frame_of(st, camera)
    return {
        "ok": True,
        "camera": camera,
        "zones": {n: z.model_dump(mode="json") for n, z in geom.zones.items()},
        "lines": {n: ln.model_dump(mode="json") for n, ln in geom.lines.items()},
        "source": source,
        "frame": list(size) if size else None,
        "prompt": prompt,
    }


async def api_get_zones(request: web.Request) -> web.Response:
    st = request.app[STATE]
    camera = _camera(request)
    async with request.app[ZONES_LOCK]:
        reply = await _off_loop(_zones_reply, st, camera)
    return web.json_response(reply)


async def api_put_zones(request: web.Request) -> web.Response:
    st = request.app[STATE]
    camera = _camera(request)
    body = await read_json(request)
    size, prompt = _frame_of(st, camera)
    labels: list[str] | None = None
    if prompt and prompt.strip():
        with contextlib.suppress(PromptError):
            labels = normalize_prompt(prompt)
    try:
        geom = parse_camera(camera, body)
        EventsConfig(cameras={camera: geom}).check_camera(camera, labels, size)
    except ValueError as e:
        raise web.HTTPBadRequest(text=str(e)) from None
    path = zones_path(_database(st))
    async with request.app[ZONES_LOCK]:
        try:
            await _off_loop(save_camera, path, camera, geom)
        except ValueError as e:
            raise web.HTTPConflict(text=f"{e}: fix or delete it") from None
        except OSError as e:
            raise web.HTTPServiceUnavailable(
                text=f"cannot write {path}: {e.strerror or e}"
            ) from None
        reply = await _off_loop(_zones_reply, st, camera)
    return web.json_response(reply)


def add_routes(app: web.Application) -> None:
    app[ZONES_LOCK] = asyncio.Lock()
    r = app.router
    r.add_get("/api/events", api_events)
    r.add_get("/api/events/{event_id}/{file}", api_event_file)
    r.add_get("/api/counts", api_counts)
    r.add_get("/api/cameras/{camera}/zones", api_get_zones)
    r.add_put("/api/cameras/{camera}/zones", api_put_zones)
