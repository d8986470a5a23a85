"""J&F, the DAVIS video object segmentation measure (Perazzi et al. 2016; Pont-Tuset et al. 2017).

- J (region similarity): the IoU of predicted and true mask; 1 when both are empty.
- F (contour accuracy): F-measure of the mask boundaries, where a boundary pixel counts as
  matched when the other boundary lies within ``ceil(0.008 * image diagonal)`` pixels (a disk);
  1 when both masks are empty, 0 when only one is.
- Boundaries are DAVIS's ``seg2bmap`` at the mask's own size: a pixel is on the boundary when it
  differs from its right, lower or lower-right neighbour (the last row compares right only, the
  last column down only, the corner never).
- J&F of a sequence: the mean over objects of each object's mean J and mean F over its frames,
  J&F = (J + F) / 2.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

BOUND_TH = 0.008


def jaccard(pred: np.ndarray, gt: np.ndarray) -> float:
    """Region similarity J of two HxW bool masks."""
    union = np.count_nonzero(pred | gt)
    if union == 0:
        return 1.0
    return np.count_nonzero(pred & gt) / union


def boundary(mask: np.ndarray) -> np.ndarray:
    """DAVIS ``seg2bmap`` of an HxW bool mask (same size): HxW bool boundary map."""
    seg = mask.astype(bool)
    e = np.zeros_like(seg)
    s = np.zeros_like(seg)
    se = np.zeros_like(seg)
    e[:, :-1] = seg[:, 1:]
    s[:-1, :] = seg[1:, :]
    se[:-1, :-1] = seg[1:, 1:]
    b = (seg ^ e) | (seg ^ s) | (seg ^ se)
    b[-1, :] = seg[-1, :] ^ e[-1, :]
    b[:, -1] = seg[:, -1] ^ s[:, -1]
    b[-1, -1] = False
    return np.asarray(b)


def bound_pixels(height: int, width: int, bound_th: float = BOUND_TH) -> int:
    """The matching tolerance in pixels: ``bound_th`` itself if >= 1, else a share of the diagonal."""
    return round(bound_th) if bound_th >= 1 else math.ceil(bound_th * math.hypot(height, width))


def _disk(radius: int) -> np.ndarray:
    ys, xs = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    return np.asarray(xs * xs + ys * ys <= radius * radius, dtype=np.uint8)


def f_measure(pred: np.ndarray, gt: np.ndarray, bound_th: float = BOUND_TH) -> float:
    """Contour accuracy F of two HxW bool masks."""
    h, w = gt.shape
    r = bound_pixels(h, w, bound_th)
    both = pred | gt
    if not both.any():
        return 1.0
    # Work on the masks' neighbourhood only: a margin of r + 1 empty pixels (or the image edge)
    # leaves boundaries and dilations unchanged.
    ys, xs = np.nonzero(both)
    y1, y2 = max(0, ys.min() - r - 2), min(h, ys.max() + r + 3)
    x1, x2 = max(0, xs.min() - r - 2), min(w, xs.max() + r + 3)
    fg_b = boundary(pred[y1:y2, x1:x2])
    gt_b = boundary(gt[y1:y2, x1:x2])
    disk = _disk(r)
    fg_dil = cv2.dilate(fg_b.astype(np.uint8), disk).astype(bool)
    gt_dil = cv2.dilate(gt_b.astype(np.uint8), disk).astype(bool)
    n_fg, n_gt = int(fg_b.sum()), int(gt_b.sum())
    if n_fg == 0 and n_gt == 0:
        return 1.0
    if n_fg == 0 or n_gt == 0:
        return 0.0
    precision = np.count_nonzero(fg_b & gt_dil) / n_fg
    recall = np.count_nonzero(gt_b & fg_dil) / n_gt
    if precision + recall == 0:
        return 0.0
    return 2 * precision * recall / (precision + recall)


@dataclass(frozen=True)
class JandF:
    j: float
    f: float
    objects: int

    @property
    def jf(self) -> float:
        return (self.j + self.f) / 2


def sequence_jandf(per_object: Sequence[Sequence[tuple[float, float]]]) -> JandF:
    """J&F from each object's per-frame (J, F) pairs; an object with no frame is skipped."""
    js, fs = [], []
    for frames in per_object:
        if frames:
            js.append(float(np.mean([j for j, _ in frames])))
            fs.append(float(np.mean([f for _, f in frames])))
    if not js:
        return JandF(0.0, 0.0, 0)
    return JandF(float(np.mean(js)), float(np.mean(fs)), len(js))
