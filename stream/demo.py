"""The built-in demo scene: coloured balls and boxes moving over a textured background.

Deterministic from its seed and random-access (``render(i)`` depends only on ``i``), so tests
can check tracking against ground truth. Objects move in different directions and speeds, so
they cross and occlude each other, and each leaves the frame and comes back in later.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

LABELS = ("ball", "box")
DEMO_PROMPT = "ball. box."
# Saturated BGR colours that stand out from the grey-green background.
_COLOURS = (
    (40, 40, 220),
    (220, 120, 30),
    (40, 200, 240),
    (200, 50, 200),
    (60, 200, 60),
    (30, 140, 255),
    (255, 255, 80),
    (120, 60, 240),
)


@dataclass(frozen=True)
class GroundTruth:
    """One object visible in a rendered frame; ``box`` is (x1, y1, x2, y2) in pixels, clipped."""

    id: int
    label: str
    box: tuple[float, float, float, float]


@dataclass(frozen=True)
class _Object:
    id: int
    label: str
    colour: tuple[int, int, int]
    half: tuple[float, float]  # half width, half height (radius twice for balls)
    start: tuple[float, float]  # position on the wrapped track at frame 0
    velocity: tuple[float, float]  # pixels per frame
    wobble: float  # amplitude of a sideways sine motion, pixels
    wobble_period: float  # frames


class DemoScene:
    """A generated scene of ``n_objects`` moving objects (alternating ball, box)."""

    def __init__(
        self,
        width: int = 640,
        height: int = 480,
        n_objects: int = 3,
        seed: int = 0,
        fps: float = 15.0,
    ) -> None:
        if width < 32 or height < 32:
            raise ValueError(f"demo scene needs at least 32x32 pixels, got {width}x{height}")
        if n_objects < 0:
            raise ValueError(f"n_objects must be >= 0, got {n_objects}")
        self.width = width
        self.height = height
        self.fps = fps
        self.seed = seed
        rng = np.random.default_rng(seed)
        self.background = self._background(rng)
        self.objects = [self._object(k, rng) for k in range(n_objects)]

    def _background(self, rng: np.random.Generator) -> np.ndarray:
        h, w = self.height, self.width
        ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
        base = np.empty((h, w, 3), np.float32)
        base[..., 0] = 90 + 25 * xs / w  # mild gradient
        base[..., 1] = 110 + 20 * ys / h
        base[..., 2] = 95
        # Low-contrast blotches: coarse noise scaled up, plus a little fine grain.
        coarse = rng.normal(0, 12, (max(2, h // 32), max(2, w // 32), 1)).astype(np.float32)
        base += cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)[..., None]
        base += rng.normal(0, 3, (h, w, 1)).astype(np.float32)
        return np.clip(base, 0, 255).astype(np.uint8)

    def _object(self, k: int, rng: np.random.Generator) -> _Object:
        short = min(self.width, self.height)
        label = LABELS[k % 2]
        size = float(rng.uniform(0.07, 0.13) * short)
        half = (
            (size, size)
            if label == "ball"
            else (size * float(rng.uniform(0.9, 1.5)), size * float(rng.uniform(0.6, 1.0)))
        )
        angle = float(rng.uniform(0, 2 * math.pi))
        # Mostly horizontal or mostly vertical by turns, so paths cross.
        if k % 2:
            angle = math.pi / 2 + 0.6 * math.sin(angle)
        else:
            angle = 0.6 * math.sin(angle) + (math.pi if rng.random() < 0.5 else 0.0)
        speed = float(rng.uniform(0.006, 0.012) * short)
        return _Object(
            id=k + 1,
            label=label,
            colour=_COLOURS[k % len(_COLOURS)],
            half=half,
            start=(float(rng.uniform(0, self.width)), float(rng.uniform(0, self.height))),
            velocity=(speed * math.cos(angle), speed * math.sin(angle)),
            wobble=float(rng.uniform(0.02, 0.08) * short),
            wobble_period=float(rng.uniform(40, 120)),
        )

    def _centre(self, o: _Object, i: int) -> tuple[float, float]:
        # The track wraps around a region larger than the frame, so objects leave and re-enter.
        span_x = self.width + 4 * o.half[0]
        span_y = self.height + 4 * o.half[1]
        x = (o.start[0] + o.velocity[0] * i) % span_x - 2 * o.half[0]
        y = (o.start[1] + o.velocity[1] * i) % span_y - 2 * o.half[1]
        s = o.wobble * math.sin(2 * math.pi * i / o.wobble_period)
        vx, vy = o.velocity
        norm = math.hypot(vx, vy) or 1.0
        return x - s * vy / norm, y + s * vx / norm

    def _extent(self, o: _Object, i: int) -> tuple[int, int, int, int]:
        """Pixel box (x1, y1, x2, y2), end exclusive, that ``render`` fills for ``o`` in frame ``i``."""
        cx, cy = self._centre(o, i)
        if o.label == "ball":
            x, y, r = round(cx), round(cy), round(o.half[0])
            return x - r, y - r, x + r + 1, y + r + 1
        return (
            round(cx - o.half[0]),
            round(cy - o.half[1]),
            round(cx + o.half[0]),
            round(cy + o.half[1]),
        )

    def ground_truth(self, i: int) -> list[GroundTruth]:
        """Boxes (clipped to the frame) of the objects at least partly visible in frame ``i``."""
        out = []
        for o in self.objects:
            x1, y1, x2, y2 = self._extent(o, i)
            x1, y1, x2, y2 = max(0, x1), max(0, y1), min(self.width, x2), min(self.height, y2)
            if x2 > x1 and y2 > y1:
                out.append(GroundTruth(o.id, o.label, (float(x1), float(y1), float(x2), float(y2))))
        return out

    def render(self, i: int) -> tuple[np.ndarray, list[GroundTruth]]:
        """Frame ``i`` (HxWx3 uint8 BGR, a new array) and the ground truth of its visible objects."""
        img = self.background.copy()
        for o in self.objects:  # fixed z-order: later objects occlude earlier ones
            x1, y1, x2, y2 = self._extent(o, i)
            if o.label == "ball":
                r = (x2 - x1 - 1) // 2
                c = (x1 + r, y1 + r)
                cv2.circle(img, c, r, o.colour, -1, cv2.LINE_AA)
                hl = (c[0] - round(r * 0.35), c[1] - round(r * 0.35))
                cv2.circle(img, hl, max(1, r // 4), (235, 235, 235), -1, cv2.LINE_AA)
            else:
                # A dark frame drawn inside the box, so the box is exactly the ground truth.
                dark = tuple(int(c * 0.55) for c in o.colour)
                t = max(2, round(o.half[1] * 0.12))
                cv2.rectangle(img, (x1, y1), (x2 - 1, y2 - 1), dark, -1)
                cv2.rectangle(img, (x1 + t, y1 + t), (x2 - 1 - t, y2 - 1 - t), o.colour, -1)
        return img, self.ground_truth(i)
