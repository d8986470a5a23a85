"""Plane geometry of zones and lines, in pixels (x right, y down), with no dependency beyond numpy.

- ``segments_cross``: proper or touching intersection of two segments (orientation tests);
- ``self_crossing``: the first pair of non-adjacent edges of a closed polygon that meet;
- ``side``: which side of the directed line ``a -> b`` a point lies on (sign of the cross product);
- ``polygon_mask``: the pixels of an HxW frame whose centre ``(x + 0.5, y + 0.5)`` lies inside a
  polygon (even-odd rule), so a rectangle ``[x1, x2) x [y1, y2)`` with integer corners covers
  exactly the pixel slice ``[y1:y2, x1:x2]``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

Point = tuple[float, float]


def cross(o: Point, a: Point, b: Point) -> float:
    """Cross product of ``a - o`` and ``b - o``: > 0, < 0 or 0 (collinear)."""
    return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])


def side(a: Point, b: Point, p: Point) -> int:
    """+1 or -1 for the two sides of the line through ``a`` and ``b``, 0 on it."""
    c = cross(a, b, p)
    return (c > 0) - (c < 0)


def _on_segment(a: Point, b: Point, p: Point) -> bool:
    return min(a[0], b[0]) <= p[0] <= max(a[0], b[0]) and min(a[1], b[1]) <= p[1] <= max(a[1], b[1])


def segments_cross(p1: Point, p2: Point, q1: Point, q2: Point) -> bool:
    """True when segment ``p1 p2`` and segment ``q1 q2`` share a point."""
    d1, d2 = side(q1, q2, p1), side(q1, q2, p2)
    d3, d4 = side(p1, p2, q1), side(p1, p2, q2)
    if d1 * d2 < 0 and d3 * d4 < 0:
        return True
    return (
        (d1 == 0 and _on_segment(q1, q2, p1))
        or (d2 == 0 and _on_segment(q1, q2, p2))
        or (d3 == 0 and _on_segment(p1, p2, q1))
        or (d4 == 0 and _on_segment(p1, p2, q2))
    )


def self_crossing(points: Sequence[Point]) -> tuple[int, int] | None:
    """The indices of the first two non-adjacent edges (edge ``i`` runs from point ``i`` to
    ``i + 1``, the last back to point 0) of a closed polygon that meet, or None when it is simple.
    Adjacent edges that fold back onto each other (collinear overlap) count as crossing too."""
    n = len(points)
    edges = [(points[i], points[(i + 1) % n]) for i in range(n)]
    for i in range(n):
        for j in range(i + 1, n):
            a, b = edges[i]
            c, d = edges[j]
            adjacent = j == i + 1 or (i == 0 and j == n - 1)
            if adjacent:
                shared = b if j == i + 1 else a
                other_i = a if j == i + 1 else b
                other_j = d if j == i + 1 else c
                # Adjacent edges share one point; they cross only when folded back (collinear,
                # pointing the same way from the shared point).
                if side(shared, other_i, other_j) == 0 and (
                    (other_i[0] - shared[0]) * (other_j[0] - shared[0])
                    + (other_i[1] - shared[1]) * (other_j[1] - shared[1])
                    > 0
                ):
                    return i, j
                continue
            if segments_cross(a, b, c, d):
                return i, j
    return None


def polygon_area(points: Sequence[Point]) -> float:
    """Signed area (shoelace)."""
    n = len(points)
    return 0.5 * sum(
        points[i][0] * points[(i + 1) % n][1] - points[(i + 1) % n][0] * points[i][1]
        for i in range(n)
    )


def polygon_mask(points: Sequence[Point], height: int, width: int) -> np.ndarray:
    """HxW bool: pixels whose centre lies inside the polygon (even-odd rule)."""
    ys = np.arange(height, dtype=np.float64)[:, None] + 0.5
    xs = np.arange(width, dtype=np.float64)[None, :] + 0.5
    inside = np.zeros((height, width), bool)
    n = len(points)
    for i in range(n):
        x1, y1 = points[i]
        x2, y2 = points[(i + 1) % n]
        if y1 == y2:
            continue  # a horizontal edge never straddles a pixel centre row in this rule
        straddles = (y1 > ys) != (y2 > ys)  # Hx1
        x_at = x1 + (ys - y1) * (x2 - x1) / (y2 - y1)  # Hx1
        inside ^= straddles & (xs < x_at)
    return inside


def point_in_polygon(points: Sequence[Point], p: Point) -> bool:
    """Even-odd test of one point (the same rule as ``polygon_mask``)."""
    x, y = p
    inside = False
    n = len(points)
    for i in range(n):
        x1, y1 = points[i]
        x2, y2 = points[(i + 1) % n]
        if (y1 > y) != (y2 > y) and x < x1 + (y - y1) * (x2 - x1) / (y2 - y1):
            inside = not inside
    return inside
