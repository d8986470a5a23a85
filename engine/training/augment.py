"""Camera conditions and other backdrops drawn over training samples (``engine.training.samples``).

The demo scenes alone teach the models one exposure, one white balance and one kind of
background. A real camera ramps its exposure at dusk, drifts in white balance, has shadows and
gradients of light across the view, compresses to JPEG and blurs; and its background is not the
demo canvas. A ``Look`` is one draw of such conditions for one sample: a still frame, or a clip
(the exposure and white balance then drift across the clip's frames while a shadow and a light
gradient stay put, as they do on a fixed camera). Ranges are broad and drawn at random, not the
benchmark's conditions (``clients.bench.conditions``: fixed ramps, evaluated on held-out seeds),
and the held-out backdrop kind (``stream.backdrops.HELD_OUT_KIND``) is never drawn here.

Masks and boxes are unchanged by a look: every change is photometric, or replaces background
pixels only (``ids == 0``).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from stream.backdrops import TRAINING_KINDS, backdrop, ramp, replace_background

__all__ = ["Look", "backdrop", "draw_look"]


@dataclass(frozen=True)
class Look:
    """One draw of camera conditions (see the module docstring)."""

    gain: tuple[float, float]  # exposure at the first and at the last frame
    white: tuple[np.ndarray, np.ndarray]  # BGR gains at the first and at the last frame
    light: np.ndarray | None  # HxW multiplicative illumination (shadow band and/or gradient)
    back: np.ndarray | None  # HxWx3 uint8 backdrop replacing the background, or None
    jpeg: int | None  # JPEG quality, or None
    blur: float  # Gaussian blur sigma (0: none)

    def apply(self, image: np.ndarray, ids: np.ndarray, t: float) -> np.ndarray:
        """``image`` (HxWx3 uint8 BGR) under this look at clip position ``t`` in [0, 1]."""
        img = image if self.back is None else replace_background(image, ids, self.back)
        g = self.gain[0] + (self.gain[1] - self.gain[0]) * t
        wb = self.white[0] + (self.white[1] - self.white[0]) * t
        out = img.astype(np.float32) * (g * wb)[None, None, :]
        if self.light is not None:
            out *= self.light[..., None]
        if self.blur > 0:
            out = cv2.GaussianBlur(out, (0, 0), self.blur)
        frame: np.ndarray = np.asarray(np.clip(out, 0, 255), np.uint8)
        if self.jpeg is not None:
            ok, buf = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, self.jpeg])
            if ok:
                frame = np.asarray(cv2.imdecode(buf, cv2.IMREAD_COLOR), np.uint8)
        return frame


def _light(h: int, w: int, rng: np.random.Generator) -> np.ndarray | None:
    """A static illumination field: a soft shadow band, a light gradient, both, or none."""
    field = np.ones((h, w), np.float32)
    used = False
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    if rng.random() < 0.35:  # a shadow band at a random angle, depth and width
        angle = float(rng.uniform(0, np.pi))
        across = xs * np.cos(angle) + ys * np.sin(angle)
        centre = float(rng.uniform(across.min(), across.max()))
        half = float(rng.uniform(0.08, 0.3)) * max(h, w)
        soft = float(rng.uniform(2, 25))
        inside = 0.5 + 0.5 * np.tanh((half - np.abs(across - centre)) / soft)
        field *= 1 - float(rng.uniform(0.25, 0.65)) * inside
        used = True
    if rng.random() < 0.35:  # a gradient of light across the view
        t = ramp(h, w, float(rng.uniform(0, 2 * np.pi)))
        lo = float(rng.uniform(0.45, 0.9))
        field *= lo + (1 - lo) * t
        used = True
    return field if used else None


def draw_look(
    rng: np.random.Generator,
    width: int,
    height: int,
    clip: bool,
    kinds: tuple[str, ...] = TRAINING_KINDS,
) -> Look:
    """A random look for a ``width`` x ``height`` sample; ``clip``: exposure and white balance
    may drift from its first frame to its last; ``kinds``: the backdrop kinds drawn from."""
    g0 = float(np.exp(rng.uniform(np.log(0.3), np.log(1.35))))
    g1 = (
        float(np.exp(rng.uniform(np.log(0.3), np.log(1.35)))) if clip and rng.random() < 0.5 else g0
    )
    w0 = rng.uniform(0.8, 1.25, 3).astype(np.float32)
    w1 = rng.uniform(0.8, 1.25, 3).astype(np.float32) if clip and rng.random() < 0.5 else w0
    back = None
    if rng.random() < 0.5:
        kind = kinds[int(rng.integers(len(kinds)))]
        back = backdrop(kind, width, height, rng)
    jpeg = int(rng.integers(20, 80)) if rng.random() < 0.3 else None
    blur = float(rng.uniform(0.5, 2.0)) if rng.random() < 0.2 else 0.0
    return Look((g0, g1), (w0, w1), _light(height, width, rng), back, jpeg, blur)
