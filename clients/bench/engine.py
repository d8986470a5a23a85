"""``promptcam bench`` engine part: streaming segmenter vs the official SAM 2 video predictor.

On the same frames (JPEGs in a temporary directory; the official predictor reads the files, the
streaming segmenter gets the same decoded images), the same weights and the same box prompts on
frame 0, it times per frame, for 1, 4 and 16 objects:
- streaming: ``add_frame`` (image encoder) + ``track`` on frames 1..N-1, given frames that
  ``prepare`` turned into model input (resize + normalise); ``prepare`` is timed on its own and
  reported as its own row and in "incl. preprocessing";
- official: ``propagate_in_video`` between the outputs of frame 0 and frame N-1 (its frame
  loading, resize and normalisation happen in ``init_state``, which is not timed, nor are
  prompting and the memory encoding of the prompts).
The speed-up compares like with like: the model work per frame, without preprocessing. Both
sides run in lockstep, one frame each in turn, so that this host's speed drift hits both alike.
The work per frame is the same on both sides; one value differs on videos shorter than
``max_obj_ptrs_in_encoder`` (16) frames: the official predictor scales object-pointer distances
by ``min(video length, 16) - 1``, a live stream (no length) by 15.
Models: tiny-random and the SAM 2.1 Hiera-T architecture at 512 px with random weights (CPU),
and Hiera-T at 1024 px under bf16 autocast when CUDA is available. Memory attention, the bulk of
the work, is also replayed alone on the inputs of the last streamed frame: its time, its arithmetic
(torch's FLOP counter) and the rate reached, on CUDA as a share of the card's bf16 peak. Also
reports process RSS.
Targets: never slower than official; tiny-random 16 objects <= 4x one object; on a GPU
Hiera-T 1024 px >= 150 frames/s with one object and >= 30 with 16.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import psutil
import torch
from hydra.utils import instantiate
from PIL import Image
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from clients.bench import BenchRow, openmp_policy, row
from engine.models.sam2 import (
    LoadedSam2,
    load_sam2,
    official_video_predictor,
    read_sam2_config,
    save_checkpoint,
)
from engine.segmenters.sam2 import StreamingSegmenter
from stream.config import Config, ModelsConfig

log = logging.getLogger(__name__)

PART = "engine"
# A box prompt in pixels: x1, y1, x2, y2.
Corners = tuple[float, float, float, float]
# The (args, kwargs) of each captured call of a module (the memory attention, last frame).
Calls = list[tuple[tuple[Any, ...], dict[str, object]]]
A = TypeVar("A")
B = TypeVar("B")


@dataclass(frozen=True)
class Case:
    name: str
    loaded: LoadedSam2
    frames: int
    objects: tuple[int, ...]
    height: int
    width: int
    repeats: int = 2


def run(cfg: Config, args: argparse.Namespace) -> list[BenchRow]:
    quick = bool(getattr(args, "quick", False))
    rows: list[BenchRow] = []
    with tempfile.TemporaryDirectory(prefix="promptcam-bench-engine-") as tmp:
        workdir = Path(tmp)
        for case in _cases(workdir, quick):
            rows += _bench_case(case, workdir)
            del case
    rows.append(row(PART, "process RSS", psutil.Process().memory_info().rss / 2**20, "MiB"))
    note = "both sides in this process; bench --parts offline also times both sides spinning"
    rows.append(row(PART, "OpenMP wait policy", openmp_policy(), "", note))
    return rows


def _models(**fields: object) -> ModelsConfig:
    return ModelsConfig.model_validate(fields)


def _cases(workdir: Path, quick: bool) -> list[Case]:
    cases = [
        Case(
            "tiny-random 256px cpu",
            load_sam2(_models(preset="tiny-random", device="cpu")),
            6 if quick else 24,
            (1, 4, 16),
            360,
            480,
        ),
    ]
    hiera_t = _random_hiera_t(workdir, 512, "cpu")
    cases.append(
        Case(
            "hiera-t 512px cpu (random)",
            hiera_t,
            3 if quick else 10,  # 10: the memory bank is full (num_maskmem = 7) from frame 7 on
            (1, 4) if quick else (1, 4, 16),
            360,
            480,
        )
    )
    if torch.cuda.is_available():
        gpu = _random_hiera_t(workdir, 1024, "cuda")
        cases.append(
            Case(
                f"hiera-t 1024px {torch.cuda.get_device_name(0)} bf16",
                gpu,
                10 if quick else 60,
                (1, 4, 16),
                720,
                1280,
            )
        )
    return [dataclasses.replace(c, repeats=1) for c in cases] if quick else cases


# SAM 2.1 architectures of the sam2 package's configs, by the names the bench rows use.
ARCHITECTURES: dict[str, str] = {
    "hiera-t": "sam2.1_hiera_t.yaml",
    "hiera-s": "sam2.1_hiera_s.yaml",
    "hiera-b+": "sam2.1_hiera_b+.yaml",
    "hiera-l": "sam2.1_hiera_l.yaml",
}


def _random_hiera_t(workdir: Path, image_size: int, device: str) -> LoadedSam2:
    """SAM 2.1 Hiera-T with random weights, saved and loaded through the local-checkpoint path."""
    return random_sam2(workdir, "hiera-t", image_size, device)


def random_sam2(
    workdir: Path, arch: str, image_size: int, device: str, **models: object
) -> LoadedSam2:
    """A SAM 2.1 architecture (``ARCHITECTURES``) with random weights (seed 0), saved in
    ``workdir`` and loaded through the local-checkpoint path on ``device``; ``models`` are more
    ``ModelsConfig`` fields (``dtype``, ``compile``, ``preprocess``)."""
    import sam2

    config = Path(sam2.__file__).resolve().parent / "configs/sam2.1" / ARCHITECTURES[arch]
    ckpt = workdir / f"{arch.replace('+', 'p').replace('-', '_')}_random.pt"
    if not ckpt.exists():
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            save_checkpoint(instantiate(read_sam2_config(config)), ckpt)
    return load_sam2(
        _models(
            sam2_checkpoint=ckpt,
            sam2_config=config,
            image_size=image_size,
            device=device,
            **models,
        )
    )


def _frames(n: int, height: int, width: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    base = rng.integers(0, 60, (height, width, 3), dtype=np.uint8)
    out = []
    for i in range(n):
        img = base.copy()
        for k in range(16):
            x = (40 + 70 * (k % 6) + 4 * i) % (width - 60)
            y = 30 + 80 * (k // 6)
            img[y : y + 50, x : x + 50] = ((37 * k) % 255, (91 * k) % 255, 200)
        out.append(img)
    return out


def _boxes(n: int, height: int, width: int) -> list[Corners]:
    return [
        (
            float(40 + 70 * (k % 6)),
            float(30 + 80 * (k // 6)),
            float(90 + 70 * (k % 6)),
            float(80 + 80 * (k // 6)),
        )
        for k in range(n)
    ]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def bench_case(case: Case, workdir: Path) -> list[BenchRow]:
    """The rows of one case (any device: CUDA adds frames/s and the share of the bf16 peak)."""
    return _bench_case(case, workdir)


def _bench_case(case: Case, workdir: Path) -> list[BenchRow]:
    video = workdir / case.name.replace(" ", "_")
    bgr = _write_frames(case, video)
    official = official_video_predictor(case.loaded)
    _warm_up(case, official, video, bgr)
    rows: list[BenchRow] = []
    per_obj: dict[int, float] = {}
    for n in case.objects:
        obj_rows, per_obj[n] = _objects_rows(case, n, official, video, bgr)
        rows += obj_rows
    if 1 in per_obj and 16 in per_obj:
        rows.append(_scaling_row(case, bgr, per_obj))
    del official
    return rows


def _write_frames(case: Case, video: Path) -> list[np.ndarray]:
    """The case's frames as JPEGs in ``video`` (the official predictor reads a folder), and
    the same decoded frames as BGR arrays for the streaming side."""
    video.mkdir()
    bgr = []
    for i, rgb in enumerate(_frames(case.frames, case.height, case.width)):
        path = video / f"{i:05d}.jpg"
        Image.fromarray(rgb).save(path, quality=90)
        bgr.append(np.asarray(Image.open(path).convert("RGB"))[..., ::-1].copy())
    return bgr


def _objects_rows(
    case: Case, n: int, official: Any, video: Path, bgr: list[np.ndarray]
) -> tuple[list[BenchRow], float]:
    """The rows of ``n`` objects, streaming vs official in lockstep; and the streaming s/frame.
    Each side's figure is the mean of its per-frame times over the repeats, in lockstep."""
    boxes = _boxes(n, case.height, case.width)
    calls: Calls = []  # memory attention, last frame
    stages: dict[str, list[float]] = {}
    ours_steps, theirs_t = _lockstep(
        partial(_streaming_steps, case.loaded, bgr, boxes, capture=calls, stages=stages),
        partial(_official_steps, official, case.loaded, video, boxes),
        case.frames - 1,
        case.repeats,
    )
    ours_t = [model_s for model_s, _ in ours_steps]
    prep_t = [prep_s for _, prep_s in ours_steps]
    ours, prep, theirs = (float(np.mean(t)) for t in (ours_t, prep_t, theirs_t))
    ratios = np.asarray(theirs_t) / np.asarray(ours_t)
    note = f"{case.frames} frames, {case.height}x{case.width}, mean of {case.repeats} run{'s' if case.repeats > 1 else ''} in lockstep with official"
    spread = f"per-frame ratio median {np.median(ratios):.2f}, range {ratios.min():.2f}-{ratios.max():.2f}; target >= 1"
    stage_note = (
        ", ".join(f"{k} {np.mean(v):.1f}" for k, v in stages.items())
        + " (mean ms/frame; the engine's lifecycle, RLE, JSON: `stats` latency_ms, "
        "`bench --parts offline`)"
    )
    name = f"{case.name}: {n} obj"
    stage_sum = float(sum(np.mean(v) for v in stages.values()))
    rows = [
        row(PART, f"{name} streaming", ours * 1e3, "ms/frame", note),
        row(PART, f"{name} official", theirs * 1e3, "ms/frame", note),
        row(PART, f"{name} speed-up", theirs / ours, "x", spread),
        row(
            PART,
            f"{name} streaming incl. preprocessing",
            (ours + prep) * 1e3,
            "ms/frame",
            f"prepare(): {prep * 1e3:.1f} ms/frame (official: in untimed init_state)",
        ),
        row(PART, f"{name} stages", stage_sum, "ms/frame (sum)", stage_note),
    ]
    if case.loaded.device.type == "cuda":
        fps_note = f"model only (prepare() {prep * 1e3:.1f} ms on the CPU aside); target >= 150 (1 obj), >= 30 (16 obj)"
        rows.append(row(PART, f"{name} streaming", 1.0 / ours, "frames/s", fps_note))
    log.info(
        "%s, %d objects: streaming %.1f ms, official %.1f ms",
        case.name,
        n,
        ours * 1e3,
        theirs * 1e3,
    )
    rows += _attention_rows(case, n, calls)
    calls.clear()  # the inputs it holds would count in the RSS the caller measures next
    return rows, ours


def _scaling_row(case: Case, bgr: list[np.ndarray], per_obj: dict[int, float]) -> BenchRow:
    """16 objects / 1 object. The two per-object figures were taken minutes apart; this ratio
    comes from a 1-object and a 16-object segmenter run in lockstep, frame by frame, so that
    drift cancels here too."""
    one, many = _lockstep(
        partial(_streaming_steps, case.loaded, bgr, _boxes(1, case.height, case.width)),
        partial(_streaming_steps, case.loaded, bgr, _boxes(16, case.height, case.width)),
        case.frames - 1,
        case.repeats,
    )
    one_t = [model_s for model_s, _ in one]
    many_t = [model_s for model_s, _ in many]
    target = "target <= 4" if case.name.startswith("tiny-random") else ""
    note = (
        f"{np.mean(many_t) * 1e3:.1f} vs {np.mean(one_t) * 1e3:.1f} ms/frame in lockstep "
        f"(apart: {per_obj[16] / per_obj[1]:.2f}x); {target}"
    ).rstrip("; ")
    ratio = float(np.mean(many_t) / np.mean(one_t))
    return row(PART, f"{case.name}: 16 obj / 1 obj", ratio, "x", note)


# bf16 dense tensor-core peaks (TFLOP/s, no sparsity) from the vendor's data sheets; more
# specific names first. A card not listed gets its TFLOP/s without a share of its peak.
BF16_PEAK_TFLOPS: tuple[tuple[str, float], ...] = (
    ("H200", 989.0),
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.0),
    ("A100", 312.0),
    ("L40S", 362.0),
    ("L40", 181.0),
    ("L4", 121.0),
)


def bf16_peak_tflops(device_name: str) -> float | None:
    for key, peak in BF16_PEAK_TFLOPS:
        if key in device_name:
            return peak
    return None


@contextlib.contextmanager
def _capturing(module: torch.nn.Module, calls: Calls | None) -> Iterator[None]:
    """Records the arguments of ``module``'s calls into ``calls`` (nothing when it is None)."""
    if calls is None:
        yield
        return
    had_own = "forward" in module.__dict__
    forward = module.forward

    def record(*args: Any, **kwargs: Any) -> Any:
        calls.append((args, kwargs))
        return forward(*args, **kwargs)

    module.forward = record
    try:
        yield
    finally:
        if had_own:
            module.forward = forward
        else:
            del module.forward


def _flop_counter() -> FlopCounterMode:
    """torch's FLOP counter, taught the fused CPU attention kernel (it counts the CUDA ones)."""
    mapping: dict[object, Callable[..., int]] = {}
    cpu_flash = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    if cpu_flash is not None:

        def cpu_sdpa(q: Any, k: Any, v: Any, *_: Any, out_shape: Any = None, **__: Any) -> int:
            count: Callable[..., int] = sdpa_flop_count  # untyped in torch
            return int(count(q, k, v))

        mapping[cpu_flash] = cpu_sdpa
    return FlopCounterMode(display=False, custom_mapping=mapping)


def _attention_rows(case: Case, n: int, calls: Calls) -> list[BenchRow]:
    """Memory attention alone, replayed on the inputs of the last streamed frame: its time per
    frame, the arithmetic it does (torch's FLOP counter) and the rate it reaches; on CUDA also
    the share of the card's bf16 peak."""
    if not calls:
        return []
    loaded = case.loaded
    module = loaded.model.memory_attention
    counter = _flop_counter()
    cuda = loaded.device.type == "cuda"
    with torch.inference_mode(), loaded.autocast():
        with counter:  # the module's own forward: a compiled one hides its operations
            for args, kwargs in calls:
                type(module).forward(module, *args, **kwargs)
        if cuda:  # warm-up of what is timed (compiled, where models.compile is on)
            for args, kwargs in calls:
                module(*args, **kwargs)
        repeats = 10 if cuda else 1
        _sync(loaded.device)
        t0 = time.perf_counter()
        for _ in range(repeats):
            for args, kwargs in calls:
                module(*args, **kwargs)
        _sync(loaded.device)
    seconds = (time.perf_counter() - t0) / repeats
    flops = counter.get_total_flops()
    note = f"{flops / 1e9:.1f} GFLOP/frame in {len(calls)} call(s), replayed alone"
    rows = [row(PART, f"{case.name}: {n} obj memory attention", seconds * 1e3, "ms/frame", note)]
    if cuda:
        name = torch.cuda.get_device_name(loaded.device)
        peak = bf16_peak_tflops(name)
        rate, unit = flops / seconds / 1e12, "TFLOP/s"
        rate_note = (
            f"{rate / peak:.1%} of {name}'s bf16 peak {peak:.0f}"
            if peak
            else f"bf16 peak of {name} unknown"
        )
    else:
        dtype = "float32" if loaded.autocast_dtype is None else f"{loaded.autocast_dtype} autocast"
        rate, unit, rate_note = flops / seconds / 1e9, "GFLOP/s", f"{dtype} on CPU"
    rows.append(row(PART, f"{case.name}: {n} obj memory attention rate", rate, unit, rate_note))
    return rows


def _lockstep(
    first: Callable[[], Iterator[A]], second: Callable[[], Iterator[B]], steps: int, repeats: int
) -> tuple[list[A], list[B]]:
    """What two step generators yield, run one step each in turn, ``repeats`` times over.

    This machine's speed drifts by +-20 % over minutes; in lockstep (who goes first alternates
    by step and by repeat) the drift hits both sides alike."""
    got_first: list[A] = []
    got_second: list[B] = []
    for rep in range(repeats):
        a, b = first(), second()
        for i in range(steps):
            if (i + rep) % 2 == 0:
                got_first.append(next(a))
                got_second.append(next(b))
            else:
                got_second.append(next(b))
                got_first.append(next(a))
        _finish(a, b)
    return got_first, got_second


def _streaming_steps(
    loaded: LoadedSam2,
    frames: list[np.ndarray],
    boxes: list[Corners],
    capture: Calls | None = None,
    stages: dict[str, list[float]] | None = None,
) -> Iterator[tuple[float, float]]:
    """Prompts frame 0, then yields (model seconds, preprocessing seconds) of frames 1..N-1.

    ``capture``, where given, receives the memory-attention calls of the last frame; ``stages``
    each frame's milliseconds of prepare, encode (the image encoder) and propagate."""
    seg = StreamingSegmenter(loaded)
    idx = seg.add_frame(frames[0])
    for obj_id, box in enumerate(boxes):
        seg.add_prompt(obj_id, idx, box=box)
    seg.track(idx)
    for i, frame in enumerate(frames[1:], start=2):
        _sync(loaded.device)
        t0 = time.perf_counter()
        prepared = seg.prepare(frame)
        _sync(loaded.device)
        t1 = time.perf_counter()
        take = capture if i == len(frames) else None
        if take is not None:
            take.clear()
        with _capturing(loaded.model.memory_attention, take):
            idx = seg.add_frame(prepared)
            _sync(loaded.device)
            t2 = time.perf_counter()
            seg.track(idx)
        _sync(loaded.device)
        t3 = time.perf_counter()
        if stages is not None:
            for k, v in (("prepare", t1 - t0), ("encode", t2 - t1), ("propagate", t3 - t2)):
                stages.setdefault(k, []).append(v * 1e3)
        yield t3 - t1, t1 - t0


def _official_steps(
    predictor: Any,
    loaded: LoadedSam2,
    video: Path,
    boxes: list[Corners],
    max_frames: int | None = None,
) -> Iterator[float]:
    """``propagate_in_video`` from box prompts on frame 0: yields the seconds of frames 1..N-1.

    Frame loading and preprocessing happen in ``init_state``, prompting and the memory encoding
    of the prompts before frame 0 is yielded: none is timed."""
    with loaded.autocast():
        state = predictor.init_state(str(video))
        for obj_id, box in enumerate(boxes):
            predictor.add_new_points_or_box(state, 0, obj_id, box=np.asarray(box, np.float32))
        # The sam2 methods enter inference mode themselves (per generator step, too); autocast is
        # entered around each step so that it is never left active while the caller runs.
        propagation = predictor.propagate_in_video(state, max_frame_num_to_track=max_frames)
        next(propagation)
    while True:
        _sync(loaded.device)
        t0 = time.perf_counter()
        with loaded.autocast():
            try:
                _, _, masks = next(propagation)
            except StopIteration:
                return
            masks.cpu()  # the streaming side hands out CPU masks too
        _sync(loaded.device)
        yield time.perf_counter() - t0


def _finish(*steps: Iterator[object]) -> None:
    for it in steps:
        for _ in it:
            pass


def _warm_up(case: Case, official: Any, video: Path, bgr: list[np.ndarray]) -> None:
    """Lazy kernel and allocator set-up for these shapes, not timed."""
    boxes = _boxes(2, case.height, case.width)
    _finish(
        _streaming_steps(case.loaded, bgr[:3], boxes),
        _official_steps(official, case.loaded, video, boxes, max_frames=2),
    )
