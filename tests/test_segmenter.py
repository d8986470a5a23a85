"""The streaming segmenter against the official SAM2VideoPredictor, its memory bound, bad input.

Oracle: on the same tiny-random weights, the same JPEG frames (the official predictor reads the
files, the segmenter gets the same decoded images) and the same prompts, the streaming masks
equal ``SAM2VideoPredictor.propagate_in_video``'s frame by frame, and so do the mask logits.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import OmegaConf
from PIL import Image

from engine.core.prompts import mask_box
from engine.models.sam2 import LoadedSam2, load_sam2, official_video_predictor, save_checkpoint
from engine.segmenters import sam2 as segmenter
from engine.segmenters.sam2 import StreamingSegmenter
from engine.segmenters.sam2_memory import IMG_STD
from stream.config import CONFIGS_DIR, ModelsConfig
from stream.errors import PromptError, RequestError
from tests.moving_blocks import H, W, make_frames, one_torch_thread  # noqa: F401 (the fixture)


def models_cfg(**fields: Any) -> ModelsConfig:
    return ModelsConfig.model_validate(fields)


NUM_FRAMES = 16  # >= max_obj_ptrs_in_encoder of the tiny config (see engine/segmenters/sam2.py)
LOGIT_TOL = 1e-5


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # robust on a busy 2-core machine


@dataclass
class Video:
    directory: Path
    bgr: list[np.ndarray]  # the decoded JPEGs, as the engine receives frames


def write_video(directory: Path, frames: list[np.ndarray]) -> Video:
    directory.mkdir(parents=True, exist_ok=True)
    bgr = []
    for i, rgb in enumerate(frames):
        path = directory / f"{i:05d}.jpg"
        Image.fromarray(rgb).save(path, quality=90)
        bgr.append(np.asarray(Image.open(path).convert("RGB"))[..., ::-1].copy())
    return Video(directory, bgr)


@pytest.fixture(scope="module")
def loaded() -> LoadedSam2:
    return load_sam2(models_cfg(preset="tiny-random", device="cpu"))


@pytest.fixture(scope="module")
def official(loaded: LoadedSam2) -> Any:
    return official_video_predictor(loaded)


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Video:
    return write_video(tmp_path_factory.mktemp("video"), make_frames(NUM_FRAMES))


Prompt = dict[str, Any]  # keyword arguments of add_prompt: box / points / point_labels / mask


def run_official(
    predictor: Any, directory: Path, prompts: dict[int, Prompt]
) -> dict[int, dict[int, torch.Tensor]]:
    """Official logits at video resolution: {frame: {obj_id: HxW}}, all prompts on frame 0."""
    state = predictor.init_state(str(directory))
    for obj_id, p in prompts.items():
        if "mask" in p:
            predictor.add_new_mask(state, 0, obj_id, mask=p["mask"])
        else:
            pts = None if p.get("points") is None else np.asarray(p["points"], np.float32)
            lbl = None if p.get("point_labels") is None else np.asarray(p["point_labels"], np.int32)
            box = None if p.get("box") is None else np.asarray(p["box"], np.float32)
            predictor.add_new_points_or_box(state, 0, obj_id, points=pts, labels=lbl, box=box)
    out: dict[int, dict[int, torch.Tensor]] = {}
    for frame_idx, obj_ids, masks in predictor.propagate_in_video(state):
        out[frame_idx] = {oid: masks[k, 0].clone() for k, oid in enumerate(obj_ids)}
    return out


def frame_logits(seg: StreamingSegmenter, obj_id: int, h: int = H, w: int = W) -> torch.Tensor:
    low = seg.last_logits(obj_id)
    return F.interpolate(low.float(), size=(h, w), mode="bilinear", align_corners=False)[0, 0]


def assert_same(
    seg: StreamingSegmenter, outs: dict[int, Any], ref: dict[int, torch.Tensor], where: str
) -> None:
    """One object runs with batch 1, as the official predictor does: logits equal bit for bit.
    Several objects are decoded in one batch, where the mask decoder's upscaling runs in
    channels-last layout (ConvTranspose2d picks it for batch > 1) and its GELU rounds differently
    at the last bit (~1e-7, not accumulating over frames). Then the logits agree within
    LOGIT_TOL and the masks are equal at every pixel whose official logit is not within LOGIT_TOL
    of 0 (in practice: all pixels but, rarely, one)."""
    assert set(outs) == set(ref), where
    exact = len(ref) == 1
    for obj_id, expected in ref.items():
        got = outs[obj_id]
        diff = (frame_logits(seg, obj_id) - expected).abs().max().item()
        assert diff <= (0.0 if exact else LOGIT_TOL), (
            f"{where} object {obj_id}: max |logit diff| {diff}"
        )
        want = (expected > 0).numpy()
        clear = (expected.abs() > LOGIT_TOL).numpy()
        np.testing.assert_array_equal(
            got.mask[clear], want[clear], err_msg=f"{where} object {obj_id}"
        )
        assert (got.mask != want).sum() <= (0 if exact else 3), f"{where} object {obj_id}"
        assert got.mask.shape == (H, W) and got.mask.dtype == np.bool_
        assert got.box == mask_box(got.mask)


PROMPTS: dict[int, Prompt] = {
    1: {"box": (20, 30, 80, 80)},
    2: {"box": (150, 100, 200, 150)},
    3: {"points": [(170, 120)], "point_labels": [1]},  # one click: multimask output
    4: {"points": [(50, 55), (120, 160)], "point_labels": [1, 0]},
}


def _mask_prompt() -> np.ndarray:
    m = np.zeros((H, W), bool)
    m[30:80, 20:80] = True
    return m


@pytest.mark.parametrize(
    ("obj_ids", "attention_bytes"),
    [((1,), None), ((1, 2, 3, 4, 5), None), ((1, 2, 3, 4, 5), 1)],
    ids=["one-object", "several-objects-box-points-mask", "several-objects-attention-cut"],
)
def test_equals_official_prompts_on_first_frame(
    loaded: LoadedSam2,
    official: Any,
    video: Video,
    obj_ids: tuple[int, ...],
    attention_bytes: int | None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With ``attention_bytes=1`` the CPU batch cut puts every object in its own memory-attention
    and memory-encoding call (what Hiera-T at 1024 px gets on CPU); decoding stays batched."""
    if attention_bytes is not None:
        monkeypatch.setattr(segmenter, "CPU_BATCH_BYTES", attention_bytes)
    prompts = {i: PROMPTS[i] if i in PROMPTS else {"mask": _mask_prompt()} for i in obj_ids}
    ref = run_official(official, video.directory, prompts)
    seg = StreamingSegmenter(loaded)
    for i, frame in enumerate(video.bgr):
        idx = seg.add_frame(frame)
        assert idx == i
        if i == 0:
            for obj_id, p in prompts.items():
                seg.add_prompt(obj_id, idx, **p)
        assert_same(seg, seg.track(idx), ref[i], f"frame {i}")


def test_prepare_equals_official_frame_loading(loaded: LoadedSam2, video: Video) -> None:
    """``prepare`` (PIL resize + a lookup table for /255, mean, std) gives the official loader's
    input tensors bit for bit, from the same decoded JPEGs."""
    from sam2.utils.misc import load_video_frames

    size = int(loaded.model.image_size)
    images, height, width = load_video_frames(str(video.directory), size, offload_video_to_cpu=True)
    seg = StreamingSegmenter(loaded)
    for i in (0, 7, NUM_FRAMES - 1):
        prepared = seg.prepare(video.bgr[i])
        assert (prepared.height, prepared.width) == (height, width) == (H, W)
        assert prepared.image.shape == (1, 3, size, size)
        assert torch.equal(prepared.image[0], images[i]), f"frame {i}"
    with pytest.raises(ValueError, match="uint8"):
        seg.prepare(video.bgr[0].astype(np.float32))


def test_device_preprocess_close_to_pil(video: Video) -> None:
    """``models.preprocess: device`` (the CUDA default, run here on the CPU through the same
    torch code) stays within one grey level of the exact PIL path on nearly every value."""
    pil = StreamingSegmenter(load_sam2(models_cfg(preset="tiny-random", device="cpu")))
    dev_loaded = load_sam2(models_cfg(preset="tiny-random", device="cpu", preprocess="device"))
    assert dev_loaded.preprocess == "device" and pil.loaded.preprocess == "pil"
    dev = StreamingSegmenter(dev_loaded)
    one_level = 1.0 / (255 * min(IMG_STD)) + 1e-6
    for frame in video.bgr[:3]:
        a, b = pil.prepare(frame).image, dev.prepare(frame).image
        assert a.shape == b.shape
        diff = (a - b).abs()
        assert (diff <= one_level).float().mean().item() >= 0.995
        assert diff.max().item() <= 3 * one_level


def test_object_added_later_equals_official_from_its_frame(
    loaded: LoadedSam2, official: Any, video: Video, tmp_path: Path
) -> None:
    """Object 2 appears on frame k. The official predictor, given that prompt before propagating,
    also segments object 2 on frames 0..k-1 from its *future* prompt and remembers those frames;
    a live stream cannot. The causal equivalent is the official predictor on the video from frame
    k on. Object 1 (prompted on frame 0) must be unaffected; objects 1 and 2 have different memory
    layouts for a while, and are batched by layout."""
    k = 6
    first = {1: PROMPTS[1]}
    later = {2: {"box": (150 - 4 * k, 100, 200 - 4 * k, 150)}}
    ref_first = run_official(official, video.directory, first)
    tail = tmp_path / "tail"  # the same JPEG files from frame k on, renumbered from 0
    tail.mkdir()
    for i in range(k, NUM_FRAMES):
        shutil.copy(video.directory / f"{i:05d}.jpg", tail / f"{i - k:05d}.jpg")
    ref_later = run_official(official, tail, later)
    seg = StreamingSegmenter(loaded)
    for i, frame in enumerate(video.bgr):
        idx = seg.add_frame(frame)
        if i == 0:
            seg.add_prompt(1, idx, **first[1])
        if i == k:
            seg.add_prompt(2, idx, **later[2])
        expected = dict(ref_first[i])
        if i >= k:
            expected.update(ref_later[i - k])
        assert_same(seg, seg.track(idx), expected, f"frame {i}")


def test_checkpoint_on_disk_equals_official(
    official: Any, loaded: LoadedSam2, video: Video, tmp_path: Path
) -> None:
    ckpt, config = tmp_path / "sam2.pt", tmp_path / "cfg" / "model.yaml"
    config.parent.mkdir()
    config.write_text((CONFIGS_DIR / "sam2_tiny_random.yaml").read_text())
    save_checkpoint(loaded.model, ckpt)
    from_disk = load_sam2(models_cfg(sam2_checkpoint=ckpt, sam2_config=config, device="cpu"))
    predictor = official_video_predictor(from_disk)
    prompts = {1: PROMPTS[1], 2: PROMPTS[2]}
    ref = run_official(predictor, video.directory, prompts)
    seg = StreamingSegmenter(from_disk)
    for i, frame in enumerate(video.bgr):
        idx = seg.add_frame(frame)
        if i == 0:
            for obj_id, p in prompts.items():
                seg.add_prompt(obj_id, idx, **p)
        assert_same(seg, seg.track(idx), ref[i], f"frame {i}")


def test_reseed_late_prompt_pin_remove_reset(
    loaded: LoadedSam2, official: Any, video: Video
) -> None:
    seg = StreamingSegmenter(loaded, max_pinned_frames=2)
    idx0 = seg.add_frame(video.bgr[0])
    seg.add_prompt(1, idx0, **PROMPTS[1])
    seg.track(idx0)
    seg.pin(idx0)
    for i in range(1, 5):
        idx = seg.add_frame(video.bgr[i])
        seg.track(idx)
    assert seg.state_size().objects[0].memories == 4
    # late prompt on the pinned frame 0 (a detection computed in the background)
    out = seg.add_prompt(2, idx0, **PROMPTS[2])
    state = official.init_state(str(video.directory))
    _, _, ref = official.add_new_points_or_box(
        state, 0, 2, box=np.asarray(PROMPTS[2]["box"], np.float32)
    )
    np.testing.assert_array_equal(out.mask, (ref[0, 0] > 0).numpy())
    idx5 = seg.add_frame(video.bgr[5])
    outs = seg.track(idx5)
    assert set(outs) == {1, 2} and seg.object_ids == [1, 2]
    # re-seed object 1 on the current frame: same id, memory restarts from the prompt
    seg.add_prompt(1, idx5, box=(60, 45, 130, 100))
    assert {s.obj_id: s.memories for s in seg.state_size().objects} == {1: 0, 2: 1}
    assert set(seg.track(idx5)) == {1, 2}
    # pins are bounded (oldest dropped) and unpinned past frames are gone
    seg.pin(idx5)
    idx6 = seg.add_frame(video.bgr[6])
    seg.pin(idx6)
    assert seg.state_size().pinned == 2
    with pytest.raises(RequestError, match="frame 0 is not available"):
        seg.add_prompt(3, idx0, **PROMPTS[1])
    mask = seg.segment_box(idx5, (20, 30, 80, 80))
    assert mask.shape == (H, W) and mask.dtype == np.bool_ and mask.any()
    assert seg.object_ids == [1, 2]
    seg.remove_object(1)
    assert set(seg.track(idx6)) == {2}
    seg.reset()
    assert seg.object_ids == [] and seg.track(idx6) == {}
    assert seg.add_frame(video.bgr[7]) == 7


def test_bad_prompts_raise_and_leave_state_unchanged(loaded: LoadedSam2, video: Video) -> None:
    seg = StreamingSegmenter(loaded)
    clean = StreamingSegmenter(loaded)
    for s in (seg, clean):
        idx = s.add_frame(video.bgr[0])
        s.add_prompt(1, idx, **PROMPTS[1])
        s.track(idx)
    idx = seg.add_frame(video.bgr[1])
    clean.add_frame(video.bgr[1])
    before = seg.state_size()
    bad: list[tuple[dict[str, Any], str]] = [
        ({"box": (300, 200, 400, 260)}, "outside"),
        ({"box": (-50, -40, -1, -2)}, "outside"),
        ({"box": (10, 10, 10, 50)}, "zero or negative area"),
        ({"box": (50, 10, 20, 50)}, "zero or negative area"),
        ({"box": (float("nan"), 0, 10, 10)}, "non-finite"),
        ({"box": (1, 2, 3)}, "4 numbers"),
        ({"points": [(10, 10, 3)]}, "Nx2"),
        ({"points": [(500, 10)]}, "outside"),
        ({"points": [(10, 10)], "point_labels": [7]}, "point_labels"),
        ({"mask": np.zeros((H, W), bool)}, "empty"),
        ({"mask": np.ones((10, 10), bool)}, "must be 180x240"),
        ({"mask": np.ones((H, W), bool), "box": (0, 0, 5, 5)}, "not both"),
        ({}, "needs a box"),
    ]
    for kwargs, match in bad:
        with pytest.raises(PromptError, match=match):
            seg.add_prompt(1, idx, **kwargs)
        with pytest.raises(PromptError, match=match):
            seg.add_prompt(9, idx, **kwargs)
    with pytest.raises(RequestError, match="not available"):
        seg.add_prompt(9, idx + 5, **PROMPTS[1])
    with pytest.raises(RequestError, match="unknown object id 42"):
        seg.remove_object(42)
    with pytest.raises(RequestError, match="latest frame"):
        seg.track(idx - 1)
    with pytest.raises(ValueError, match="HxWx3"):
        seg.add_frame(np.zeros((10, 10), np.uint8))
    assert seg.state_size() == before and seg.object_ids == [1]
    # it keeps working, exactly as one that never saw bad input
    a, b = seg.track(idx)[1], clean.track(idx)[1]
    np.testing.assert_array_equal(a.mask, b.mask)
    assert a.score == b.score
    # a box partly outside the frame is clipped to it
    out = seg.add_prompt(2, idx, box=(-20, -10, 60, 70))
    assert out.obj_id == 2


def micro_model(directory: Path) -> LoadedSam2:
    """The tiny config made smaller still (Hiera 1-1-1-1, one memory-attention layer, 64 px),
    saved and loaded through the --sam2-checkpoint/--sam2-config path: ~6 ms a frame idle."""
    tree = OmegaConf.load(CONFIGS_DIR / "sam2_tiny_random.yaml")
    m = tree.model
    m.image_encoder.trunk.stages = [1, 1, 1, 1]
    m.image_encoder.trunk.global_att_blocks = []
    m.memory_attention.num_layers = 1
    OmegaConf.save(tree, directory / "micro.yaml")
    torch.manual_seed(0)
    save_checkpoint(instantiate(tree.model), directory / "micro.pt")
    return load_sam2(
        models_cfg(
            sam2_checkpoint=directory / "micro.pt",
            sam2_config=directory / "micro.yaml",
            image_size=64,
        )
    )


def test_memory_bound_over_1500_frames(tmp_path: Path) -> None:
    """4 objects over 1,500 streamed frames (the memory window is 7 frames and 16 pointers): per-object state stays at its bound, stored object
    bytes stay constant after warm-up, held frames stay within 1 + max_pinned_frames, and process
    memory (loosely) does not grow."""
    loaded = micro_model(tmp_path)
    model = loaded.model
    seg = StreamingSegmenter(loaded, max_pinned_frames=2)
    rng = np.random.default_rng(1)
    frames = [rng.integers(0, 255, (48, 64, 3), dtype=np.uint8) for _ in range(8)]
    bound = (1, model.num_maskmem - 1, model.max_obj_ptrs_in_encoder - 1)
    warmup = model.max_obj_ptrs_in_encoder
    object_bytes = set()
    frame_bytes = 0
    rss = []
    proc = psutil.Process()
    for i in range(1500):
        idx = seg.add_frame(frames[i % len(frames)])
        if i == 0:
            for obj_id in range(4):
                seg.add_prompt(obj_id, idx, box=(4 + 8 * obj_id, 4, 20 + 8 * obj_id, 40))
            frame_bytes = seg.state_size().frame_bytes
        if i % 50 == 0:
            seg.pin(idx)  # pins come and go, bounded
        outs = seg.track(idx)
        assert len(outs) == 4
        if i >= warmup:
            size = seg.state_size()
            assert [(o.cond_frames, o.memories, o.obj_ptrs) for o in size.objects] == [bound] * 4
            assert size.frames <= 3 and size.frame_bytes <= 3 * frame_bytes
            object_bytes.add(size.object_bytes)
        if i in (500, 1499):
            rss.append(proc.memory_info().rss)
    assert len(object_bytes) == 1, object_bytes
    assert rss[1] - rss[0] < 32 * 2**20, f"RSS grew by {(rss[1] - rss[0]) / 2**20:.1f} MiB"


def test_state_size_counts_the_conditioning_memories_held(tmp_path: Path) -> None:
    """``cond_frames`` is what the object state holds, so the 1,500-frame bound above can fail:
    a state that kept a second conditioning memory (as the official predictor keeps every
    prompted frame) is reported with 2."""
    seg = StreamingSegmenter(micro_model(tmp_path))
    rng = np.random.default_rng(2)
    idx = seg.add_frame(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))
    seg.add_prompt(7, idx, box=(4, 4, 30, 40))
    seg.add_prompt(7, idx, box=(8, 4, 34, 40))  # re-seeded: its old conditioning is dropped
    assert [o.cond_frames for o in seg.state_size().objects] == [1]
    state = seg._objects[7]
    before = seg.state_size().object_bytes
    state.cond_memory = torch.cat([state.cond_memory, state.cond_memory])
    size = seg.state_size()
    assert [o.cond_frames for o in size.objects] == [2]
    assert size.object_bytes > before
