"""The built-in demo scene: a seeded generator of coloured balls and boxes with exact ground truth.

Deterministic from its seed and random-access (``render(i)`` depends only on ``i``), so tests,
training (``engine.training``) and the quality benchmark can check tracking against ground truth.

What a scene holds (all drawn from the seed):
- objects: balls and boxes (alternating, so both appear) in named colours (``COLOURS``), some
  of them look-alike twins (same shape, colour and size as an earlier object);
- motion: each object moves along a straight line with a sideways wobble, on a track that wraps
  around a region larger than the frame, so objects leave, re-enter, cross and occlude each other
  (fixed z-order: later objects are drawn over earlier ones);
- a textured background (blotches, grain, faint lines) that pans slowly on most seeds;
- per-frame sensor noise, an overall exposure gain, and on some frames a Gaussian blur.

Exactness: objects are painted through an instance map (``id_map``): every pixel is assigned to
at most one object (the top-most covering it), and that object's colour is written exactly
there. So an object's visible mask in frame ``i`` is ``id_map(i) == id``: the pixels drawn for
it, before noise and blur (``render_frame(i, clean=True)`` returns the image before them).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

LABELS = ("ball", "box")
DEMO_PROMPT = "ball. box."
# Named, saturated BGR colours that stand out from the muted background.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (40, 40, 220),
    "blue": (215, 110, 30),
    "yellow": (40, 210, 235),
    "green": (60, 185, 50),
    "purple": (185, 55, 165),
}
_COLOUR_NAMES = tuple(COLOURS)
_TWIN_PROB = 0.3  # chance that an object copies the shape, colour and size of an earlier one
MIN_AREA_SHARE = 0.0005  # visible share of the frame below which an object is too small to find


def min_visible_area(width: int, height: int) -> int:
    """Visible pixels an object needs to count as findable (a training target, an evaluation
    target rather than an ignored region): 0.05 % of the frame, at least 16."""
    return max(16, round(MIN_AREA_SHARE * width * height))


@dataclass(frozen=True)
class GroundTruth:
    """One object visible in a frame: ``box`` (x1, y1, x2, y2) is the tight box of its visible
    pixels (x2, y2 exclusive), ``area`` their number."""

    id: int
    label: str
    box: tuple[float, float, float, float]
    colour: str = ""
    area: int = 0

    @property
    def description(self) -> str:
        """``"<colour> <label>"``, e.g. ``"red ball"``: the phrases that name this object."""
        return f"{self.colour} {self.label}".strip()


@dataclass(frozen=True)
class SceneObject:
    """One object's appearance and motion (pixels and frames)."""

    id: int
    label: str
    colour: str
    half: tuple[float, float]  # half width, half height (both the radius for balls)
    start: tuple[float, float]  # position on the wrapped track at frame 0
    velocity: tuple[float, float]  # pixels per frame
    wobble: float  # amplitude of a sideways sine motion, pixels
    wobble_period: float  # frames

    @property
    def bgr(self) -> tuple[int, int, int]:
        return COLOURS[self.colour]


@dataclass(frozen=True)
class SceneFrame:
    """Frame ``index``: the image (HxWx3 uint8 BGR), its instance map (HxW, 0 = background,
    else the object id on top there) and the visible objects' ground truth."""

    index: int
    image: np.ndarray
    ids: np.ndarray
    truth: list[GroundTruth]

    def mask(self, object_id: int) -> np.ndarray:
        """The visible pixels of ``object_id`` (HxW bool; all False when it is not visible)."""
        return np.asarray(self.ids == object_id)


@dataclass(frozen=True)
class _Style:
    gain: float  # exposure
    noise_sigma: float  # grey levels
    blur_prob: float  # share of blurred frames
    pan: float  # background pan amplitude, pixels
    pan_period: tuple[float, float]  # frames
    pan_phase: tuple[float, float]


class DemoScene:
    """A generated scene of ``n_objects`` moving objects (see the module docstring)."""

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
        if n_objects > 255:
            raise ValueError(f"n_objects must be <= 255, got {n_objects}")
        self.width = width
        self.height = height
        self.fps = fps
        self.seed = seed
        rng = np.random.default_rng(seed)
        self.style = self._style(rng)
        self._canvas = self._background(rng)
        self.objects: list[SceneObject] = []
        for k in range(n_objects):
            self.objects.append(self._object(k, rng))
        p = round(self.style.pan)
        self.background = self._canvas[p : p + height, p : p + width].copy()

    # ------------------------------------------------------------------ construction

    def _style(self, rng: np.random.Generator) -> _Style:
        short = min(self.width, self.height)
        pan = 0.0 if rng.random() < 0.25 else float(rng.uniform(0.01, 0.05) * short)
        return _Style(
            gain=float(rng.uniform(0.85, 1.1)),
            noise_sigma=float(rng.uniform(1.0, 6.0)),
            blur_prob=float(rng.uniform(0.0, 0.3)),
            pan=pan,
            pan_period=(float(rng.uniform(80, 240)), float(rng.uniform(80, 240))),
            pan_phase=(float(rng.uniform(0, 2 * math.pi)), float(rng.uniform(0, 2 * math.pi))),
        )

    def _background(self, rng: np.random.Generator) -> np.ndarray:
        """A muted, textured canvas larger than the frame by the pan amplitude on each side."""
        p = round(self.style.pan)
        h, w = self.height + 2 * p, self.width + 2 * p
        ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
        grey = float(rng.uniform(80, 150))
        tint = rng.normal(0, 10, 3)
        base = np.empty((h, w, 3), np.float32)
        for c in range(3):
            base[..., c] = grey + tint[c]
        base += (rng.uniform(-20, 20) * xs / w + rng.uniform(-20, 20) * ys / h)[..., None]
        cell = int(rng.integers(16, 48))
        coarse = rng.normal(0, 14, (max(2, h // cell), max(2, w // cell), 1)).astype(np.float32)
        base += cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)[..., None]
        lines = np.zeros((h, w), np.float32)
        for _ in range(int(rng.integers(4, 16))):  # faint lines: texture with edges
            pt1 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
            pt2 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
            cv2.line(lines, pt1, pt2, float(rng.uniform(-30, 30)), int(rng.integers(1, 4)))
        base += lines[..., None]
        base += rng.normal(0, 3, (h, w, 1)).astype(np.float32)
        return np.clip(base, 0, 255).astype(np.uint8)

    def _object(self, k: int, rng: np.random.Generator) -> SceneObject:
        short = min(self.width, self.height)
        label = LABELS[k % 2]
        colour = _COLOUR_NAMES[int(rng.integers(len(_COLOUR_NAMES)))]
        size = float(rng.uniform(0.06, 0.12) * short)
        half = (
            (size, size)
            if label == "ball"
            else (size * float(rng.uniform(0.9, 1.5)), size * float(rng.uniform(0.6, 1.0)))
        )
        twin = rng.random() < _TWIN_PROB and k >= 2
        if twin:  # a look-alike of the previous object of this shape
            colour, half = self.objects[k - 2].colour, self.objects[k - 2].half
        angle = float(rng.uniform(0, 2 * math.pi))
        # Mostly horizontal or mostly vertical by turns, so paths cross.
        if k % 2:
            angle = math.pi / 2 + 0.6 * math.sin(angle)
        else:
            angle = 0.6 * math.sin(angle) + (math.pi if rng.random() < 0.5 else 0.0)
        speed = float(rng.uniform(0.004, 0.014) * short)
        return SceneObject(
            id=k + 1,
            label=label,
            colour=colour,
            half=half,
            start=(float(rng.uniform(0, self.width)), float(rng.uniform(0, self.height))),
            velocity=(speed * math.cos(angle), speed * math.sin(angle)),
            wobble=float(rng.uniform(0.02, 0.08) * short),
            wobble_period=float(rng.uniform(40, 120)),
        )

    # ------------------------------------------------------------------ geometry

    def _centre(self, o: SceneObject, i: int) -> tuple[float, float]:
        # The track wraps around a region larger than the frame, so objects leave and re-enter.
        span_x = self.width + 4 * o.half[0]
        span_y = self.height + 4 * o.half[1]
        x = (o.start[0] + o.velocity[0] * i) % span_x - 2 * o.half[0]
        y = (o.start[1] + o.velocity[1] * i) % span_y - 2 * o.half[1]
        s = o.wobble * math.sin(2 * math.pi * i / o.wobble_period)
        vx, vy = o.velocity
        norm = math.hypot(vx, vy) or 1.0
        return x - s * vy / norm, y + s * vx / norm

    def _extent(self, o: SceneObject, i: int) -> tuple[int, int, int, int]:
        """Pixel box (x1, y1, x2, y2), end exclusive, that ``o`` covers in frame ``i`` (unclipped)."""
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

    def _shape(self, o: SceneObject, i: int) -> tuple[tuple[slice, slice], np.ndarray] | None:
        """Where ``o`` lies in frame ``i``: a window of the frame and the covered pixels in it."""
        x1, y1, x2, y2 = self._extent(o, i)
        cx1, cy1 = max(0, x1), max(0, y1)
        cx2, cy2 = min(self.width, x2), min(self.height, y2)
        if cx2 <= cx1 or cy2 <= cy1:
            return None
        window = (slice(cy1, cy2), slice(cx1, cx2))
        if o.label == "box":
            return window, np.ones((cy2 - cy1, cx2 - cx1), bool)
        r = (x2 - x1 - 1) // 2
        ys, xs = np.ogrid[cy1:cy2, cx1:cx2]
        covered = (xs - (x1 + r)) ** 2 + (ys - (y1 + r)) ** 2 <= r * r
        return window, np.asarray(covered)

    def _paint(self, o: SceneObject, i: int, window: tuple[slice, slice]) -> np.ndarray:
        """The colours of ``o`` over ``window`` (float32 HxWx3), shaded like a ball or a box."""
        x1, y1, x2, y2 = self._extent(o, i)
        ys, xs = np.mgrid[window[0], window[1]].astype(np.float32)
        colour = np.array(o.bgr, np.float32)
        if o.label == "ball":
            r = max(1.0, (x2 - x1 - 1) / 2)
            hx, hy = x1 + r - 0.35 * r, y1 + r - 0.35 * r  # highlight up-left
            d = np.sqrt((xs - hx) ** 2 + (ys - hy) ** 2) / (2 * r)
            shade = np.clip(1.15 - 0.6 * d, 0.45, 1.15)
            out: np.ndarray = colour * shade[..., None]
            spot = d < 0.12
            out[spot] = 0.4 * out[spot] + 0.6 * 240.0
            return out
        t = max(2, round(o.half[1] * 0.12))  # a dark frame inside the box's edge
        inner = (xs >= x1 + t) & (xs < x2 - t) & (ys >= y1 + t) & (ys < y2 - t)
        out = np.empty((*xs.shape, 3), np.float32)
        out[:] = colour * 0.55
        out[inner] = colour
        return out

    # ------------------------------------------------------------------ frames

    def id_map(self, i: int) -> np.ndarray:
        """Frame ``i``'s instance map (HxW uint8): 0 background, else the top-most object id."""
        ids = np.zeros((self.height, self.width), np.uint8)
        for o in self.objects:  # fixed z-order: later objects occlude earlier ones
            shape = self._shape(o, i)
            if shape is not None:
                window, covered = shape
                ids[window][covered] = o.id
        return ids

    def background_at(self, i: int) -> np.ndarray:
        """The background of frame ``i`` (the canvas panned), before objects, noise and blur."""
        s = self.style
        p = round(s.pan)
        if p == 0:
            return self._canvas.copy()
        ox = p + round(s.pan * math.sin(2 * math.pi * i / s.pan_period[0] + s.pan_phase[0]))
        oy = p + round(s.pan * math.sin(2 * math.pi * i / s.pan_period[1] + s.pan_phase[1]))
        return self._canvas[oy : oy + self.height, ox : ox + self.width].copy()

    def render_frame(self, i: int, clean: bool = False) -> SceneFrame:
        """Frame ``i`` with its instance map and ground truth; ``clean``: before the exposure
        gain, noise and blur (the image the masks are exact for)."""
        ids = self.id_map(i)
        img = self.background_at(i)
        for o in self.objects:
            shape = self._shape(o, i)
            if shape is None:
                continue
            window, _ = shape
            mine = ids[window] == o.id
            if mine.any():
                paint = np.clip(self._paint(o, i, window), 0, 255).astype(np.uint8)
                img[window][mine] = paint[mine]
        truth = self._truth(ids)
        if not clean:
            img = self._sensor(img, i)
        return SceneFrame(i, img, ids, truth)

    def _sensor(self, img: np.ndarray, i: int) -> np.ndarray:
        """Exposure gain, per-frame noise and, on some frames, blur (random-access per frame)."""
        s = self.style
        rng = np.random.default_rng([self.seed, i])
        noise = rng.normal(0.0, s.noise_sigma, (self.height, self.width, 1)).astype(np.float32)
        out: np.ndarray = img.astype(np.float32) * s.gain + noise
        if rng.random() < s.blur_prob:
            out = cv2.GaussianBlur(out, (0, 0), float(rng.uniform(0.7, 1.6)))
        frame: np.ndarray = np.clip(out, 0, 255).astype(np.uint8)
        return frame

    def _truth(self, ids: np.ndarray) -> list[GroundTruth]:
        out = []
        for o in self.objects:
            ys, xs = np.nonzero(ids == o.id)
            if len(xs) == 0:
                continue
            box = (float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1))
            out.append(GroundTruth(o.id, o.label, box, o.colour, len(xs)))
        return out

    def ground_truth(self, i: int) -> list[GroundTruth]:
        """The objects visible in frame ``i`` (tight boxes of their visible pixels)."""
        return self._truth(self.id_map(i))

    def render(self, i: int) -> tuple[np.ndarray, list[GroundTruth]]:
        """Frame ``i`` (HxWx3 uint8 BGR, a new array) and the ground truth of its visible objects."""
        frame = self.render_frame(i)
        return frame.image, frame.truth
