"""Bench part ``quality``: how well the models track, on held-out generated scenes.

Scenes: demo scenes of seeds below the training range (``engine.training.samples``), 640x480,
6 objects, rendered, perturbed by a camera condition (``clients.bench.conditions``: clean,
dusk, white-balance, shadow, jpeg30, shake, drop3), saved as JPEG (quality 95) and decoded
again, so that promptcam, the reference and the official predictor's frame loader all see the
same pixels; the ground truth comes from the generator (moved with the frame under shake, the
kept frames only under drop3). Seeds: ``--seeds`` (default 0-3, the seeds the lifecycle was
tuned on: name others, e.g. ``--seeds 100-111``, for held-out figures); conditions:
``--conditions`` (default all, and ``live``). Model: ``--models`` or, when none is named, the
``demo`` preset.

Reported (``clients.bench.evaluate`` defines the measures):
- detector AP50 for ``ball`` and ``box`` (prompt ``ball. box.``, every 3rd frame, boxes kept
  down to score 0.05 so that the whole precision-recall curve counts);
- J&F with manual box prompts: promptcam's engine, no detector, each object prompted with its
  ground-truth box on the first frame where it is findable, then followed by SAM 2 alone
  (through leaving, re-entering and occlusion; ``engine.max_missed`` raised so that no prompted
  object is ended, as in DAVIS where every object is scored to the last frame);
- with the text prompt ``ball. box.``, side by side on the same model and scenes: promptcam's
  streaming lifecycle (``build_engine`` + ``TrackingEngine.process``, grounding in line every 20
  frames) and the reference Grounded SAM 2 strategy (``clients.bench.reference``, re-grounding
  every 20 frames): HOTA, DetA, AssA, IDF1, ID switches, MOTA, J&F, frames/s (all the work of
  a frame, detection included, over the whole run; the reference's JPEG loading excluded);
- the prompt ``red ball.``: promptcam's IDF1 and HOTA against the red balls alone;
- by condition, both sides on the same perturbed frames in one run: HOTA, IDF1 and ID switches
  of promptcam and the reference, and the deltas against issue 26's targets
  (``clients.bench.condition_table``), printed as a Markdown table and carried in the rows'
  ``condition`` dicts (``--json``);
- appearance separability on clean and white-balance scenes (``clients.bench.appearance``): how
  well SAM 2's object pointer and the colour cues tell same-label objects apart (AUC);
- ``live``: ``promptcam run`` at real-time speed on the first seed's scene, scored against its
  ground truth beside the same engine offline on the same frames (``clients.bench.live``).

Detector AP50, manual-box J&F and ``red ball.`` run on the clean condition only.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from clients.bench import BenchRow, row
from clients.bench.appearance import appearance_rows
from clients.bench.condition_table import ConditionResult, condition_rows, markdown
from clients.bench.conditions import Condition, perturb
from clients.bench.evaluate import (
    FrameObjects,
    QualityReport,
    TrackSequence,
    ap50_many,
    box_rle,
    evaluate_many,
    read_tracks,
    sequence_from_results,
)
from clients.bench.live import LIVE_LEAD, LIVE_WINDOW, run_live
from clients.bench.reference import STEP, GroundedSam2Reference
from engine.pipeline import FrameInput, FrameResult
from engine.training.samples import TRAIN_SEED_BASE
from stream.config import Config
from stream.demo import DemoScene, min_visible_area
from stream.errors import PromptcamError
from stream.groundtruth import GroundTruthWriter

if TYPE_CHECKING:
    from engine.grounder import Grounder

log = logging.getLogger(__name__)

# A run's tracks and the ground truth of the same frames, as scored.
Pair = tuple[TrackSequence, TrackSequence]

PART = "quality"
SEEDS = (0, 1, 2, 3)  # the seeds the lifecycle was tuned on; --seeds names held-out ones
FRAMES = 150
SIZE = (640, 480)
QUICK_FRAMES = 40
QUICK_SIZE = (640, 480)
QUICK_LIVE_WINDOW = 40
QUICK_LIVE_LEAD = 450
LIVE = "live"
OBJECTS = 6
TEXT_PROMPT = "ball. box."
COLOUR_PROMPT = "red ball."
AP_EVERY = 3
AP_THRESHOLD = 0.05


@dataclass(frozen=True)
class HeldOutScene:
    seed: int
    jpeg_dir: Path
    images: list[np.ndarray]  # decoded JPEGs, BGR
    truth: TrackSequence
    seqs: list[int]  # each image's frame index in the scene (the GT's and the results' seq)
    times_ns: list[int]  # each image's capture time


def make_scene(
    workdir: Path,
    seed: int,
    frames: int,
    objects: int,
    condition: Condition = Condition.CLEAN,
    size: tuple[int, int] = (640, 480),
) -> HeldOutScene:
    """Render, perturb (``condition``), save as JPEG, decode; ground truth as tracks JSONL
    (read back). The JPEG directory numbers the frames it holds from 0 (the official
    predictor's loader wants that); ``seqs`` maps them to the scene's frame indices."""
    scene = DemoScene(size[0], size[1], objects, seed=seed)
    clip = perturb(condition, [scene.render_frame(i) for i in range(frames)], seed, scene.fps)
    video = workdir / f"seed{seed}-{condition.value}"
    video.mkdir()
    gt_path = workdir / f"seed{seed}-{condition.value}.gt.jsonl"
    images = []
    with gt_path.open("w") as f:
        writer = GroundTruthWriter(f)
        for k, c in enumerate(clip):
            path = video / f"{k:05d}.jpg"
            rgb = np.ascontiguousarray(c.frame.image[:, :, ::-1])
            Image.fromarray(rgb).save(path, quality=95)
            images.append(np.asarray(Image.open(path).convert("RGB"))[:, :, ::-1].copy())
            writer.write(c.frame, c.seq)
    return HeldOutScene(
        seed,
        video,
        images,
        read_tracks(gt_path),
        [c.seq for c in clip],
        [c.t_ns for c in clip],
    )


def _config(cfg: Config, args: argparse.Namespace, prompt: str) -> Config:
    models = cfg.models
    if getattr(args, "models", None) is None and models.sam2_checkpoint is None:
        models = models.model_copy(update={"preset": "demo"})
    engine = cfg.engine.model_copy(update={"prompt": prompt, "reground_every_frames": STEP})
    return cfg.model_copy(update={"models": models, "engine": engine})


def run_promptcam(
    cfg: Config,
    images: list[np.ndarray],
    boxes: dict[int, list[tuple[float, ...]]] | None = None,
    seqs: list[int] | None = None,
    times_ns: list[int] | None = None,
) -> tuple[list[FrameResult], float]:
    """promptcam's engine over ``images`` (grounding in line); ``boxes``: manual prompts by
    frame; ``seqs`` and ``times_ns``: each image's frame index and capture time (default: its
    position, at 15 frames/s)."""
    from engine.build import build_engine

    seqs = list(range(len(images))) if seqs is None else seqs
    times = [int(s * 1e9 / 15) for s in seqs] if times_ns is None else times_ns
    engine = build_engine(cfg, background_grounding=False)
    results = []
    t0 = time.perf_counter()
    try:
        for i, image in enumerate(images):
            manual = [(b, "object") for b in (boxes or {}).get(seqs[i], [])]
            results.append(engine.process(FrameInput(seqs[i], times[i], image), manual))
    finally:
        engine.close()
    return results, time.perf_counter() - t0


def first_findable_boxes(truth: TrackSequence) -> dict[int, list[tuple[float, ...]]]:
    """Each object's ground-truth box on the first frame where it is findable, by frame."""
    floor = min_visible_area(truth.width, truth.height)
    seen: set[int] = set()
    out: dict[int, list[tuple[float, ...]]] = {}
    for seq in sorted(truth.frames):
        f = truth.frames[seq]
        for i, oid in enumerate(f.ids):
            if oid not in seen and f.areas[i] >= floor:
                seen.add(oid)
                out.setdefault(seq, []).append(tuple(f.boxes[i]))
    return out


def _ap_grounder(cfg: Config) -> Grounder:
    """The detector with boxes kept down to ``AP_THRESHOLD`` (the whole precision-recall curve)."""
    from engine.grounder import load_grounder

    engine = cfg.engine.model_copy(
        update={
            "prompt": TEXT_PROMPT,
            "box_threshold": AP_THRESHOLD,
            "text_threshold": AP_THRESHOLD,
        }
    )
    return load_grounder(cfg.models, engine)


def _detections(grounder: Grounder, s: HeldOutScene) -> tuple[TrackSequence, TrackSequence]:
    """The detector's boxes on every ``AP_EVERY``-th frame of ``s``, and the ground truth of
    those frames."""
    frames: dict[int, FrameObjects] = {}
    for k in range(0, len(s.images), AP_EVERY):
        dets = grounder.detect(s.images[k])
        objs = FrameObjects()
        for j in range(len(dets)):
            box = [float(v) for v in dets.xyxy[j]]
            objs.add(
                j,
                str(dets.data["label"][j]),
                float(dets.confidence[j]) if dets.confidence is not None else 1.0,
                box,
                box_rle(box, s.truth.height, s.truth.width),
            )
        frames[s.seqs[k]] = objs
    gt = TrackSequence(
        s.truth.width, s.truth.height, s.truth.prompt, {q: s.truth.frames[q] for q in frames}
    )
    return TrackSequence(gt.width, gt.height, TEXT_PROMPT, frames), gt


def _tracking_rows(
    name: str, report: QualityReport, fps: float | None, note: str
) -> list[BenchRow]:
    t = report.tracking
    rows = [
        row(PART, f"{name} HOTA", t["HOTA"], "", f"DetA {t['DetA']:.3f}, AssA {t['AssA']:.3f}; {note}"),
        row(PART, f"{name} IDF1", t["IDF1"], "", f"MOTA {t['MOTA']:.3f}; {note}"),
        row(PART, f"{name} ID switches", t["IDSW"], "", f"{t['pred_tracks']} tracks for {t['gt_tracks']} objects; {note}"),
        row(PART, f"{name} J&F", report.jandf.jf, "", f"J {report.jandf.j:.3f}, F {report.jandf.f:.3f}, {report.jandf.objects} objects"),
    ]  # fmt: skip
    if fps is not None:
        rows.append(row(PART, f"{name} frames/s", fps, "frames/s", note))
    return rows


def parse_seeds(text: str | None) -> tuple[int, ...] | None:
    """``--seeds``: comma-separated seeds or ranges (``100-111,200``); None when not given."""
    if text is None:
        return None
    seeds: list[int] = []
    try:
        for part in (p.strip() for p in text.split(",")):
            if not part:
                continue
            lo, dash, hi = part.partition("-")
            first, last = (int(lo), int(hi)) if dash else (int(part), int(part))
            if first < 0 or last < first or last - first > 10000:
                raise ValueError(part)
            seeds += range(first, last + 1)
    except ValueError:
        raise PromptcamError(
            f"--seeds expects seeds >= 0 or ranges LOW-HIGH, comma-separated, got {text!r}"
        ) from None
    if not seeds:
        raise PromptcamError("--seeds names no seed")
    if max(seeds) >= TRAIN_SEED_BASE:
        raise PromptcamError(f"--seeds must be below the training seeds ({TRAIN_SEED_BASE})")
    return tuple(dict.fromkeys(seeds))


def parse_conditions(text: str | None) -> tuple[list[Condition], bool]:
    """``--conditions``: camera conditions (``clean``, ``dusk``, ...) and ``live``, comma-
    separated (default: all of them); returns the conditions and whether the live row runs."""
    if text is None:
        return list(Condition), True
    names = [n.strip() for n in text.split(",") if n.strip()]
    known = [c.value for c in Condition] + [LIVE]
    bad = [n for n in names if n not in known]
    if bad or not names:
        raise PromptcamError(
            f"unknown condition {bad[0]!r} (known: {', '.join(known)})"
            if bad
            else "--conditions names no condition"
        )
    return [Condition(n) for n in dict.fromkeys(names) if n != LIVE], LIVE in names


def _at_seqs(results: list[FrameResult], seqs: list[int]) -> list[FrameResult]:
    """The reference's results (one per JPEG, numbered from 0) under the frames' own seqs."""
    return [dataclasses.replace(r, seq=seqs[k]) for k, r in enumerate(results)]


def run(cfg: Config, args: argparse.Namespace) -> list[BenchRow]:
    quick = bool(getattr(args, "quick", False))
    seeds = parse_seeds(getattr(args, "seeds", None)) or ((0,) if quick else SEEDS)
    conditions, live = parse_conditions(getattr(args, "conditions", None))
    frames = QUICK_FRAMES if quick else FRAMES
    size = QUICK_SIZE if quick else SIZE
    text_cfg = _config(cfg, args, TEXT_PROMPT)
    detector = text_cfg.models.detector or f"the {text_cfg.models.preset} preset's detector"
    where = f"seeds {', '.join(map(str, seeds))} x {frames} frames, {size[0]}x{size[1]}, {OBJECTS} objects"
    rows: list[BenchRow] = []
    results: list[ConditionResult] = []
    with tempfile.TemporaryDirectory(prefix="promptcam-bench-quality-") as tmp:
        from engine.grounder import load_grounder
        from engine.models.sam2 import load_sam2, official_video_predictor

        loaded = load_sam2(text_cfg.models)
        reference = GroundedSam2Reference(
            official_video_predictor(loaded), load_grounder(text_cfg.models, text_cfg.engine)
        )
        for condition in conditions:
            result, dets, boxes, reds = _run_condition(
                condition, cfg, args, text_cfg, reference, Path(tmp), seeds, frames, size
            )
            results.append(result)
            log.info(
                "quality: %s: promptcam HOTA %.3f IDF1 %.3f %d switches; reference %.3f %.3f %d",
                condition.value,
                *(result.ours.tracking[k] for k in ("HOTA", "IDF1", "IDSW")),
                *(result.theirs.tracking[k] for k in ("HOTA", "IDF1", "IDSW")),
            )
            if condition is Condition.CLEAN:
                rows += _clean_rows(result, dets, boxes, reds, detector, where)
            elif condition is Condition.BACKDROP:
                rows += _model_rows(
                    dets, boxes, f"{detector}; held-out backdrop", where, " (backdrop)"
                )
        from engine.segmenters.sam2 import Sam2Kernel

        rows += appearance_rows(Sam2Kernel(loaded), conditions, seeds, frames, size, OBJECTS, where)
        live_result = None
        if live:
            live_seed = seeds[0]
            window, lead = (
                (QUICK_LIVE_WINDOW, QUICK_LIVE_LEAD) if quick else (LIVE_WINDOW, LIVE_LEAD)
            )
            live_result = run_live(text_cfg, Path(tmp), live_seed, OBJECTS, size, window, lead)
    table_rows, summaries = condition_rows(results, live_result)
    print(f"quality by condition ({where}):\n{markdown(summaries)}\n", flush=True)
    return rows + table_rows


def _run_condition(
    condition: Condition,
    cfg: Config,
    args: argparse.Namespace,
    text_cfg: Config,
    reference: GroundedSam2Reference,
    tmp: Path,
    seeds: tuple[int, ...],
    frames: int,
    size: tuple[int, int],
) -> tuple[ConditionResult, list[Pair], list[Pair], list[Pair]]:
    """promptcam and the reference on every seed's scene under ``condition``; on the clean
    scenes also the detector's boxes, the box-prompted run and the colour-prompt run."""
    ours: list[Pair] = []
    theirs: list[Pair] = []
    reds: list[Pair] = []
    boxes: list[Pair] = []
    dets: list[Pair] = []
    with_models = condition in (Condition.CLEAN, Condition.BACKDROP)
    ap_grounder = _ap_grounder(text_cfg) if with_models else None
    ours_s = theirs_s = 0.0
    n = 0
    for seed in seeds:
        s = make_scene(tmp, seed, frames, OBJECTS, condition, size)
        res, seconds = run_promptcam(text_cfg, s.images, seqs=s.seqs, times_ns=s.times_ns)
        ours.append((sequence_from_results(res), s.truth))
        ours_s += seconds
        ref = reference.run(s.jpeg_dir, s.images)
        theirs.append((sequence_from_results(_at_seqs(ref.results, s.seqs)), s.truth))
        theirs_s += ref.seconds
        n += len(s.images)
        if ap_grounder is not None:  # the models alone: clean, and on the held-out backdrop
            dets.append(_detections(ap_grounder, s))
            boxes.append((sequence_from_results(_box_run(cfg, args, s)), s.truth))
        if condition is Condition.CLEAN:
            red, _ = run_promptcam(_config(cfg, args, COLOUR_PROMPT), s.images)
            reds.append((sequence_from_results(red), s.truth))
        shutil.rmtree(s.jpeg_dir)
        log.info("quality: %s, seed %d done", condition.value, seed)
    result = ConditionResult(
        condition.value, seeds, n, evaluate_many(ours), evaluate_many(theirs),
        n / ours_s, n / theirs_s,
    )  # fmt: skip
    return result, dets, boxes, reds


def _box_run(cfg: Config, args: argparse.Namespace, s: HeldOutScene) -> list[FrameResult]:
    """Manual box prompts on the first findable frames, DAVIS-style: a prompted object is
    followed to the end, never ended for being missed."""
    box_cfg = _config(cfg, args, "")
    box_cfg = box_cfg.model_copy(
        update={"engine": box_cfg.engine.model_copy(update={"max_missed": 100000})}
    )
    results, _ = run_promptcam(box_cfg, s.images, first_findable_boxes(s.truth))
    return results


def _model_rows(
    dets: list[tuple[TrackSequence, TrackSequence]],
    boxes: list[tuple[TrackSequence, TrackSequence]],
    detector: str,
    where: str,
    suffix: str,
) -> list[BenchRow]:
    """The models alone: the detector's AP50 per label and J&F from manual box prompts."""
    rows: list[BenchRow] = []
    for label, value in ap50_many(dets, TEXT_PROMPT).items():
        rows.append(row(PART, f"detector AP50 {label}{suffix}", value, "", f"{detector}; every {AP_EVERY}rd frame of {where}"))  # fmt: skip
    box = evaluate_many(boxes, labels=False)
    rows.append(row(PART, f"J&F manual boxes (promptcam){suffix}", box.jandf.jf, "", f"J {box.jandf.j:.3f}, F {box.jandf.f:.3f}, {box.jandf.objects} objects; box on each object's first findable frame, never ended; {where}"))  # fmt: skip
    return rows


def _clean_rows(
    result: ConditionResult,
    dets: list[tuple[TrackSequence, TrackSequence]],
    boxes: list[tuple[TrackSequence, TrackSequence]],
    reds: list[tuple[TrackSequence, TrackSequence]],
    detector: str,
    where: str,
) -> list[BenchRow]:
    rows = _model_rows(dets, boxes, detector, where, "")
    note = f"prompt '{TEXT_PROMPT}', grounding every {STEP} frames; clean; {where}"
    rows += _tracking_rows("promptcam", result.ours, result.ours_fps, note)
    rows += _tracking_rows("reference", result.theirs, result.theirs_fps, note)
    red = evaluate_many(reds).tracking
    rows.append(row(PART, f"promptcam '{COLOUR_PROMPT}' IDF1", red["IDF1"], "", f"HOTA {red['HOTA']:.3f}, {red['IDSW']} ID switches, {red['pred_tracks']} tracks for {red['gt_tracks']} red balls; {where}"))  # fmt: skip
    return rows
