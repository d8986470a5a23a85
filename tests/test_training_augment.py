"""Training under other camera conditions and backdrops (``engine.training.augment``,
``stream.backdrops``), a stage that goes on from its checkpoint as if it had not stopped, and
``train-demo --from-stage`` going on from the shipped weights."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from engine.models.presets import DEMO_DIR
from engine.training import augment
from engine.training.augment import Look, draw_look
from engine.training.job import BUDGETS, TrainConfig, TrainingError, train
from engine.training.loop import Checkpoint, run_steps
from engine.training.samples import clip_sample, detection_sample
from stream import backdrops
from stream.backdrops import (
    HELD_OUT_KIND,
    KINDS,
    MAX_SATURATION,
    PHOTO_KINDS,
    PHOTOS,
    TRAINING_KINDS,
    backdrop,
    replace_background,
)
from stream.demo import DemoScene


@pytest.mark.parametrize("kind", KINDS)
def test_backdrops_are_seeded_muted_and_sized(kind: str) -> None:
    a = backdrop(kind, 96, 64, np.random.default_rng(3))
    b = backdrop(kind, 96, 64, np.random.default_rng(3))
    c = backdrop(kind, 96, 64, np.random.default_rng(4))
    assert a.shape == (64, 96, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    sat = cv2.cvtColor(a, cv2.COLOR_BGR2HSV)[..., 1].astype(np.float32) / 255
    assert float(np.percentile(sat, 95)) <= MAX_SATURATION + 0.08, kind
    assert float(a.std()) > 3.0  # a texture, not a flat fill


def test_unknown_backdrop_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown backdrop kind 'plaid'"):
        backdrop("plaid", 10, 10, np.random.default_rng(0))


def _drawn_kinds(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The backdrop kinds the looks draw from now on, in order."""
    drawn: list[str] = []
    real = augment.backdrop

    def spy(kind: str, w: int, h: int, rng: np.random.Generator) -> np.ndarray:
        drawn.append(kind)
        return real(kind, w, h, rng)

    monkeypatch.setattr(augment, "backdrop", spy)
    return drawn


def test_training_never_draws_the_held_out_backdrop(monkeypatch: pytest.MonkeyPatch) -> None:
    drawn = _drawn_kinds(monkeypatch)
    rng = np.random.default_rng(0)
    for _ in range(120):
        draw_look(rng, 40, 30, clip=bool(rng.random() < 0.5))
    assert HELD_OUT_KIND not in TRAINING_KINDS
    assert set(drawn) == set(TRAINING_KINDS)  # every training kind, the held-out one never


def test_photo_backdrops_are_crops_of_the_bundled_photographs_drawn_only_when_asked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    drawn = _drawn_kinds(monkeypatch)
    names: list[str] = []
    photograph = backdrops._photograph

    def seen(name: str) -> np.ndarray:
        names.append(name)
        return photograph(name)

    monkeypatch.setattr(backdrops, "_photograph", seen)
    rng = np.random.default_rng(1)
    for _ in range(160):
        draw_look(rng, 40, 30, clip=False, kinds=PHOTO_KINDS)
    assert set(drawn) == set(PHOTO_KINDS) and HELD_OUT_KIND not in drawn
    assert len(set(names)) >= 8 and set(names) <= set(PHOTOS)  # many photographs, all known
    # a crop of the photograph, muted: it follows the photo's own light and dark
    cat = cv2.cvtColor(photograph("chelsea"), cv2.COLOR_BGR2GRAY).astype(np.float32)
    monkeypatch.setattr(backdrops, "PHOTOS", ("chelsea",))

    class Whole:  # the draws of a crop of the whole photograph, not flipped
        def integers(self, lo: int, hi: int | None = None) -> int:
            return 0

        def uniform(self, lo: float, hi: float) -> float:
            return hi if lo == 0.35 else 0.7  # the crop's scale: all of it; the value: 0.7

        def random(self) -> float:
            return 0.9  # no flip

    crop = backdrop("photo", cat.shape[1], cat.shape[0], Whole())  # type: ignore[arg-type]
    grey = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY).astype(np.float32)
    assert float(np.corrcoef(grey.ravel(), cat.ravel())[0, 1]) > 0.95


def test_the_stages_from_the_fifth_draw_photographs_and_the_earlier_ones_do_not() -> None:
    full = BUDGETS["full"]
    assert [s.backdrops for s in full.detector] == [TRAINING_KINDS] * 4 + [PHOTO_KINDS] * 2
    assert [s.backdrops for s in full.sam2] == [TRAINING_KINDS] * 4 + [PHOTO_KINDS] * 2
    assert all(s.augment > 0 for s in full.detector[3:] + full.sam2[3:])


def test_a_look_changes_the_background_only_where_the_instance_map_says_background() -> None:
    frame = DemoScene(160, 120, 4, seed=2).render_frame(7)
    back = backdrop("stripes", 160, 120, np.random.default_rng(1))
    plain = Look((1.0, 1.0), (np.ones(3, np.float32),) * 2, None, back, None, 0.0)
    out = plain.apply(frame.image, frame.ids, 0.0)
    objects = frame.ids > 0
    assert objects.any() and (~objects).any()
    assert np.array_equal(out[objects], frame.image[objects])
    assert np.array_equal(out[~objects], back[~objects])
    assert np.array_equal(replace_background(frame.image, frame.ids, back), out)


def test_a_clip_look_drifts_exposure_and_white_balance_from_first_to_last_frame() -> None:
    grey = np.full((8, 8, 3), 100, np.uint8)
    ids = np.zeros((8, 8), np.uint8)
    w0, w1 = np.array([1.0, 1.0, 1.0], np.float32), np.array([1.2, 1.0, 0.8], np.float32)
    look = Look((1.0, 0.5), (w0, w1), None, None, None, 0.0)
    first, mid, last = (look.apply(grey, ids, t)[0, 0] for t in (0.0, 0.5, 1.0))
    assert first.tolist() == [100, 100, 100]
    assert last.tolist() == [60, 50, 40]  # 100 x 0.5 x (1.2, 1.0, 0.8)
    assert mid.tolist() == [82, 75, 67]  # half way: gain 0.75, gains (1.1, 1.0, 0.9)


def test_augment_zero_draws_the_earlier_stream_and_augment_keeps_the_targets() -> None:
    a, b, c = (np.random.default_rng(9) for _ in range(3))
    plain = detection_sample(a, (160, 120))
    zero = detection_sample(b, (160, 120), 0.0)
    seen = detection_sample(c, (160, 120), 1.0)
    assert np.array_equal(plain.image, zero.image) and plain.targets == zero.targets
    assert a.bit_generator.state == b.bit_generator.state  # nothing more drawn: old stages hold
    assert seen.targets == plain.targets and not np.array_equal(seen.image, plain.image)
    clip0 = clip_sample(np.random.default_rng(5), 3, 2, (160, 120))
    clip1 = clip_sample(np.random.default_rng(5), 3, 2, (160, 120), 1.0)
    assert np.array_equal(clip0.masks, clip1.masks) and np.array_equal(clip0.boxes, clip1.boxes)
    assert not np.array_equal(clip0.images[0], clip1.images[0])


class _Schedule:
    steps, lr, warmup, weight_decay, clip_grad, log_every = 6, 0.05, 1, 0.0, 1.0, 3


def _train(path: Path, stop_at: int | None) -> tuple[torch.nn.Module, list[float]]:
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    rng = np.random.default_rng(1)

    def step_loss(step: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if step == stop_at:
            raise KeyboardInterrupt  # the run is stopped here
        x = torch.from_numpy(rng.normal(size=(4, 3)).astype(np.float32))
        noise = 0.1 * torch.randn(4, 1)  # torch's generator is part of the state too
        loss = ((model(x) - x.sum(1, keepdim=True) - noise) ** 2).mean()
        return loss, {"mse": loss}

    losses = run_steps("toy", model, _Schedule(), step_loss, None, Checkpoint(path, rng, 2))
    return model, losses


def test_a_stopped_stage_goes_on_from_its_checkpoint_as_if_it_had_not_stopped(
    tmp_path: Path,
) -> None:
    whole, whole_losses = _train(tmp_path / "a.ckpt", None)
    assert not (tmp_path / "a.ckpt").exists()  # removed once the stage completed
    with pytest.raises(KeyboardInterrupt):
        _train(tmp_path / "b.ckpt", stop_at=5)
    assert torch.load(tmp_path / "b.ckpt", weights_only=False)["step"] == 4
    resumed, resumed_losses = _train(tmp_path / "b.ckpt", None)
    assert resumed_losses == whole_losses and len(whole_losses) == 6
    assert all(
        torch.equal(p, q) for p, q in zip(whole.parameters(), resumed.parameters(), strict=True)
    )
    assert not (tmp_path / "b.ckpt").exists()


def test_from_stage_goes_on_from_the_shipped_weights_and_keeps_their_report(
    tmp_path: Path,
) -> None:
    """``train-demo --from-stage 1`` on the tiny budget, in this process (one thread, the two
    models one after the other, as ``train`` runs them then)."""
    out = tmp_path / "more"
    threads = torch.get_num_threads()
    try:
        train(TrainConfig(budget="tiny", from_stage=1, threads=1, out=out))
    finally:
        torch.set_num_threads(threads)
    report = json.loads((out / "training.json").read_text())
    shipped = json.loads((DEMO_DIR / "training.json").read_text())
    assert report["detector"] == shipped["detector"]  # the earlier stages' record kept
    run = report["continued"][-1]
    assert run["from_stage"] == 1 and run["detector"]["steps"] == 8 and run["sam2"]["steps"] == 8
    # it went on from the trained weights: their held-back loss is far below a fresh model's
    for model in ("detector", "sam2"):
        assert run[model]["held_back_loss_before"] < 0.5 * shipped[model]["held_back_loss_before"]
    before = torch.load(DEMO_DIR / "sam2_demo.pt", weights_only=True)["model"]
    after = torch.load(out / "sam2_demo.pt", weights_only=True)["model"]
    assert before.keys() == after.keys()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert all(torch.isfinite(v).all() for v in after.values() if v.is_floating_point())
    assert (out / "grounding_dino" / "model.safetensors").exists()
    assert not list(out.glob("*.ckpt"))


def test_from_stage_beyond_the_budget_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(TrainingError, match=r"^--from-stage 2: the tiny budget has stages 0-1$"):
        train(TrainConfig(budget="tiny", from_stage=2, threads=1, out=tmp_path / "x"))
    assert not (tmp_path / "x").exists()  # refused before anything is written
