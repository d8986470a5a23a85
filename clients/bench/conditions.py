"""Camera conditions for ``bench --parts quality``: the demo scene's frames perturbed as a real
camera perturbs them, with the ground truth kept exact.

Each perturbation is a small pure function of a frame (and its index in the clip where it
changes over time); ``perturb`` applies one condition to a clip of ``SceneFrame``s and returns
the frames both sides of the benchmark see, with their ground truth:

- ``clean``: the rendered frames as they are;
- ``dusk``: a brightness ramp, the gain falling linearly from 1 on the first frame to
  ``DUSK_FLOOR`` on the last (auto-exposure losing the evening);
- ``white-balance``: per-channel gains drifting linearly over the clip, blue up and red down by
  ``WB_DRIFT`` at the last frame (a white balance that wanders, headlights, IR cut-over);
- ``shadow``: a static slanted band across the frame darkened by ``SHADOW_STRENGTH`` (a pole's
  or a building's shadow that objects pass through);
- ``jpeg30``: every frame JPEG-encoded at quality ``JPEG_QUALITY`` and decoded (a cheap IP
  camera's stream);
- ``shake``: every frame translated by a random whole-pixel offset of at most ``SHAKE_PX`` in
  each direction (drawn from the scene's seed); the instance map moves with the image, so the
  ground truth (masks, boxes, areas) is shifted exactly with the frame, and what moves out of
  the frame is no longer visible;
- ``drop3``: every ``DROP_EVERY``-th frame only (a camera or network that delivers a third of
  the frames): the kept frames keep their frame index (``seq``) and capture time, and the
  ground truth is that of the kept frames only;
- ``backdrop``: a generator style the demo models never trained on: the scene's background
  replaced by the held-out backdrop kind (``stream.backdrops.HELD_OUT_KIND``, flat-shaded cells
  with dark seams, drawn from the scene's seed) under sensor noise of ``BACKDROP_NOISE`` grey
  levels; the objects and the ground truth are the scene's own.

The image border that a translation uncovers repeats the edge pixels (as a stabiliser's crop
would show); the instance map's uncovered border is background.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

import cv2
import numpy as np

from stream.backdrops import HELD_OUT_KIND, backdrop, replace_background
from stream.demo import GroundTruth, SceneFrame

DUSK_FLOOR = 0.35  # brightness gain on the last frame of the dusk ramp
WB_DRIFT = 0.3  # blue gain 1 -> 1 + drift, red gain 1 -> 1 - drift over the clip
SHADOW_STRENGTH = 0.5  # share of the light the shadow band takes away
SHADOW_BAND = (0.3, 0.55)  # the band's left and right edge on the top row, share of the width
SHADOW_SLANT = 0.4  # the band's horizontal shift per row, pixels per pixel
JPEG_QUALITY = 30
SHAKE_PX = 4  # largest translation in x and in y, pixels
DROP_EVERY = 3
BACKDROP_NOISE = 3.0  # grey levels of sensor noise over the held-out backdrop


class Condition(str, Enum):
    """A camera condition of the quality benchmark (see the module docstring)."""

    CLEAN = "clean"
    DUSK = "dusk"
    WHITE_BALANCE = "white-balance"
    SHADOW = "shadow"
    JPEG30 = "jpeg30"
    SHAKE = "shake"
    DROP3 = "drop3"
    BACKDROP = "backdrop"


@dataclass(frozen=True)
class ClipFrame:
    """A frame as both sides of the benchmark see it: ``seq`` the scene's frame index,
    ``t_ns`` its capture time (the scene's frame rate), ``frame`` image + exact ground truth."""

    seq: int
    t_ns: int
    frame: SceneFrame


# --------------------------------------------------------------------------- pure functions


def dusk_gain(i: int, n: int, floor: float = DUSK_FLOOR) -> float:
    """The brightness gain of frame ``i`` of ``n``: 1 on the first frame, ``floor`` on the last."""
    if n <= 1:
        return 1.0
    return 1.0 - (1.0 - floor) * i / (n - 1)


def white_balance_gains(i: int, n: int, drift: float = WB_DRIFT) -> tuple[float, float, float]:
    """Per-channel (B, G, R) gains of frame ``i`` of ``n``: 1 on the first frame, blue
    ``1 + drift`` and red ``1 - drift`` on the last, green unchanged."""
    t = i / (n - 1) if n > 1 else 0.0
    return (1.0 + drift * t, 1.0, 1.0 - drift * t)


def scale(image: np.ndarray, gains: float | Sequence[float]) -> np.ndarray:
    """``image`` (HxWx3 uint8) times ``gains`` (one, or one per channel), rounded and clipped."""
    g = np.asarray(gains, np.float32).reshape(-1)
    out = image.astype(np.float32) * (g if g.size == 3 else g[0])
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def shadow_mask(
    height: int, width: int, band: tuple[float, float] = SHADOW_BAND, slant: float = SHADOW_SLANT
) -> np.ndarray:
    """The shadow band (HxW bool): between ``band`` (shares of the width) on the top row,
    shifted ``slant`` pixels right per row down."""
    ys, xs = np.mgrid[0:height, 0:width]
    x = xs - slant * ys
    return np.asarray((x >= band[0] * width) & (x < band[1] * width))


def shadow(image: np.ndarray, strength: float = SHADOW_STRENGTH) -> np.ndarray:
    """``image`` with the static shadow band darkened by ``strength`` (pixels outside unchanged)."""
    h, w = image.shape[:2]
    out = image.copy()
    band = shadow_mask(h, w)
    out[band] = scale(image[band][None], 1.0 - strength)[0]
    return out


def jpeg(image: np.ndarray, quality: int = JPEG_QUALITY) -> np.ndarray:
    """``image`` JPEG-encoded at ``quality`` and decoded (HxWx3 uint8 BGR)."""
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError(f"cannot JPEG-encode a {image.shape} image")
    return np.asarray(cv2.imdecode(data, cv2.IMREAD_COLOR))


def shake_offsets(seed: int, n: int, amplitude: int = SHAKE_PX) -> list[tuple[int, int]]:
    """``n`` whole-pixel offsets (dx, dy), each in [-amplitude, amplitude], from ``seed``."""
    rng = np.random.default_rng([seed, 0x5A4B])
    return [(int(x), int(y)) for x, y in rng.integers(-amplitude, amplitude + 1, (n, 2))]


def translate(array: np.ndarray, dx: int, dy: int, replicate: bool) -> np.ndarray:
    """``array`` (HxW or HxWxC) moved ``dx`` right and ``dy`` down; the uncovered border repeats
    the edge (``replicate``) or is 0."""
    h, w = array.shape[:2]
    pad = [(abs(dy), abs(dy)), (abs(dx), abs(dx))] + [(0, 0)] * (array.ndim - 2)
    padded = np.pad(array, pad, mode="edge" if replicate else "constant")
    y0, x0 = abs(dy) - dy, abs(dx) - dx  # out[y, x] = array[y - dy, x - dx]
    return np.ascontiguousarray(padded[y0 : y0 + h, x0 : x0 + w])


def kept_indices(n: int, every: int = DROP_EVERY) -> list[int]:
    """The frame indices a camera delivering every ``every``-th frame of ``n`` keeps."""
    return list(range(0, n, every))


def truth_of(ids: np.ndarray, like: Sequence[GroundTruth]) -> list[GroundTruth]:
    """The visible objects of instance map ``ids`` (tight boxes and areas of their pixels),
    labels and colours from ``like`` (an object absent from ``ids`` is not visible)."""
    out = []
    for g in like:
        ys, xs = np.nonzero(ids == g.id)
        if len(xs):
            box = (float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1))
            out.append(GroundTruth(g.id, g.label, box, g.colour, len(xs)))
    return out


# --------------------------------------------------------------------------- clips


def _with_image(f: SceneFrame, image: np.ndarray) -> SceneFrame:
    return SceneFrame(f.index, image, f.ids, f.truth)


def on_backdrop(f: SceneFrame, seed: int) -> np.ndarray:
    """Frame ``f`` with its background replaced by the held-out backdrop of ``seed`` (the same
    backdrop on every frame of a scene) and fresh sensor noise of frame ``f.index``."""
    h, w = f.ids.shape
    back = backdrop(HELD_OUT_KIND, w, h, np.random.default_rng([seed, 7]))
    image = replace_background(f.image, f.ids, back).astype(np.float32)
    noise = np.random.default_rng([seed, 8, f.index]).normal(0, BACKDROP_NOISE, (h, w, 1))
    return np.asarray(np.clip(image + noise, 0, 255), np.uint8)


def perturb(
    condition: Condition, frames: Sequence[SceneFrame], seed: int, fps: float
) -> list[ClipFrame]:
    """The frames of ``condition`` (see the module docstring) from a clip's rendered frames
    (``frames[i].index`` is the scene's frame index); ``seed`` draws the shake."""
    n = len(frames)

    def clip(fs: Sequence[SceneFrame]) -> list[ClipFrame]:
        return [ClipFrame(f.index, round(f.index * 1e9 / fps), f) for f in fs]

    if condition is Condition.CLEAN:
        return clip(frames)
    if condition is Condition.DUSK:
        return clip([_with_image(f, scale(f.image, dusk_gain(i, n))) for i, f in enumerate(frames)])
    if condition is Condition.WHITE_BALANCE:
        return clip(
            [
                _with_image(f, scale(f.image, white_balance_gains(i, n)))
                for i, f in enumerate(frames)
            ]
        )
    if condition is Condition.SHADOW:
        return clip([_with_image(f, shadow(f.image)) for f in frames])
    if condition is Condition.JPEG30:
        return clip([_with_image(f, jpeg(f.image)) for f in frames])
    if condition is Condition.SHAKE:
        moved = []
        for f, (dx, dy) in zip(frames, shake_offsets(seed, n), strict=True):
            ids = translate(f.ids, dx, dy, replicate=False)
            image = translate(f.image, dx, dy, replicate=True)
            moved.append(SceneFrame(f.index, image, ids, truth_of(ids, f.truth)))
        return clip(moved)
    if condition is Condition.DROP3:
        return clip([frames[i] for i in kept_indices(n)])
    if condition is Condition.BACKDROP:
        return clip([_with_image(f, on_backdrop(f, seed)) for f in frames])
    raise ValueError(f"unknown condition {condition!r}")
