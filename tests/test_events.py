"""Events (issue 24, first slice): zone and line geometry in the config, the event logic on
synthetic tracks and on a demo scene's exact ground truth, SQLite storage, and ``promptcam
events`` as a real process between ZeroMQ sockets on loopback."""

from __future__ import annotations

import io
import json
import logging
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zmq

from clients.events.config import EventsConfig, LineConfig
from clients.events.geometry import polygon_mask, self_crossing
from clients.events.masks import decode_rle
from clients.events.model import EventDict, EventMessage, EventType, Kind
from clients.events.store import MAX_LIMIT, EventStore
from clients.events.tracker import CameraEvents
from stream.config import ConfigError, load_config
from stream.demo import DemoScene
from stream.groundtruth import GroundTruthWriter
from stream.wire import TrackedObject, TracksMessage, encode_mask
from tests.conftest import tcp_endpoint, wait_for

W, H = 320, 240
FRAME_NS = 66_666_667


# --------------------------------------------------------------------------- helpers


def rect_object(oid: int, x1: int, y1: int, x2: int, y2: int, label: str = "ball") -> TrackedObject:
    """An object whose mask is the pixel rectangle [x1, x2) x [y1, y2) of a WxH frame."""
    mask = np.zeros((H, W), bool)
    mask[max(0, y1) : y2, max(0, x1) : x2] = True
    return TrackedObject.model_construct(
        id=oid,
        label=label,
        score=2.0,
        confidence=0.9,
        box=[float(x1), float(y1), float(x2), float(y2)],
        mask=encode_mask(mask),
        age=0,
        state="tracked",
    )


def tracks(
    seq: int, objects: list[TrackedObject], epoch: str = "e1", camera: str = "cam0"
) -> TracksMessage:
    return TracksMessage.build(camera, seq, 1_000 + seq * FRAME_NS, W, H, "", objects, epoch=epoch)


def events_cfg(**cam: Any) -> EventsConfig:
    return EventsConfig.model_validate(
        {"probation_frames": 3, "end_after": 4, "cameras": {"cam0": cam}}
    )


ZONE = {"points": [[100, 0], [200, 0], [200, 240], [100, 240]], "inertia": 2, "min_share": 0.5}
GATE = {"points": [[0, 120], [320, 120]], "in_side": [160, 200]}


def objects_of(out: list[EventMessage], type_: str | None = None) -> list[EventMessage]:
    return [m for m in out if m.kind is Kind.OBJECT and (type_ is None or m.type.value == type_)]


# --------------------------------------------------------------------------- geometry


@pytest.mark.parametrize(
    ("tree", "needle"),
    [
        ({"zones": {"door": {"points": [[0, 0], [10, 10], [10, 0], [0, 10]]}}}, "crosses itself"),
        ({"zones": {"door": {"points": [[0, 0], [10, 10]]}}}, "at least 3"),
        (
            {"zones": {"door": {"points": [[0, 0], [900, 10], [10, 50]]}}},
            "outside the 640x480 frame",
        ),
        (
            {"zones": {"door": {"points": [[0, 0], [9, 0], [0, 9]], "labels": ["cat"]}}},
            "'cat' is not in",
        ),
        (
            {"zones": {"door": {"points": [[0, 0], [1, 0], [1, 2]], "units": "fraction"}}},
            "not a fraction",
        ),
        ({"zones": {"door": {"points": [[0, 0], [10, 0], [5, 0]]}}}, "crosses itself"),
        ({"lines": {"door": {"points": [[0, 0], [100, 0]], "in_side": [50, 0]}}}, "on the line"),
        ({"lines": {"door": {"points": [[5, 5], [5, 5]], "in_side": [50, 0]}}}, "the same"),
    ],
)
def test_bad_geometry_is_one_line_naming_camera_and_zone(tree: dict[str, Any], needle: str) -> None:
    with pytest.raises(ConfigError) as e:
        load_config(None, {"events.cameras.cam0": tree, "engine.prompt": "ball. box."})
    msg = str(e.value)
    assert "\n" not in msg
    assert needle in msg
    assert "cam0" in msg and "door" in msg


def test_random_malformed_zones_are_one_line_errors() -> None:
    """300 random zone and line definitions (seeded): each loads or is one ConfigError line."""
    rng = np.random.default_rng(24)
    junk: list[Any] = [None, "x", -1e9, float("nan"), 1e300, [], {}, True, "1,2"]
    refused = 0
    for _ in range(300):
        n = int(rng.integers(0, 7))
        points: Any = [[float(v) for v in rng.uniform(-50, 700, 2)] for _ in range(n)]
        if rng.random() < 0.3 and points:
            points[int(rng.integers(len(points)))] = junk[int(rng.integers(len(junk)))]
        kind = "zones" if rng.random() < 0.7 else "lines"
        shape: dict[str, Any] = {"points": points}
        if kind == "lines":
            shape["in_side"] = [float(v) for v in rng.uniform(-50, 700, 2)]
        if rng.random() < 0.2:
            shape["units"] = ["fraction", "px", "furlong"][int(rng.integers(3))]
        if rng.random() < 0.2:
            shape["labels"] = [["ball"], ["cat"], "ball", [""]][int(rng.integers(4))]
        try:
            load_config(
                None, {f"events.cameras.cam0.{kind}.z-1": shape, "engine.prompt": "ball. box."}
            )
        except ConfigError as e:
            refused += 1
            assert "\n" not in str(e) and "z-1" in str(e) and "cam0" in str(e), str(e)
    assert 100 < refused < 300  # both outcomes happen


def test_unknown_camera_and_good_geometry() -> None:
    with pytest.raises(ConfigError, match="camX"):
        load_config(None, {"events.cameras.camX.zones.door.points": [[0, 0], [9, 0], [0, 9]]})
    cfg = load_config(
        None,
        {
            "engine.prompt": "ball. box.",
            "events.cameras.cam0.zones.door": {
                "points": [[0, 0], [1, 0], [1, 1]],
                "units": "fraction",
                "labels": ["Ball"],
            },
            "events.cameras.cam0.lines.gate": GATE,
        },
    )
    assert cfg.events.cameras["cam0"].zones["door"].pixel_points(640, 480)[1] == (640.0, 0.0)


def test_polygon_rules() -> None:
    assert self_crossing([(0, 0), (4, 0), (4, 4), (0, 4)]) is None
    assert self_crossing([(0, 0), (4, 4), (4, 0), (0, 4)]) is not None  # a bow tie
    assert self_crossing([(0, 0), (4, 0), (2, 2), (4, 4), (0, 4)]) is None  # concave is fine
    inside = polygon_mask([(60, 40), (260, 40), (260, 200), (60, 200)], H, W)
    expect = np.zeros((H, W), bool)
    expect[40:200, 60:260] = True
    assert np.array_equal(inside, expect)
    m = np.zeros((H, W), bool)
    m[3:50, 7:90] = True
    m[100, 300] = True
    assert np.array_equal(decode_rle(encode_mask(m).counts, H, W), m)
    with pytest.raises(ValueError):
        decode_rle("0" * 5 + "zz", H, W)


# --------------------------------------------------------------------------- event logic


def test_probation_then_zone_entry_after_inertia_and_exit() -> None:
    ev = CameraEvents("cam0", events_cfg(zones={"door": ZONE}))
    xs = [10, 20, 30, 160, 30, 160, 160, 160, 160, 30, 30, 30]  # one-frame blip into the zone at 3
    out: list[EventMessage] = []
    per_frame = []
    for seq, x in enumerate(xs):
        got = ev.process(tracks(seq, [rect_object(7, x - 10, 100, x + 10, 120)]))
        per_frame.append(objects_of(got))
        out += got
    assert [m.type for m in per_frame[2]] == [EventType.NEW]  # after 3 frames, not before
    assert per_frame[0] == [] and per_frame[1] == []
    assert per_frame[3] == [] and per_frame[4] == []  # one frame in: inertia 2 holds
    entered = per_frame[6]  # frames 5 and 6 in: entered at 6
    assert [m.type for m in entered] == [EventType.UPDATE]
    assert entered[0].event["zones"] == ["door"] and entered[0].event["entered_zones"] == ["door"]
    assert entered[0].before is not None and entered[0].before["zones"] == []
    left = per_frame[10]  # frames 9 and 10 out
    assert [m.event["zones"] for m in left] == [[]]
    assert left[0].event["entered_zones"] == ["door"]
    assert all(not objects_of(per_frame[i]) for i in (5, 7, 8, 9, 11))
    assert ev.counts()["labels"] == {"ball": 1}
    for seq in range(len(xs), len(xs) + 4):
        out += ev.process(tracks(seq, []))
    ends = objects_of(out, "end")
    assert len(ends) == 1 and ends[0].event["end_ns"] == 1_000 + 11 * FRAME_NS
    assert len({m.event["id"] for m in objects_of(out)}) == 1


def test_bottom_center_presence_and_loitering() -> None:
    zone = {**ZONE, "presence": "bottom_center", "inertia": 1, "loitering": 0.2}
    ev = CameraEvents("cam0", events_cfg(zones={"door": zone}))
    zones_at = []
    for seq in range(8):
        out = ev.process(tracks(seq, [rect_object(1, 150, 100, 170, 120)]))
        zones_at.append([m.event["zones"] for m in objects_of(out)])
    # inside from frame 0; counted once 0.2 s (3 frames at 15 fps) have passed: frame 3
    assert zones_at[2] == [[]] and zones_at[3] == [["door"]]
    assert all(z == [] for z in zones_at[4:])


def test_line_crossing_direction_and_gaps() -> None:
    ev = CameraEvents("cam0", events_cfg(lines={"gate": {**GATE, "inertia": 1}}))
    ys = [80, 100, 115, 125, 140, 110, 90]  # centre y: in at frame 3, out at frame 5
    out: list[EventMessage] = []
    for seq, y in enumerate(ys):
        out += ev.process(tracks(seq, [rect_object(3, 50, y - 10, 70, y + 10)]))
    crossings = objects_of(out)[-1].event["lines"]
    assert [(c["direction"], c["t_ns"]) for c in crossings] == [
        ("in", 1_000 + 3 * FRAME_NS),
        ("out", 1_000 + 5 * FRAME_NS),
    ]
    assert ev.counts()["lines"] == {"gate": {"in": {"ball": 1}, "out": {"ball": 1}}}
    # Absent in between: the jump across the line is no crossing.
    seq = len(ys)
    out = ev.process(tracks(seq, []))
    out += ev.process(tracks(seq + 1, [rect_object(3, 50, 190, 70, 210)]))
    assert all(len(m.event["lines"]) == 2 for m in objects_of(out))


def _bled_object(y: int) -> TrackedObject:
    """A 20x20 object centred at (60, y) whose mask bled down a 1 px streak to y + 60 (a
    demo-model mask): its box's centre is at y + 25, its mask's at y + 3.9."""
    mask = np.zeros((H, W), bool)
    mask[y - 10 : y + 10, 50:70] = True
    mask[y + 10 : y + 60, 60:61] = True
    obj = TrackedObject.model_construct(
        id=3, label="ball", score=2.0, confidence=0.9, box=[50.0, y - 10.0, 70.0, y + 60.0],
        mask=encode_mask(mask), age=0, state="tracked",
    )  # fmt: skip
    return obj


@pytest.mark.parametrize(("anchor", "crossed_at"), [("mask_center", 4), ("center", 1)])
def test_line_crossing_by_the_mask_centre_ignores_a_bled_box(anchor: str, crossed_at: int) -> None:
    """Moving down 8 px a message from y = 90: the object crosses y = 120 between messages 3
    and 4 (y = 114, 122: mask centre 117.9, 125.9); its box's centre, pulled down by the bled
    streak, already on message 1 (y = 98, box centre 123). ``mask_center`` (the default) dates
    the crossing by the object."""
    ev = CameraEvents("cam0", events_cfg(lines={"gate": {**GATE, "inertia": 1, "anchor": anchor}}))
    out: list[EventMessage] = []
    for seq in range(7):
        out += ev.process(tracks(seq, [_bled_object(90 + 8 * seq)]))
    crossings = objects_of(out)[-1].event["lines"]
    assert [(c["direction"], c["t_ns"]) for c in crossings] == [
        ("in", 1_000 + crossed_at * FRAME_NS)
    ]
    assert LineConfig.model_validate(GATE).anchor == "mask_center"


@pytest.mark.parametrize(
    ("max_gap", "missing", "crossed"),
    [(5, 2, True), (5, 5, True), (5, 6, False), (0, 1, False)],
)
def test_line_crossed_across_a_short_gap(max_gap: int, missing: int, crossed: bool) -> None:
    """A mask lost for a few messages while its object crosses: the side before the gap is
    compared with the side after (timed at the first message back), up to ``max_gap``
    messages; a longer gap forgets the side."""
    ev = CameraEvents(
        "cam0", events_cfg(lines={"gate": {**GATE, "inertia": 1, "max_gap": max_gap}})
    )
    ev.cfg = ev.cfg.model_copy(update={"end_after": 20})  # the event outlives every gap here
    seq, out = 0, []
    for y in (76, 88, 100):  # above the line (y = 120), moving down 12 px a message
        out += ev.process(tracks(seq, [rect_object(3, 50, y - 10, 70, y + 10)]))
        seq += 1
    for _ in range(missing):
        out += ev.process(tracks(seq, []))
        seq += 1
    back = seq
    y = 100 + 12 * (missing + 1)  # where it is now: below the line
    assert y > 120
    out += ev.process(tracks(seq, [rect_object(3, 50, y - 10, 70, y + 10)]))
    lines = objects_of(out)[-1].event["lines"]
    if crossed:
        assert [(c["direction"], c["t_ns"]) for c in lines] == [("in", 1_000 + back * FRAME_NS)]
        assert ev.counts()["lines"] == {"gate": {"in": {"ball": 1}}}
    else:
        assert lines == [] and ev.counts()["lines"] == {}


def test_line_inertia_a_box_jittering_on_the_line_crosses_once() -> None:
    """Default inertia (3 frames): across at frame 2, back at 3 (no crossing), across again at 4
    and staying: one 'in', timed at frame 4, raised at frame 6; going back out for 2 frames
    only is no 'out'."""
    ev = CameraEvents("cam0", events_cfg(lines={"gate": GATE}))
    ys = [80, 100, 125, 115, 125, 130, 140, 150, 110, 112, 135, 140, 150]
    raised: list[int] = []
    out: list[EventMessage] = []
    for seq, y in enumerate(ys):
        got = ev.process(tracks(seq, [rect_object(3, 50, y - 10, 70, y + 10)]))
        if any(len(m.event["lines"]) > 0 for m in objects_of(got)):
            raised.append(seq)
        out += got
    crossings = objects_of(out)[-1].event["lines"]
    assert [(c["direction"], c["t_ns"]) for c in crossings] == [("in", 1_000 + 4 * FRAME_NS)]
    assert raised and raised[0] == 6
    assert ev.counts()["lines"] == {"gate": {"in": {"ball": 1}}}


def test_ghosts_raise_nothing_and_epoch_change_ends() -> None:
    ev = CameraEvents(
        "cam0", events_cfg(zones={"door": {**ZONE, "inertia": 1}}, lines={"gate": GATE})
    )
    out: list[EventMessage] = []
    out += ev.process(tracks(0, [rect_object(1, 140, 100, 160, 115)]))
    out += ev.process(tracks(1, [rect_object(1, 140, 120, 160, 140)]))  # in a zone, crossed
    for seq in range(2, 8):
        out += ev.process(tracks(seq, []))
    assert out == []
    assert ev.counts()["lines"] == {}  # a ghost's crossing does not count
    for seq in range(8, 12):
        out += ev.process(tracks(seq, [rect_object(2, 10, 10, 30, 30)]))
    assert [m.type for m in objects_of(out)] == [EventType.NEW]
    out = ev.process(tracks(0, [rect_object(2, 10, 10, 30, 30)], epoch="e2"))  # engine restarted
    assert [m.type for m in objects_of(out)] == [EventType.END]
    assert [m.type for m in out if m.kind is Kind.REVIEW] == [EventType.END]


def _review_run(gap_s: float) -> tuple[CameraEvents, list[tuple[int, EventMessage]]]:
    """Objects 1 (frames 0-9) and 2 (5-12) overlapping, nothing on 13-18, object 3 on 19-22
    (active from 21), nothing on 23-28; ``end_after`` 4, 15 frames/s. (frame, review message)s."""
    ev = CameraEvents("cam0", events_cfg().model_copy(update={"review_gap_s": gap_s}))
    out: list[tuple[int, EventMessage]] = []
    seq = 0
    for frames, objs in ((5, [1]), (5, [1, 2]), (3, [2]), (6, []), (4, [3]), (6, [])):
        for _ in range(frames):
            got = ev.process(
                tracks(seq, [rect_object(o, 10 * o, 10, 10 * o + 5, 20) for o in objs])
            )
            out += [(seq, m) for m in got if m.kind is Kind.REVIEW]
            seq += 1
    return ev, out


@pytest.mark.parametrize("gap_s", [0.0, 0.5])
def test_reviews_group_overlapping_objects(gap_s: float) -> None:
    """Objects 1 and 2 are one activity, object 3 later another. An item ends when its last
    object's event ends (``review_gap_s`` 0: frame 16 for 2, 26 for 3), or 0.5 s after that
    object's last frame (frame 20, before 3 is active; for 3, past the scene's end, so the
    scene's end ends it); its end time is that last frame either way."""
    ev, got = _review_run(gap_s)
    if gap_s:
        got += [(29, m) for m in ev.end_all() if m.kind is Kind.REVIEW]
    reviews = [m for _, m in got]
    assert [m.type for m in reviews] == [
        EventType.NEW,
        EventType.UPDATE,
        EventType.END,  # objects 1 and 2: one activity
        EventType.NEW,
        EventType.END,  # object 3 later: another
    ]
    assert [f for f, _ in got][2:] == ([16, 21, 26] if gap_s == 0 else [20, 21, 29])
    assert reviews[2].event["object_ids"] == [1, 2]
    assert reviews[2].event["end_ns"] == 1_000 + 12 * FRAME_NS  # object 2's last frame
    assert reviews[4].event["end_ns"] == 1_000 + 22 * FRAME_NS  # object 3's
    assert reviews[0].event["id"] == reviews[2].event["id"] != reviews[3].event["id"]
    assert reviews[2].before == reviews[1].event


def test_an_activity_with_a_moment_without_tracks_is_one_review() -> None:
    """With the default ``review_gap_s`` (5 s), object 3 becoming active 0.6 s after object
    2's last frame joins the same review item; the scene's end (``end_all``) ends it, at
    object 3's last frame."""
    ev, got = _review_run(EventsConfig.model_fields["review_gap_s"].default)
    assert [m.type for _, m in got] == [EventType.NEW, EventType.UPDATE, EventType.UPDATE]
    (end,) = [m for m in ev.end_all() if m.kind is Kind.REVIEW]
    assert end.type is EventType.END and end.event["id"] == got[0][1].event["id"]
    assert end.event["object_ids"] == [1, 2, 3] and end.event["end_ns"] == 1_000 + 22 * FRAME_NS


def test_hostile_tracks_rejected_not_crashing() -> None:
    ev = CameraEvents("cam0", events_cfg(zones={"door": ZONE}))
    bad = rect_object(1, 150, 100, 170, 120).model_copy(
        update={"mask": encode_mask(np.zeros((H, W), bool)).model_copy(update={"counts": "0zz"})}
    )
    out: list[EventMessage] = []
    for seq in range(5):
        out += ev.process(tracks(seq, [bad]))  # a malformed mask: never in the zone
    assert [m.type for m in objects_of(out)] == [EventType.NEW]
    assert objects_of(out)[0].event["zones"] == [] and ev.bad_masks == 5
    huge = TracksMessage.build("cam0", 200, 0, 100_000, 100_000, "", [], epoch="e1")
    assert ev.process(huge) == [] and ev.rejected == 1


# --------------------------------------------------------------------------- ground truth


def _gt_scene_events(scene: DemoScene, frames: int, cfg: EventsConfig) -> list[EventMessage]:
    ev = CameraEvents("cam0", cfg)
    writer = GroundTruthWriter(io.StringIO(), "cam0")
    out: list[EventMessage] = []
    for i in range(frames):
        h = writer.message(scene.render_frame(i, clean=True), i).header
        msg = TracksMessage.build(
            "cam0", i, 1_000 + i * FRAME_NS, h.width, h.height, "", h.objects, epoch="e1"
        )
        out += ev.process(msg)
    return out + ev.end_all()  # the end of the scene ends every open event


def _expected(
    scene: DemoScene, frames: int, probation: int, end_after: int, inertia: int, anchor: str
) -> tuple[Counter[tuple[int, str, int]], Counter[tuple[int, str]]]:
    """Crossings (object, direction, frame) of the horizontal line y = 120 (in: downwards) by
    the object's box centre or (``mask_center``) the mean of its pixel centres, and
    zone flips (object, enter|leave) of the rectangle [60, 260) x [40, 200) at share >= 0.5,
    straight from the scene's instance maps, per visit (a gap of ``end_after`` frames starts a
    new one; visits shorter than ``probation`` frames are ghosts)."""
    visits: dict[int, list[tuple[int, float, bool]]] = {}  # current visit: (frame, cy, present)
    last_seen: dict[int, int] = {}
    crossings: Counter[tuple[int, str, int]] = Counter()
    flips: Counter[tuple[int, str]] = Counter()

    def close(oid: int) -> None:
        visit = visits.pop(oid)
        if len(visit) < probation:
            return
        inside, streak = False, 0
        for k, (i, cy, p) in enumerate(visit):
            if k and visit[k - 1][0] == i - 1:
                py = visit[k - 1][1]
                if py <= 120 < cy:
                    crossings[(oid, "in", i)] += 1
                elif cy <= 120 < py:
                    crossings[(oid, "out", i)] += 1
            if k and visit[k - 1][0] != i - 1:
                streak = 0
            streak = streak + 1 if p != inside else 0
            if streak >= inertia:
                inside, streak = p, 0
                flips[(oid, "enter" if p else "leave")] += 1

    for i in range(frames):
        ids = scene.id_map(i)
        for oid in [int(o) for o in np.unique(ids) if o]:
            if oid in visits and i - last_seen[oid] > end_after:
                close(oid)
            ys, xs = np.nonzero(ids == oid)
            cy = ys.mean() + 0.5 if anchor == "mask_center" else (ys.min() + ys.max() + 1) / 2
            share = np.count_nonzero(ids[40:200, 60:260] == oid) / len(xs)
            visits.setdefault(oid, []).append((i, float(cy), bool(share >= 0.5)))
            last_seen[oid] = i
    for oid in list(visits):
        close(oid)
    return crossings, flips


@pytest.mark.parametrize("anchor", ["mask_center", "center"])
def test_ground_truth_crossings_and_entries_exact(anchor: str) -> None:
    """Seed 4 of a 320x240 demo scene, 200 frames: every expected line crossing (with its
    direction, object and frame, by the mask's or the box's centre) and zone entry/exit is
    found, nothing else, no duplicate."""
    scene = DemoScene(W, H, 4, 4, 15.0)
    frames, probation, end_after, inertia = 200, 3, 5, 2
    cfg = EventsConfig.model_validate(
        {
            "probation_frames": probation,
            "end_after": end_after,
            "cameras": {
                "cam0": {
                    "zones": {
                        "door": {
                            "points": [[60, 40], [260, 40], [260, 200], [60, 200]],
                            "inertia": inertia,
                            "min_share": 0.5,
                        }
                    },
                    "lines": {"gate": {**GATE, "anchor": anchor}},
                }
            },
        }
    )
    out = _gt_scene_events(scene, frames, cfg)
    ev = objects_of(out)
    finals: dict[str, EventDict] = {}
    found_flips: Counter[tuple[int, str]] = Counter()
    for m in ev:
        finals[m.event["id"]] = m.event
        was = set(m.before["zones"]) if m.before else set()
        now = set(m.event["zones"])
        found_flips[(m.event["object_id"], "enter")] += len(now - was)
        found_flips[(m.event["object_id"], "leave")] += len(was - now)
        assert m.event["object_id"] in {o.id for o in scene.objects}
    found = Counter(
        (e["object_id"], c["direction"], (c["t_ns"] - 1_000) // FRAME_NS)
        for e in finals.values()
        for c in e["lines"]
    )
    expected, flips = _expected(scene, frames, probation, end_after, inertia, anchor)
    assert sum(expected.values()) >= 4 and {d for _, d, _ in expected} == {"in", "out"}
    tp = sum((found & expected).values())
    precision = tp / max(1, sum(found.values()))
    recall = tp / max(1, sum(expected.values()))
    assert (precision, recall) == (1.0, 1.0), (found, expected)
    assert max(found.values()) == 1  # no duplicates
    assert sum(flips.values()) >= 2
    assert found_flips == flips


# --------------------------------------------------------------------------- storage


def _msg(
    i: int,
    camera: str = "cam0",
    label: str = "ball",
    zones: list[str] | None = None,
    end: int | None = 5,
) -> EventMessage:
    body: EventDict = {
        "id": f"ev{i}",
        "object_id": i,
        "label": label,
        "start_ns": i * 10,
        "end_ns": None if end is None else i * 10 + end,
        "zones": zones or [],
        "entered_zones": zones or [],
        "lines": [],
        "top_score": 0.5,
        "has_snapshot": False,
    }
    return EventMessage(
        camera, EventType.END if end is not None else EventType.NEW, Kind.OBJECT, body, None
    )


def test_store_round_trip_retention_and_reopen(tmp_path: Path) -> None:
    db = tmp_path / "sub" / "events.db"
    store = EventStore(db, retention_days=1.0, max_events=50)
    for i in range(60):
        assert store.write(
            _msg(i, label="car" if i % 2 else "person", zones=["drive"] if i % 3 == 0 else None)
        )
    assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert [e["id"] for e in store.query(limit=3)] == ["ev59", "ev58", "ev57"]
    assert {e["label"] for e in store.query(label="car", limit=100)} == {"car"}
    assert [e["id"] for e in store.query(zone="drive", after=500, before=560)] == ["ev54", "ev51"]
    assert store.query(camera="cam9") == []
    assert store.retain(now_ns=5) == 10  # over max_events: the 10 oldest go
    assert store.count() == 50
    store.write(_msg(100, end=None))  # still open when the service stops
    store.close()
    again = EventStore(db, retention_days=1.0, max_events=50)
    assert again.count() == 51 and again.query(limit=1)[0]["id"] == "ev100"
    (closed,) = again.close_open()  # its end, for the service to publish
    stored = again.query(limit=1)[0]
    assert closed.type is EventType.END and closed.before is not None
    assert closed.event["id"] == stored["id"] == "ev100" and closed.before["end_ns"] is None
    assert stored["end_ns"] is not None and closed.event["end_ns"] == stored["end_ns"]
    assert again.close_open() == []  # nothing open any more
    assert again.retain(now_ns=time.time_ns() + 2 * 86400 * 10**9) == 51  # all over a day old
    assert again.count() == 0
    again.close()


@pytest.mark.parametrize(
    "query",
    [
        {"camera": "cam0' OR '1'='1"},
        {"label": "x'; DROP TABLE events; --"},
        {"zone": '" OR 1=1 --'},
        {"limit": 10**12},
        {"limit": 0},
        {"limit": "5"},
        {"after": -1},
        {"after": "yesterday"},
        {"after": 10, "before": 5},
        {"before": 2**70},
        {"camera": "x" * 10_000},
    ],
)
def test_hostile_queries_rejected_or_harmless(tmp_path: Path, query: dict[str, Any]) -> None:
    store = EventStore(tmp_path / "e.db")
    for i in range(5):
        store.write(_msg(i))
    try:
        rows = store.query(**query)
    except ValueError as e:
        assert "\n" not in str(e)
    else:
        assert rows == []
    assert store.count() == 5 and len(store.query(limit=MAX_LIMIT)) == 5
    store.close()


def test_full_disk_is_logged_and_nothing_is_lost(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = EventStore(tmp_path / "e.db", pending_limit=100000)
    store.write(_msg(0))
    pages = store.db.execute("PRAGMA page_count").fetchone()[0]
    store.db.execute(f"PRAGMA max_page_count = {pages + 1}")
    big = "z" * 3000
    refused = 0
    with caplog.at_level(logging.ERROR, logger="clients.events.store"):
        for i in range(1, 40):
            if not store.write(_msg(i, label=big)):
                refused += 1
    assert refused > 0 and store.write_errors == refused
    assert any("refused a write" in r.getMessage() for r in caplog.records)
    assert all("\n" not in r.getMessage() for r in caplog.records)
    assert store.query(limit=1000)[-1]["id"] == "ev0"  # what was stored is intact
    store.db.execute("PRAGMA max_page_count = 1000000")  # space again
    assert store.flush() and not store.pending
    assert store.count() == 40
    store.close()


# --------------------------------------------------------------------------- the process


def test_events_process_bad_database_is_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "clients.cli",
            "events",
            "--db",
            str(blocker / "events.db"),
            "--events",
            tcp_endpoint(),
            "--tracks",
            tcp_endpoint(),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "cannot open the events database" in proc.stderr


def test_events_process_between_zeromq_sockets(tmp_path: Path) -> None:
    """``promptcam events`` as a subprocess: ground-truth tracks from a PUB on loopback, a
    malformed message among them (rejected, counted), events received by a SUB, the database
    filled, SIGTERM ends the open events and stops it."""
    tracks_ep, events_ep = tcp_endpoint(), tcp_endpoint()
    cfg = tmp_path / "events.yaml"
    cfg.write_text(
        json.dumps(
            {
                "source": {"width": W, "height": H},
                "events": {
                    "probation_frames": 3,
                    "end_after": 5,
                    "cameras": {"cam0": {"lines": {"gate": GATE}}},
                },
            }
        )
    )
    db = tmp_path / "events.db"
    ctx: zmq.Context[Any] = zmq.Context()
    pub = ctx.socket(zmq.XPUB)
    pub.linger = 0
    pub.bind(tracks_ep)
    sub = ctx.socket(zmq.SUB)
    sub.linger = 0
    sub.setsockopt(zmq.SUBSCRIBE, b"events.")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "clients.cli",
            "events",
            "--config",
            str(cfg),
            "--tracks",
            tracks_ep,
            "--events",
            events_ep,
            "--db",
            str(db),
            "--log-level",
            "WARNING",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        ready = json.loads(proc.stdout.readline())
        assert ready["events"] == events_ep
        monitor = sub.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED)
        sub.connect(events_ep)
        assert monitor.poll(15000), "no connection to the events socket"
        assert pub.poll(15000), "the service did not subscribe to tracks"
        assert pub.recv().startswith(b"\x01tracks.")
        time.sleep(0.2)  # the SUB's subscription reaches the service's PUB
        pub.send_multipart([b"tracks.cam0", b"{not json"])
        scene = DemoScene(W, H, 4, 4, 15.0)
        writer = GroundTruthWriter(io.StringIO(), "cam0")
        for i in range(120):
            h = writer.message(scene.render_frame(i, clean=True), i).header
            msg = TracksMessage.build(
                "cam0", i, 1_000 + i * FRAME_NS, W, H, "", h.objects, epoch="e1"
            )
            pub.send_multipart(msg.to_parts())
        got: list[dict[str, Any]] = []

        def crossed() -> bool:
            while sub.poll(50):
                topic, header = sub.recv_multipart()
                assert topic == b"events.cam0"
                got.append(json.loads(header))
            return any(g["event"]["lines"] for g in got)

        wait_for(crossed, timeout=15.0, what="an event with a line crossing")
        assert {g["type"] for g in got} >= {"new"} and all(g["v"] == 1 for g in got)
        assert all(
            set(g["event"])
            >= {
                "id",
                "object_id",
                "label",
                "start_ns",
                "end_ns",
                "zones",
                "entered_zones",
                "lines",
                "top_score",
                "has_snapshot",
            }
            for g in got
        )
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=15)
        while sub.poll(1000):  # the end events published at SIGTERM
            got.append(json.loads(sub.recv_multipart()[1]))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        ctx.destroy(linger=0)
    assert proc.returncode == 0, err
    final = json.loads(out.strip().splitlines()[-1])
    assert final["tracks"]["rejected"] == 1 and final["published"] >= len(got)
    # The counts it ends with are the crossings of the events it published, all ended.
    ended = [g for g in got if g["type"] == "end" and g["kind"] == "object"]
    crossings = Counter(
        (c["direction"], g["event"]["label"]) for g in ended for c in g["event"]["lines"]
    )
    lines = final["counts"][0]["lines"].get("gate", {})
    assert crossings and crossings == Counter(
        {(d, label): n for d, per in lines.items() for label, n in per.items()}
    )
    assert "Traceback" not in err
    con = sqlite3.connect(db)
    rows = con.execute(
        "SELECT COUNT(*), COUNT(end_ns) FROM events WHERE kind = 'object'"
    ).fetchone()
    con.close()
    assert rows[0] >= 1 and rows[0] == rows[1]  # every event stored, all ended by SIGTERM
