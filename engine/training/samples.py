"""Training samples drawn from generated demo scenes (``stream.demo``), seeded.

Training scenes use seeds from ``TRAIN_SEED_BASE`` on; the quality benchmark and the tests
evaluate on seeds below it (held out). Each sample draws a fresh scene: its object count, frame
size and style (background, pan, noise, blur) come from the scene's seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.training.augment import draw_look
from stream.backdrops import TRAINING_KINDS
from stream.demo import DemoScene, GroundTruth, min_visible_area

TRAIN_SEED_BASE = 1_000_000
FRAME_SIZES = ((320, 240), (480, 360), (640, 480))
MAX_START_FRAME = 3000
MIN_OBJECTS, MAX_OBJECTS = 2, 8
LONG_GAP_SHARE = 0.15  # clip frames that follow the previous one 5-40 frames later


def training_scene(rng: np.random.Generator, size: tuple[int, int] | None = None) -> DemoScene:
    """A fresh training scene (seed >= ``TRAIN_SEED_BASE``) of ``size`` (random if None)."""
    if size is None:
        size = FRAME_SIZES[int(rng.integers(len(FRAME_SIZES)))]
    seed = TRAIN_SEED_BASE + int(rng.integers(0, 1 << 30))
    n = int(rng.integers(MIN_OBJECTS, MAX_OBJECTS + 1))
    return DemoScene(size[0], size[1], n, seed=seed)


@dataclass(frozen=True)
class DetectionSample:
    """One frame and its targets (visible objects large enough to be found)."""

    image: np.ndarray  # HxWx3 uint8 BGR
    targets: list[GroundTruth]


def detection_sample(
    rng: np.random.Generator,
    size: tuple[int, int],
    augment: float = 0.0,
    kinds: tuple[str, ...] = TRAINING_KINDS,
) -> DetectionSample:
    """A frame of a fresh scene; with probability ``augment`` seen under a random camera look
    (``engine.training.augment``) whose backdrop, if any, is of one of ``kinds``. ``augment == 0``
    draws nothing more from ``rng``, so the data streams of stages trained without it are
    unchanged."""
    scene = training_scene(rng, size)
    frame = scene.render_frame(int(rng.integers(0, MAX_START_FRAME)))
    floor = min_visible_area(scene.width, scene.height)
    image = frame.image
    if augment > 0 and rng.random() < augment:
        look = draw_look(rng, scene.width, scene.height, clip=False, kinds=kinds)
        image = look.apply(image, frame.ids, 0.0)
    return DetectionSample(image, [g for g in frame.truth if g.area >= floor])


@dataclass(frozen=True)
class Clip:
    """``frames`` consecutive-ish frames of one scene and the objects to follow through them."""

    images: list[np.ndarray]  # T frames, HxWx3 uint8 BGR
    masks: np.ndarray  # [objects, T, H, W] bool: each object's visible pixels per frame
    boxes: np.ndarray  # [objects, 4] float32: each object's box on the first frame (pixels)


def clip_sample(
    rng: np.random.Generator,
    frames: int,
    max_objects: int,
    size: tuple[int, int],
    augment: float = 0.0,
    kinds: tuple[str, ...] = TRAINING_KINDS,
) -> Clip:
    """A clip of ``frames`` frames with up to ``max_objects`` objects that are visible on its
    first frame; later frames may show them partly or not at all. Frames follow each other 1-3
    apart, and now and then 5-40 apart, so that objects also leave and come back within a clip.
    With probability ``augment`` the clip is seen under one random camera look whose exposure
    and white balance may drift over the clip, its backdrop (if any) of one of ``kinds``
    (nothing more is drawn when ``augment == 0``)."""
    while True:
        scene = training_scene(rng, size)
        index = int(rng.integers(0, MAX_START_FRAME))
        picks = [index]
        for _ in range(frames - 1):
            jump = rng.random() < LONG_GAP_SHARE
            index += int(rng.integers(5, 41)) if jump else int(rng.integers(1, 4))
            picks.append(index)
        rendered = [scene.render_frame(i) for i in picks]
        floor = min_visible_area(scene.width, scene.height)
        visible = [g for g in rendered[0].truth if g.area >= floor]
        if visible:
            break
    rng.shuffle(visible)
    chosen = visible[:max_objects]
    masks = np.stack([np.stack([f.mask(g.id) for f in rendered]) for g in chosen])
    boxes = np.array([g.box for g in chosen], np.float32)
    images = [f.image for f in rendered]
    if augment > 0 and rng.random() < augment:
        look = draw_look(rng, scene.width, scene.height, clip=True, kinds=kinds)
        last = max(1, len(rendered) - 1)
        images = [look.apply(f.image, f.ids, k / last) for k, f in enumerate(rendered)]
    return Clip(images, masks, boxes)
