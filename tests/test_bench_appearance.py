"""Appearance separability (``clients.bench.appearance``): the AUC itself, the pairing rules
(same scene and label, frames apart), and the cues on the demo models' real outputs."""

from __future__ import annotations

import numpy as np
import pytest

from clients.bench.appearance import GAP, Sighting, auc, separability, sightings
from clients.bench.conditions import Condition, perturb
from engine.models.sam2 import load_sam2
from engine.segmenters.sam2 import Sam2Kernel
from stream.config import ModelsConfig
from stream.demo import DemoScene


def test_auc_counts_ties_half_and_needs_both_sides() -> None:
    assert auc([0.9, 0.8], [0.1, 0.2]) == 1.0
    assert auc([0.1], [0.9, 0.8]) == 0.0
    assert auc([0.5, 0.5], [0.5, 0.5]) == 0.5  # no better than chance
    assert auc([0.6, 0.4], [0.5]) == 0.5
    assert auc([], [0.1]) is None and auc([0.1], []) is None


def _sighting(scene: int, frame: int, obj: int, label: str, v: list[float]) -> Sighting:
    a = np.asarray(v, np.float32)
    vec = a / np.linalg.norm(a)
    return Sighting(scene, frame, obj, label, {c: vec for c in ("object pointer", "chromaticity")})


def test_pairs_are_same_scene_same_label_and_frames_apart() -> None:
    """Object 1 always looks like (1, 0); object 2 like (0, 1): separable. A pair closer than
    GAP frames, a pair across scenes or labels would count against it if it were paired."""
    seen = [
        _sighting(0, 0, 1, "ball", [1, 0]),
        _sighting(0, GAP, 1, "ball", [1, 0]),
        _sighting(0, GAP, 2, "ball", [0, 1]),
        _sighting(0, 2 * GAP, 2, "ball", [0, 1]),
        _sighting(0, 1, 3, "ball", [1, 0]),  # another object looking like 1, too close to frame 0
        _sighting(1, 0, 9, "ball", [1, 0]),  # another scene's object looking like 1
        _sighting(0, 3 * GAP, 7, "box", [1, 0]),  # another label looking like 1
    ]
    out = separability(seen)
    assert out["object pointer"] == 1.0 and out["chromaticity"] == 1.0
    assert out["grey-world colour"] is None  # no vectors for that cue
    # the look-alike object 3 far enough from object 1's sightings: a pair, and it counts
    mixed = separability([*seen[:4], _sighting(0, 3 * GAP, 3, "ball", [1, 0])])
    assert mixed["object pointer"] is not None and mixed["object pointer"] < 1.0


@pytest.fixture(scope="module")
def demo_kernel() -> Sam2Kernel:
    return Sam2Kernel(load_sam2(ModelsConfig(preset="demo", device="cpu")))


def test_cues_on_the_demo_models_outputs(demo_kernel: Sam2Kernel) -> None:
    """Every findable object of a demo scene gets a unit object pointer from the demo SAM 2 and
    colours that are chromaticities; under a white balance drift an object's grey-world colour
    moves far less than its raw chromaticity."""
    scene = DemoScene(320, 240, 4, seed=5)
    n = 21  # frames 0, 10, 20 observed
    clean = [scene.render_frame(i) for i in range(n)]
    drifted = [c.frame for c in perturb(Condition.WHITE_BALANCE, clean, 5, scene.fps)]
    a, b = sightings(5, clean, demo_kernel), sightings(5, drifted, demo_kernel)
    assert a and [(s.frame, s.obj) for s in a] == [(s.frame, s.obj) for s in b]
    pointers = [s.vectors["object pointer"] for s in a]
    assert sum(v is not None for v in pointers) >= len(a) / 2  # none where the mask is empty
    for v in pointers:
        assert v is None or abs(float(np.linalg.norm(v)) - 1) < 1e-5
    for s in a:
        for cue in ("grey-world colour", "chromaticity"):
            c = s.vectors[cue]
            assert c is not None and abs(float(c.sum()) - 1) < 1e-5
    last = [i for i, s in enumerate(a) if s.frame == 20]
    assert last

    def moved(cue: str) -> float:
        out = 0.0
        for i in last:
            u, v = a[i].vectors[cue], b[i].vectors[cue]
            assert u is not None and v is not None
            out = max(out, float(np.abs(u - v).sum()))
        return out

    assert moved("chromaticity") > 0.1 > 3 * moved("grey-world colour")
