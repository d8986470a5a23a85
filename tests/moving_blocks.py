"""Frames for the segmenter exactness tests (sam2 kernel, transformers backends, bf16): a moving
yellow block and a moving blue block on a gradient, with noise; and a fixture that runs torch on
one thread, robust on a busy 2-core machine."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch

H, W = 180, 240
YELLOW_RGB, BLUE_RGB = (230, 200, 30), (40, 60, 220)


def make_frames(
    n: int, h: int = H, w: int = W, seed: int = 0, bgr: bool = False
) -> list[np.ndarray]:
    """``n`` frames, RGB (or BGR with ``bgr``: the same scene in OpenCV's channel order)."""
    yellow, blue = (YELLOW_RGB[::-1], BLUE_RGB[::-1]) if bgr else (YELLOW_RGB, BLUE_RGB)
    rng = np.random.default_rng(seed)
    frames = []
    for i in range(n):
        img = np.full((h, w, 3), 40, np.uint8)
        img[..., 1] = np.linspace(0, 120, w, dtype=np.uint8)[None]
        x, y = 20 + 6 * i, 30 + 3 * i
        img[y : y + 50, x : x + 60] = yellow
        img[100:150, 150 - 4 * i : 200 - 4 * i] = blue
        img += rng.integers(0, 20, img.shape, dtype=np.uint8)
        frames.append(img)
    return frames


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
