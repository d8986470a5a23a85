"""A constant-velocity Kalman filter on a box's centre and size, for gating and for
re-identifying lost tracks (SORT / ByteTrack's motion model, numpy only).

State ``[cx, cy, w, h, vx, vy, vw, vh]`` (pixels, pixels per frame); measurement
``[cx, cy, w, h]``. Process and measurement noise scale with the box's size (a large object's
pixels move more), so one set of weights serves near and far objects. :meth:`predicted` looks
any number of frames ahead without changing the filter: a lost track's uncertainty grows with
the frames since its last good box, and :meth:`gate_distance` (squared Mahalanobis distance of a
detection's centre) widens with it."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from engine.core.types import Box

F64 = NDArray[np.float64]

# Gate on the centre (2 degrees of freedom): chi-square 99% quantile.
CHI2_2DOF_99 = 9.2103
STD_POSITION = 1 / 20  # measurement and process noise of a position, per box size
STD_VELOCITY = 1 / 160  # process noise of a velocity, per box size and frame


def _xywh(box: Box) -> F64:
    x1, y1, x2, y2 = box
    return np.array([(x1 + x2) / 2, (y1 + y2) / 2, max(x2 - x1, 1e-3), max(y2 - y1, 1e-3)])


def _box(z: F64) -> Box:
    cx, cy, w, h = (float(v) for v in z[:4])
    w, h = max(w, 1e-3), max(h, 1e-3)
    return (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)


def _transition(frames: int) -> F64:
    f = np.eye(8)
    f[:4, 4:] = np.eye(4) * frames
    return f


@dataclass
class KalmanBox:
    """One track's motion: ``update`` with each good box (and its frame), ``predicted`` at any
    later frame."""

    box: Box
    seq: int
    pos_std: float = STD_POSITION
    vel_std: float = STD_VELOCITY
    x: F64 = field(init=False)
    p: F64 = field(init=False)

    def __post_init__(self) -> None:
        z = _xywh(self.box)
        self.x = np.concatenate([z, np.zeros(4)])
        s = np.concatenate([2 * self.pos_std * z[2:4], 2 * self.pos_std * z[2:4]])
        s = np.concatenate([s, 10 * self.vel_std * np.concatenate([z[2:4], z[2:4]])])
        self.p = np.diag(s**2)

    def _q(self, size: F64, frames: int) -> F64:
        pos = self.pos_std * np.concatenate([size, size])
        vel = self.vel_std * np.concatenate([size, size])
        return np.diag(np.concatenate([pos, vel]) ** 2) * max(frames, 0)

    def _r(self, size: F64) -> F64:
        return np.diag((self.pos_std * np.concatenate([size, size])) ** 2)

    def predicted(self, seq: int) -> tuple[F64, F64]:
        """State mean and covariance at frame ``seq`` (no earlier than the last update)."""
        n = max(0, seq - self.seq)
        f = _transition(n)
        return f @ self.x, f @ self.p @ f.T + self._q(self.x[2:4], n)

    def predicted_box(self, seq: int) -> Box:
        return _box(self.predicted(seq)[0])

    def update(self, box: Box, seq: int) -> None:
        """A good box on frame ``seq`` (an older frame than the last update is ignored)."""
        if seq < self.seq:
            return
        x, p = self.predicted(seq)
        z = _xywh(box)
        h = np.eye(4, 8)
        s = h @ p @ h.T + self._r(x[2:4])
        k = p @ h.T @ np.linalg.inv(s)
        self.x = x + k @ (z - h @ x)
        self.p = (np.eye(8) - k @ h) @ p
        self.seq = seq

    def gate_distance(self, box: Box, seq: int) -> float:
        """Squared Mahalanobis distance of ``box``'s centre from the centre predicted at ``seq``
        (compare with :data:`CHI2_2DOF_99`)."""
        x, p = self.predicted(seq)
        s = p[:2, :2] + self._r(x[2:4])[:2, :2]
        d = _xywh(box)[:2] - x[:2]
        return float(d @ np.linalg.solve(s, d))
