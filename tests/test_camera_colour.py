"""``mask_colour``: the mean colour inside a mask, taken on a bounded grid of the box, agrees with
the full-resolution mean (within 0.02 on noise, exactly on a solid object), finds thin masks, and
costs a bounded number of pixels whatever the object's size; measured against the frame's white
point, a white balance drift leaves it unchanged."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from engine.cues import (
    COLOUR_SAMPLES,
    box_colours,
    mask_colour,
    mask_contained_of,
    white_of,
    white_point,
)
from stream.config import EngineConfig


def _disc(h: int, w: int, cy: int, cx: int, r: int) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    return np.asarray((yy - cy) ** 2 + (xx - cx) ** 2 < r**2)


def test_grid_mean_matches_the_full_mean() -> None:
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (576, 768, 3), dtype=np.uint8)
    mask = _disc(576, 768, 250, 350, 150)
    colour = mask_colour(image, mask, (200, 100, 500, 400))
    full = image[mask].mean(axis=0) / 255.0
    assert colour is not None
    assert np.abs(np.asarray(colour) - full).max() < 0.02

    solid = np.zeros_like(image)
    solid[mask] = (30, 60, 200)
    colour = mask_colour(solid, mask, (200, 100, 500, 400))
    assert colour is not None
    assert np.allclose(colour, (30 / 255, 60 / 255, 200 / 255))


def test_thin_mask_and_empty_mask() -> None:
    image = np.full((100, 400, 3), 10, np.uint8)
    image[50, :] = (0, 0, 255)
    mask = np.zeros((100, 400), bool)
    mask[50, 10:390] = True  # one pixel high, in a box tall enough for the grid to step over it
    colour = mask_colour(image, mask, (10, 0, 390, 100))
    assert colour is not None and colour[2] == 1.0
    assert mask_colour(image, np.zeros_like(mask), (10, 0, 390, 100)) is None
    assert mask_colour(image, mask, None) is None


class _Counting(np.ndarray):
    """An image that records how many pixels each boolean selection of it takes."""

    taken: ClassVar[list[int]] = []

    def __getitem__(self, key: Any) -> Any:  # numpy's own index and result types
        out = super().__getitem__(key)
        if isinstance(key, np.ndarray) and key.dtype == bool:
            _Counting.taken.append(int(key.sum()))
        return out


def test_cost_is_bounded_per_object() -> None:
    """However large the object, the mean is taken over at most about COLOUR_SAMPLES pixels."""
    image = np.full((2160, 3840, 3), 100, np.uint8).view(_Counting)
    mask = np.ones((2160, 3840), bool)
    for size in (64, 300, 1000, 2160):
        _Counting.taken = []
        assert mask_colour(image, mask, (0, 0, size, size)) == (100 / 255,) * 3
        assert _Counting.taken, "the mean was taken over a boolean selection"
        assert max(_Counting.taken) <= min(size * size, 2 * COLOUR_SAMPLES)


def test_grey_world_colour_ignores_the_white_balance() -> None:
    """A white balance drift (blue x1.3, red x0.7 over the whole frame) moves an object's
    chromaticity by more than the lifecycle's look threshold (0.1), and its colour relative to
    the frame's white point (the ``grey-world`` colour space) by almost nothing; the other
    spaces measure raw colours (no white point)."""
    rng = np.random.default_rng(3)
    image = rng.integers(60, 200, (240, 320, 3)).astype(np.uint8)
    mask = _disc(240, 320, 120, 160, 40)
    image[mask] = (40, 90, 180)
    box = (120.0, 80.0, 200.0, 160.0)
    drifted = np.clip(image * np.array([1.3, 1.0, 0.7]), 0, 255).astype(np.uint8)

    def chroma(c: tuple[float, float, float] | None) -> np.ndarray:
        assert c is not None
        return np.asarray(c) / sum(c)

    raw = [mask_colour(im, mask, box) for im in (image, drifted)]
    assert np.abs(chroma(raw[0]) - chroma(raw[1])).sum() > 0.1
    grey = [mask_colour(im, mask, box, white_of(im, "grey-world")) for im in (image, drifted)]
    assert np.abs(chroma(grey[0]) - chroma(grey[1])).sum() < 0.01
    boxes = np.array([box])
    grey_boxes = [box_colours(im, boxes, white_of(im, "grey-world"))[0] for im in (image, drifted)]
    assert np.abs(chroma(grey_boxes[0]) - chroma(grey_boxes[1])).sum() < 0.01
    assert white_of(image, "chromaticity") is None and white_of(image, "bgr") is None
    general, demo = EngineConfig().lifecycle, EngineConfig(lifecycle={"profile": "demo"}).lifecycle
    assert white_of(image, general.colour_space) is not None  # the default measures against it
    assert white_of(image, demo.colour_space) is None
    assert min(white_point(np.zeros((8, 8, 3), np.uint8))) > 0  # a black frame stays defined


def test_mask_contained_is_the_smaller_masks_share_inside_the_larger() -> None:
    big = np.zeros((20, 20), bool)
    big[0:10, 0:10] = True  # 100 pixels
    small = np.zeros((20, 20), bool)
    small[8:12, 0:5] = True  # 20 pixels, 10 of them inside big
    contained = mask_contained_of({1: big, 2: small, 3: np.zeros((20, 20), bool)})
    assert contained(1, 2) == contained(2, 1) == 0.5
    assert contained(1, 1) == 1.0
    assert contained(1, 3) == 0.0 and contained(1, 9) == 0.0  # empty or no mask: no decision
