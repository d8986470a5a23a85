"""bf16 and CUDA checks of streaming SAM 2 against the official ``SAM2VideoPredictor``.

- ``test_bf16_cpu_equals_official`` (every CI run, CPU): ``models.dtype: bfloat16`` on the CPU
  runs the streaming segmenter under ``torch.autocast("cpu", dtype=torch.bfloat16)``; the
  official predictor runs under the same autocast. A dtype fault (a bf16/float32 matmul, an
  ``index_put`` of bf16 into float32) would raise here long before a GPU sees it.
  ``test_bf16_cpu_transformers_backend_equals_session`` does the same for the transformers
  tracker backend against the family's own inference session.
- ``@pytest.mark.gpu`` tests: the same on CUDA, ``models.compile`` on vs off, device
  preprocessing vs PIL, grounding on its own CUDA stream while propagation runs. Without CUDA
  ``tests/conftest.py`` deselects them (CI has no GPU and fails on skips); ``.ci/gpu-check``
  runs them on a lent GPU, and its CPU rehearsal (``PROMPTCAM_GPU_DEVICE=cpu``) runs them here.

Oracle and tolerance. On the CPU both sides call the same bf16 kernels on the same shapes, and
the masks and logits agree bit for bit (measured: 0.0 max |logit diff|, 8 frames, 1 and 3
objects). Asserted: one object exactly; several objects (decoded as one batch, where the mask
decoder's upscaling runs channels-last, ~1e-7 apart in float32) within ``BF16_LOGIT_TOL`` =
2**-6, four bf16 rounding steps (2**-8 relative) of a logit near 4, and a mask IoU >= 0.99
on every frame. On CUDA cuBLAS and cuDNN pick kernels by shape and layout, so
bit-exactness is not expected: IoU >= 0.99 per object and frame, the logit gap is reported.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from engine.models.sam2 import LoadedSam2, load_sam2, official_video_predictor
from engine.pipeline import FrameInput, TrackingEngine
from engine.segmenters.sam2 import StreamingSegmenter
from engine.segmenters.sam2_memory import IMG_STD
from stream.config import EngineConfig, ModelsConfig
from tests.moving_blocks import H, W, make_frames, one_torch_thread  # noqa: F401 (the fixture)

# Where the gpu-marked tests run: CUDA, or the CPU in .ci/gpu-check --rehearse.
GPU_DEVICE = os.environ.get("PROMPTCAM_GPU_DEVICE", "cuda")
NUM_FRAMES = 8  # = max_obj_ptrs_in_encoder of the tiny config: pointer scaling equals official
BF16_LOGIT_TOL = 2.0**-6
MIN_IOU = 0.99
PROMPTS: dict[int, dict[str, Any]] = {
    1: {"box": (20, 30, 80, 80)},
    2: {"box": (150, 100, 200, 150)},
    3: {"points": [(170, 120)], "point_labels": [1]},  # one click: multimask output
}


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # robust on a busy 2-core machine


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[np.ndarray]]:
    """JPEG files for the official predictor and the same decoded frames (BGR) for ours."""
    directory = tmp_path_factory.mktemp("video")
    bgr = []
    for i, rgb in enumerate(make_frames(NUM_FRAMES)):
        path = directory / f"{i:05d}.jpg"
        Image.fromarray(rgb).save(path, quality=90)
        bgr.append(np.asarray(Image.open(path).convert("RGB"))[..., ::-1].copy())
    return directory, bgr


def tiny(device: str, **fields: Any) -> LoadedSam2:
    return load_sam2(
        ModelsConfig.model_validate({"preset": "tiny-random", "device": device, **fields})
    )


def official_logits(
    loaded: LoadedSam2, directory: Path, obj_ids: tuple[int, ...]
) -> dict[int, dict[int, torch.Tensor]]:
    """The official predictor under the loaded model's autocast: {frame: {obj: HxW logits}}."""
    predictor = official_video_predictor(loaded)
    out: dict[int, dict[int, torch.Tensor]] = {}
    with loaded.autocast():
        state = predictor.init_state(str(directory))
        for obj_id in obj_ids:
            p = PROMPTS[obj_id]
            box = np.asarray(p["box"], np.float32) if "box" in p else None
            pts = np.asarray(p["points"], np.float32) if "points" in p else None
            lbl = np.asarray(p["point_labels"], np.int32) if "points" in p else None
            predictor.add_new_points_or_box(state, 0, obj_id, points=pts, labels=lbl, box=box)
        for frame_idx, ids, masks in predictor.propagate_in_video(state):
            out[frame_idx] = {o: masks[k, 0].float().cpu() for k, o in enumerate(ids)}
    return out


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = int((a | b).sum())
    return 1.0 if union == 0 else int((a & b).sum()) / union


def compare_with_official(
    loaded: LoadedSam2, video: tuple[Path, list[np.ndarray]], obj_ids: tuple[int, ...]
) -> tuple[float, float]:
    """Streams the video with ``loaded`` and compares every frame with the official predictor
    under the same autocast; returns (max |logit diff|, min mask IoU) over frames and objects."""
    directory, frames = video
    ref = official_logits(loaded, directory, obj_ids)
    seg = StreamingSegmenter(loaded)
    worst_diff, worst_iou = 0.0, 1.0
    for i, frame in enumerate(frames):
        idx = seg.add_frame(frame)
        if i == 0:
            for obj_id in obj_ids:
                seg.add_prompt(obj_id, idx, **PROMPTS[obj_id])
            if loaded.autocast_dtype is not None:  # the model really ran in the autocast dtype
                assert seg._latest is not None
                # (the high-resolution levels; the top-down FPN sum comes out float32 on
                # both sides)
                assert seg._latest.vision_feats[0].dtype == loaded.autocast_dtype
        outs = seg.track(idx)
        assert set(outs) == set(ref[i]), f"frame {i}"
        for obj_id, expected in ref[i].items():
            low = seg.last_logits(obj_id).float()
            got = F.interpolate(low, size=(H, W), mode="bilinear", align_corners=False)[0, 0]
            worst_diff = max(worst_diff, (got.cpu() - expected).abs().max().item())
            mask = outs[obj_id].mask
            assert mask.shape == (H, W) and mask.dtype == np.bool_
            worst_iou = min(worst_iou, iou(mask, (expected > 0).numpy()))
    return worst_diff, worst_iou


@pytest.mark.parametrize("obj_ids", [(1,), (1, 2, 3)], ids=["1-object", "3-objects"])
def test_bf16_cpu_equals_official(
    video: tuple[Path, list[np.ndarray]], obj_ids: tuple[int, ...]
) -> None:
    loaded = tiny("cpu", dtype="bfloat16")
    assert loaded.autocast_dtype == torch.bfloat16
    diff, worst_iou = compare_with_official(loaded, video, obj_ids)
    assert diff <= (0.0 if len(obj_ids) == 1 else BF16_LOGIT_TOL), f"max |logit diff| {diff}"
    assert worst_iou >= MIN_IOU, f"min mask IoU {worst_iou:.4f}"


@pytest.mark.parametrize("family", ["sam2.1-hf-tiny-random", "sam3-tracker-tiny-random"])
def test_bf16_cpu_transformers_backend_equals_session(family: str, tmp_path: Path) -> None:
    """The transformers tracker backend under CPU bf16 autocast against the family's own
    inference session under the same autocast (the oracle of tests/test_transformers_video.py),
    3 objects (box, box, one click) over 12 frames."""
    from engine.models.video import load_video_model, save_tiny_random
    from engine.segmenters.transformers import HfVideoKernel
    from tests.moving_blocks import H as HF_H
    from tests.moving_blocks import W as HF_W
    from tests.test_transformers_video import FRAMES, Reference
    from tests.test_transformers_video import PROMPTS as HF_PROMPTS

    directory = save_tiny_random(family, tmp_path / family)
    loaded = load_video_model(str(directory), ModelsConfig(device="cpu", dtype="bfloat16"))
    assert loaded.autocast_dtype == torch.bfloat16
    kernel = HfVideoKernel(loaded)
    seg = kernel.new_session()
    ref = Reference(loaded)
    prompts = {i: HF_PROMPTS[i] for i in (1, 2, 3)}
    for i, frame in enumerate(FRAMES):
        prepared = kernel.prepare(frame)
        idx = seg.add_frame(prepared)
        if i == 0:
            for obj_id, p in prompts.items():
                seg.add_prompt(obj_id, idx, **p)
            ref.prompt(0, prompts)
        outs = seg.track(idx)
        with loaded.autocast():
            expected = ref.step(prepared.image)
        assert set(outs) == set(expected) == set(prompts), f"frame {i}"
        for obj_id, logits in expected.items():
            diff = (seg.last_logits(obj_id).float() - logits.float()).abs().max().item()
            assert diff <= BF16_LOGIT_TOL, f"frame {i} object {obj_id}: |diff| {diff}"
            want = F.interpolate(logits.float(), size=(HF_H, HF_W), mode="bilinear")[0, 0] > 0
            score = iou(outs[obj_id].mask, want.numpy())
            assert score >= MIN_IOU, f"frame {i} object {obj_id}: IoU {score:.4f}"


# ---------------------------------------------------------------- GPU (CUDA; CPU in rehearsal)


@pytest.mark.gpu
@pytest.mark.parametrize("obj_ids", [(1,), (1, 2, 3)], ids=["1-object", "3-objects"])
def test_gpu_bf16_equals_official(
    video: tuple[Path, list[np.ndarray]], obj_ids: tuple[int, ...]
) -> None:
    """``dtype: auto`` is bf16 autocast on CUDA (and asked for explicitly in the rehearsal)."""
    loaded = tiny(GPU_DEVICE, dtype="bfloat16" if GPU_DEVICE == "cpu" else "auto")
    assert loaded.autocast_dtype == torch.bfloat16
    diff, worst_iou = compare_with_official(loaded, video, obj_ids)
    print(f"bf16 {GPU_DEVICE} {len(obj_ids)} obj: max |logit diff| {diff:.3g}, IoU {worst_iou}")
    assert worst_iou >= MIN_IOU, f"min mask IoU {worst_iou:.4f} (max |logit diff| {diff:.3g})"


@pytest.mark.gpu
def test_gpu_compile_on_off_equal_masks(video: tuple[Path, list[np.ndarray]]) -> None:
    """``models.compile`` (torch.compile of the hot modules, CUDA only: on the CPU it logs and
    runs uncompiled) gives the masks of the uncompiled model, 3 objects, bf16."""
    _, frames = video
    dtype = "bfloat16" if GPU_DEVICE == "cpu" else "auto"
    masks: list[list[dict[int, np.ndarray]]] = []
    for compiled in (False, True):
        seg = StreamingSegmenter(tiny(GPU_DEVICE, dtype=dtype, compile=compiled))
        per_frame = []
        for i, frame in enumerate(frames):
            idx = seg.add_frame(frame)
            if i == 0:
                for obj_id in (1, 2, 3):
                    seg.add_prompt(obj_id, idx, **PROMPTS[obj_id])
            per_frame.append({o: r.mask for o, r in seg.track(idx).items()})
        masks.append(per_frame)
    for i, (plain, comp) in enumerate(zip(*masks, strict=True)):
        assert set(plain) == set(comp) == {1, 2, 3}, f"frame {i}"
        for obj_id in plain:
            score = iou(plain[obj_id], comp[obj_id])
            assert score >= MIN_IOU, f"frame {i} object {obj_id}: IoU {score:.4f}"


@pytest.mark.gpu
def test_gpu_device_preprocess_within_one_grey_level(video: tuple[Path, list[np.ndarray]]) -> None:
    """``preprocess: device`` (the CUDA default) against the exact PIL path: within one grey
    level on nearly every value, never more than three."""
    _, frames = video
    pil = StreamingSegmenter(tiny(GPU_DEVICE, preprocess="pil"))
    dev = StreamingSegmenter(tiny(GPU_DEVICE, preprocess="device"))
    assert dev.loaded.preprocess == "device" and pil.loaded.preprocess == "pil"
    one_level = 1.0 / (255 * min(IMG_STD)) + 1e-6
    for frame in frames[:3]:
        a, b = pil.prepare(frame).image, dev.prepare(frame).image
        assert a.device.type == b.device.type == torch.device(GPU_DEVICE).type
        diff = (a - b).abs()
        assert (diff <= one_level).float().mean().item() >= 0.995
        assert diff.max().item() <= 3 * one_level


@pytest.mark.gpu
def test_gpu_grounding_on_own_stream_while_propagating(
    video: tuple[Path, list[np.ndarray]],
) -> None:
    """A re-grounding runs in its thread (on CUDA on a stream of its own, not the loop's) while
    the frame loop keeps propagating, and leaves the masks as they are without grounding.

    The detector holds each detection open until the loop has processed a frame meanwhile (at
    most 30 s): a loop that waited for grounding would fail here."""
    from engine.grounder import load_grounder

    _, frames = video
    models = ModelsConfig(preset="tiny-random", device=GPU_DEVICE)
    loaded = load_sam2(models)
    boxes = [((20.0, 30.0, 80.0, 80.0), "a"), ((150.0, 100.0, 200.0, 150.0), "b")]

    def run(reground: bool, count: int) -> tuple[list[dict[int, np.ndarray]], dict[str, Any]]:
        """Up to ``count`` frames (the video over and over); with ``reground``, stops once a
        grounding result has been applied and the video was seen once."""
        # box_threshold 1.0: the detector runs fully and keeps no box, so both runs track the
        # same two objects.
        ecfg = EngineConfig(
            prompt="ball. box.",
            reground_every_frames=1 if reground else 0,
            box_threshold=1.0,
            detector_size=240,
        )
        grounder = load_grounder(models, ecfg)
        seen: dict[str, Any] = {"streams": [], "overlapped": 0, "timeouts": 0}
        progress = threading.Condition()
        loop = {"started": 0, "processed": 0, "finished": False}
        in_flight = threading.Event()
        detect_batch = grounder.detect_batch

        def held(images: Any, prompts: Any) -> Any:
            if loaded.device.type == "cuda":
                seen["streams"].append(torch.cuda.current_stream(loaded.device))
            with progress:  # released by a frame that starts after this detection
                start = loop["started"]
            in_flight.set()
            try:
                found = detect_batch(images, prompts)
                with progress:
                    if not progress.wait_for(
                        lambda: loop["processed"] > start or bool(loop["finished"]), timeout=30.0
                    ):
                        seen["timeouts"] += 1
                return found
            finally:
                in_flight.clear()

        grounder.detect_batch = held  # type: ignore[method-assign]
        engine = TrackingEngine(
            ecfg,
            StreamingSegmenter(loaded),
            grounder,
            background_grounding=True,
            device=loaded.device,
        )
        out = []
        try:
            for i in range(count):
                if reground and i >= len(frames) and engine.counters.groundings >= 1:
                    break
                frame = frames[i % len(frames)]
                with progress:
                    loop["started"] += 1
                busy = in_flight.is_set()
                result = engine.process(
                    FrameInput(i, time.time_ns(), frame), boxes if i == 0 else ()
                )
                if busy and in_flight.is_set():
                    seen["overlapped"] += 1
                with progress:
                    loop["processed"] += 1
                    progress.notify_all()
                out.append({o.id: o.mask for o in result.objects})
            with progress:
                loop["finished"] = True
                progress.notify_all()
            assert engine.wait_grounding_idle(60)
            seen["groundings"] = engine.counters.groundings
            return out, seen
        finally:
            engine.close()

    busy, seen = run(True, 200)
    plain, _ = run(False, len(busy))
    assert seen["groundings"] >= 1 and seen["timeouts"] == 0, seen
    assert seen["overlapped"] >= 1, f"no frame was processed while a grounding ran: {seen}"
    if loaded.device.type == "cuda":
        default = torch.cuda.default_stream(loaded.device)
        assert seen["streams"] and all(s != default for s in seen["streams"]), seen["streams"]
    for i, (a, b) in enumerate(zip(plain, busy, strict=True)):
        assert set(a) == set(b) and a, f"frame {i}: {sorted(a)} vs {sorted(b)}"
        for obj_id in a:
            assert iou(a[obj_id], b[obj_id]) >= MIN_IOU, f"frame {i} object {obj_id}"
