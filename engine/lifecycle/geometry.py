"""Boxes and colours: validation, IoU, sizes, centres, per-label NMS (IoU and NMS are
supervision's)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import supervision as sv
from numpy.typing import ArrayLike, NDArray

from engine.core.types import Box
from stream.errors import PromptError

Colour = tuple[float, float, float]  # mean (b, g, r) in [0, 1], or a chromaticity


def as_box(box: Sequence[float] | NDArray[np.floating]) -> Box:
    """A validated ``(x1, y1, x2, y2)`` float tuple; raises :class:`PromptError` on a bad box."""
    values = [float(v) for v in box]
    if len(values) != 4 or not all(np.isfinite(values)):
        raise PromptError(f"a box needs 4 finite numbers x1,y1,x2,y2, got {values}")
    x1, y1, x2, y2 = values
    if not (x2 > x1 and y2 > y1):
        raise PromptError(f"box {values} has no area (need x2 > x1 and y2 > y1)")
    return (x1, y1, x2, y2)


def iou_matrix(a: ArrayLike, b: ArrayLike) -> NDArray[np.float64]:
    """Pairwise IoU of boxes ``a`` (N, 4) and ``b`` (M, 4) in xyxy; (N, M) (supervision's
    ``box_iou_batch``; 0 where the union is empty)."""
    aa = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    bb = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    return sv.box_iou_batch(aa, bb).astype(np.float64)


def _colour_distance(a: Colour, b: Colour) -> float:
    """L1 distance of two mean colours (b, g, r in [0, 1])."""
    return float(np.abs(np.subtract(a, b)).sum())


def _similar_size(side: float, other: float, ratio: float) -> bool:
    """Two box sides within ``ratio`` of each other, either way."""
    return side > 0 and other > 0 and max(side / other, other / side) <= ratio


def _centre(box: Box) -> tuple[float, float]:
    return ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)


def _mix(old: Colour, new: Colour, a: float) -> Colour:
    return (
        (1 - a) * old[0] + a * new[0],
        (1 - a) * old[1] + a * new[1],
        (1 - a) * old[2] + a * new[2],
    )


def _contained(inner: Box, outer: Box) -> float:
    """The share of ``inner``'s area inside ``outer``."""
    w = min(inner[2], outer[2]) - max(inner[0], outer[0])
    h = min(inner[3], outer[3]) - max(inner[1], outer[1])
    area = (inner[2] - inner[0]) * (inner[3] - inner[1])
    return max(0.0, w) * max(0.0, h) / area if area > 0 else 0.0


def _nested(a: Box, b: Box) -> float:
    """The share of the smaller of two boxes inside the larger."""
    small, large = (a, b) if _side(a) <= _side(b) else (b, a)
    return _contained(small, large)


def _side(box: Box) -> float:
    """The side of the square of the box's area."""
    return float(np.sqrt(max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1])))


def _shift(box: Box, dx: float, dy: float) -> Box:
    return (box[0] + dx, box[1] + dy, box[2] + dx, box[3] + dy)


def _box_at(boxes: NDArray[np.float64], i: int) -> Box:
    x1, y1, x2, y2 = (float(v) for v in boxes[i])
    return (x1, y1, x2, y2)


def _nms_per_label(
    boxes: NDArray[np.float64], scores: NDArray[np.float64], labels: list[str], thr: float
) -> list[int]:
    """Indices kept by greedy NMS within each label (supervision's ``box_non_max_suppression``:
    best score first, ties by index; a box overlapping a kept one of its label by ``thr`` or more
    goes), of the valid ones (finite, positive area)."""
    valid = [
        i
        for i in range(len(labels))
        if np.isfinite(boxes[i]).all() and boxes[i, 2] > boxes[i, 0] and boxes[i, 3] > boxes[i, 1]
    ]
    if not valid:
        return []
    order = sorted(valid, key=lambda i: (-scores[i], i))
    codes = {label: k for k, label in enumerate(dict.fromkeys(labels))}
    # The rank as the score (distinct, so the order above is supervision's) and the label's code
    # as the class; supervision drops IoU > threshold, so the threshold just below ``thr``.
    predictions = np.array(
        [[*boxes[i], len(order) - r, codes[labels[i]]] for r, i in enumerate(order)],
        dtype=np.float64,
    )
    keep = sv.box_non_max_suppression(predictions, iou_threshold=float(np.nextafter(thr, 0.0)))
    return sorted(i for i, k in zip(order, keep, strict=True) if k)
