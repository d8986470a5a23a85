"""Bench part ``events``: event precision and recall on held-out demo scenes, and (with
``--soak MINUTES``) the events service under 4 cameras for that long
(``clients.bench.events_soak``).

Scenes: demo scenes of seeds the events logic was never tuned on (``SEEDS``, or ``--seeds``;
the tests use seed 4, the events logic was tuned on 24-35, the training scenes start at
1,000,000), 640x480, 6 objects. Geometry per scene: a horizontal line across the middle ("in"
downwards), a vertical one ("in" rightwards) and a zone covering the middle quarter of the frame
(mask presence, share >= 0.5, inertia 2).

Expected events: the events logic (``clients.events.tracker.CameraEvents``) run on the
generator's exact ground truth (its instance masks and boxes), so every crossing and zone entry
is known with its object, direction and frame. Found events: the same logic on the tracks of
promptcam's engine (``build_engine`` + ``process`` with the ``demo`` preset unless ``--models``,
prompt ``ball. box.``, grounding in line every 20 frames) over the same frames. Each engine
track is mapped to the ground-truth object its masks overlap most (IoU >= 0.5 on most of its
frames). A found crossing is right when a not-yet-matched expected crossing has the same line,
direction and (mapped) object within ``TOLERANCE`` frames; a zone entry likewise (zone, object,
frame). Reported: precision and recall of crossings and of zone entries (target >= 0.95),
duplicate alerts (review items beyond one per ground-truth activity: target 0), duplicate
object events (more than one event for one ground-truth object's visit), and the latency of an
event (frame in -> events message out, engine and events logic, p50/p99; transport is in the
soak).
"""

from __future__ import annotations

import argparse
import io
import logging
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from clients.bench import BenchRow, row
from clients.events.config import EventsConfig
from clients.events.masks import decode_rle
from clients.events.model import EventMessage, EventType, Kind
from clients.events.tracker import CameraEvents
from stream.config import Config
from stream.demo import DemoScene
from stream.groundtruth import GroundTruthWriter
from stream.wire import TracksMessage

log = logging.getLogger(__name__)

PART = "events"
SEEDS = (20, 21, 22, 23)
FRAMES = 150
QUICK_SEEDS, QUICK_FRAMES = (20,), 40
WIDTH, HEIGHT, OBJECTS = 640, 480, 6
FRAME_NS = 66_666_667
# An event as matched: its key (track, kind, name...) and, last, its frame.
KeyedFrame = tuple[int | str, ...]
TOLERANCE = 3  # frames between a found and an expected event that still match
PROMPT = "ball. box."


def scene_events_config(width: int, height: int) -> EventsConfig:
    return EventsConfig.model_validate(
        {
            "probation_frames": 3,
            "end_after": 10,
            "snapshots": False,
            "cameras": {
                "cam0": {
                    "lines": {
                        "mid_h": {"points": [[0, height / 2], [width, height / 2]], "in_side": [width / 2, height]},
                        "mid_v": {"points": [[width / 2, 0], [width / 2, height]], "in_side": [width, height / 2]},
                    },
                    "zones": {
                        "centre": {
                            "points": [[width / 4, height / 4], [3 * width / 4, height / 4],
                                       [3 * width / 4, 3 * height / 4], [width / 4, 3 * height / 4]],
                            "inertia": 2,
                            "min_share": 0.5,
                        }
                    },
                }
            },
        }
    )  # fmt: skip


@dataclass
class Found:
    """What the events logic said over one run, by frame index."""

    crossings: list[tuple[int, str, str, int]] = field(
        default_factory=list
    )  # track, line, dir, frame
    entries: list[tuple[int, str, int]] = field(default_factory=list)  # track, zone, frame
    reviews: list[tuple[int, int]] = field(default_factory=list)  # first frame, last frame
    events_per_track: Counter[int] = field(default_factory=Counter)
    latency_ms: list[float] = field(default_factory=list)


def collect(messages: list[tuple[int, EventMessage]]) -> Found:
    """Crossings, zone entries, review spans and events per track from (frame, message)."""
    out = Found()
    review_start: dict[str, int] = {}
    for i, m in messages:
        ev, before = m.event, m.before or {}
        if m.kind is Kind.REVIEW:
            if m.type is EventType.NEW:
                review_start[ev["id"]] = i
            elif m.type is EventType.END:
                out.reviews.append((review_start.pop(ev["id"], i), i))
            continue
        if m.type is EventType.NEW:
            out.events_per_track[ev["object_id"]] += 1
        known = len(before.get("lines", []))
        for c in ev["lines"][known:]:
            out.crossings.append((ev["object_id"], c["line"], c["direction"], i))
        for z in set(ev["zones"]) - set(before.get("zones", [])):
            out.entries.append((ev["object_id"], z, i))
    for start in review_start.values():
        out.reviews.append((start, messages[-1][0] if messages else start))
    return out


def run_logic(cfg: EventsConfig, msgs: list[TracksMessage]) -> Found:
    ev = CameraEvents("cam0", cfg)
    out: list[tuple[int, EventMessage]] = []
    for i, msg in enumerate(msgs):
        out += [(i, m) for m in ev.process(msg)]
    out += [(len(msgs) - 1, m) for m in ev.end_all()]
    return collect(out)


def truth_messages(scene: DemoScene, frames: int) -> tuple[list[TracksMessage], list[np.ndarray]]:
    """Exact tracks of the scene's objects, and the rendered frames (BGR)."""
    writer = GroundTruthWriter(io.StringIO(), "cam0")
    msgs, images = [], []
    for i in range(frames):
        frame = scene.render_frame(i)
        h = writer.message(frame, i).header
        msgs.append(
            TracksMessage.build(
                "cam0", i, 1_000 + i * FRAME_NS, h.width, h.height, "", h.objects, epoch="gt"
            )
        )
        images.append(frame.image)
    return msgs, images  # fmt: skip


def track_to_truth(
    pred: list[TracksMessage], truth: list[TracksMessage]
) -> tuple[dict[int, int], list[dict[int, int]]]:
    """Engine track id -> ground-truth object id: per frame, the object its mask overlaps with
    IoU >= 0.5 there; and over the run, the object it overlaps so on most of its frames (tracks
    with no such object are left out)."""
    votes: dict[int, Counter[int]] = defaultdict(Counter)
    per_frame: list[dict[int, int]] = []
    for p, t in zip(pred, truth, strict=True):
        hw = (t.header.height, t.header.width)
        gt = [(o.id, decode_rle(o.mask.counts, *hw)) for o in t.header.objects]
        here: dict[int, int] = {}
        for o in p.header.objects:
            if o.state == "lost":
                continue
            m = decode_rle(o.mask.counts, *hw)
            best, best_iou = -1, 0.0
            for gid, gm in gt:
                inter = np.count_nonzero(m & gm)
                if inter:
                    iou = inter / np.count_nonzero(m | gm)
                    if iou > best_iou:
                        best, best_iou = gid, iou
            votes[o.id][best if best_iou >= 0.5 else -1] += 1
            if best_iou >= 0.5:
                here[o.id] = best
        per_frame.append(here)
    overall = {}
    for tid, v in votes.items():
        gid, _ = v.most_common(1)[0]
        if gid >= 0:
            overall[tid] = gid
    return overall, per_frame


def object_at(
    track: int, frame: int, overall: dict[int, int], per_frame: list[dict[int, int]]
) -> int:
    """The ground-truth object an engine track is on at ``frame`` (or the frame before, for an
    event raised as it leaves), else the one it is on most; ``-1 - track`` when none."""
    for f in (frame, frame - 1):
        if 0 <= f < len(per_frame) and track in per_frame[f]:
            return per_frame[f][track]
    return overall.get(track, -1 - track)


def match(found: Sequence[KeyedFrame], expected: Sequence[KeyedFrame]) -> int:
    """One-to-one matches of (key..., frame) tuples: same key, frames within ``TOLERANCE``."""
    pool: dict[tuple[int | str, ...], list[int]] = defaultdict(list)
    for e in expected:
        pool[e[:-1]].append(_frame_of(e))
    tp = 0
    for f in sorted(found, key=_frame_of):
        frames = pool.get(f[:-1], [])
        at = _frame_of(f)
        near = [x for x in frames if abs(x - at) <= TOLERANCE]
        if near:
            frames.remove(min(near, key=lambda x: abs(x - at)))
            tp += 1
    return tp


def _frame_of(t: KeyedFrame) -> int:
    """The frame of a (key..., frame) tuple."""
    frame = t[-1]
    if not isinstance(frame, int):
        raise TypeError(f"the last item of {t!r} is not a frame number")
    return frame


@dataclass
class Score:
    tp: int = 0
    found: int = 0
    expected: int = 0

    def add(self, tp: int, found: int, expected: int) -> None:
        self.tp += tp
        self.found += found
        self.expected += expected

    @property
    def precision(self) -> float:
        return self.tp / self.found if self.found else 1.0

    @property
    def recall(self) -> float:
        return self.tp / self.expected if self.expected else 1.0


def duplicate_alerts(found: list[tuple[int, int]], expected: list[tuple[int, int]]) -> int:
    """Review items beyond one per expected activity they overlap (frame spans)."""
    extra = 0
    for s, e in expected:
        n = sum(1 for fs, fe in found if fs <= e and fe >= s)
        extra += max(0, n - 1)
    return extra


def _engine_tracks(
    cfg: Config, images: list[np.ndarray], ecfg: EventsConfig
) -> tuple[list[TracksMessage], list[float]]:
    """The engine's tracks of ``images`` and, per frame that raised events, the time from the
    frame going in to its events coming out (engine + events logic), ms."""
    from engine.build import build_engine
    from engine.outputs import to_tracks_message
    from engine.pipeline import FrameInput

    engine = build_engine(cfg, background_grounding=False)
    logic = CameraEvents("cam0", ecfg)
    msgs, latency = [], []
    try:
        for i, image in enumerate(images):
            t0 = time.perf_counter()
            r = engine.process(FrameInput(i, 1_000 + i * FRAME_NS, image), [])
            msg = to_tracks_message("cam0", r)
            if logic.process(msg):
                latency.append((time.perf_counter() - t0) * 1000)
            msgs.append(msg)
    finally:
        engine.close()
    return msgs, latency  # fmt: skip


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def _cadence(bench_cfg: Config, cfg: Config, args: argparse.Namespace) -> Config:
    """The quality bench's grounding cadence (every ``STEP`` frames, like for like with the
    reference), unless ``--set engine.reground_every_frames`` asked for another: events have
    no reference side, and a surveillance camera may be grounded more often."""
    asked = {s.split("=", 1)[0].strip() for s in getattr(args, "set", None) or []}
    if "engine.reground_every_frames" not in asked:
        return bench_cfg
    every = cfg.engine.reground_every_frames
    return bench_cfg.model_copy(
        update={"engine": bench_cfg.engine.model_copy(update={"reground_every_frames": every})}
    )


def run(cfg: Config, args: argparse.Namespace) -> list[BenchRow]:
    if getattr(args, "soak", None) is not None:
        from clients.bench.events_soak import run_soak

        return run_soak(cfg, args)
    from clients.bench.quality import _config, parse_seeds

    quick = bool(getattr(args, "quick", False))
    default, frames = (QUICK_SEEDS, QUICK_FRAMES) if quick else (SEEDS, FRAMES)
    seeds: tuple[int, ...] = parse_seeds(getattr(args, "seeds", None)) or default
    ecfg = scene_events_config(WIDTH, HEIGHT)
    ecfg_cfg = _cadence(_config(cfg, args, PROMPT), cfg, args)
    crossings, entries = Score(), Score()
    dup_alerts = dup_events = activities = 0
    latency: list[float] = []
    for seed in seeds:
        scene = DemoScene(WIDTH, HEIGHT, OBJECTS, seed=seed)
        truth, images = truth_messages(scene, frames)
        expected = run_logic(ecfg, truth)
        pred, lat = _engine_tracks(ecfg_cfg, images, ecfg)
        latency += lat
        found = run_logic(ecfg, pred)
        to_gt, per_frame = track_to_truth(pred, truth)
        fc = [(object_at(t, i, to_gt, per_frame), ln, d, i) for t, ln, d, i in found.crossings]
        fe = [(object_at(t, i, to_gt, per_frame), z, i) for t, z, i in found.entries]
        crossings.add(match(fc, expected.crossings), len(fc), len(expected.crossings))
        entries.add(match(fe, expected.entries), len(fe), len(expected.entries))
        dup_alerts += duplicate_alerts(found.reviews, expected.reviews)
        activities += len(expected.reviews)
        per_gt: Counter[int] = Counter()
        for t, n in found.events_per_track.items():
            if t in to_gt:
                per_gt[to_gt[t]] += n
        dup_events += sum(
            max(0, n - expected.events_per_track.get(g, 0)) for g, n in per_gt.items()
        )
    model = ecfg_cfg.models.preset if ecfg_cfg.models.sam2_checkpoint is None else "custom"
    every = ecfg_cfg.engine.reground_every_frames
    where = f"seeds {', '.join(map(str, seeds))} x {frames} frames, {WIDTH}x{HEIGHT}, {OBJECTS} objects, model {model}, grounded every {every} frames, tolerance {TOLERANCE} frames"
    return [
        row(PART, "line crossings precision", crossings.precision, "", f"{crossings.tp}/{crossings.found} found right (line, direction, object); target >= 0.95; {where}"),
        row(PART, "line crossings recall", crossings.recall, "", f"{crossings.tp}/{crossings.expected} expected found; target >= 0.95"),
        row(PART, "zone entries precision", entries.precision, "", f"{entries.tp}/{entries.found} found right (zone, object); target >= 0.95"),
        row(PART, "zone entries recall", entries.recall, "", f"{entries.tp}/{entries.expected} expected found; target >= 0.95"),
        row(PART, "duplicate alerts", dup_alerts, "", f"review items beyond one per activity, {activities} activities; target 0"),
        row(PART, "duplicate object events", dup_events, "", "events beyond the ground truth's per object (ID switches, fragments)"),
        row(PART, "event latency p50", _pct(latency, 50), "ms", "frame in -> events out, engine + events logic, no transport"),
        row(PART, "event latency p99", _pct(latency, 99), "ms", f"{len(latency)} frames that raised events"),
    ]  # fmt: skip
