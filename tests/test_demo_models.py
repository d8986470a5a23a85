"""The ``demo`` preset: training end to end on a tiny budget, the shipped weights through both
real loaders, the offline default of the demo source, and ``red ball.`` against ground truth."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from clients.bench.evaluate import evaluate, read_tracks, sequence_from_results
from clients.bench.quality import run_promptcam
from engine.detectors.base import DetectorBase
from engine.grounder import load_grounder
from engine.models.availability import demo_fallback
from engine.models.presets import DEMO_DIR
from engine.models.sam2 import load_sam2
from engine.training.job import BUDGETS
from stream.config import EngineConfig, ModelsConfig, load_config
from stream.demo import DemoScene
from stream.groundtruth import GroundTruthWriter

ROOT = Path(__file__).resolve().parent.parent
ENGINE = EngineConfig(prompt="ball. box.")


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_train_demo_tiny_budget_end_to_end(tmp_path: Path) -> None:
    """``promptcam train-demo`` on the CI budget: both losses go down on held-back batches and
    the written weights load through the local-weights loaders."""
    out = tmp_path / "demo"
    proc = subprocess.run(
        [sys.executable, "-m", "clients.cli", "train-demo", "--budget", "tiny", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "training.json").read_text())
    for model in ("detector", "sam2"):
        r = report[model]
        assert r["held_back_loss_after"] < 0.8 * r["held_back_loss_before"], (model, r)
        stages = getattr(BUDGETS["tiny"], model)
        assert len(r["loss_curve"]) >= 2 and r["steps"] == sum(s.steps for s in stages) == 24
    sam2 = load_sam2(
        ModelsConfig(
            sam2_checkpoint=out / "sam2_demo.pt", sam2_config=out / "sam2_demo.yaml", device="cpu"
        )
    )
    saved = torch.load(out / "sam2_demo.pt", weights_only=True)["model"]
    assert all(torch.equal(sam2.model.state_dict()[k], v) for k, v in saved.items())
    grounder = load_grounder(
        ModelsConfig(detector=str(out / "grounding_dino"), device="cpu"), ENGINE
    )
    assert isinstance(grounder.detector, DetectorBase)
    assert grounder.detector.detector_size == 240 and grounder.phrases == ["ball", "box"]


def test_shipped_weights_load_through_both_loaders() -> None:
    """The demo preset is the local-weights path: the same model as --sam2-checkpoint/--sam2-config
    and --detector DIR give, with trained (not initial) weights."""
    by_preset = load_sam2(ModelsConfig(preset="demo", device="cpu"))
    by_path = load_sam2(
        ModelsConfig(
            sam2_checkpoint=DEMO_DIR / "sam2_demo.pt",
            sam2_config=DEMO_DIR / "sam2_demo.yaml",
            device="cpu",
        )
    )
    assert _same_weights(by_preset.model, by_path.model) and by_preset.image_size == 128
    g1 = load_grounder(ModelsConfig(preset="demo", device="cpu"), ENGINE)
    g2 = load_grounder(
        ModelsConfig(detector=str(DEMO_DIR / "grounding_dino"), device="cpu"), ENGINE
    )
    assert isinstance(g1.detector, DetectorBase) and isinstance(g2.detector, DetectorBase)
    assert _same_weights(g1.detector.model, g2.detector.model) and g1.detector.detector_size == 240
    sizes = sum(p.stat().st_size for p in DEMO_DIR.rglob("*") if p.is_file())
    assert sizes < 20 * 2**20  # a few MB in the repository


def test_demo_source_falls_back_to_demo_preset_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = load_config(None, {"source.uri": "demo"})
    chosen, line = demo_fallback(cfg, explicit_models=False)
    assert chosen.models.preset == "demo" and line is not None and line.count("\n") == 0
    assert "demo" in line and cfg.models.preset in line
    for other, explicit in (({"source.uri": "demo"}, True), ({"source.uri": "clip.mp4"}, False)):
        same, note = demo_fallback(load_config(None, other), explicit_models=explicit)
        assert note is None and same.models.preset == cfg.models.preset


RED_SEED = 10  # the demo default: two look-alike red balls, a green ball, a red box, two boxes
FRAMES = 60


def test_red_ball_prompt_tracks_red_things_and_follows_the_red_ball(tmp_path: Path) -> None:
    """On the held-out demo scene, the tracks of ``red ball.`` follow the red ball that is in view
    (against the generator's ground truth: J&F, no ID switch) and are all on red objects: never
    the green ball or the other colours. What the shipped detector still gets wrong (measured,
    README): a red box half out of the frame is taken for a red ball, so tracks on the red box
    are allowed here, and only here."""
    scene = DemoScene(640, 480, 6, seed=RED_SEED)
    kinds = [(o.colour, o.label) for o in scene.objects]
    assert (
        kinds.count(("red", "ball")) == 2 and ("red", "box") in kinds and ("green", "ball") in kinds
    )
    frames = [scene.render_frame(i) for i in range(FRAMES)]
    with (tmp_path / "gt.jsonl").open("w") as f:
        writer = GroundTruthWriter(f)
        for frame in frames:
            writer.write(frame)
    cfg = load_config(
        None, {"models.preset": "demo", "models.device": "cpu", "engine.prompt": "red ball."}
    )
    results, _ = run_promptcam(cfg, [f.image for f in frames])
    report = evaluate(sequence_from_results(results), read_tracks(tmp_path / "gt.jsonl"))
    t = report.tracking
    assert t["gt_tracks"] >= 1 and t["IDSW"] == 0 and report.jandf.jf >= 0.9, report.as_dict()
    on_ball = on_red = total = 0
    for r, frame in zip(results, frames, strict=True):
        balls = [frame.mask(g.id) for g in frame.truth if g.description == "red ball"]
        red = [frame.mask(g.id) for g in frame.truth if g.colour == "red"]
        for o in r.objects:
            assert o.label == "red ball"
            total += 1
            on_ball += _best_iou(o.mask, balls) >= 0.5
            on_red += _best_iou(o.mask, red) >= 0.5
    assert total > 0 and on_red / total >= 0.95 and on_ball / total >= 0.4, (on_ball, on_red, total)


def _best_iou(mask: np.ndarray, among: list[np.ndarray]) -> float:
    ious = [np.count_nonzero(mask & m) / max(1, int(np.count_nonzero(mask | m))) for m in among]
    return float(max(ious, default=0.0))
