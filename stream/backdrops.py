"""Backdrops of other styles than the demo scene's own canvas, for training and for held-out
evaluation.

The demo scene (``stream.demo``) paints its objects over one kind of background: a muted grey
canvas with blotches and faint lines. Models trained only on it learn that background: on a
scene drawn by another generator the demo detector found balls in the background. This module
draws backdrops of other kinds, seeded, at any size, all muted (saturation held low, so that a
named object colour still stands out as it does on a real camera):

- ``noise``: multi-octave value noise in two muted colours (soft blobs at several scales);
- ``gradient``: a linear gradient between two muted colours with a little grain;
- ``stripes``: soft stripes at a random angle and period (floors, fences, blinds);
- ``cells``: flat-shaded Voronoi cells with dark seams (paving, tiles): the held-out kind,
  never used in training (``TRAINING_KINDS``), so that evaluation on it measures a generator
  style the models did not see;
- ``photo``: a random crop of one of the real photographs that ship with scikit-image (a
  street, a cat, coffee cups, gravel, grass, bricks, a rocket, text...), flipped at random and
  muted like the others. Drawn only where asked for (the training stages from the fifth:
  ``PHOTO_KINDS``), so the data of earlier stages is unchanged.

``replace_background(image, ids, backdrop)`` puts a backdrop where a frame's instance map says
background (``ids == 0``), so a demo frame's objects and exact masks stay as they were.
"""

from __future__ import annotations

import functools

import cv2
import numpy as np

KINDS = ("noise", "gradient", "stripes", "cells", "photo")
TRAINING_KINDS = ("noise", "gradient", "stripes")
PHOTO_KINDS = (*TRAINING_KINDS, "photo")  # what the training stages from the fifth draw from
# scikit-image's bundled photographs (``skimage.data``; no download): scenes, textures, text
PHOTOS = (
    "astronaut", "brick", "camera", "chelsea", "coffee", "grass", "gravel", "rocket", "moon",
    "page", "text", "hubble_deep_field", "coins", "cell", "stereo_motorcycle",
)  # fmt: skip
HELD_OUT_KIND = "cells"
MAX_SATURATION = 0.45  # HSV saturation of backdrop colours (named object colours are ~0.75+)


def muted_colour(rng: np.random.Generator) -> np.ndarray:
    """A BGR colour (float32) of low saturation and middle value."""
    hue = float(rng.uniform(0, 180))
    sat = float(rng.uniform(0.0, MAX_SATURATION)) * 255
    val = float(rng.uniform(60, 200))
    hsv = np.array([[[hue, sat, val]]], np.uint8)
    return np.asarray(cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0], np.float32)


def _blend(weight: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-pixel mix of two colours by ``weight`` in [0, 1] (HxW) -> HxWx3 float32."""
    w = weight[..., None].astype(np.float32)
    return np.asarray(a * (1 - w) + b * w, np.float32)


def _noise(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    field = np.zeros((h, w), np.float32)
    amp, total = 1.0, 0.0
    for cell in (int(rng.integers(48, 160)), int(rng.integers(16, 48)), int(rng.integers(4, 16))):
        coarse = rng.random((max(2, h // cell), max(2, w // cell))).astype(np.float32)
        field += amp * cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)
        total += amp
        amp *= 0.5
    field = np.clip(field / total, 0, 1)
    return _blend(field, muted_colour(rng), muted_colour(rng))


def ramp(h: int, w: int, angle: float) -> np.ndarray:
    """An HxW linear ramp from 0 to 1 along ``angle`` (radians; the frame's sides scaled to 1)."""
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    t = xs * np.cos(angle) / w + ys * np.sin(angle) / h
    return np.asarray((t - t.min()) / max(1e-6, float(t.max() - t.min())), np.float32)


def _gradient(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    t = ramp(h, w, float(rng.uniform(0, 2 * np.pi)))
    out = _blend(t, muted_colour(rng), muted_colour(rng))
    return out + rng.normal(0, 4, (h, w, 1)).astype(np.float32)


def _stripes(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    angle = float(rng.uniform(0, np.pi))
    period = float(rng.uniform(8, 60))
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    phase = (xs * np.cos(angle) + ys * np.sin(angle)) * 2 * np.pi / period
    sharp = float(rng.uniform(1, 6))
    t = 0.5 + 0.5 * np.tanh(sharp * np.sin(phase))
    return _blend(t, muted_colour(rng), muted_colour(rng))


def _cells(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    n = int(rng.integers(12, 60))
    pts = np.stack([rng.uniform(0, w, n), rng.uniform(0, h, n)], 1).astype(np.float32)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    d = (xs[..., None] - pts[:, 0]) ** 2 + (ys[..., None] - pts[:, 1]) ** 2
    owner = np.argmin(d, axis=2)
    two = np.partition(d, 1, axis=2)
    d0, d1 = two[..., 0], two[..., 1]
    palette = np.stack([muted_colour(rng) for _ in range(n)])
    out = palette[owner]
    seam = (np.sqrt(d1) - np.sqrt(d0)) < float(rng.uniform(1.5, 4.0))
    out[seam] *= 0.55
    return np.asarray(out, np.float32)


@functools.cache
def _photograph(name: str) -> np.ndarray:
    """scikit-image's photograph ``name`` as HxWx3 uint8 BGR (loaded once)."""
    import skimage.data  # only the photo kind needs scikit-image

    image = getattr(skimage.data, name)()
    image = image[0] if isinstance(image, tuple) else image  # a stereo pair: its left view
    if image.ndim == 2:
        return np.asarray(cv2.cvtColor(image, cv2.COLOR_GRAY2BGR), np.uint8)
    return np.asarray(cv2.cvtColor(image[..., :3], cv2.COLOR_RGB2BGR), np.uint8)


def _photo(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    src = _photograph(PHOTOS[int(rng.integers(len(PHOTOS)))])
    sh, sw = src.shape[:2]
    scale = float(rng.uniform(0.35, 1.0)) * min(sh / h, sw / w)  # a crop of the frame's shape
    ch, cw = max(8, int(h * scale)), max(8, int(w * scale))
    y, x = int(rng.integers(0, sh - ch + 1)), int(rng.integers(0, sw - cw + 1))
    crop = cv2.resize(src[y : y + ch, x : x + cw], (w, h), interpolation=cv2.INTER_AREA)
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    hsv = cv2.cvtColor(np.ascontiguousarray(crop), cv2.COLOR_BGR2HSV).astype(np.float32)
    hsv[..., 1] *= MAX_SATURATION  # muted: no colour of it as strong as a named object's
    hsv[..., 2] = 30 + hsv[..., 2] * float(rng.uniform(0.6, 0.85))
    return np.asarray(cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2BGR), np.float32)


_MAKERS = {
    "noise": _noise,
    "gradient": _gradient,
    "stripes": _stripes,
    "cells": _cells,
    "photo": _photo,
}


def backdrop(kind: str, width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """A ``kind`` backdrop of ``width`` x ``height`` (HxWx3 uint8 BGR), drawn from ``rng``."""
    if kind not in _MAKERS:
        raise ValueError(f"unknown backdrop kind {kind!r} (one of {', '.join(KINDS)})")
    return np.asarray(np.clip(_MAKERS[kind](height, width, rng), 0, 255), np.uint8)


def replace_background(image: np.ndarray, ids: np.ndarray, back: np.ndarray) -> np.ndarray:
    """``image`` with ``back`` where ``ids == 0`` (a new array; objects untouched)."""
    out = image.copy()
    where = ids == 0
    out[where] = back[where]
    return out
