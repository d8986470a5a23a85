"""``promptcam bench`` backends part: each transformers tracker backend against its reference.

Per backend (the tiny-random SAM 2.1 and SAM 3 tracker, CPU), on the same frames, weights, input
tensors and box prompts on frame 0, for 1, 4 and 16 objects, it times one frame:
- ours: ``HfVideoKernel`` (``add_frame`` from a prepared frame + ``track``);
- reference: transformers' own streaming session (``model(session, frame=...)``, the same
  prepared tensor), the way transformers documents streaming.
Both run in lockstep, one frame each in turn (``clients.bench.engine._lockstep``), so that this
host's speed drift hits both alike. Memory: the bytes each side holds for its objects after N
frames, as MB per 1,000 frames of growth between the middle and the end of the run (ours keeps
a bounded state: 0; the reference keeps every frame's outputs). EdgeTAM is not run where timm
cannot be imported (it needs torchvision).
Targets: never slower than the reference at any object count, faster at 16 objects, constant
memory where the reference grows.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Iterator
from functools import partial
from typing import Any

import numpy as np
import torch
import transformers

from clients.bench import BenchRow, row
from clients.bench.engine import Corners, _boxes, _frames, _lockstep
from engine.core.types import PreparedFrame
from engine.models.video import LoadedVideoModel, load_video_model
from engine.segmenters.transformers import HfVideoKernel
from stream.config import Config, ModelsConfig

log = logging.getLogger(__name__)

PART = "backends"
BACKENDS = ("sam2.1-hf-tiny-random", "sam3-tracker-tiny-random")
HEIGHT, WIDTH = 360, 480


def run(cfg: Config, args: argparse.Namespace) -> list[BenchRow]:
    quick = bool(getattr(args, "quick", False))
    frames_n = 8 if quick else 40
    rows: list[BenchRow] = []
    for name in BACKENDS:
        loaded = load_video_model(name, ModelsConfig(device="cpu"))
        kernel = HfVideoKernel(loaded)
        prepared = [kernel.prepare(f) for f in _frames(frames_n, HEIGHT, WIDTH)]
        _lockstep(  # warm-up, not timed
            partial(_ours, kernel, prepared[:3], _boxes(2, HEIGHT, WIDTH), {}),
            partial(_reference, loaded, prepared[:3], _boxes(2, HEIGHT, WIDTH), {}),
            2,
            1,
        )
        for n in (1, 4, 16):
            boxes = _boxes(n, HEIGHT, WIDTH)
            mem_ours: dict[int, int] = {}
            mem_ref: dict[int, int] = {}
            ours, ref = _lockstep(
                partial(_ours, kernel, prepared, boxes, mem_ours),
                partial(_reference, loaded, prepared, boxes, mem_ref),
                frames_n - 1,
                1 if quick else 2,
            )
            a, b = float(np.mean(ours)), float(np.mean(ref))
            note = f"{frames_n} frames {HEIGHT}x{WIDTH}, {loaded.image_size} px, in lockstep, CPU"
            rows += [
                row(PART, f"{name}: {n} obj ours", a * 1e3, "ms/frame", note),
                row(PART, f"{name}: {n} obj transformers session", b * 1e3, "ms/frame", note),
                row(PART, f"{name}: {n} obj speed-up", b / a, "x", "target >= 1; > 1 at 16"),
                row(PART, f"{name}: {n} obj ours memory", _growth(mem_ours), "MB/1000 frames",
                    f"held: {max(mem_ours.values()) / 2**20:.2f} MiB"),
                row(PART, f"{name}: {n} obj transformers memory", _growth(mem_ref),
                    "MB/1000 frames", f"held after {frames_n} frames: {max(mem_ref.values()) / 2**20:.2f} MiB"),
            ]  # fmt: skip
            log.info(
                "%s, %d objects: ours %.1f ms, transformers %.1f ms", name, n, a * 1e3, b * 1e3
            )
    return rows


def _growth(held: dict[int, int]) -> float:
    """MB (1e6 bytes) per 1,000 frames between the middle and the last frame measured."""
    frames = sorted(held)
    mid, last = frames[len(frames) // 2], frames[-1]
    if last == mid:
        return 0.0
    return (held[last] - held[mid]) / (last - mid) * 1000 / 1e6


def _ours(
    kernel: HfVideoKernel, frames: list[PreparedFrame], boxes: list[Corners], held: dict[int, int]
) -> Iterator[float]:
    seg = kernel.new_session()
    idx = seg.add_frame(frames[0])
    for obj_id, box in enumerate(boxes):
        seg.add_prompt(obj_id, idx, box=box)
    seg.track(idx)
    for i, frame in enumerate(frames[1:], start=1):
        t0 = time.perf_counter()
        seg.track(seg.add_frame(frame))
        elapsed = time.perf_counter() - t0
        held[i] = seg.state_size().object_bytes
        yield elapsed


def _reference(
    loaded: LoadedVideoModel,
    frames: list[PreparedFrame],
    boxes: list[Corners],
    held: dict[int, int],
) -> Iterator[float]:
    model = loaded.model
    size = loaded.image_size
    cls = getattr(transformers, loaded.family.model_class.replace("Model", "InferenceSession"))
    session = cls(video_height=HEIGHT, video_width=WIDTH, dtype=torch.float32)
    for obj_id, (x1, y1, x2, y2) in enumerate(boxes):
        coords = [[x1 * size / WIDTH, y1 * size / HEIGHT], [x2 * size / WIDTH, y2 * size / HEIGHT]]
        session.add_point_inputs(
            session.obj_id_to_idx(obj_id),
            0,
            {
                "point_coords": torch.tensor(coords)[None, None],
                "point_labels": torch.tensor([2, 3])[None, None],
            },
        )
    session.obj_with_new_inputs = list(range(len(boxes)))
    with torch.inference_mode():
        model(session, frame=frames[0].image[0])
    for i, frame in enumerate(frames[1:], start=1):
        t0 = time.perf_counter()
        with torch.inference_mode():
            out = model(session, frame=frame.image[0])
            out.pred_masks.cpu()
        elapsed = time.perf_counter() - t0
        held[i] = _session_bytes(session)
        yield elapsed


def _session_bytes(session: Any) -> int:  # a transformers InferenceSession (untyped)
    """Bytes of the tensors a transformers session holds for its objects (outputs per frame)."""
    total = 0
    for per_obj in session.output_dict_per_obj.values():
        for kind in per_obj.values():
            for out in kind.values():
                total += sum(
                    v.numel() * v.element_size()
                    for v in out.values()
                    if isinstance(v, torch.Tensor)
                )
    return total
