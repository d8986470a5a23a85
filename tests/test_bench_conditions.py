"""Camera conditions of ``bench --parts quality`` (``clients.bench.conditions``): each
perturbation's effect on real demo frames and their exact ground truth; the short quality run
(1 seed, clean and dusk) with both sides seeing the perturbed frames; the table by condition;
the live row's alignment of published frames to ground truth (``clients.bench.live``)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from clients.bench import quality
from clients.bench.conditions import (
    BACKDROP_NOISE,
    DUSK_FLOOR,
    SHADOW_STRENGTH,
    SHAKE_PX,
    WB_DRIFT,
    Condition,
    jpeg,
    perturb,
    shadow_mask,
)
from clients.bench.evaluate import EvalError, FrameObjects, TrackSequence, evaluate
from clients.bench.live import live_window, restrict
from stream.backdrops import HELD_OUT_KIND, backdrop
from stream.demo import DemoScene, SceneFrame
from stream.errors import PromptcamError

W, H, N = 160, 120, 9


@pytest.fixture(scope="module")
def frames() -> list[SceneFrame]:
    scene = DemoScene(W, H, 4, seed=101)
    return [scene.render_frame(i) for i in range(N)]


def _means(clip: list[Any], channel: int | None = None) -> np.ndarray:
    return np.array(
        [
            c.frame.image.astype(float).mean()
            if channel is None
            else c.frame.image[..., channel].astype(float).mean()
            for c in clip
        ]
    )


def test_dusk_brightness_falls_monotonically(frames: list[SceneFrame]) -> None:
    clip = perturb(Condition.DUSK, frames, 101, 15.0)
    ratio = _means(clip) / _means(perturb(Condition.CLEAN, frames, 101, 15.0))
    assert np.all(np.diff(_means(clip)) < 0), _means(clip)
    assert ratio[0] == pytest.approx(1.0, abs=0.01)
    assert ratio[-1] == pytest.approx(DUSK_FLOOR, abs=0.02)
    assert all(np.array_equal(c.frame.ids, f.ids) for c, f in zip(clip, frames, strict=True))


def test_white_balance_drifts_blue_up_red_down(frames: list[SceneFrame]) -> None:
    clip = perturb(Condition.WHITE_BALANCE, frames, 101, 15.0)
    clean = perturb(Condition.CLEAN, frames, 101, 15.0)
    blue, red = _means(clip, 0) / _means(clean, 0), _means(clip, 2) / _means(clean, 2)
    assert np.all(np.diff(blue) > 0) and np.all(np.diff(red) < 0)
    assert red[-1] == pytest.approx(1 - WB_DRIFT, abs=0.01)
    assert blue[-1] > 1 + WB_DRIFT / 2  # clipping at 255 takes a little of the gain
    assert all(
        np.array_equal(c.frame.image[..., 1], f.image[..., 1])
        for c, f in zip(clip, frames, strict=True)
    )


def test_shadow_band_is_static_and_darkens_only_itself(frames: list[SceneFrame]) -> None:
    band = shadow_mask(H, W)
    assert 0.1 < band.mean() < 0.5
    for c, f in zip(perturb(Condition.SHADOW, frames, 101, 15.0), frames, strict=True):
        assert np.array_equal(c.frame.image[~band], f.image[~band])
        want = np.rint(f.image[band].astype(np.float32) * (1 - SHADOW_STRENGTH))
        assert np.array_equal(c.frame.image[band], want.astype(np.uint8))


def test_jpeg30_loses_more_than_jpeg95(frames: list[SceneFrame]) -> None:
    f = frames[0].image
    err30 = np.abs(jpeg(f, 30).astype(int) - f).mean()
    err95 = np.abs(jpeg(f, 95).astype(int) - f).mean()
    assert err30 > 1.5 * err95 > 0
    clip = perturb(Condition.JPEG30, frames, 101, 15.0)
    assert np.array_equal(clip[3].frame.image, jpeg(frames[3].image, 30))


def _shifted(m: np.ndarray, dx: int, dy: int) -> np.ndarray:
    out = np.zeros_like(m)
    out[max(dy, 0) : H + min(dy, 0), max(dx, 0) : W + min(dx, 0)] = m[
        max(-dy, 0) : H + min(-dy, 0), max(-dx, 0) : W + min(-dx, 0)
    ]
    return out


def test_backdrop_replaces_the_background_only_with_the_held_out_kind(
    frames: list[SceneFrame],
) -> None:
    """Background pixels become the held-out backdrop of the seed (one backdrop for the whole
    clip), objects keep their pixels, both under the stated noise; the ground truth is kept."""
    clip = perturb(Condition.BACKDROP, frames, 101, 15.0)
    back = backdrop(HELD_OUT_KIND, W, H, np.random.default_rng([101, 7])).astype(float)
    for c, f in zip(clip, frames, strict=True):
        img = c.frame.image.astype(float)
        bg, obj = f.ids == 0, f.ids > 0
        assert c.frame.truth == f.truth and np.array_equal(c.frame.ids, f.ids)
        assert abs(float((img[bg] - back[bg]).mean())) < 1.0
        assert float((img[bg] - back[bg]).std()) < 2 * BACKDROP_NOISE
        assert float(np.abs(img[obj] - f.image[obj].astype(float)).mean()) < BACKDROP_NOISE
        assert float(np.abs(f.image[bg].astype(float) - back[bg]).mean()) > 10  # it changed


def test_shake_moves_ground_truth_with_the_image(frames: list[SceneFrame]) -> None:
    """The offset is read from the image (its interior is the original's, moved); every
    object's mask is the original's moved by the same offset, and an object wholly in view
    keeps its area and has its box moved by exactly the offset."""
    clip = perturb(Condition.SHAKE, frames, 101, 15.0)
    a, moved, boxes_checked = SHAKE_PX, 0, 0
    for c, f in zip(clip, frames, strict=True):
        found = [
            (dx, dy)
            for dx in range(-a, a + 1)
            for dy in range(-a, a + 1)
            if np.array_equal(
                c.frame.image[a : H - a, a : W - a],
                f.image[a - dy : H - a - dy, a - dx : W - a - dx],
            )
        ]
        assert len(found) == 1
        dx, dy = found[0]
        moved += (dx, dy) != (0, 0)
        before = {g.id: g for g in f.truth}
        assert {g.id for g in c.frame.truth} <= set(before)
        for g in c.frame.truth:
            assert np.array_equal(c.frame.mask(g.id), _shifted(f.mask(g.id), dx, dy))
            x1, y1, x2, y2 = before[g.id].box
            if min(x1, y1) >= a and x2 <= W - a and y2 <= H - a:
                assert g.box == (x1 + dx, y1 + dy, x2 + dx, y2 + dy)
                assert g.area == before[g.id].area
                boxes_checked += 1
    assert moved >= N - 2 and boxes_checked >= N


def test_drop3_keeps_every_third_frame_with_its_time(tmp_path: Path) -> None:
    s = quality.make_scene(tmp_path, 102, N, 3, Condition.DROP3, size=(W, H))
    assert s.seqs == [0, 3, 6] and len(s.images) == 3
    assert s.times_ns == [0, round(3e9 / 15), round(6e9 / 15)]
    assert sorted(s.truth.frames) == [0, 3, 6]
    assert sorted(p.name for p in s.jpeg_dir.iterdir()) == ["00000.jpg", "00001.jpg", "00002.jpg"]


def test_seeds_and_conditions_options() -> None:
    assert quality.parse_seeds("100-103,7") == (100, 101, 102, 103, 7)
    assert quality.parse_seeds(None) is None
    for bad in ("x", "5-2", "-1", ",", "2000000"):
        with pytest.raises(PromptcamError):
            quality.parse_seeds(bad)
    assert quality.parse_conditions("dusk,live") == ([Condition.DUSK], True)
    assert quality.parse_conditions(None) == (list(Condition), True)
    with pytest.raises(PromptcamError, match="unknown condition 'fog'"):
        quality.parse_conditions("clean,fog")


# --------------------------------------------------------------------------- the short run


def _condition(row: dict[str, object]) -> dict[str, Any]:
    """A quality row's ``condition`` summary (rows are JSON-like ``dict[str, object]``)."""
    summary = row["condition"]
    assert isinstance(summary, dict), summary
    return summary


def test_short_run_applies_the_condition_to_both_sides(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """1 seed, 6 frames of 320x240, shadow and dusk, demo models: the table has one row per
    condition with both sides' figures and the deltas; under dusk promptcam and the reference
    (its detector and the JPEGs its predictor loads) got the same darkened frames."""
    from PIL import Image

    from clients.bench.reference import GroundedSam2Reference

    monkeypatch.setattr(quality, "QUICK_FRAMES", 6)
    monkeypatch.setattr(quality, "QUICK_SIZE", (320, 240))
    seen: dict[str, list[float]] = {"promptcam": [], "reference": [], "reference jpeg": []}
    real_promptcam, real_reference = quality.run_promptcam, GroundedSam2Reference.run

    def spy_promptcam(cfg: Any, images: list[np.ndarray], *a: Any, **k: Any) -> Any:
        seen["promptcam"].append(float(images[-1].mean()))
        return real_promptcam(cfg, images, *a, **k)

    def spy_reference(self: Any, video: Path, images: list[np.ndarray]) -> Any:
        seen["reference"].append(float(images[-1].mean()))
        last = sorted(video.iterdir())[-1]
        seen["reference jpeg"].append(float(np.asarray(Image.open(last)).mean()))
        return real_reference(self, video, images)

    monkeypatch.setattr(quality, "run_promptcam", spy_promptcam)
    monkeypatch.setattr(GroundedSam2Reference, "run", spy_reference)
    from stream.config import load_config

    args = argparse.Namespace(quick=True, seeds="103", conditions="shadow,dusk", models=None)
    rows = quality.run(load_config(None), args)

    assert [_condition(r)["condition"] for r in rows] == ["shadow", "dusk"]
    for r in rows:
        s = _condition(r)
        assert s["seeds"] == [103] and s["frames"] == 6
        for side in ("promptcam", "reference"):
            assert set(s[side]) >= {"HOTA", "IDF1", "IDSW", "tracks", "frames/s"}
            assert 0.0 <= s[side]["HOTA"] <= 1.0
        assert s["HOTA margin"] == pytest.approx(s["promptcam"]["HOTA"] - s["reference"]["HOTA"])
        assert r["value"] == s["promptcam"]["HOTA"] and "HOTA vs clean" not in s
    # both sides saw the same frames: the shadow's, then the dusk's (last frame at the floor)
    scene = DemoScene(320, 240, quality.OBJECTS, seed=103)
    clean = [scene.render_frame(i) for i in range(6)]
    want = [
        float(perturb(c, clean, 103, 15.0)[-1].frame.image.mean())
        for c in (Condition.SHADOW, Condition.DUSK)
    ]
    assert seen["promptcam"] == seen["reference"]
    for side in ("promptcam", "reference jpeg"):
        assert seen[side] == pytest.approx(want, abs=0.5), side
    assert want[1] < 0.5 * float(clean[-1].image.mean())
    out = capsys.readouterr().out
    assert "| shadow |" in out and "| dusk |" in out


def test_vs_clean_only_for_perturbed_conditions() -> None:
    from clients.bench.condition_table import ConditionResult, condition_rows, markdown
    from clients.bench.davis import JandF
    from clients.bench.evaluate import QualityReport

    def report(hota: float, idsw: int, run: int = 3) -> QualityReport:
        t = {"HOTA": hota, "DetA": 0.5, "AssA": 0.5, "IDF1": 0.6, "IDSW": idsw, "MOTA": 0.4}
        t |= {"two-ID share": 0.02, "two-ID run": run, "gt_tracks": 6, "pred_tracks": 8}
        return QualityReport(10, t, JandF(0, 0, 0), {})

    results = [
        ConditionResult("clean", (100,), 10, report(0.60, 4), report(0.45, 10, 9), 20.0, 15.0),
        ConditionResult("dusk", (100,), 10, report(0.55, 6, 6), report(0.50, 10), 20.0, 15.0),
    ]
    rows, summaries = condition_rows(results)
    clean, dusk = summaries
    assert [r["value"] for r in rows] == [0.60, 0.55]
    assert "HOTA vs clean" not in clean
    assert clean["HOTA margin"] == pytest.approx(0.15) and clean["HOTA margin met"]
    assert clean["ID switch ratio"] == pytest.approx(0.4) and clean["ID switch ratio met"]
    assert dusk["HOTA vs clean"] == pytest.approx(-0.05) and not dusk["HOTA vs clean met"]
    assert not dusk["HOTA margin met"] and not dusk["ID switch ratio met"]
    table = markdown(summaries)
    assert "| dusk | 0.550 / 0.500 | +0.050 (missed) |" in table
    assert "-0.050 (missed)" in table
    # two IDs on one object: promptcam's longest run against TWO_ID_RUN (5 frames)
    assert clean["two-ID run met"] and not dusk["two-ID run met"]
    assert table.splitlines()[2].endswith("| 3 / 9 (met) |")
    assert table.splitlines()[3].endswith("| 6 / 3 (missed) |")
    assert "longest 6 / 3 frames (<= 5: missed)" in str(rows[1]["note"])


# --------------------------------------------------------------------------- the live row


def _seq(frames: dict[int, list[tuple[int, np.ndarray]]], prompt: str = "") -> TrackSequence:
    from pycocotools import mask as mask_utils

    out = {}
    for seq, objs in frames.items():
        f = FrameObjects()
        for oid, m in objs:
            ys, xs = np.nonzero(m)
            box = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) if len(xs) else (0, 0, 0, 0)
            label = "ball" if prompt else "red ball"
            f.add(oid, label, 1.0, box, mask_utils.encode(np.asfortranarray(m, np.uint8)))
        out[seq] = f
    return TrackSequence(40, 30, prompt, out)


def _square(x: int) -> np.ndarray:
    m = np.zeros((30, 40), bool)
    m[5:15, x : x + 10] = True
    return m


def test_live_window_and_alignment() -> None:
    """The engine joined at frame 7 and skipped 9 and 10: the window is the 5 frames 7..11,
    scored are 7, 8 and 11 against the truth of exactly those frames; a seq past the scene
    (a restarted capture) is none of them."""
    assert live_window([12, 7, 8, 11, 99, 30], n_frames=40, window=5) == [7, 8, 11]
    assert live_window([3, 1], n_frames=40, window=150) == [1, 3]
    with pytest.raises(EvalError, match="published no frame"):
        live_window([50], n_frames=40, window=5)
    truth = _seq({k: [(1, _square(k))] for k in range(7, 12)})
    pred = _seq({k: [(4, _square(k))] for k in (7, 8, 11)}, prompt="ball.")
    keep = live_window(pred.frames, 40, 5)
    r = evaluate(restrict(pred, keep), restrict(truth, keep))
    assert r.frames == 3 and r.tracking["HOTA"] == pytest.approx(1.0)
    # every frame of the window: the skipped frames count as empty (misses)
    every = evaluate(restrict(pred, range(7, 12), empty_missing=True), truth)
    assert every.frames == 5 and every.tracking["IDF1"] == pytest.approx(2 * 3 / (3 + 5))
    # a frame shifted by one (misaligned) would not score 1
    shifted = _seq({k + 1: [(4, _square(k))] for k in (7, 8, 10)}, prompt="ball.")
    misaligned = restrict(shifted, keep, empty_missing=True)
    assert evaluate(misaligned, restrict(truth, keep)).tracking["HOTA"] < 0.9
    with pytest.raises(EvalError, match="seq 9 is not in"):
        restrict(pred, [9])
