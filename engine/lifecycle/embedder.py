"""Appearance from the model: an :class:`Embedder` turns what the segmenter already computed for
an object on a frame into a unit vector; a :class:`Gallery` keeps a bounded set of a track's
vectors and compares a new one by cosine similarity.

The default, :class:`ObjectPointerEmbedder`, uses SAM 2's object pointer (the mask decoder's
object token projected, ``SegmentOutput.embedding``): computed every frame for every tracked
object, so appearance costs no extra model call. Backends without one (``embedding`` None) give
no vector, and the cues that use it stay silent (no cost, no gate)."""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Protocol

import numpy as np
from numpy.typing import NDArray

if TYPE_CHECKING:  # the lifecycle stays torch-free
    from engine.core.types import SegmentOutput

Vector = NDArray[np.float32]
GALLERY_SIZE = 16  # appearance vectors kept per track (the oldest leaves first)


class Embedder(Protocol):
    def embed(self, out: SegmentOutput, image_bgr: np.ndarray) -> Vector | None:
        """A unit vector for ``out``'s object on this frame, or None."""
        ...


def unit(v: NDArray[np.floating]) -> Vector | None:
    """``v`` scaled to length 1 (None for a zero or non-finite vector)."""
    a = np.asarray(v, np.float32).reshape(-1)
    n = float(np.linalg.norm(a))
    if not np.isfinite(n) or n <= 0:
        return None
    out: Vector = a / n
    return out


class ObjectPointerEmbedder:
    """SAM 2's object pointer for the object, as a unit vector."""

    def embed(self, out: SegmentOutput, image_bgr: np.ndarray) -> Vector | None:
        if out.embedding is None or out.box is None:
            return None
        return unit(out.embedding)


class Gallery:
    """A track's last ``size`` appearance vectors (bounded: the oldest leaves first)."""

    def __init__(self, size: int) -> None:
        self._items: deque[Vector] = deque(maxlen=max(1, size))

    def __len__(self) -> int:
        return len(self._items)

    def add(self, v: Vector | None) -> None:
        if v is not None:
            self._items.append(v)

    def similarity(self, v: Vector | None) -> float | None:
        """Largest cosine similarity of ``v`` to the gallery (None: either side empty)."""
        if v is None or not self._items:
            return None
        return float(np.max(np.stack(self._items) @ v))
