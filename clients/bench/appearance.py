"""Appearance separability for ``bench --parts quality``: can a cue tell an object from another
object of the same label, on the models and scenes at hand?

For each scene, on every ``EVERY``-th frame, each ground-truth object at least findable in size
is observed three ways:

- ``object pointer``: the segmenter prompted with the object's ground-truth box on that frame
  alone (a fresh session: no memory), its output's ``embedding`` through the lifecycle's default
  embedder (``ObjectPointerEmbedder``): what the lifecycle's appearance gallery keeps (none
  where the segmenter's mask is empty, as in the lifecycle);
- ``grey-world colour`` and ``chromaticity``: the mean colour inside the ground-truth mask
  (``engine.cues.mask_colour``), relative to the frame's white point or raw, as chromaticity:
  the general profile's colour cue and the one before it.

Over every pair of observations of the same label at least ``GAP`` frames apart, the AUC is the
chance that a same-object pair is more alike (cosine similarity; colours: minus their L1
distance, as the lifecycle compares them) than a different-object pair, ties counted half:
0.5 is no better than chance, 1.0 every same-object pair more alike than every other pair.
A cue only earns a decision in the lifecycle where this is high on the models in use.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from clients.bench import BenchRow, row
from clients.bench.conditions import Condition, perturb
from engine.core.protocols import SegmenterKernel
from engine.cues import mask_colour, white_point
from engine.lifecycle.appearance import chromaticity
from engine.lifecycle.embedder import ObjectPointerEmbedder
from stream.demo import DemoScene, SceneFrame, min_visible_area

PART = "quality"
CONDITIONS = (Condition.CLEAN, Condition.WHITE_BALANCE)  # without and with a colour cast
EVERY = 10  # frames between the observed frames of a scene
GAP = 15  # frames at least between the two observations of a pair
CUES = ("object pointer", "grey-world colour", "chromaticity")


@dataclass(frozen=True)
class Sighting:
    """One object on one frame: its scene, frame, object id, label and each cue's vector."""

    scene: int
    frame: int
    obj: int
    label: str
    vectors: dict[str, NDArray[np.float32] | None]


def auc(same: Sequence[float], other: Sequence[float]) -> float | None:
    """P(a same-object similarity > an other-object one), ties half; None if a side is empty."""
    if not len(same) or not len(other):
        return None
    a, b = np.sort(np.asarray(same, np.float64)), np.sort(np.asarray(other, np.float64))
    below = np.searchsorted(b, a, side="left")  # other-object pairs strictly less alike
    ties = np.searchsorted(b, a, side="right") - below
    return float((below + 0.5 * ties).sum() / (len(a) * len(b)))


def _colour_vector(c: tuple[float, float, float] | None) -> NDArray[np.float32] | None:
    return None if c is None else np.asarray(chromaticity(c), np.float32)


def _similarity(cue: str) -> Callable[[NDArray[np.float32], NDArray[np.float32]], float]:
    if cue == "object pointer":
        return lambda a, b: float(a @ b)
    return lambda a, b: -float(np.abs(a - b).sum())  # the lifecycle's L1 colour distance


def sightings(
    scene: int, frames: Sequence[SceneFrame], kernel: SegmenterKernel[Any]
) -> list[Sighting]:
    """Every findable object on every ``EVERY``-th frame of ``frames``, through each cue;
    ``kernel``: a segmenter kernel (``new_session()``)."""
    out: list[Sighting] = []
    embedder = ObjectPointerEmbedder()
    for f in frames[::EVERY]:
        h, w = f.ids.shape
        floor = min_visible_area(w, h)
        objects = [g for g in f.truth if g.area >= floor]
        if not objects:
            continue
        session = kernel.new_session()
        try:
            idx = session.add_frame(f.image)
            white = white_point(f.image)
            for g in objects:
                seg = session.add_prompt(g.id, idx, box=np.asarray(g.box, np.float32))
                mask = f.mask(g.id)
                vectors = {
                    "object pointer": embedder.embed(seg, f.image),
                    "grey-world colour": _colour_vector(mask_colour(f.image, mask, g.box, white)),
                    "chromaticity": _colour_vector(mask_colour(f.image, mask, g.box)),
                }
                out.append(Sighting(scene, f.index, g.id, g.label, vectors))
        finally:
            session.close()
    return out


def separability(seen: Sequence[Sighting]) -> dict[str, float | None]:
    """Each cue's AUC over the pairs of ``seen`` (same scene and label, ``GAP`` frames apart)."""
    out: dict[str, float | None] = {}
    for cue in CUES:
        sim = _similarity(cue)
        same: list[float] = []
        other: list[float] = []
        for i, a in enumerate(seen):
            va = a.vectors.get(cue)
            for b in seen[i + 1 :]:
                vb = b.vectors.get(cue)
                if va is None or vb is None or a.scene != b.scene or a.label != b.label:
                    continue
                if abs(a.frame - b.frame) < GAP:
                    continue
                (same if a.obj == b.obj else other).append(sim(va, vb))
        out[cue] = auc(same, other)
    return out


def appearance_rows(
    kernel: SegmenterKernel[Any],
    conditions: Sequence[Condition],
    seeds: Sequence[int],
    frames: int,
    size: tuple[int, int],
    objects: int,
    where: str,
) -> list[BenchRow]:
    """Each cue's AUC on the scenes of ``seeds`` under each of ``CONDITIONS`` in ``conditions``."""
    rows: list[BenchRow] = []
    for condition in [c for c in CONDITIONS if c in conditions]:
        seen: list[Sighting] = []
        for seed in seeds:
            scene = DemoScene(size[0], size[1], objects, seed=seed)
            rendered = [scene.render_frame(i) for i in range(frames)]
            clip = [c.frame for c in perturb(condition, rendered, seed, scene.fps)]
            seen += sightings(seed, clip, kernel)
        for cue, value in separability(seen).items():
            note = (
                f"same-object vs other-object pairs, same label, >= {GAP} frames apart; "
                f"{len(seen)} sightings (every {EVERY}th frame); {where}"
            )
            name = f"appearance AUC {cue} ({condition.value})"
            rows.append(row(PART, name, "n/a" if value is None else round(value, 3), "", note))
    return rows
