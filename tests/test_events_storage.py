"""Events storage guarantees (issue 24): best snapshot per event (JPEG with the mask outlined,
PNG mask) beside the database, bounded encodes, retention of snapshot files by age and size, a
refused snapshot write (file size limit: the kernel's EFBIG, as a full disk's ENOSPC) loses
nothing stored, ``promptcam events`` killed with SIGKILL mid-event and restarted, and hostile
input: 1,000 generated malformed zone definitions and 2,000 generated queries."""

from __future__ import annotations

import io
import json
import logging
import math
import resource
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import zmq

from clients.events.config import EventsConfig
from clients.events.model import EventDict, EventMessage, EventType, Kind
from clients.events.service import EventsService
from clients.events.snapshots import FrameCache, SnapshotFiles
from clients.events.store import MAX_LIMIT, EventStore
from stream.config import ConfigError, load_config
from stream.demo import DemoScene
from stream.groundtruth import GroundTruthWriter
from stream.wire import AnnotatedMessage, TrackedObject, TracksMessage, encode_jpeg, encode_mask
from tests.conftest import tcp_endpoint, wait_for

W, H = 320, 240
FRAME_NS = 66_666_667


def rect(oid: int, x1: int, y1: int, x2: int, y2: int, conf: float = 0.9) -> TrackedObject:
    mask = np.zeros((H, W), bool)
    mask[y1:y2, x1:x2] = True
    return TrackedObject.model_construct(
        id=oid,
        label="ball",
        score=2.0,
        confidence=conf,
        box=[float(x1), float(y1), float(x2), float(y2)],
        mask=encode_mask(mask),
        age=0,
        state="tracked",
    )


def frame_image(seq: int) -> np.ndarray:
    img = np.full((H, W, 3), 40, np.uint8)
    img[:, :, 2] = seq % 256  # each frame its own red level: the snapshot's frame is known
    return img


def tmsg(seq: int, objects: list[TrackedObject]) -> TracksMessage:
    return TracksMessage.build("cam0", seq, 1_000 + seq * FRAME_NS, W, H, "", objects, epoch="e1")


def cfg_of(**extra: Any) -> EventsConfig:
    return EventsConfig.model_validate({"probation_frames": 2, "end_after": 3, **extra})


# --------------------------------------------------------------------------- snapshots


def test_best_snapshot_written_bounded_and_marked(tmp_path: Path) -> None:
    """An object growing for 20 frames then shrinking: one snapshot file pair, of the largest
    mask's frame (frames arrive after their tracks message, as the engine's annotated ones do),
    at most one encode per ``snapshot_every`` frames, ``has_snapshot`` in an update and in the
    stored row, ``snapshot_jpeg`` returns it, ids that are not plain names give None."""
    store = EventStore(tmp_path / "db" / "events.db")
    cache = FrameCache()
    svc = EventsService(cfg_of(snapshot_every=4), store, None, frames=cache)
    out: list[EventMessage] = []
    sizes = [10 + 3 * i for i in range(20)] + [60 - 2 * i for i in range(10)]
    for seq, s in enumerate(sizes):
        out += svc.handle(tmsg(seq, [rect(5, 20, 20, 20 + s, 20 + s)]))
        cache.put("cam0", 1_000 + seq * FRAME_NS, partial(frame_image, seq))
        out += svc.flush_snapshots()
    for seq in range(len(sizes), len(sizes) + 3):
        out += svc.handle(tmsg(seq, []))
    objects = [m for m in out if m.kind is Kind.OBJECT]
    eid = objects[0].event["id"]
    marked = [
        m for m in objects if m.event["has_snapshot"] and not (m.before or {}).get("has_snapshot")
    ]
    assert len(marked) == 1 and marked[0].type is EventType.UPDATE
    assert objects[-1].type is EventType.END and objects[-1].event["has_snapshot"]
    keeper = svc.keepers["cam0"]
    assert 2 <= keeper.encodes <= len(sizes) // 4 + 1, keeper.encodes
    jpg, png = (
        tmp_path / "db" / "snapshots" / f"{eid}.jpg",
        tmp_path / "db" / "snapshots" / f"{eid}.png",
    )
    grey = cv2.imread(str(png), cv2.IMREAD_GRAYSCALE)
    assert grey is not None
    mask = grey > 0
    best = max(range(len(sizes)), key=lambda i: sizes[i])
    # the largest mask's frame, or one encode later at most (bounded work may defer it)
    area = int(mask.sum())
    assert area >= (sizes[best] - 3 * 4) ** 2, (area, sizes[best])
    image = cv2.imread(str(jpg))
    assert image is not None
    seq_of_frame = int(np.median(image[100:110, 200:210, 2]))
    assert abs(sizes[seq_of_frame] ** 2 - area) < 0.01 * area + 50  # the mask's own frame
    ys, xs = np.nonzero(mask)
    edge = image[ys.min(), xs.min() + 3]
    assert edge[1] > 200 and edge[0] < 80  # the outline is drawn (green, BGR)
    assert store.snapshot_jpeg(eid) == jpg.read_bytes() and jpg.read_bytes()[:2] == b"\xff\xd8"
    row = store.query(limit=1)[0]
    assert row["id"] == eid and row["has_snapshot"] is True
    for bad in ("../events", "a/b", "", "x" * 65, "..", None):
        assert store.snapshot_jpeg(bad) is None  # type: ignore[arg-type]
    assert not list((tmp_path / "db" / "snapshots").glob(".*"))  # no temporary file left
    store.close()


def _ended(i: int, snap: bool = True) -> EventMessage:
    body: EventDict = {
        "id": f"ev{i:03d}",
        "object_id": i,
        "label": "ball",
        "start_ns": i * 10,
        "end_ns": i * 10 + 5,
        "zones": [],
        "entered_zones": [],
        "lines": [],
        "top_score": 0.5,
        "has_snapshot": snap,
    }
    return EventMessage("cam0", EventType.END, Kind.OBJECT, body, None)


def test_snapshot_retention_by_size_then_age(tmp_path: Path) -> None:
    """30 ended events with 40 KiB of files each, a 0.5 MiB budget: the oldest events' files go
    first (their rows stay, has_snapshot false), orphan files go, the newest stay; deleting rows
    by age takes their files."""
    store = EventStore(tmp_path / "events.db", retention_days=1.0, max_snapshot_mb=0.5)
    blob = b"\xff\xd8" + bytes(20 * 1024)
    for i in range(30):
        assert store.write(_ended(i))
        assert store.snapshots.write(f"ev{i:03d}", blob, blob)
    store.snapshots.write("orphan", blob, blob)
    assert store.retain(now_ns=1000) == 0  # nothing is old yet
    left = store.snapshots.sizes()
    assert sum(left.values()) <= 0.5 * 2**20
    kept = sorted(left)
    assert "orphan" not in left and kept == [f"ev{i:03d}" for i in range(30 - len(kept), 30)]
    assert len(kept) == 12  # 12 x 40 KiB = 480 KiB <= 512 KiB
    rows = {e["id"]: e for e in store.query(limit=100)}
    assert len(rows) == 30  # rows are never lost to file pruning
    assert not rows["ev000"]["has_snapshot"] and rows["ev029"]["has_snapshot"]
    assert store.snapshot_jpeg("ev000") is None and store.snapshot_jpeg("ev029") == blob
    assert store.retain(now_ns=2 * 86400 * 10**9) == 30
    assert store.snapshots.sizes() == {}
    store.close()


@pytest.fixture
def small_file_limit() -> Iterator[int]:
    """Files of this process may not grow past 64 KiB (EFBIG, SIGXFSZ ignored), as on a full disk."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    old = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    limit = 64 * 1024
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield limit
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, old)


def test_refused_snapshot_write_keeps_what_is_stored(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    files = SnapshotFiles(tmp_path / "snapshots")
    small = b"\xff\xd8" + bytes(1000)
    assert files.write("ev1", small, small)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    old = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, hard))
    try:
        with caplog.at_level(logging.ERROR, logger="clients.events.snapshots"):
            refused = [files.write("ev1", bytes(200 * 1024), small) for _ in range(3)]
            refused.append(files.write("ev2", bytes(200 * 1024), small))
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, old)
    assert refused == [False] * 4 and files.errors == 4
    assert files.read_jpeg("ev1") == small  # the earlier snapshot is intact
    assert files.read_jpeg("ev2") is None
    msgs = [r.getMessage() for r in caplog.records]
    assert len(msgs) == 4 and all("\n" not in m and "not written" in m for m in msgs), msgs
    assert sorted(p.name for p in (tmp_path / "snapshots").iterdir()) == ["ev1.jpg", "ev1.png"]


# --------------------------------------------------------------------------- kill -9 and restart


def _events_proc(cfg_path: Path, db: Path, tracks_ep: str, events_ep: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "clients.cli", "events", "--config", str(cfg_path), "--tracks",
         tracks_ep, "--events", events_ep, "--db", str(db), "--log-level", "WARNING"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip


def subscribed(sock: zmq.Socket[Any], topic: bytes) -> bool:
    """Whether a subscription message for ``topic`` arrives at XPUB ``sock`` within 100 ms."""
    return bool(sock.poll(100)) and sock.recv().startswith(topic)


def test_sigkill_mid_event_then_restart(tmp_path: Path) -> None:
    """``promptcam events`` with tracks and annotated frames of a demo scene on loopback, killed
    with SIGKILL while events are open: the database passes its integrity check with every
    event stored so far and their snapshots; restarted on the same file, the events left open
    are ended (at their last write) and their ``end`` published, nothing stored is changed
    otherwise, and the objects still in view get new events."""
    tracks_ep, events_ep, ann_ep = tcp_endpoint(), tcp_endpoint(), tcp_endpoint()
    cfg_path = tmp_path / "events.yaml"
    cfg_path.write_text(json.dumps({
        "source": {"width": W, "height": H},
        "bus": {"annotated": ann_ep},
        "events": {"probation_frames": 3, "end_after": 30, "snapshot_every": 2},
    }))  # fmt: skip
    db = tmp_path / "events.db"
    ctx: zmq.Context[Any] = zmq.Context()
    pub, ann = ctx.socket(zmq.XPUB), ctx.socket(zmq.XPUB)
    for s, ep in ((pub, tracks_ep), (ann, ann_ep)):
        s.linger = 0
        s.setsockopt(zmq.XPUB_VERBOSE, 1)  # every subscription, also one already seen
        s.bind(ep)
    sub = ctx.socket(zmq.SUB)
    sub.linger = 0
    sub.setsockopt(zmq.SUBSCRIBE, b"events.")
    sub.connect(events_ep)
    scene = DemoScene(W, H, 3, 7, 15.0)
    writer = GroundTruthWriter(io.StringIO(), "cam0")
    seq, t0 = 0, time.time_ns()
    got: list[dict[str, Any]] = []

    def send(n: int) -> None:
        nonlocal seq
        for _ in range(n):
            frame = scene.render_frame(seq, clean=True)
            h = writer.message(frame, seq).header
            t = t0 + seq * FRAME_NS  # now: stamps of 1970 would be past retention_days
            pub.send_multipart(
                TracksMessage.build("cam0", seq, t, W, H, "", h.objects, epoch="e1").to_parts()
            )
            jpeg = encode_jpeg(frame.image, 80)
            ann.send_multipart(
                AnnotatedMessage("cam0", seq, t, W, H, len(h.objects), jpeg).to_parts()
            )
            seq += 1
            while sub.poll(5):
                got.append(json.loads(sub.recv_multipart()[1]))

    def started(proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        assert json.loads(proc.stdout.readline())["events"] == events_ep
        for sock, topic in ((pub, b"\x01tracks."), (ann, b"\x01annotated.")):
            # the killed process's unsubscriptions (\x00...) may come first
            wait_for(partial(subscribed, sock, topic), timeout=15, what=f"subscription {topic!r}")

    proc = _events_proc(cfg_path, db, tracks_ep, events_ep)
    second: subprocess.Popen[str] | None = None
    try:
        started(proc)
        wait_for(lambda: any(g["event"]["has_snapshot"] for g in got), timeout=20,
                 interval=0.03, what="an event with a snapshot", step=lambda: send(1))  # fmt: skip
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        con = sqlite3.connect(db)
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        rows = dict(con.execute("SELECT id, body FROM events WHERE kind = 'object'").fetchall())
        con.close()
        published_ids = {g["event"]["id"] for g in got if g["kind"] == "object"}
        assert published_ids and published_ids <= set(rows)
        open_ids = {i for i, b in rows.items() if json.loads(b)["end_ns"] is None}
        assert open_ids  # killed mid-event
        with_snap = [i for i, b in rows.items() if json.loads(b)["has_snapshot"]]
        assert with_snap and all(
            (tmp_path / "snapshots" / f"{i}.jpg").stat().st_size > 0 for i in with_snap
        )
        got.clear()
        second = _events_proc(cfg_path, db, tracks_ep, events_ep)
        started(second)

        def ended() -> set[str]:
            return {g["event"]["id"] for g in got if g["type"] == "end" and g["kind"] == "object"}

        wait_for(lambda: any(g["type"] == "new" for g in got) and open_ids <= ended(),
                 timeout=20, interval=0.03, what="a new event and the open ones' ends after the "
                 "restart", step=lambda: send(1))  # fmt: skip
        # the events left open are ended for subscribers too (an ``end`` each), ids kept
        ends = {g["event"]["id"]: g for g in got if g["type"] == "end" and g["kind"] == "object"}
        assert open_ids <= set(ends), (open_ids, set(ends))
        assert all(ends[i]["before"]["end_ns"] is None for i in open_ids)
        new_ids = {g["event"]["id"] for g in got if g["type"] == "new"}
        assert not new_ids & set(rows)  # new ids, not reused
        second.send_signal(signal.SIGTERM)
        _, err = second.communicate(timeout=15)
        assert second.returncode == 0 and "Traceback" not in err
    finally:
        for p in (proc, second):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()
        ctx.destroy(linger=0)
    store = EventStore(db)
    after = {e["id"]: e for e in store.query(limit=MAX_LIMIT)}
    for eid, body in rows.items():
        before = json.loads(body)
        now = after[eid]
        end_ns, start_ns = now["end_ns"], now["start_ns"]
        assert isinstance(end_ns, int) and isinstance(start_ns, int) and end_ns >= start_ns
        assert {k: v for k, v in now.items() if k != "end_ns"} == {
            k: v for k, v in before.items() if k != "end_ns"
        }
        if before["end_ns"] is not None:
            assert now["end_ns"] == before["end_ns"]
    store.close()


# --------------------------------------------------------------------------- hostile input


def malformed_zones(n: int, seed: int = 2424) -> Iterator[tuple[str, str, object]]:
    """``n`` zone or line definitions, each wrong in one of the ways a hand-written or generated
    config can be: (kind, name, definition)."""
    rng = np.random.default_rng(seed)

    def pts(k: int) -> list[list[float]]:
        return [
            [float(x), float(y)]
            for x, y in zip(rng.uniform(0, W, k), rng.uniform(0, H, k), strict=True)
        ]

    def bow_tie() -> list[list[float]]:
        x1, y1 = rng.uniform(0, W / 2), rng.uniform(0, H / 2)
        x2, y2 = rng.uniform(W / 2, W), rng.uniform(H / 2, H)
        return [[x1, y1], [x2, y2], [x2, y1], [x1, y2]]

    def square() -> list[list[float]]:
        return [[10.0, 10.0], [100.0, 10.0], [100.0, 100.0], [10.0, 100.0]]

    bad_values: list[Any] = [
        float("nan"),
        float("inf"),
        -float("inf"),
        1e300,
        -1e12,
        "12",
        None,
        True,
        [1],
        {},
    ]
    makers: list[Callable[[], tuple[str, object]]] = [
        lambda: ("zones", {"points": bow_tie()}),
        lambda: ("zones", {"points": pts(int(rng.integers(0, 3)))}),
        lambda: ("zones", {"points": [*square()[:2], [float(rng.choice(bad_values[:5])), 5.0], square()[3]]}),
        lambda: ("zones", {"points": [[float(rng.uniform(W + 1, 10 * W)), 5.0], *square()[1:]]}),
        lambda: ("zones", {"points": [[5.0, -float(rng.uniform(1, 100))], *square()[1:]]}),
        lambda: ("zones", {"points": square(), "labels": [str(rng.choice(["cat", "dog", "car", ""]))]}),
        lambda: ("zones", {"points": [square()[0], bad_values[int(rng.integers(5, 10))], *square()[2:]]}),
        lambda: ("zones", {"points": square(), "units": "fraction"}),
        lambda: ("zones", {"points": square(), "inertia": int(rng.choice([0, -3, 10**9]))}),
        lambda: ("zones", {"points": square(), "min_share": float(rng.choice([0.0, 2.0, float("nan")]))}),
        lambda: ("zones", {"points": pts(int(rng.integers(65, 200)))}),
        lambda: ("zones", {"points": square(), "colour": "red"}),
        lambda: ("zones", "not a mapping"),
        lambda: ("lines", {"points": [[5.0, 5.0], [5.0, 5.0]], "in_side": [9.0, 9.0]}),
        lambda: ("lines", {"points": [[0.0, 0.0], [100.0, 0.0]], "in_side": [float(rng.uniform(0, 100)), 0.0]}),
        lambda: ("lines", {"points": pts(3), "in_side": [9.0, 9.0]}),
        lambda: ("lines", {"points": pts(2)}),
    ]  # fmt: skip
    for i in range(n):
        kind, shape = makers[i % len(makers)]()
        yield kind, f"z{i}", shape


def test_thousand_malformed_zone_definitions_are_one_line_errors(tmp_path: Path) -> None:
    """1,000 generated malformed zones and lines (self-crossing, NaN, infinite, huge, too few or
    too many points, unknown labels, points outside the frame, wrong types, unknown keys, bad
    rules) through the config loader: every one is a one-line ``ConfigError`` naming the camera
    and the zone; none loads, nothing else is raised."""
    refused = 0
    base = tmp_path / "site.yaml"
    base.write_text("{}\n")  # not the default config: its YAML parse is the slow part
    for kind, name, shape in malformed_zones(1000):
        try:
            load_config(base, {f"events.cameras.cam0.{kind}.{name}": shape, "engine.prompt": "ball. box.",
                               "source.width": str(W), "source.height": str(H)})  # fmt: skip
        except ConfigError as e:
            msg = str(e)
            assert "\n" not in msg and "cam0" in msg and name in msg, (shape, msg)
            refused += 1
        else:
            pytest.fail(f"{kind} {name} loaded: {shape}")
    assert refused == 1000


def _hostile_values(rng: np.random.Generator) -> dict[str, Any]:
    texts: list[Any] = [
        "cam0' OR '1'='1",
        "x'; DROP TABLE events; --",
        '" OR 1=1 --',
        "%",
        "_",
        "*",
        "\x00",
        "ball\x00'; DELETE FROM events; --",
        "' UNION SELECT body FROM events --",
        "é" * 300,
        "x" * 201,
        5,
        None,
        ["cam0"],
        {"$ne": 1},
        b"cam0",
        1.5,
        "cam0",
        "ball",
        "door",
    ]
    times: list[Any] = [
        -1,
        2**63,
        2**70,
        "yesterday",
        1.5,
        float("nan"),
        None,
        True,
        "10",
        0,
        10**18,
        [1],
    ]
    limits: list[Any] = [0, -1, 10**12, 2**63, 1001, "5", 1.0, None, True, float("inf"), 1, 1000]
    q: dict[str, Any] = {}
    for key, pool in (("camera", texts), ("label", texts), ("zone", texts), ("after", times),
                      ("before", times), ("limit", limits)):  # fmt: skip
        if rng.random() < 0.5:
            v = pool[int(rng.integers(len(pool)))]
            if v is None and key == "limit":
                continue
            q[key] = v
    return q


def test_generated_hostile_queries_leave_the_database_intact(tmp_path: Path) -> None:
    """2,000 generated queries (SQL injection strings, NUL bytes, huge and negative limits,
    times out of range or of the wrong type, lists and mappings for strings): each returns rows
    that match its filters or is a one-line ``ValueError``; the database is the same after."""
    store = EventStore(tmp_path / "e.db")
    for i in range(20):
        body = _ended(i).event | {"entered_zones": ["door"] if i % 2 else []}
        store.write(
            EventMessage("cam0" if i % 3 else "cam1", EventType.END, Kind.OBJECT, body, None)
        )
    schema = store.db.execute("SELECT sql FROM sqlite_master ORDER BY name").fetchall()
    snapshot = store.query(limit=MAX_LIMIT)
    rng = np.random.default_rng(7)
    refused = answered = 0
    for _ in range(2000):
        q = _hostile_values(rng)
        try:
            rows = store.query(**q)
        except ValueError as e:
            assert "\n" not in str(e)
            refused += 1
            continue
        answered += 1
        assert len(rows) <= q.get("limit", 100)
        for r in rows:
            assert q.get("label") in (None, r["label"])
            zones, start_ns = r["entered_zones"], r["start_ns"]
            assert isinstance(zones, list) and isinstance(start_ns, int)
            assert q.get("zone") in (None, *zones)
            assert start_ns >= (q.get("after") or 0)
            assert start_ns < (math.inf if q.get("before") is None else q["before"])
    assert refused > 500 and answered > 100
    assert store.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert store.db.execute("SELECT sql FROM sqlite_master ORDER BY name").fetchall() == schema
    assert store.query(limit=MAX_LIMIT) == snapshot
    store.close()
