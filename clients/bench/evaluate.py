"""Tracking quality of predicted tracks against ground truth (``promptcam eval PRED GT``).

Both files are tracks JSONL (one tracks header per frame, masks as COCO RLE): PRED as written by
``promptcam track --tracks`` or ``promptcam record``, GT as written by ``promptcam scene`` (labels
are object descriptions such as ``red ball``). Frames are matched by ``seq``; every GT frame is
evaluated (a frame PRED lacks counts as empty).

Targets: the prompt's phrases (PRED's prompt, or ``prompt=``) decide which GT objects are
targets and under which label: a phrase names an object when each of its words is a word of the
object's description (``ball`` names a ``red ball``, ``red balls`` too). Other GT objects are no
targets (tracking them is a false positive). With ``labels=False`` (box-prompted runs, whose
labels are ``object``) every GT object is a target and labels are not compared. GT objects with
fewer visible pixels than ``stream.demo.min_visible_area`` are ignored regions: a prediction
that matches one (mask IoU >= 0.5) is dropped, and the object itself is not scored on that frame.
A predicted object with an empty mask (a ``lost`` track: the engine reports it but segments
nothing) claims no pixels, so it is no detection: it is dropped, never a false positive.

Measures:
- HOTA (DetA, AssA), IDF1 and ID switches (plus MOTA) by ``trackeval``'s metric classes, with
  mask IoU as the similarity (0 across labels);
- J&F (DAVIS, ``clients.bench.davis``): each target GT object is assigned one predicted track
  (Hungarian on the summed mask IoU, same label) and scored on every frame after its first
  findable one (frames where both are empty count as 1; an object with no track scores against
  an empty prediction);
- AP50 per label: COCO average precision at box IoU 0.5 (``pycocotools``), the per-frame boxes
  ranked by score; ignored regions are COCO crowd regions;
- two IDs on one object (``two-ID share``, ``two-ID run``): target-frames on which two or more
  predictions, of any labels, each have at least half their mask on the target, and the longest
  run of such frames for one target (what a viewer sees as one object with two IDs).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils
from scipy.optimize import linear_sum_assignment

from clients.bench.davis import JandF, f_measure, jaccard, sequence_jandf
from stream.config import Config
from stream.demo import min_visible_area
from stream.errors import PromptcamError
from stream.wire import MAX_HEADER_BYTES, TracksMessage, WireError

log = logging.getLogger(__name__)

MATCH_IOU = 0.5
TWO_ID_SHARE = 0.5  # share of a prediction's mask on a target for it to be on that target
_SINGULAR = {"balls": "ball", "boxes": "box"}


class EvalError(PromptcamError):
    """A tracks file cannot be evaluated; the message is one line."""


@dataclass
class FrameObjects:
    """The objects of one frame: parallel lists, masks as COCO RLE dicts."""

    ids: list[int] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    boxes: list[list[float]] = field(default_factory=list)
    rles: list[dict[str, object]] = field(default_factory=list)
    areas: list[int] = field(default_factory=list)

    def add(
        self, oid: int, label: str, score: float, box: Sequence[float], rle: dict[str, object]
    ) -> None:
        self.ids.append(oid)
        self.labels.append(label)
        self.scores.append(score)
        self.boxes.append([float(v) for v in box])
        self.rles.append(rle)
        self.areas.append(int(mask_utils.area(rle)))

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, keep: Iterable[int]) -> FrameObjects:
        out = FrameObjects()
        for i in keep:
            out.add(self.ids[i], self.labels[i], self.scores[i], self.boxes[i], self.rles[i])
        return out

    def relabel(self, labels: list[str]) -> FrameObjects:
        out = FrameObjects(
            list(self.ids), labels, list(self.scores), list(self.boxes), list(self.rles)
        )
        out.areas = list(self.areas)
        return out

    def mask(self, i: int) -> np.ndarray:
        return np.asarray(mask_utils.decode(self.rles[i]), dtype=bool)


@dataclass
class TrackSequence:
    """Frames of one video by ``seq``, with the frame size and the prompt of the first frame."""

    width: int
    height: int
    prompt: str
    frames: dict[int, FrameObjects]


# The largest frame a file may declare: promptcam's largest source frame (the bounds of
# source.width and source.height). Masks of that size decode to 33 MB each.
MAX_FRAME_PIXELS = 7680 * 4320
# Characters of one compressed run length: 6 carry 29 bits and a sign, far above any frame's
# pixel count; more would overflow pycocotools' 32-bit arithmetic.
MAX_RUN_CHARS = 6


def rle_counts(counts: str, height: int, width: int) -> np.ndarray:
    """The run lengths of a COCO compressed RLE string, decoded exactly as pycocotools'
    ``rleFrString`` does (6 bits a character from '0', 5 of value and a continuation bit; the
    last character of a value carries its sign; from the fourth on a value is a difference to
    the one two before), in numpy, in time linear in the string. ``ValueError`` naming what is
    wrong unless the string is well-formed, every run is >= 0 and the runs cover exactly
    ``height * width`` pixels: pycocotools trusts all of that, and spins for minutes or
    writes out of bounds when it does not hold."""
    try:
        raw = counts.encode("ascii")
    except UnicodeEncodeError:
        raise ValueError("counts are not ASCII") from None
    c = np.frombuffer(raw, np.uint8).astype(np.int32) - 48
    if not c.size:
        raise ValueError("counts are empty")
    bad = np.flatnonzero((c < 0) | (c > 63))
    if bad.size:
        raise ValueError(f"counts character {counts[bad[0]]!r} at {bad[0]} is not RLE")
    ends = np.flatnonzero((c & 0x20) == 0)
    if not ends.size or ends[-1] != c.size - 1:
        raise ValueError("counts end inside a run length")
    starts = np.concatenate(([0], ends[:-1] + 1))
    lengths = ends - starts + 1
    if lengths.max() > MAX_RUN_CHARS:
        raise ValueError(f"a run length of more than {MAX_RUN_CHARS} characters")
    shift = 5 * (np.arange(c.size) - np.repeat(starts, lengths))
    values = np.add.reduceat((c & 0x1F) << shift, starts).astype(np.int64)
    negative = (c[ends] & 0x10) != 0
    values[negative] -= np.left_shift(1, 5 * lengths[negative]).astype(np.int64)
    runs = values.copy()
    runs[1::2] = np.cumsum(values[1::2])
    runs[2::2] = np.cumsum(values[2::2])
    if (runs < 0).any():
        raise ValueError("a negative run length")
    total = int(runs.sum())
    if total != height * width:
        raise ValueError(f"runs cover {total} pixels, a {height}x{width} mask has {height * width}")
    return runs


def _lines(path: Path) -> Iterable[tuple[int, bytes]]:
    """(number, line) of a file read in bounded lines (a line over the wire's header limit is
    an error, not a 3 GB allocation)."""
    if not path.exists():
        raise EvalError(f"cannot read {path}: no such file")
    if not path.is_file():
        raise EvalError(f"cannot read {path}: not a regular file")
    try:
        with path.open("rb") as f:
            n = 0
            while line := f.readline(MAX_HEADER_BYTES + 1):
                n += 1
                if len(line) > MAX_HEADER_BYTES:
                    raise EvalError(f"{path}:{n}: line longer than {MAX_HEADER_BYTES} bytes")
                yield n, line
    except OSError as e:
        raise EvalError(f"cannot read {path}: {e.strerror or e}") from None


def read_tracks(path: Path) -> TrackSequence:
    """Read a tracks JSONL file; ``EvalError`` naming the line on anything malformed (not
    UTF-8 JSON, not a tracks message, a frame over ``MAX_FRAME_PIXELS``, a mask that is not
    well-formed RLE of the frame's size)."""
    frames: dict[int, FrameObjects] = {}
    size: tuple[int, int] | None = None
    prompt = ""
    for n, line in _lines(path):
        if not line.strip():
            continue
        try:
            h = TracksMessage.from_json(line).header
        except WireError as e:
            raise EvalError(f"{path}:{n}: not a tracks message ({e})") from None
        if h.width * h.height > MAX_FRAME_PIXELS:
            raise EvalError(
                f"{path}:{n}: frame size {h.width}x{h.height} is over {MAX_FRAME_PIXELS} pixels"
            )
        if size is None:
            size, prompt = (h.width, h.height), h.prompt
        elif size != (h.width, h.height):
            raise EvalError(f"{path}:{n}: frame size {h.width}x{h.height} differs from {size}")
        if h.seq in frames:
            raise EvalError(f"{path}:{n}: frame seq {h.seq} appears twice")
        objs = FrameObjects()
        for o in h.objects:
            if o.mask.size != [h.height, h.width]:
                raise EvalError(f"{path}:{n}: object {o.id} mask size differs from the frame")
            try:
                rle_counts(o.mask.counts, h.height, h.width)
            except ValueError as e:
                raise EvalError(f"{path}:{n}: object {o.id} mask is not valid RLE: {e}") from None
            rle: dict[str, object] = {"size": list(o.mask.size), "counts": o.mask.counts.encode()}
            objs.add(o.id, o.label, o.score, o.box, rle)
        frames[h.seq] = objs
    if size is None:
        raise EvalError(f"{path}: no tracks message in the file")
    return TrackSequence(size[0], size[1], prompt, frames)


def sequence_from_results(results: Sequence[Any], prompt: str | None = None) -> TrackSequence:
    """A ``TrackSequence`` from ``engine.pipeline.FrameResult``-like objects (``seq``, ``width``,
    ``height``, ``prompt``, ``objects`` with ``id``, ``label``, ``score``, ``box``, ``mask``)."""
    if not results:
        raise EvalError("no frame to evaluate")
    frames: dict[int, FrameObjects] = {}
    for r in results:
        objs = FrameObjects()
        for o in r.objects:
            rle = mask_utils.encode(np.asfortranarray(o.mask, dtype=np.uint8))
            objs.add(o.id, o.label, float(o.score), o.box, rle)
        frames[r.seq] = objs
    first = results[0]
    return TrackSequence(
        first.width, first.height, first.prompt if prompt is None else prompt, frames
    )


def _words(text: str) -> set[str]:
    return {_SINGULAR.get(w, w) for w in text.lower().split()}


def phrase_for(description: str, phrases: Sequence[str]) -> str | None:
    """The first phrase that names an object of ``description`` (see the module docstring)."""
    have = _words(description)
    for p in phrases:
        if _words(p) <= have:
            return p
    return None


# ---------------------------------------------------------------------- per-frame matching


def _iou(a: FrameObjects, b: FrameObjects) -> np.ndarray:
    """Mask IoU matrix [len(a), len(b)]."""
    if not len(a) or not len(b):
        return np.zeros((len(a), len(b)))
    return np.asarray(mask_utils.iou(a.rles, b.rles, [0] * len(b)), dtype=np.float64)


@dataclass
class _Frame:
    gt: FrameObjects  # scored targets on this frame
    pred: FrameObjects  # predictions left after the ignored regions took theirs
    ignored: FrameObjects  # too-small targets (crowd regions for AP)
    iou: np.ndarray  # [gt, pred] mask IoU
    size: tuple[int, int]  # height, width


def _prepare(
    pred: TrackSequence, gt: TrackSequence, phrases: Sequence[str] | None, gt_ids: set[int] | None
) -> list[_Frame]:
    if (pred.width, pred.height) != (gt.width, gt.height):
        raise EvalError(
            f"PRED frames are {pred.width}x{pred.height} but GT frames {gt.width}x{gt.height}"
        )
    extra = sorted(set(pred.frames) - set(gt.frames))
    if extra:
        raise EvalError(f"PRED has frame seq {extra[0]} that GT lacks ({len(extra)} such frames)")
    floor = min_visible_area(gt.width, gt.height)
    out = []
    for seq in sorted(gt.frames):
        g = gt.frames[seq]
        labels = [phrase_for(lbl, phrases) if phrases is not None else "" for lbl in g.labels]
        keep = [
            i
            for i, lbl in enumerate(labels)
            if lbl is not None and (gt_ids is None or g.ids[i] in gt_ids)
        ]
        named = g.subset(keep).relabel([labels[i] or "" for i in keep])
        big = [i for i in range(len(named)) if named.areas[i] >= floor]
        small = [i for i in range(len(named)) if named.areas[i] < floor]
        targets, ignored = named.subset(big), named.subset(small)
        p = pred.frames.get(seq, FrameObjects())
        p = p.subset(i for i in range(len(p)) if p.areas[i] > 0)
        if phrases is None:
            p = p.relabel([""] * len(p))
        drop: set[int] = set()
        if len(ignored) and len(p):
            iou = _iou(ignored, p)
            rows, cols = linear_sum_assignment(-iou)
            drop = {int(c) for r, c in zip(rows, cols, strict=True) if iou[r, c] >= MATCH_IOU}
        p = p.subset(i for i in range(len(p)) if i not in drop)
        iou = _iou(targets, p)
        same = np.array([[a == b for b in p.labels] for a in targets.labels], dtype=bool)
        out.append(
            _Frame(
                targets,
                p,
                ignored,
                np.where(same.reshape(iou.shape), iou, 0.0),
                (gt.height, gt.width),
            )
        )
    return out


# ---------------------------------------------------------------------- tracking metrics


def _tracking(frames: list[_Frame]) -> dict[str, float]:
    from trackeval.metrics import CLEAR, HOTA, Identity

    gt_index: dict[int, int] = {}
    pr_index: dict[int, int] = {}
    for f in frames:
        for i in f.gt.ids:
            gt_index.setdefault(i, len(gt_index))
        for i in f.pred.ids:
            pr_index.setdefault(i, len(pr_index))
    data = {
        "num_timesteps": len(frames),
        "num_gt_ids": len(gt_index),
        "num_tracker_ids": len(pr_index),
        "num_gt_dets": sum(len(f.gt) for f in frames),
        "num_tracker_dets": sum(len(f.pred) for f in frames),
        "gt_ids": [np.array([gt_index[i] for i in f.gt.ids], dtype=int) for f in frames],
        "tracker_ids": [np.array([pr_index[i] for i in f.pred.ids], dtype=int) for f in frames],
        "similarity_scores": [f.iou for f in frames],
    }
    quiet = {"PRINT_CONFIG": False}
    with contextlib.redirect_stdout(io.StringIO()):
        hota = HOTA(quiet).eval_sequence(data)
        ident = Identity(quiet).eval_sequence(data)
        clear = CLEAR(quiet).eval_sequence(data)
    return _two_ids(frames) | {
        "HOTA": float(np.mean(hota["HOTA"])),
        "DetA": float(np.mean(hota["DetA"])),
        "AssA": float(np.mean(hota["AssA"])),
        "IDF1": float(ident["IDF1"]),
        "IDSW": int(clear["IDSW"]),
        "MOTA": float(clear["MOTA"]),
        "gt_tracks": len(gt_index),
        "pred_tracks": len(pr_index),
    }


def _two_ids(frames: list[_Frame]) -> dict[str, float]:
    """Two IDs on one object, as a viewer sees it: frames where two or more predictions (of any
    labels) each have at least ``TWO_ID_SHARE`` of their mask on one target. ``two-ID share``:
    the share of target-frames so; ``two-ID run``: the longest run of consecutive frames one
    target is so (frames in order; a frame without it ends the run)."""
    runs: dict[int, int] = {}
    doubled = total = longest = 0
    for f in frames:
        total += len(f.gt)
        live = [i for i, a in enumerate(f.pred.areas) if a > 0]
        now: dict[int, int] = {}
        if len(live) >= 2 and len(f.gt):
            iou = np.asarray(
                mask_utils.iou([f.pred.rles[i] for i in live], f.gt.rles, [0] * len(f.gt)),
                dtype=np.float64,
            ).reshape(len(live), len(f.gt))
            ap = np.array([f.pred.areas[i] for i in live], np.float64)[:, None]
            ag = np.array(f.gt.areas, np.float64)[None, :]
            on = iou * (ap + ag) / (1 + iou) >= TWO_ID_SHARE * ap - 1e-6  # intersection
            for j in np.nonzero(on.sum(axis=0) >= 2)[0]:
                gid = f.gt.ids[int(j)]
                now[gid] = runs.get(gid, 0) + 1
                longest = max(longest, now[gid])
            doubled += len(now)
        runs = now
    return {"two-ID share": doubled / total if total else 0.0, "two-ID run": longest}


# ---------------------------------------------------------------------- J&F


def _jandf(frames: list[_Frame]) -> JandF:
    """J&F of every GT target against its assigned track (see the module docstring)."""
    first: dict[int, int] = {}
    for t, f in enumerate(frames):
        for oid in f.gt.ids:
            first.setdefault(oid, t)
    gt_ids = sorted(first)
    pred_ids = sorted({i for f in frames for i in f.pred.ids})
    score = np.zeros((len(gt_ids), len(pred_ids)))
    g_at = {g: k for k, g in enumerate(gt_ids)}
    p_at = {p: k for k, p in enumerate(pred_ids)}
    for t, f in enumerate(frames):
        for a, g in enumerate(f.gt.ids):
            if t > first[g]:
                for b, p in enumerate(f.pred.ids):
                    score[g_at[g], p_at[p]] += f.iou[a, b]
    assigned: dict[int, int] = {}
    if score.size:
        rows, cols = linear_sum_assignment(-score)
        assigned = {
            gt_ids[r]: pred_ids[c] for r, c in zip(rows, cols, strict=True) if score[r, c] > 0
        }
    per_object: list[list[tuple[float, float]]] = []
    for g in gt_ids:
        track = assigned.get(g)
        pairs = []
        for t in range(first[g] + 1, len(frames)):
            f = frames[t]
            if g in f.ignored.ids:
                continue  # too small to score on this frame
            empty = np.zeros(f.size, bool)
            gm = f.gt.mask(f.gt.ids.index(g)) if g in f.gt.ids else empty
            pm = f.pred.mask(f.pred.ids.index(track)) if track in f.pred.ids else empty
            pairs.append((jaccard(pm, gm), f_measure(pm, gm)))
        per_object.append(pairs)
    return sequence_jandf(per_object)


# ---------------------------------------------------------------------- AP50


def ap50(frames: list[_Frame], categories: Sequence[str]) -> dict[str, float]:
    """COCO AP at box IoU 0.5 per category (pycocotools); NaN where a category has no target."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    cat_id = {c: k + 1 for k, c in enumerate(categories)}
    images: list[dict[str, object]] = []
    anns: list[dict[str, object]] = []
    dets: list[dict[str, object]] = []
    for t, f in enumerate(frames):
        images.append({"id": t + 1})
        for objs, crowd in ((f.gt, 0), (f.ignored, 1)):
            for i in range(len(objs)):
                x1, y1, x2, y2 = objs.boxes[i]
                anns.append(
                    {
                        "id": len(anns) + 1,
                        "image_id": t + 1,
                        "category_id": cat_id.get(objs.labels[i], 1),
                        "bbox": [x1, y1, x2 - x1, y2 - y1],
                        "area": float(objs.areas[i]),
                        "iscrowd": crowd,
                    }
                )
        for i in range(len(f.pred)):
            if f.pred.labels[i] not in cat_id:
                continue
            x1, y1, x2, y2 = f.pred.boxes[i]
            dets.append(
                {
                    "image_id": t + 1,
                    "category_id": cat_id[f.pred.labels[i]],
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "score": float(f.pred.scores[i]),
                }
            )
    has_targets = {a["category_id"] for a in anns if not a["iscrowd"]}
    out = {c: (0.0 if cat_id[c] in has_targets else float("nan")) for c in categories}
    if not has_targets or not dets:
        return out
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = {
            "images": images,
            "annotations": anns,
            "categories": [{"id": i, "name": c} for c, i in cat_id.items()],
        }
        coco.createIndex()
        ev = COCOeval(coco, coco.loadRes(dets), "bbox")
        ev.params.iouThrs = np.array([MATCH_IOU])
        ev.evaluate()
        ev.accumulate()
    precision = ev.eval["precision"]  # [iou, recall, category, area, max dets]
    for c, k in cat_id.items():
        p = precision[0, :, k - 1, 0, -1]
        if k in has_targets:
            out[c] = float(np.clip(p, 0, None).mean())
    return out


# ---------------------------------------------------------------------- the report


@dataclass(frozen=True)
class QualityReport:
    frames: int
    tracking: dict[str, float]
    jandf: JandF
    ap50: dict[str, float]

    def as_dict(self) -> dict[str, float]:
        return {
            "frames": self.frames,
            **self.tracking,
            "J&F": self.jandf.jf,
            "J": self.jandf.j,
            "F": self.jandf.f,
            "J&F objects": self.jandf.objects,
            **{f"AP50 {c}": v for c, v in self.ap50.items()},
        }


def evaluate(
    pred: TrackSequence,
    gt: TrackSequence,
    *,
    prompt: str | None = None,
    labels: bool = True,
    gt_ids: Iterable[int] | None = None,
) -> QualityReport:
    """Score ``pred`` against ``gt`` (see the module docstring)."""
    from stream.prompts import normalize_prompt

    phrases: list[str] | None = None
    if labels:
        text = prompt if prompt is not None else pred.prompt
        if not text.strip():
            raise EvalError(
                "PRED has no prompt (a box-prompted run?): give --prompt TEXT or --no-labels"
            )
        phrases = normalize_prompt(text)
    frames = _prepare(pred, gt, phrases, set(gt_ids) if gt_ids is not None else None)
    return QualityReport(
        frames=len(frames),
        tracking=_tracking(frames),
        jandf=_jandf(frames),
        ap50=ap50(frames, phrases if phrases is not None else [""]),
    )


def evaluate_many(
    pairs: Sequence[tuple[TrackSequence, TrackSequence]],
    *,
    prompt: str | None = None,
    labels: bool = True,
) -> QualityReport:
    """Several videos (``(pred, gt)`` pairs) as one: tracking measures and AP over all their
    frames (IDs kept apart per video), J&F as the mean over all their objects."""
    from stream.prompts import normalize_prompt

    frames: list[_Frame] = []
    scores: list[tuple[JandF, int]] = []
    phrases: list[str] | None = None
    for k, (pred, gt) in enumerate(pairs):
        text = prompt if prompt is not None else pred.prompt
        phrases = normalize_prompt(text) if labels else None
        part = _prepare(pred, gt, phrases, None)
        scores.append((_jandf(part), k))
        offset = (k + 1) * 1_000_000  # IDs of different videos never meet
        for f in part:
            f.gt = f.gt.relabel(f.gt.labels)
            f.gt.ids = [i + offset for i in f.gt.ids]
            f.pred = f.pred.relabel(f.pred.labels)
            f.pred.ids = [i + offset for i in f.pred.ids]
        frames += part
    if not frames:
        raise EvalError("no frame to evaluate")
    n = sum(j.objects for j, _ in scores)
    jf = JandF(
        sum(j.j * j.objects for j, _ in scores) / n if n else 0.0,
        sum(j.f * j.objects for j, _ in scores) / n if n else 0.0,
        n,
    )
    return QualityReport(
        frames=len(frames),
        tracking=_tracking(frames),
        jandf=jf,
        ap50=ap50(frames, phrases if phrases is not None else [""]),
    )


def ap50_many(
    pairs: Sequence[tuple[TrackSequence, TrackSequence]], prompt: str
) -> dict[str, float]:
    """AP50 per prompt phrase over the frames of several (pred, gt) videos."""
    from stream.prompts import normalize_prompt

    phrases = normalize_prompt(prompt)
    frames = [f for pred, gt in pairs for f in _prepare(pred, gt, phrases, None)]
    return ap50(frames, phrases)


def box_rle(box: Sequence[float], height: int, width: int) -> dict[str, object]:
    """The COCO RLE of a box (x1, y1, x2, y2), for detections that have no mask."""
    x1, y1, x2, y2 = (float(v) for v in box)
    xywh = np.array([[x1, y1, x2 - x1, y2 - y1]], dtype=np.float64)
    rle: dict[str, object] = mask_utils.frPyObjects(xywh, height, width)[0]
    return rle


def main(cfg: Config, args: argparse.Namespace) -> int:
    from clients.bench import format_table, row

    ids = None
    if args.gt_ids:
        try:
            ids = [int(v) for v in args.gt_ids.split(",") if v.strip()]
        except ValueError:
            raise EvalError(
                f"--gt-ids expects comma-separated integers, got {args.gt_ids!r}"
            ) from None
    pred = read_tracks(Path(args.pred))
    gt = read_tracks(Path(args.gt))
    report = evaluate(pred, gt, prompt=args.prompt, labels=not args.no_labels, gt_ids=ids)
    values = report.as_dict()
    print(format_table([row("eval", k, v) for k, v in values.items()]))
    if args.json:
        try:  # checked before reading (clients/cli.py), but the directory may have gone since
            Path(args.json).write_text(json.dumps(values, indent=2))
        except OSError as e:
            raise EvalError(f"cannot write --json {args.json}: {e.strerror or e}") from None
    return 0
