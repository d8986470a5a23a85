"""What the camera tracker measures on a frame for the track manager: mask IoU between tracks,
mean colours of masks and boxes (re-identification), the frame's white point, and seed points
inside a mask.

A colour is the mean (b, g, r) in [0, 1]; given the frame's white point (``white_point``: its
mean colour, the grey-world estimate of the light) it is divided by it channel by channel, so a
white balance or an exposure that scales the three channels of the whole frame leaves it
unchanged (the lifecycle's ``grey-world`` colour space)."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
import supervision as sv

from engine.core.types import Box
from engine.lifecycle.config import ColourSpace
from engine.track_manager import Colour


def mask_iou_of(masks: Mapping[int, np.ndarray]) -> Callable[[int, int], float]:
    """IoU of two tracks' masks on one frame, for the track manager's merge decision; a track
    without a mask there counts as overlapping (the box rule alone decides)."""

    def iou(a: int, b: int) -> float:
        ma, mb = masks.get(a), masks.get(b)
        if ma is None or mb is None:
            return 1.0
        return float(sv.mask_iou_batch(ma[None], mb[None])[0, 0])

    return iou


def mask_contained_of(masks: Mapping[int, np.ndarray]) -> Callable[[int, int], float]:
    """The share of the smaller of two tracks' masks inside the larger, on one frame (0 where
    either has no mask or an empty one), for the track manager's duplicate rule."""

    def contained(a: int, b: int) -> float:
        ma, mb = masks.get(a), masks.get(b)
        if ma is None or mb is None:
            return 0.0
        smaller = min(np.count_nonzero(ma), np.count_nonzero(mb))
        return float(np.count_nonzero(ma & mb)) / smaller if smaller else 0.0

    return contained


COLOUR_SAMPLES = 4096  # pixels a mean colour is taken over at most (a regular grid over the box)
WHITE_FLOOR = 1 / 255  # a channel of the white point is at least this (a black frame stays defined)


def white_point(image: np.ndarray) -> Colour:
    """The frame's mean colour (b, g, r in [0, 1], each at least ``WHITE_FLOOR``) on a regular
    grid of at most ``COLOUR_SAMPLES`` pixels: under the grey-world assumption, the light's
    colour and strength."""
    h, w = image.shape[:2]
    step = max(1, int(np.ceil(np.sqrt(h * w / COLOUR_SAMPLES))))
    mean = image[::step, ::step].reshape(-1, 3).mean(axis=0) / 255.0
    b, g, r = (max(WHITE_FLOOR, float(c)) for c in mean)
    return (b, g, r)


def white_of(image: np.ndarray, space: ColourSpace) -> Colour | None:
    """The white point colours of ``image`` are measured against for the lifecycle's colour
    ``space`` (``engine.lifecycle.colour_space``): the frame's for ``grey-world``, else None
    (raw colours)."""
    return white_point(image) if space == "grey-world" else None


def _relative(mean: np.ndarray, white: Colour | None) -> Colour:
    """``mean`` (b, g, r in [0, 1]) over ``white`` channel by channel (unchanged for None)."""
    if white is not None:
        mean = mean / np.asarray(white, np.float64)
    return (float(mean[0]), float(mean[1]), float(mean[2]))


def mask_colour(
    image: np.ndarray, mask: np.ndarray, box: Box | None, white: Colour | None = None
) -> Colour | None:
    """Mean colour (b, g, r in [0, 1]; over ``white`` where given) of ``image`` inside ``mask``
    (within its ``box``), for re-identification; None for an empty mask. The mean is taken on a
    regular grid of at most ``COLOUR_SAMPLES`` pixels of the box, so its cost is bounded per object whatever its size
    (a full-resolution mean cost 6 ms per object per frame on a 300x300 object)."""
    if box is None:
        return None
    x1, y1, x2, y2 = (max(0, int(v)) for v in box)
    area = max(0, x2 - x1) * max(0, y2 - y1)
    step = max(1, int(np.ceil(np.sqrt(area / COLOUR_SAMPLES))))
    m = mask[y1:y2:step, x1:x2:step]
    if not m.any():
        m = mask[y1:y2, x1:x2]  # a thin mask the grid missed: every pixel of it
        if not m.any():
            return None
        step = 1
    return _relative(image[y1:y2:step, x1:x2:step][m].mean(axis=0) / 255.0, white)


def box_colours(
    image: np.ndarray, xyxy: np.ndarray, white: Colour | None = None
) -> list[Colour | None]:
    """Mean colour of each box's central half (inside a ball or a box, off the background;
    over ``white`` where given)."""
    h, w = image.shape[:2]
    out: list[Colour | None] = []
    for x1, y1, x2, y2 in np.asarray(xyxy, dtype=np.float64).reshape(-1, 4):
        if not np.isfinite([x1, y1, x2, y2]).all():
            out.append(None)
            continue
        cx, cy, hw, hh = (x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) / 4, (y2 - y1) / 4
        a, b = max(0, int(cx - hw)), min(w, int(np.ceil(cx + hw)))
        c, d = max(0, int(cy - hh)), min(h, int(np.ceil(cy + hh)))
        if b <= a or d <= c:
            out.append(None)
            continue
        out.append(_relative(image[c:d, a:b].reshape(-1, 3).mean(axis=0) / 255.0, white))
    return out


def sample_points(mask: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """``n`` (x, y) points drawn uniformly inside ``mask`` (deterministic for a seed), as the
    reference Grounded SAM 2 pipeline seeds with points."""
    ys, xs = np.nonzero(mask)
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(xs), size=min(n, len(xs)), replace=False)
    return np.stack([xs[pick], ys[pick]], axis=1).astype(np.float32)
