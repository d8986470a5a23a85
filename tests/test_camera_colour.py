"""``mask_colour``: the mean colour inside a mask, taken on a bounded grid of the box, agrees with
the full-resolution mean (within 0.02 on noise, exactly on a solid object), finds thin masks, and
costs a bounded number of pixels whatever the object's size."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from engine.cues import COLOUR_SAMPLES, mask_colour


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
