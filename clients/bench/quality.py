"""Bench part ``quality``: how well the models track, on held-out generated scenes.

Scenes: demo scenes of seeds below the training range (``engine.training.samples``), 640x480,
6 objects, rendered, saved as JPEG (quality 95) and decoded again, so that promptcam, the
reference and the official predictor's frame loader all see the same pixels; the ground truth
comes from the generator. Model: ``--models`` or, when none is named, the ``demo`` preset.

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
- the prompt ``red ball.``: promptcam's IDF1 and HOTA against the red balls alone.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from clients.bench import BenchRow, row
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
from clients.bench.reference import STEP, GroundedSam2Reference
from engine.pipeline import FrameInput, FrameResult
from stream.config import Config
from stream.demo import DemoScene, min_visible_area
from stream.groundtruth import GroundTruthWriter

log = logging.getLogger(__name__)

PART = "quality"
SEEDS = (0, 1, 2, 3)
FRAMES = 150
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


def make_scene(workdir: Path, seed: int, frames: int, objects: int) -> HeldOutScene:
    """Render, save as JPEG, decode; ground truth as tracks JSONL (read back)."""
    scene = DemoScene(640, 480, objects, seed=seed)
    video = workdir / f"seed{seed}"
    video.mkdir()
    gt_path = workdir / f"seed{seed}.gt.jsonl"
    images = []
    with gt_path.open("w") as f:
        writer = GroundTruthWriter(f)
        for i in range(frames):
            frame = scene.render_frame(i)
            path = video / f"{i:05d}.jpg"
            Image.fromarray(np.ascontiguousarray(frame.image[:, :, ::-1])).save(path, quality=95)
            images.append(np.asarray(Image.open(path).convert("RGB"))[:, :, ::-1].copy())
            writer.write(frame)
    return HeldOutScene(seed, video, images, read_tracks(gt_path))


def _config(cfg: Config, args: argparse.Namespace, prompt: str) -> Config:
    models = cfg.models
    if getattr(args, "models", None) is None and models.sam2_checkpoint is None:
        models = models.model_copy(update={"preset": "demo"})
    engine = cfg.engine.model_copy(update={"prompt": prompt, "reground_every_frames": STEP})
    return cfg.model_copy(update={"models": models, "engine": engine})


def run_promptcam(
    cfg: Config, images: list[np.ndarray], boxes: dict[int, list[tuple[float, ...]]] | None = None
) -> tuple[list[FrameResult], float]:
    """promptcam's engine over ``images`` (grounding in line); ``boxes``: manual prompts by frame."""
    from engine.build import build_engine

    engine = build_engine(cfg, background_grounding=False)
    results = []
    t0 = time.perf_counter()
    try:
        for i, image in enumerate(images):
            manual = [(b, "object") for b in (boxes or {}).get(i, [])]
            results.append(engine.process(FrameInput(i, int(i * 1e9 / 15), image), manual))
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


def _detections(
    cfg: Config, scenes: list[HeldOutScene]
) -> list[tuple[TrackSequence, TrackSequence]]:
    from engine.grounder import load_grounder

    engine = cfg.engine.model_copy(
        update={
            "prompt": TEXT_PROMPT,
            "box_threshold": AP_THRESHOLD,
            "text_threshold": AP_THRESHOLD,
        }
    )
    grounder = load_grounder(cfg.models, engine)
    pairs = []
    for s in scenes:
        frames: dict[int, FrameObjects] = {}
        for seq in range(0, len(s.images), AP_EVERY):
            dets = grounder.detect(s.images[seq])
            objs = FrameObjects()
            for k in range(len(dets)):
                box = [float(v) for v in dets.xyxy[k]]
                objs.add(
                    k,
                    str(dets.data["label"][k]),
                    float(dets.confidence[k]) if dets.confidence is not None else 1.0,
                    box,
                    box_rle(box, s.truth.height, s.truth.width),
                )
            frames[seq] = objs
        gt = TrackSequence(
            s.truth.width,
            s.truth.height,
            s.truth.prompt,
            {q: s.truth.frames[q] for q in frames},
        )
        pairs.append((TrackSequence(gt.width, gt.height, TEXT_PROMPT, frames), gt))
    return pairs


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


def run(cfg: Config, args: argparse.Namespace) -> list[BenchRow]:
    quick = bool(getattr(args, "quick", False))
    seeds, frames = ((0,), 40) if quick else (SEEDS, FRAMES)
    text_cfg = _config(cfg, args, TEXT_PROMPT)
    detector = text_cfg.models.detector or f"the {text_cfg.models.preset} preset's detector"
    where = f"seeds {', '.join(map(str, seeds))} x {frames} frames, 640x480, {OBJECTS} objects"
    rows: list[BenchRow] = []
    with tempfile.TemporaryDirectory(prefix="promptcam-bench-quality-") as tmp:
        scenes = [make_scene(Path(tmp), s, frames, OBJECTS) for s in seeds]

        ap = ap50_many(_detections(text_cfg, scenes), TEXT_PROMPT)
        for label, value in ap.items():
            rows.append(row(PART, f"detector AP50 {label}", value, "", f"{detector}; every {AP_EVERY}rd frame of {where}"))  # fmt: skip

        box_cfg = _config(cfg, args, "")
        # DAVIS-style: a prompted object is followed to the end, never ended for being missed.
        box_cfg = box_cfg.model_copy(
            update={"engine": box_cfg.engine.model_copy(update={"max_missed": 100000})}
        )
        pairs = []
        for s in scenes:
            results, _ = run_promptcam(box_cfg, s.images, first_findable_boxes(s.truth))
            pairs.append((sequence_from_results(results), s.truth))
        box = evaluate_many(pairs, labels=False)
        rows.append(row(PART, "J&F manual boxes (promptcam)", box.jandf.jf, "", f"J {box.jandf.j:.3f}, F {box.jandf.f:.3f}, {box.jandf.objects} objects; box on each object's first findable frame, never ended; {where}"))  # fmt: skip

        ours, theirs, reds = [], [], []
        ours_s = theirs_s = 0.0
        from engine.grounder import load_grounder
        from engine.sam2_models import load_sam2, official_video_predictor

        loaded = load_sam2(text_cfg.models)
        reference = GroundedSam2Reference(
            official_video_predictor(loaded), load_grounder(text_cfg.models, text_cfg.engine)
        )
        for s in scenes:
            results, seconds = run_promptcam(text_cfg, s.images)
            ours.append((sequence_from_results(results), s.truth))
            ours_s += seconds
            ref = reference.run(s.jpeg_dir, s.images)
            theirs.append((sequence_from_results(ref.results), s.truth))
            theirs_s += ref.seconds
            red_results, _ = run_promptcam(_config(cfg, args, COLOUR_PROMPT), s.images)
            reds.append((sequence_from_results(red_results), s.truth))
        n = len(seeds) * frames
        note = f"prompt '{TEXT_PROMPT}', grounding every {STEP} frames; {where}"
        rows += _tracking_rows("promptcam", evaluate_many(ours), n / ours_s, note)
        rows += _tracking_rows("reference", evaluate_many(theirs), n / theirs_s, note)
        red = evaluate_many(reds).tracking
        rows.append(row(PART, f"promptcam '{COLOUR_PROMPT}' IDF1", red["IDF1"], "", f"HOTA {red['HOTA']:.3f}, {red['IDSW']} ID switches, {red['pred_tracks']} tracks for {red['gt_tracks']} red balls; {where}"))  # fmt: skip
    return rows
