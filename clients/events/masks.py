"""Masks of tracks messages decoded without trusting them: the COCO RLE string is checked and
decoded in numpy (``clients.bench.evaluate.rle_counts``), never handed to pycocotools, which
writes out of bounds on runs that do not cover the frame exactly."""

from __future__ import annotations

import numpy as np

from clients.bench.evaluate import rle_counts


def decode_rle(counts: str, height: int, width: int) -> np.ndarray:
    """HxW bool mask of a COCO compressed RLE string (column-major runs, background first);
    ``ValueError`` naming what is wrong with a malformed one."""
    runs = rle_counts(counts, height, width)
    values = (np.arange(runs.size) % 2).astype(bool)
    flat = np.repeat(values, runs)
    return np.asarray(flat.reshape(width, height).T)
