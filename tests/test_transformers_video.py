"""The transformers tracker backend against transformers' own video inference session.

Oracle: the family's model and inference session (``Sam2VideoInferenceSession`` /
``Sam3TrackerVideoInferenceSession``), streaming (``model(session, frame=...)``) and offline
(``propagate_in_video_iterator`` on the whole video), on the same tiny-random weights (saved with
``save_pretrained`` and loaded back through ``from_pretrained``), the same input tensors and the
same prompts (given to the session as the family's processor builds them). EdgeTAM's image
encoder is a timm model, and timm does not import here (it needs torchvision): its family has no
tiny-random preset and is not checked on this machine.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pytest
import torch
import torch.nn.functional as F
import transformers
from transformers import Sam2VideoProcessor

from engine.models.loading import load_kernel
from engine.models.video import LoadedVideoModel, load_video_model, save_tiny_random
from engine.segmenters.transformers import HfVideoKernel, HfVideoSession
from stream.config import ModelsConfig
from stream.errors import ModelLoadError, PromptError, RequestError
from tests.moving_blocks import H, W, one_torch_thread  # noqa: F401 (the fixture)
from tests.moving_blocks import make_frames as moving_blocks

FAMILIES = ("sam2.1-hf-tiny-random", "sam3-tracker-tiny-random")
NUM_FRAMES = 12  # >= max_object_pointers_in_encoder (8) of the tiny configs
LOGIT_TOL = 1e-5

Prompt = dict[str, Any]
# transformers' own box and point scaling, as its processor applies it (the helper reads no
# state of the processor, so a bare instance does)
COORDINATES = Sam2VideoProcessor.__new__(Sam2VideoProcessor)


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # robust on a busy 2-core machine


def make_frames(n: int, h: int = H, w: int = W, seed: int = 0) -> list[np.ndarray]:
    return moving_blocks(n, h, w, seed, bgr=True)


FRAMES = make_frames(NUM_FRAMES)


def _mask_prompt() -> np.ndarray:
    m = np.zeros((H, W), bool)
    m[30:80, 20:80] = True
    return m


PROMPTS: dict[int, Prompt] = {
    1: {"box": (20, 30, 80, 80)},
    2: {"box": (150, 100, 200, 150)},
    3: {"points": [(170, 120)], "point_labels": [1]},  # one click: multimask output
    4: {"points": [(50, 55), (120, 160)], "point_labels": [1, 0]},
    5: {"mask": _mask_prompt()},
}


@pytest.fixture(scope="module", params=FAMILIES)
def loaded(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> LoadedVideoModel:
    directory = save_tiny_random(request.param, tmp_path_factory.mktemp(request.param))
    return load_video_model(str(directory), ModelsConfig(device="cpu"))


class Reference:
    """transformers' inference session for ``loaded``'s family, fed as its processor feeds it."""

    def __init__(self, loaded: LoadedVideoModel, video: torch.Tensor | None = None) -> None:
        self.model = loaded.model
        self.size = loaded.image_size
        cls = getattr(transformers, loaded.family.model_class.replace("Model", "InferenceSession"))
        self.session = cls(video=video, video_height=H, video_width=W, dtype=torch.float32)

    def prompt(self, frame_idx: int, prompts: dict[int, Prompt]) -> None:
        for obj_id, p in prompts.items():
            idx = self.session.obj_id_to_idx(obj_id)
            if "mask" in p:
                m = torch.from_numpy(p["mask"])[None, None].float()
                m = F.interpolate(m, size=(self.size,) * 2, mode="bilinear", antialias=True)
                self.session.add_mask_inputs(idx, frame_idx, (m >= 0.5).float())
                continue
            coords: list[list[float]] = []
            labels: list[int] = []
            if "box" in p:
                box = torch.tensor([p["box"]], dtype=torch.float32)
                norm = COORDINATES._normalize_coordinates(
                    self.size, box, (H, W), is_bounding_box=True
                )
                coords += norm.reshape(2, 2).tolist()
                labels += [2, 3]
            if "points" in p:
                pts = torch.tensor(p["points"], dtype=torch.float32)
                coords += COORDINATES._normalize_coordinates(self.size, pts, (H, W)).tolist()
                labels += list(p["point_labels"])
            self.session.add_point_inputs(
                idx,
                frame_idx,
                {
                    "point_coords": torch.tensor(coords)[None, None],
                    "point_labels": torch.tensor(labels)[None, None],
                },
            )
        self.session.obj_with_new_inputs = list(prompts)

    def step(self, image: torch.Tensor) -> dict[int, torch.Tensor]:
        with torch.inference_mode():
            out = self.model(self.session, frame=image[0])
        return {oid: out.pred_masks[k : k + 1] for k, oid in enumerate(out.object_ids)}


def assert_same(
    seg: HfVideoSession, outs: dict[int, Any], ref: dict[int, torch.Tensor], where: str
) -> None:
    """One object runs with batch 1, as the session does: logits equal bit for bit. Several are
    batched, where matrix products and the mask decoder's upscaling round differently at the last
    bit (~1e-9 on these logits, not accumulating over frames): then within LOGIT_TOL, and the
    masks equal at every pixel whose reference logit is not within LOGIT_TOL of 0."""
    assert set(outs) == set(ref), where
    exact = len(ref) == 1
    for obj_id, expected in ref.items():
        diff = (seg.last_logits(obj_id).float() - expected.float()).abs().max().item()
        assert diff <= (0.0 if exact else LOGIT_TOL), f"{where} object {obj_id}: |diff| {diff}"
        logits = F.interpolate(expected.float(), size=(H, W), mode="bilinear")[0, 0]
        want = (logits > 0).numpy()
        clear = (logits.abs() > LOGIT_TOL).numpy()
        got = outs[obj_id].mask
        assert got.shape == (H, W) and got.dtype == np.bool_
        np.testing.assert_array_equal(got[clear], want[clear], err_msg=f"{where} object {obj_id}")


@pytest.mark.parametrize("obj_ids", [(1,), (1, 2, 3, 4, 5)], ids=["one-object", "several"])
def test_equals_streaming_session(loaded: LoadedVideoModel, obj_ids: tuple[int, ...]) -> None:
    kernel = HfVideoKernel(loaded)
    seg = kernel.new_session()
    ref = Reference(loaded)
    prompts = {i: PROMPTS[i] for i in obj_ids}
    for i, frame in enumerate(FRAMES):
        prepared = kernel.prepare(frame)
        idx = seg.add_frame(prepared)
        assert idx == i
        if i == 0:
            for obj_id, p in prompts.items():
                seg.add_prompt(obj_id, idx, **p)
            ref.prompt(0, prompts)
        assert_same(seg, seg.track(idx), ref.step(prepared.image), f"frame {i}")


def test_equals_propagate_in_video(loaded: LoadedVideoModel) -> None:
    """The offline reference: the whole video in the session, prompts on frame 0, the prompt
    frame run, then ``propagate_in_video_iterator``."""
    kernel = HfVideoKernel(loaded)
    prepared = [kernel.prepare(f) for f in FRAMES]
    ref = Reference(loaded, video=torch.cat([p.image for p in prepared]))
    prompts = {1: PROMPTS[1], 3: PROMPTS[3]}
    ref.prompt(0, prompts)
    with torch.inference_mode():
        loaded.model(ref.session, frame_idx=0)
        expected = {
            out.frame_idx: {o: out.pred_masks[k : k + 1] for k, o in enumerate(out.object_ids)}
            for out in loaded.model.propagate_in_video_iterator(ref.session)
        }
    seg = kernel.new_session()
    for i, p in enumerate(prepared):
        idx = seg.add_frame(p)
        if i == 0:
            for obj_id, prompt in prompts.items():
                seg.add_prompt(obj_id, idx, **prompt)
        assert_same(seg, seg.track(idx), expected[i], f"frame {i}")


def test_object_added_later_equals_its_own_session(loaded: LoadedVideoModel) -> None:
    """Object 2 appears on frame k. Its reference is a session that starts at frame k with it
    alone; object 1's is a session with object 1 alone (see the module docstring of
    engine/segmenters/transformers.py: objects are independent)."""
    k = 5
    kernel = HfVideoKernel(loaded)
    seg = kernel.new_session()
    first, later = Reference(loaded), Reference(loaded)
    box2 = {"box": (150 - 4 * k, 100, 200 - 4 * k, 150)}
    for i, frame in enumerate(FRAMES):
        prepared = kernel.prepare(frame)
        idx = seg.add_frame(prepared)
        if i == 0:
            seg.add_prompt(1, idx, **PROMPTS[1])
            first.prompt(0, {1: PROMPTS[1]})
        if i == k:
            seg.add_prompt(2, idx, **box2)
            later.prompt(0, {2: box2})
        expected = first.step(prepared.image)
        if i >= k:
            expected.update(later.step(prepared.image))
        assert_same(seg, seg.track(idx), expected, f"frame {i}")


def test_late_prompt_reseed_pins_remove_reset(loaded: LoadedVideoModel) -> None:
    kernel = HfVideoKernel(loaded)
    seg = kernel.new_session(max_pinned_frames=2)
    prepared = [kernel.prepare(f) for f in FRAMES[:8]]
    idx0 = seg.add_frame(prepared[0])
    seg.add_prompt(1, idx0, **PROMPTS[1])
    seg.track(idx0)
    seg.pin(idx0)
    for p in prepared[1:5]:
        seg.track(seg.add_frame(p))
    assert seg.state_size().objects[0].memories == 4
    # a late prompt on the pinned frame 0 gives what a session prompted on that frame gives
    out = seg.add_prompt(2, idx0, **PROMPTS[2])
    ref = Reference(loaded)
    ref.prompt(0, {2: PROMPTS[2]})
    expected = ref.step(prepared[0].image)[2]
    want = (F.interpolate(expected.float(), size=(H, W), mode="bilinear")[0, 0] > 0).numpy()
    np.testing.assert_array_equal(out.mask, want)
    idx5 = seg.add_frame(prepared[5])
    assert set(seg.track(idx5)) == {1, 2}
    seg.add_prompt(1, idx5, box=(60, 45, 130, 100))  # re-seed: memory restarts
    assert {s.obj_id: s.memories for s in seg.state_size().objects} == {1: 0, 2: 1}
    assert set(seg.track(idx5)) == {1, 2}
    seg.pin(idx5)
    idx6 = seg.add_frame(prepared[6])
    seg.pin(idx6)
    assert seg.state_size().pinned == 2
    with pytest.raises(RequestError, match="frame 0 is not available"):
        seg.add_prompt(3, idx0, **PROMPTS[1])
    mask = seg.segment_box(idx5, (20, 30, 80, 80))
    assert mask.shape == (H, W) and mask.dtype == np.bool_
    seg.remove_object(1)
    assert set(seg.track(idx6)) == {2}
    with pytest.raises(RequestError, match="unknown object id 42"):
        seg.remove_object(42)
    with pytest.raises(RequestError, match="latest frame"):
        seg.track(idx5)
    bad_prompts: list[tuple[Prompt, str]] = [
        ({"box": (300, 200, 400, 260)}, "outside"),
        ({"mask": np.zeros((H, W), bool)}, "empty"),
        ({}, "needs a box"),
    ]
    for bad, match in bad_prompts:
        with pytest.raises(PromptError, match=match):
            seg.add_prompt(9, idx6, **bad)
    assert seg.object_ids == [2]
    seg.reset()
    assert seg.object_ids == [] and seg.track(idx6) == {}
    assert seg.add_frame(prepared[7]) == 7


def test_two_cameras_in_one_call_equal_each_alone(loaded: LoadedVideoModel) -> None:
    """encode/track over two sessions at once give each session what it gets alone."""
    kernel = HfVideoKernel(loaded)
    a, b, solo = kernel.new_session(), kernel.new_session(), kernel.new_session()
    other = make_frames(6, seed=3)
    for i in range(6):
        ia, ib = kernel.encode([(a, FRAMES[i]), (b, other[i])])
        isolo = solo.add_frame(other[i])
        if i == 0:
            a.add_prompt(1, ia, **PROMPTS[1])
            for s, idx in ((b, ib), (solo, isolo)):
                s.add_prompt(7, idx, **PROMPTS[2])
        outs = kernel.track([(a, ia), (b, ib)])
        alone = solo.track(isolo)
        diff = (b.last_logits(7) - solo.last_logits(7)).abs().max().item()
        assert diff <= LOGIT_TOL, f"frame {i}: {diff}"
        assert set(outs[0]) == {1} and set(outs[1]) == {7} and set(alone) == {7}


def _micro(name: str, directory: Path) -> LoadedVideoModel:
    """The tiny config made smaller still (64 / 56 px, one memory-attention layer), saved and
    loaded through the directory path."""
    save_tiny_random(name, directory)
    config = json.loads((directory / "config.json").read_text())
    config["memory_attention_num_layers"] = 1
    config["mask_decoder_config"]["num_hidden_layers"] = 1
    (directory / "config.json").write_text(json.dumps(config))
    sam2 = "sam2" in name
    model_cls = getattr(transformers, "Sam2VideoModel" if sam2 else "Sam3TrackerVideoModel")
    cfg = model_cls.config_class.from_pretrained(directory)
    cfg.image_size = 64 if sam2 else 56
    if sam2:
        f = 4
        cfg.vision_config.backbone_feature_sizes = [[4 * f] * 2, [2 * f] * 2, [f, f]]
        cfg.vision_config.backbone_config.image_size = [64, 64]
        cfg.vision_config.backbone_config.blocks_per_stage = [1, 1, 1, 1]
        cfg.vision_config.backbone_config.global_attention_blocks = []
        cfg.prompt_encoder_config.image_size = 64
        cfg.memory_attention_rope_feat_sizes = [f, f]
    else:
        cfg.vision_config.backbone_config.num_hidden_layers = 1
        cfg.vision_config.backbone_config.global_attn_indexes = [0]
    torch.manual_seed(0)
    model_cls(cfg).save_pretrained(directory)
    return load_video_model(str(directory), ModelsConfig(device="cpu"))


@pytest.mark.parametrize("name", FAMILIES)
def test_memory_bound_over_800_frames(name: str, tmp_path: Path) -> None:
    """4 objects over 1,200 streamed frames: per-object state stays at its bound, stored object
    bytes stay constant after warm-up, held frames within 1 + max_pinned_frames, and process
    memory (loosely) does not grow."""
    loaded = _micro(name, tmp_path)
    config = loaded.model.config
    kernel = HfVideoKernel(loaded)
    seg = kernel.new_session(max_pinned_frames=2)
    rng = np.random.default_rng(1)
    frames = [kernel.prepare(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)) for _ in range(8)]
    bound = (1, config.num_maskmem - 1, config.max_object_pointers_in_encoder - 1)
    warmup = config.max_object_pointers_in_encoder
    object_bytes = set()
    frame_bytes = 0
    rss = []
    proc = psutil.Process()
    for i in range(800):
        idx = seg.add_frame(frames[i % len(frames)])
        if i == 0:
            for obj_id in range(4):
                seg.add_prompt(obj_id, idx, box=(4 + 8 * obj_id, 4, 20 + 8 * obj_id, 40))
            frame_bytes = seg.state_size().frame_bytes
        if i % 50 == 0:
            seg.pin(idx)
        assert len(seg.track(idx)) == 4
        if i >= warmup:
            size = seg.state_size()
            assert [(o.cond_frames, o.memories, o.obj_ptrs) for o in size.objects] == [bound] * 4
            assert size.frames <= 3 and size.frame_bytes <= 3 * frame_bytes
            object_bytes.add(size.object_bytes)
        if i in (300, 799):
            rss.append(proc.memory_info().rss)
    assert len(object_bytes) == 1, object_bytes
    assert rss[1] - rss[0] < 32 * 2**20, f"RSS grew by {(rss[1] - rss[0]) / 2**20:.1f} MiB"


def test_loading_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # a preset whose weights are not here (no hub access): one line naming the offline options
    with pytest.raises(ModelLoadError, match="offline options") as e:
        load_kernel(ModelsConfig(preset="sam2.1-hiera-tiny-hf", device="cpu"))
    assert "\n" not in str(e.value)
    # a model that is not a supported video tracker
    other = tmp_path / "gdino"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"model_type": "grounding-dino"}))
    with pytest.raises(ModelLoadError, match="'grounding-dino' model, not a video tracker"):
        load_kernel(ModelsConfig(tracker=str(other), device="cpu"))
    # weights that do not match their config
    saved = save_tiny_random("sam2.1-hf-tiny-random", tmp_path / "mismatch")
    config = json.loads((saved / "config.json").read_text())
    config["memory_attention_feed_forward_hidden_size"] = 96
    (saved / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match="do not match its config") as e:
        load_kernel(ModelsConfig(tracker=str(saved), device="cpu"))
    assert "\n" not in str(e.value)
    with pytest.raises(ModelLoadError, match="not a directory"):
        load_kernel(ModelsConfig(tracker=str(tmp_path / "missing"), device="cpu"))
    with pytest.raises(ModelLoadError, match="name two trackers"):
        load_kernel(ModelsConfig(tracker="x", sam2_checkpoint=saved, sam2_config=saved))


def test_sam3_concept_mode_seeds_masks_and_keeps_ids(monkeypatch: pytest.MonkeyPatch) -> None:
    """``--models sam3-tiny-random``: SAM 3's detector grounds the prompt with masks, every
    track is seeded with its detection's mask, the SAM 3 tracker follows; a prompt change keeps
    the IDs of the labels still in the prompt and new IDs are never reused."""
    from engine.build import build_engine
    from engine.detectors.sam3 import Sam3Detector
    from engine.pipeline import FrameInput
    from stream.config import Config

    # Random weights give both phrases the same boxes, which the track manager takes for one
    # object under two names (engine.lifecycle.cross_label_duplicate_iou); this test is about mask seeding and
    # IDs across a prompt change, so it needs a track of each label: the rule is off here.
    cfg = Config.model_validate(
        {
            "models": {"preset": "sam3-tiny-random", "device": "cpu"},
            # random weights score every query near 0.25: a low threshold gives detections
            "engine": {"prompt": "ball. box.", "box_threshold": 0.2, "max_objects": 6,
                       "reground_every_frames": 3},
        }
    )  # fmt: skip
    engine = build_engine(cfg, background_grounding=False)
    th = engine.manager._th  # the lifecycle's thresholds; its config bounds the IoU at 1
    off = th.life.model_copy(update={"cross_label_duplicate_iou": 1.01})
    monkeypatch.setattr(engine.manager, "_th", dataclasses.replace(th, life=off))
    assert isinstance(engine.grounder, Sam3Detector)  # loaded bare: the engine keeps prompts
    assert isinstance(engine.seg, HfVideoSession)
    seeds: list[set[str]] = []
    real = engine.seg.add_prompt

    def recording(obj_id: int, frame_idx: int, **prompt: Any) -> Any:
        seeds.append({k for k, v in prompt.items() if v is not None})
        return real(obj_id, frame_idx, **prompt)

    monkeypatch.setattr(engine.seg, "add_prompt", recording)
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (120, 160, 3), dtype=np.uint8) for _ in range(8)]
    for i in range(4):
        engine.process(FrameInput(i, 0, frames[i]))
    labels = {t.id: t.label for t in engine.manager.tracks()}
    assert {"ball", "box"} <= set(labels.values()), labels
    assert seeds and all(s == {"mask"} for s in seeds), seeds
    engine.set_prompt("ball.")
    kept = {tid for tid, label in labels.items() if label == "ball"}
    assert {t.id: t.label for t in engine.manager.tracks()} == {t: "ball" for t in kept}
    assert set(engine.seg.object_ids) == kept  # the box tracks' memory is freed
    for i in range(4, 8):
        result = engine.process(FrameInput(i, 0, frames[i]))
    now = {t.id: t.label for t in engine.manager.tracks()}
    assert set(now.values()) == {"ball"}
    # tracks may end on their own (random weights); an ID is never given out twice
    assert all(tid in kept or tid > max(labels) for tid in now)
    assert {o.id for o in result.objects} <= set(now)


def test_track_cli_with_a_transformers_tracker(tmp_path: Path) -> None:
    """``promptcam track --models sam2.1-hf-tiny-random --box ...`` runs every frame; a preset
    whose weights are not here is a one-line error."""
    import os
    import subprocess
    import sys

    from PIL import Image

    video = tmp_path / "frames"
    video.mkdir()
    for i, frame in enumerate(FRAMES[:6]):
        Image.fromarray(frame[..., ::-1]).save(video / f"{i:05d}.png")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    cli = [sys.executable, "-m", "clients.cli", "track", str(video), "--device", "cpu"]
    tracks = tmp_path / "tracks.jsonl"
    done = subprocess.run(
        [*cli, "--models", "sam2.1-hf-tiny-random", "--box", "20,30,80,80", "--tracks", str(tracks)],
        capture_output=True, text=True, timeout=240, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [json.loads(line) for line in tracks.read_text().splitlines()]
    assert len(rows) == 6 and all(len(r["objects"]) == 1 for r in rows)
    bad = subprocess.run(
        [*cli, "--models", "sam3-tracker", "--box", "20,30,80,80", "--tracks", str(tracks)],
        capture_output=True, text=True, timeout=240, env=env,
    )  # fmt: skip
    assert bad.returncode != 0
    err = bad.stderr.strip().splitlines()
    assert len(err) == 1 and "offline options" in err[0], bad.stderr
