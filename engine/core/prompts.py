"""Frames and prompts, checked the same way for every segmenter backend: a BGR uint8 frame
(:func:`check_frame`), a box and/or points as point inputs in frame pixels (:func:`point_prompt`),
a mask as a model-sized tensor (:func:`mask_prompt`), and a mask's box (:func:`mask_box`).

A bad prompt raises a one-line :class:`PromptError`; a bad frame a ``ValueError``."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import ArrayLike

from engine.core.types import Box, Mask, SegmentPrompt
from stream.errors import PromptError

PointInputs = tuple[list[list[float]], list[int]]  # coordinates (frame pixels) and SAM labels


def check_frame(image_bgr: object) -> tuple[int, int]:
    """The (height, width) of a BGR uint8 frame (HxWx3); ValueError for anything else."""
    if not isinstance(image_bgr, np.ndarray) or image_bgr.ndim != 3 or image_bgr.shape[2] != 3:
        got = getattr(image_bgr, "shape", type(image_bgr).__name__)
        raise ValueError(f"expected an HxWx3 BGR image, got {got}")
    if image_bgr.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got {image_bgr.dtype}")
    return int(image_bgr.shape[0]), int(image_bgr.shape[1])


def mask_box(mask: Mask) -> Box | None:
    """xyxy pixel edges of a boolean mask, None if empty."""
    cols = np.flatnonzero(mask.any(axis=0))
    if cols.size == 0:
        return None
    rows = np.flatnonzero(mask.any(axis=1))
    return (float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1))


def mask_prompt(
    mask: ArrayLike, height: int, width: int, size: int, device: torch.device
) -> torch.Tensor:
    """A frame-sized mask prompt, checked, as a [1, 1, size, size] float 0/1 tensor on
    ``device`` (area-antialiased bilinear resize, then >= 0.5); one-line PromptError."""
    arr = np.asarray(mask)
    if arr.shape != (height, width):
        raise PromptError(f"mask must be {height}x{width} (the frame size), got shape {arr.shape}")
    if arr.dtype != np.bool_:
        arr = arr > 0
    if not arr.any():
        raise PromptError("mask prompt is empty")
    m = torch.from_numpy(arr)[None, None].float().to(device)
    if (height, width) != (size, size):
        m = F.interpolate(
            m, size=(size, size), align_corners=False, mode="bilinear", antialias=True
        )
        m = (m >= 0.5).float()
    return m


def point_prompt(prompt: SegmentPrompt, width: int, height: int) -> PointInputs | None:
    """A prompt checked against a ``width`` x ``height`` frame, as SAM 2's point inputs in frame
    pixels: the box's corners (labels 2, 3) then the points; None for a mask prompt (checked by
    the caller's model). One-line :class:`PromptError` for a bad or contradictory prompt."""
    box, points, point_labels, mask = prompt.box, prompt.points, prompt.point_labels, prompt.mask
    if mask is not None:
        if box is not None or points is not None:
            raise PromptError("give either a mask or a box/points prompt, not both")
        return None
    if box is None and points is None:
        raise PromptError("a prompt needs a box, points or a mask")
    coords: list[list[float]] = []
    labels: list[int] = []
    if box is not None:
        x1, y1, x2, y2 = validate_box(box, width, height)
        coords += [[x1, y1], [x2, y2]]
        labels += [2, 3]
    if points is not None:
        pts, lbl = _validate_points(points, point_labels, width, height)
        coords += pts
        labels += lbl
    elif point_labels is not None:
        raise PromptError("point_labels given without points")
    return coords, labels


def validate_box(box: ArrayLike, width: int, height: int) -> Box:
    """A finite box with area that meets the frame, clipped to it; one-line PromptError."""
    try:
        arr = np.asarray(box, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise PromptError(f"box must be 4 numbers x1,y1,x2,y2, got {box!r}") from None
    if arr.shape != (4,):
        raise PromptError(f"box must be 4 numbers x1,y1,x2,y2, got {arr.size}")
    if not np.isfinite(arr).all():
        raise PromptError(f"box has non-finite coordinates: {arr.tolist()}")
    x1, y1, x2, y2 = (float(v) for v in arr)
    if x2 <= x1 or y2 <= y1:
        raise PromptError(f"box has zero or negative area: {[x1, y1, x2, y2]}")
    if x2 <= 0 or y2 <= 0 or x1 >= width or y1 >= height:
        raise PromptError(f"box {[x1, y1, x2, y2]} is outside the {width}x{height} frame")
    x1, x2 = max(x1, 0.0), min(x2, float(width))
    y1, y2 = max(y1, 0.0), min(y2, float(height))
    return x1, y1, x2, y2


def _validate_points(
    points: ArrayLike, labels: ArrayLike | None, width: int, height: int
) -> PointInputs:
    try:
        pts = np.asarray(points, dtype=np.float64)
    except (TypeError, ValueError):
        raise PromptError("points must be an Nx2 array of x,y pixels") from None
    if pts.ndim != 2 or pts.shape[1] != 2 or pts.shape[0] == 0:
        raise PromptError(f"points must be an Nx2 array of x,y pixels, got shape {pts.shape}")
    if not np.isfinite(pts).all():
        raise PromptError("points have non-finite coordinates")
    if (
        (pts[:, 0] < 0).any()
        or (pts[:, 0] > width).any()
        or (pts[:, 1] < 0).any()
        or (pts[:, 1] > height).any()
    ):
        raise PromptError(f"points are outside the {width}x{height} frame")
    if labels is None:
        lbl = np.ones(len(pts), dtype=np.int64)
    else:
        lbl = np.asarray(labels).reshape(-1)
        if lbl.shape != (len(pts),) or not np.isin(lbl, (0, 1)).all():
            raise PromptError(
                f"point_labels must be {len(pts)} values of 1 (positive) or 0 (negative)"
            )
    coords: list[list[float]] = pts.tolist()
    return coords, [int(v) for v in lbl]
