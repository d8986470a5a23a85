"""The events layer's HTTP API (clients/web/events_api.py) on a real ``promptcam web`` process
(token set) against the stand-in engine, over a seeded events database and snapshot files; and
zones saved by the web reloaded by the events service (clients/events/zones_file.py).

- ``/api/events``: each filter, newest first, the limit clamped, snapshot and mask URLs only for
  files present, the files served byte for byte;
- ``/api/counts``: exact counts of the seeded events;
- hostile queries (generated: SQL injection strings, control characters, huge and malformed
  limits, bad times, path traversal ids): 200 with nothing matched, or a 400/404 with one line,
  every error counted in /metrics, never a 5xx, the database file unchanged byte for byte;
- every route needs the token;
- zones: PUT, GET and ``zones.json`` agree; bad geometry is a 400 naming camera and zone and
  leaves the file as it was; the events service loads the file at start, reloads it when it
  changes (a zone added on the page raises zone entries from then on), keeps its zones when
  the file turns bad.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import random
import shutil
import sqlite3
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from clients.events.config import CameraEventsConfig, EventsConfig
from clients.events.model import CrossingDict, EventDict, EventMessage, EventType, Kind
from clients.events.service import EventsService
from clients.events.store import EventStore
from clients.events.zones_file import save_camera, zones_path
from tests.conftest import wait_for
from tests.test_events import rect_object, tracks
from tests.web_stack import Stack, make_stack

TOKEN = "evweb-token-24"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
T0 = 1_760_000_000_000_000_000  # 2025-10-09T08:53:20Z
N_CAM0 = 30
WITH_SNAPSHOT = 5  # events ev0..ev4 of cam0 have snapshot and mask files


def _event(i: int, camera: str = "cam0") -> EventMessage:
    label = "person" if camera == "cam1" else ("ball" if i % 2 == 0 else "box")
    active = camera == "cam0" and i >= N_CAM0 - 3
    entered = ["door"] if i % 3 == 0 else []
    lines: list[CrossingDict] = []
    if i % 5 == 0:
        lines.append({"line": "gate", "direction": "in", "t_ns": T0 + i * 10**9 + 1})
    if i % 10 == 0:
        lines.append({"line": "gate", "direction": "out", "t_ns": T0 + i * 10**9 + 2})
    body: EventDict = {
        "id": f"ev{i}" if camera == "cam0" else f"{camera}-ev{i}",
        "object_id": i,
        "label": label,
        "start_ns": T0 + i * 10**9,
        "end_ns": None if active else T0 + i * 10**9 + 5 * 10**8,
        "zones": entered if active else [],
        "entered_zones": entered,
        "lines": lines,
        "top_score": 0.5,
        "has_snapshot": i < WITH_SNAPSHOT,
    }
    kind = EventType.NEW if active else EventType.END
    return EventMessage(camera, kind, Kind.OBJECT, body, None)


def _seed(db: Path) -> None:
    store = EventStore(db)
    for i in range(N_CAM0):
        store.write(_event(i))
    for i in range(5):
        store.write(_event(i, "cam1"))
    for i in range(2):
        review: EventDict = {
            **_event(i).event,
            "id": f"rev{i}",
            "object_ids": [i, 10 + i] if i else [i],
            "labels": ["box", "ball"] if i else ["ball"],  # rev1: a box, then a ball joined
        }
        store.write(EventMessage("cam0", EventType.END, Kind.REVIEW, review, None))
    store.close()
    snaps = db.parent / "snapshots"
    snaps.mkdir(exist_ok=True)  # the store makes it
    for i in range(WITH_SNAPSHOT):
        img = np.full((48, 64, 3), 40 * i, np.uint8)
        (snaps / f"ev{i}.jpg").write_bytes(cv2.imencode(".jpg", img)[1].tobytes())
        (snaps / f"ev{i}.png").write_bytes(cv2.imencode(".png", img[:, :, 0])[1].tobytes())
    (db.parent / "secret.jpg").write_bytes(b"not for the web")


@dataclass
class Site:
    stack: Stack
    db: Path

    @property
    def url(self) -> str:
        return self.stack.url


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    tmp = tmp_path_factory.mktemp("evweb")
    db = tmp / "events.db"
    _seed(db)
    overrides = {"events.database": str(db), "engine.prompt": "ball. box."}
    with make_stack(token=TOKEN, extra_overrides=overrides) as st:
        yield Site(st, db)


def req(
    site: Site,
    path: str,
    method: str = "GET",
    body: Any = None,
    auth: bool = True,
    raw_body: bytes | None = None,
) -> tuple[int, dict[str, str], Any]:
    """(status, headers, JSON or bytes) of ``path`` (already URL-encoded)."""
    data = raw_body if raw_body is not None else None if body is None else json.dumps(body).encode()
    headers = {**(AUTH if auth else {}), "Content-Type": "application/json"}
    r = urllib.request.Request(
        site.url + path.lstrip("/"), data=data, method=method, headers=headers
    )
    try:
        with urllib.request.urlopen(r, timeout=10) as resp:
            status, hdrs, raw = resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as e:
        status, hdrs, raw = e.code, dict(e.headers), e.read()
    if hdrs.get("Content-Type", "").startswith("application/json"):
        return status, hdrs, json.loads(raw)
    return status, hdrs, raw


def events(site: Site, **q: Any) -> list[dict[str, Any]]:
    status, _, body = req(site, "/api/events?" + urllib.parse.urlencode(q))
    assert status == 200, body
    assert isinstance(body, list)
    return body


def connection(site: Site) -> http.client.HTTPConnection:
    """A keep-alive connection to the site, for many requests in a row."""
    parts = urllib.parse.urlsplit(site.url)
    return http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10)


def errors_counted(site: Site) -> dict[str, float]:
    _, _, text = req(site, "/metrics")
    out: dict[str, float] = {}
    for line in text.decode().splitlines():
        if line.startswith("promptcam_web_request_errors_total{"):
            status = line.split('status="')[1].split('"')[0]
            out[status] = float(line.split()[-1])
    return out


# --------------------------------------------------------------------------- events, counts


def test_events_filters_newest_first_and_clamped(site: Site) -> None:
    everything = events(site, camera="cam0")
    assert [e["id"] for e in everything] == [f"ev{i}" for i in reversed(range(N_CAM0))]
    assert all(e["camera"] == "cam0" and e["kind"] == "object" for e in everything)
    assert {e["id"] for e in events(site, camera="cam1")} == {f"cam1-ev{i}" for i in range(5)}
    balls = events(site, camera="cam0", label="ball")
    assert [e["id"] for e in balls] == [f"ev{i}" for i in reversed(range(0, N_CAM0, 2))]
    door = events(site, zone="door")
    assert {e["id"] for e in door} == {f"ev{i}" for i in range(0, N_CAM0, 3)} | {
        f"cam1-ev{i}" for i in (0, 3)
    }
    window = events(site, camera="cam0", after=T0 + 10 * 10**9, before=T0 + 13 * 10**9)
    assert [e["id"] for e in window] == ["ev12", "ev11", "ev10"]
    iso = events(site, camera="cam0", after="2025-10-09T08:53:47+00:00")  # T0 + 27 s
    assert [e["id"] for e in iso] == ["ev29", "ev28", "ev27"]
    assert [e["id"] for e in events(site, camera="cam0", limit=3)] == ["ev29", "ev28", "ev27"]
    for huge in ("5000", str(10**17)):
        status, headers, body = req(site, f"/api/events?limit={huge}")
        assert status == 200 and headers["X-Promptcam-Limit"] == "1000"
        assert len(body) == N_CAM0 + 5
    assert [e["id"] for e in events(site, kind="review")] == ["rev1", "rev0"]
    # a review item matches the label of any of its objects, not only its first one's
    assert [e["id"] for e in events(site, kind="review", label="ball")] == ["rev1", "rev0"]
    assert [e["id"] for e in events(site, kind="review", label="box")] == ["rev1"]
    # snapshot and mask URLs only where the files are, and the files served as they are
    for e in everything:
        i = int(e["id"][2:])
        has = i < WITH_SNAPSHOT
        assert (e["snapshot"] is not None, e["mask"] is not None) == (has, has), e
    ev1 = next(e for e in everything if e["id"] == "ev1")
    status, headers, jpg = req(site, ev1["snapshot"])
    assert status == 200 and headers["Content-Type"] == "image/jpeg"
    assert jpg == (site.db.parent / "snapshots" / "ev1.jpg").read_bytes()
    status, headers, png = req(site, ev1["mask"])
    assert status == 200 and headers["Content-Type"] == "image/png"
    assert png == (site.db.parent / "snapshots" / "ev1.png").read_bytes()
    status, _, body = req(site, "/api/events/ev7/snapshot.jpg")
    assert status == 404 and "ev7" in body["error"]


def test_counts_are_exact(site: Site) -> None:
    status, _, body = req(site, "/api/counts")
    assert status == 200, body
    cam0 = body["cameras"]["cam0"]
    # active now: ev27 (box, in the door zone), ev28 (ball) and ev29 (box)
    assert cam0["labels"] == {"ball": 1, "box": 2}
    assert cam0["zones"] == {"door": {"box": 1}}
    entered: dict[str, int] = {}
    for i in range(0, N_CAM0, 3):
        label = "ball" if i % 2 == 0 else "box"
        entered[label] = entered.get(label, 0) + 1
    assert cam0["entered"] == {"door": entered}
    ins = {"ball": len(range(0, N_CAM0, 10)), "box": len(range(5, N_CAM0, 10))}
    assert cam0["lines"] == {"gate": {"in": ins, "out": {"ball": len(range(0, N_CAM0, 10))}}}
    assert body["cameras"]["cam1"]["labels"] == {}
    status, _, one = req(site, f"/api/counts?camera=cam1&after={T0 + 3 * 10**9}")
    assert status == 200 and list(one["cameras"]) == ["cam1"]
    assert one["cameras"]["cam1"]["entered"] == {"door": {"person": 1}}  # cam1-ev3 only


INJECTIONS = [
    "' OR '1'='1",
    "x'; DROP TABLE events; --",
    '" OR ""="',
    "ball' UNION SELECT body, body, body FROM events --",
    "%",
    "_",
    "*",
    "\\",
    "ball%",
    "') OR 1=1 --",
    "$.lines",
    "json_each(events.body)",
    "🙂 ball",
]
BAD_LIMITS = ["-1", "0", "1e9", "0x10", "1.5", "NaN", "9" * 40, "1 OR 1=1", "+5", " 5", "٣"]
BAD_TIMES = [
    "-5",
    "yesterday",
    "2026-13-01T00:00:00Z",
    "9" * 30,
    "2026-01-01T00:00:00",
    "1e18",
    "1969-01-01T00:00:00+00:00",
    "' OR 1=1 --",
    "٣٣",
]
BAD_IDS = [
    "..%2Fevents.db",
    "..%2F..%2F..%2Fetc%2Fpasswd",
    "%2e%2e%2fsecret",
    "..%5Csecret",
    "secret.jpg%00",
    "ev1%00",
    "ev1.jpg",
    "a" * 65,
    "%2Fetc%2Fpasswd",
    "ev1%20",
    "..",
    "%2e%2e",
]


def _hostile_queries(rng: random.Random) -> list[tuple[str, set[int]]]:
    """(path, statuses allowed): 200 only where the value is harmless text that matches
    nothing."""
    out: list[tuple[str, set[int]]] = []
    q = urllib.parse.quote
    for field in ("camera", "label", "zone"):
        for s in INJECTIONS:
            out.append((f"/api/events?{field}={q(s)}", {200}))
        for s in ("a\x00b", "ball\n", "\x1b[31m", "x" * 201):
            out.append((f"/api/events?{field}={q(s)}", {400}))
    out += [(f"/api/events?limit={q(s)}", {400}) for s in BAD_LIMITS]
    for field in ("after", "before"):
        out += [(f"/api/events?{field}={q(s)}", {400}) for s in BAD_TIMES]
        out += [(f"/api/counts?after={q(s)}", {400}) for s in BAD_TIMES]
    out.append((f"/api/events?after={T0 + 5}&before={T0}", {400}))
    out.append(("/api/events?kind=" + q("' OR 1=1"), {400}))
    for s in BAD_IDS:
        for name in ("snapshot.jpg", "mask.png"):
            out.append((f"/api/events/{s}/{name}", {400, 404}))
    out += [("/api/events/ev1/" + s, {404}) for s in ("..", "snapshot.png", "zones.json", "x")]
    # generated: random strings of characters that matter to SQL, JSON, paths and URLs
    alphabet = "'\";-%_*\\/.()=<>|&$\x00\n\t 0123456789abcdefXYZ🙂é"
    for _ in range(880):
        s = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 40)))
        field = rng.choice(["camera", "label", "zone", "limit", "after", "before", "id"])
        if field == "id":
            out.append((f"/api/events/{q(s, safe='')}/snapshot.jpg", {400, 404}))
            continue
        harmless = s.isprintable()
        if field == "limit":
            harmless = s.isascii() and s.isdigit() and int(s) >= 1
        elif field in ("after", "before"):
            harmless = s.isascii() and s.isdigit() and len(s) <= 18
        out.append((f"/api/events?{field}={q(s)}", {200} if harmless else {400}))
    return out


def test_hostile_queries_are_rejected_counted_and_harmless(site: Site) -> None:
    digest = hashlib.sha256(site.db.read_bytes()).hexdigest()
    before = errors_counted(site)
    queries = _hostile_queries(random.Random(24))
    assert len(queries) >= 1000
    seen: dict[int, int] = {}
    conn = connection(site)
    for path, allowed in queries:
        conn.request("GET", path, headers=AUTH)
        resp = conn.getresponse()
        status, raw = resp.status, resp.read()
        body = (
            json.loads(raw)
            if resp.getheader("Content-Type", "").startswith("application/json")
            else raw
        )
        assert status in allowed, (path, status, body)
        seen[status] = seen.get(status, 0) + 1
        if status == 200:
            assert isinstance(body, list), path
            assert all(e["id"].startswith(("ev", "cam1-")) for e in body), path
        else:
            assert isinstance(body, dict) and body["ok"] is False, (path, body)
            assert "\n" not in body["error"] and len(body["error"]) < 300, body
    conn.close()
    after = errors_counted(site)
    for status in (400, 404):
        counted = after.get(str(status), 0) - before.get(str(status), 0)
        assert counted == seen.get(status, 0), (status, counted, seen)
    assert not any(s >= 500 for s in seen), seen
    # the database: unchanged byte for byte, every row there, nothing outside snapshots served
    assert hashlib.sha256(site.db.read_bytes()).hexdigest() == digest
    db = sqlite3.connect(site.db.resolve().as_uri() + "?mode=ro", uri=True)
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert db.execute("SELECT COUNT(*) FROM events").fetchone()[0] == N_CAM0 + 5 + 2
    db.close()
    print(f"\n{len(queries)} hostile queries: {seen}")


def test_every_events_route_needs_the_token(site: Site) -> None:
    zone: dict[str, dict[str, Any]] = {"zones": {}, "lines": {}}
    for method, path in [
        ("GET", "/api/events"),
        ("GET", "/api/events/ev1/snapshot.jpg"),
        ("GET", "/api/events/ev1/mask.png"),
        ("GET", "/api/counts"),
        ("GET", "/api/cameras/cam0/zones"),
        ("PUT", "/api/cameras/cam0/zones"),
    ]:
        body = zone if method == "PUT" else None
        status, _, reply = req(site, path, method, body, auth=False)
        assert status == 401 and "token" in reply["error"], (path, status, reply)
        status, _, _ = req(site, path + "?token=wrong-token", method, body, auth=False)
        assert status == 401, path
        if method == "GET":
            assert req(site, path)[0] == 200, path
    assert not zones_path(site.db).exists(), "a PUT without the token wrote nothing"


# --------------------------------------------------------------------------- zones

DOOR = {
    "points": [[0.1, 0.1], [0.5, 0.1], [0.5, 0.9], [0.1, 0.9]],
    "units": "fraction",
    "labels": ["ball"],
    "inertia": 2,
}
GATE = {"points": [[0, 120], [320, 120]], "in_side": [160, 200]}


def test_zones_put_round_trip_and_bad_geometry(site: Site, tmp_path: Path) -> None:
    # the web knows the frame size once tracks arrived (pixel points outside are refused)
    wait_for(
        lambda: req(site, "/api/cameras/cam0/zones")[2].get("frame") == [320, 240],
        timeout=15,
        what="the camera's frame size",
    )
    status, _, reply = req(
        site, "/api/cameras/cam0/zones", "PUT", {"zones": {"door": DOOR}, "lines": {"gate": GATE}}
    )
    assert status == 200, reply
    path = zones_path(site.db)
    saved = json.loads(path.read_text())
    assert saved["v"] == 1 and set(saved["cameras"]) == {"cam0"}
    status, _, got = req(site, "/api/cameras/cam0/zones")
    assert status == 200 and got["source"] == "file"
    assert got["zones"]["door"]["points"] == DOOR["points"] and got["zones"]["door"]["labels"] == [
        "ball"
    ]
    assert got["lines"]["gate"]["in_side"] == GATE["in_side"]
    file_bytes = path.read_bytes()
    bad = [
        (
            {"zones": {"door": {**DOOR, "points": [[0, 0], [1, 1], [1, 0], [0, 1]]}}},
            "zone 'door'",
            "crosses itself",
        ),
        ({"zones": {"door": {**DOOR, "points": [[0, 0], [1, 1]]}}}, "zone 'door'", "at least 3"),
        (
            {"zones": {"door": {**DOOR, "points": [[0, 0], [1.5, 0], [1, 1]]}}},
            "zone 'door'",
            "fraction",
        ),
        (
            {"zones": {"door": {**DOOR, "labels": ["car"]}}},
            "zone 'door'",
            "not in the camera's prompt",
        ),
        (
            {"zones": {"door": {**DOOR, "units": "px", "points": [[0, 0], [400, 0], [0, 100]]}}},
            "zone 'door'",
            "outside the 320x240 frame",
        ),
        ({"lines": {"gate": {**GATE, "in_side": [160, 120]}}}, "line 'gate'", "on the line"),
        ({"zones": {"a b": DOOR}}, "cam0", "name 'a b'"),
        ({"zones": {"door": {**DOOR, "colour": "red"}}}, "zone 'door'", "colour"),
        ({"zones": [1, 2]}, "cam0", "zones"),
    ]
    for body, where, what in bad:
        status, _, reply = req(site, "/api/cameras/cam0/zones", "PUT", body)
        assert status == 400, (body, reply)
        msg = reply["error"]
        assert "\n" not in msg and "cam0" in msg and where in msg and what in msg, (body, msg)
        assert path.read_bytes() == file_bytes, "a refused PUT leaves the file as it was"
    status, _, reply = req(site, "/api/cameras/cam0/zones", "PUT", raw_body=b"{nope")
    assert status == 400 and "JSON" in reply["error"]
    assert req(site, "/api/cameras/nocam/zones")[0] == 404
    assert req(site, "/api/cameras/nocam/zones", "PUT", {"zones": {}})[0] == 404
    # the events service started beside this file has the zones at once
    shutil.copy(path, tmp_path / "zones.json")
    store = EventStore(tmp_path / "events.db")
    service = EventsService(EventsConfig(), store)
    assert set(service.cfg.cameras["cam0"].zones) == {"door"}
    assert set(service.cfg.cameras["cam0"].lines) == {"gate"}
    store.close()


# always invalid, whatever else the body holds: (where, value)
ZONE_BREAKS: list[tuple[str, Any]] = [
    ("points", None),
    ("points", "0,0 1,1 1,0"),
    ("points", [[0.1, 0.1], [0.2, 0.2]]),
    ("points", [[0.1, 0.1], [0.5, 0.1], [float("nan"), 0.5]]),
    ("points", [[0.1, 0.1], [0.5, 0.1], [float("inf"), 0.5]]),
    ("points", [[0.1, 0.1, 0.3], [0.5, 0.1], [0.5, 0.5]]),
    ("points", [[0.1, 0.1], [0.5, 0.1], ["x", 0.5]]),
    ("points", [[0.1, 0.1], [0.5, 0.1], [0.5, -0.5]]),
    ("points", [[i / 100, (i % 2) / 2] for i in range(65)]),
    ("units", "cm"),
    ("units", None),
    ("inertia", 0),
    ("inertia", -1),
    ("inertia", 1001),
    ("inertia", 2.5),
    ("loitering", -1),
    ("min_share", 0),
    ("min_share", 1.5),
    ("presence", "centroid"),
    ("labels", "ball"),
    ("labels", ["car"]),
    ("labels", [""]),
    ("colour", "red"),
    ("__proto__", {}),
]
LINE_BREAKS: list[tuple[str, Any]] = [
    ("points", [[0, 120]]),
    ("points", [[0, 120], [0, 120]]),
    ("points", [[0, 120], [320, 120], [10, 10]]),
    ("in_side", [160, 120]),
    ("in_side", None),
    ("anchor", "top"),
    ("units", "fraction"),  # 320 px: not a fraction
]
BAD_NAMES = ["", "a b", "../x", "x" * 65, "🙂", "door;DROP TABLE events", "a/b", "\x00"]


def _malformed_zones(rng: random.Random) -> dict[str, Any]:
    """A zones body with 1 to 3 breaks, each enough to refuse it."""
    zones: dict[str, Any] = {"door": dict(DOOR)}
    lines: dict[str, Any] = {"gate": dict(GATE)}
    for _ in range(rng.randint(1, 3)):
        what = rng.randrange(4)
        if what == 0:
            key, value = rng.choice(ZONE_BREAKS)
            zones["door"][key] = value
        elif what == 1:
            key, value = rng.choice(LINE_BREAKS)
            lines["gate"][key] = value
        elif what == 2:
            zones[rng.choice(BAD_NAMES)] = dict(DOOR)
        else:
            return rng.choice(
                [{"zones": [DOOR]}, {"zones": {"door": DOOR}, "extra": 1}, {"lines": "gate"}]
            )
    return {"zones": zones, "lines": lines}


def test_malformed_zone_definitions_are_one_line_400s(site: Site) -> None:
    path = zones_path(site.db)
    before_file = path.read_bytes() if path.exists() else None
    before = errors_counted(site).get("400", 0)
    rng = random.Random(2424)
    n = 300
    conn = connection(site)
    for _ in range(n):
        body = _malformed_zones(rng)
        conn.request("PUT", "/api/cameras/cam0/zones", json.dumps(body), AUTH)
        resp = conn.getresponse()
        status, reply = resp.status, json.loads(resp.read())
        assert status == 400, (body, reply)
        msg = reply["error"]
        assert "\n" not in msg and len(msg) < 450 and "cam0" in msg, (body, msg)
    conn.close()
    assert errors_counted(site).get("400", 0) - before == n
    assert (path.read_bytes() if path.exists() else None) == before_file


def _frames(
    service: EventsService, start: int, n: int, box: tuple[int, int, int, int]
) -> list[EventMessage]:
    out: list[EventMessage] = []
    for seq in range(start, start + n):
        out += service.handle(tracks(seq, [rect_object(1, *box)]))
    return out


def test_events_service_reloads_zones_when_the_file_changes(tmp_path: Path) -> None:
    store = EventStore(tmp_path / "events.db")
    service = EventsService(EventsConfig(probation_frames=2, end_after=50), store)
    assert service.zones.loads == 0 and not service.cfg.cameras  # no zones file yet
    box = (40, 40, 80, 80)  # inside the door zone below (fractions of 320x240)
    out = _frames(service, 0, 5, box)
    assert not any(m.event["entered_zones"] for m in out)
    # the page saves a zone: applied to the running camera logic on the next poll
    door = CameraEventsConfig.model_validate({"zones": {"door": DOOR}})
    save_camera(zones_path(store.path), "cam0", door)
    assert service.zones.poll(service, force=True)
    out = _frames(service, 5, 4, box)
    entered = [
        m
        for m in out
        if m.kind is Kind.OBJECT
        and m.type is EventType.UPDATE
        and m.event["entered_zones"] == ["door"]
    ]
    assert len(entered) == 1 and entered[0].event["zones"] == ["door"], [m.header() for m in out]
    assert service.cameras["cam0"].counts()["zones"] == {"door": {"ball": 1}}
    assert not service.zones.poll(service, force=True), "an unchanged file is not reloaded"
    # the zone deleted on the page: the object is in no zone any more
    save_camera(zones_path(store.path), "cam0", CameraEventsConfig())
    assert service.zones.poll(service, force=True)
    _frames(service, 9, 2, box)
    assert service.cameras["cam0"].counts()["zones"] == {}
    # a file turned bad: one logged line, counted, the zones in use stay
    save_camera(zones_path(store.path), "cam0", door)
    assert service.zones.poll(service, force=True)
    zones_path(store.path).write_text(
        '{"v": 1, "cameras": {"cam0": {"zones": {"x": {"points": [[0, 0]]}}}}}'
    )
    assert not service.zones.poll(service, force=True)
    assert service.zones.errors == 1 and set(service.cameras["cam0"].geometry.zones) == {"door"}
    store.close()
