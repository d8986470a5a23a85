"""Typed frames for robot code, and a time synchroniser (``from clients.subscriber import ...``).

``Frame`` is one tracks message as plain typed values: ``camera``, ``seq``, ``stamp_ns`` (the
capture time), ``width``/``height``, ``epoch`` and ``objects``, each an ``Obj`` with ``id``,
``label``, ``box`` (x1, y1, x2, y2 pixels), ``confidence`` (0-1), ``score``, ``state`` and
``mask``: an HxW bool numpy array decoded from the message's RLE the first time it is read
(a frame whose masks are never read costs no decoding). ``Frame.ids`` / ``labels`` /
``boxes`` give the arrays of all objects at once.

``TimeSync`` pairs items of several streams (cameras, or tracks and your own sensor) whose
keys (a capture time in ns, or a ``seq``) are within a tolerance: ``add(stream, key, item)``
returns the complete sets it made, each a ``{stream: item}`` dict. Buffers are bounded
(``max_buffer`` per stream); an item that can no longer be matched (evicted from a full
buffer, or older than a set already made) is dropped and counted in ``stats.dropped``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import numpy as np

from clients.robots.ros2 import confidence
from stream.wire import TrackedObject, TracksMessage

T = TypeVar("T")


@dataclass
class Obj:
    """One tracked object of a ``Frame``; ``mask`` is decoded on first access."""

    id: int
    label: str
    box: tuple[float, float, float, float]
    confidence: float
    score: float
    state: str
    _wire: TrackedObject = field(repr=False)
    _mask: np.ndarray | None = field(default=None, repr=False)

    @property
    def mask(self) -> np.ndarray:
        """HxW bool array (decoded once, then kept)."""
        if self._mask is None:
            self._mask = self._wire.decode_mask()
        return self._mask

    @property
    def mask_decoded(self) -> bool:
        return self._mask is not None


@dataclass
class Frame:
    """One tracks message of one camera, typed."""

    camera: str
    seq: int
    stamp_ns: int
    width: int
    height: int
    epoch: str | None
    objects: list[Obj]
    message: TracksMessage = field(repr=False)

    @classmethod
    def from_message(cls, msg: TracksMessage) -> Frame:
        h = msg.header
        objs = [
            Obj(
                id=o.id,
                label=o.label,
                box=(float(o.box[0]), float(o.box[1]), float(o.box[2]), float(o.box[3])),
                confidence=confidence(o),
                score=o.score,
                state=o.state,
                _wire=o,
            )
            for o in h.objects
        ]
        return cls(h.camera, h.seq, h.t_capture_ns, h.width, h.height, h.epoch, objs, msg)

    @property
    def ids(self) -> np.ndarray:
        return np.array([o.id for o in self.objects], np.int64)

    @property
    def labels(self) -> list[str]:
        return [o.label for o in self.objects]

    @property
    def boxes(self) -> np.ndarray:
        """(N, 4) float32 x1, y1, x2, y2."""
        return np.array([o.box for o in self.objects], np.float32).reshape(-1, 4)

    def masks(self) -> np.ndarray:
        """(N, H, W) bool: every object's mask (decodes those not decoded yet)."""
        out = np.zeros((len(self.objects), self.height, self.width), bool)
        for i, o in enumerate(self.objects):
            out[i] = o.mask
        return out


@dataclass
class SyncStats:
    matched: int = 0  # complete sets returned
    dropped: dict[str, int] = field(default_factory=dict)  # per stream: items never matched
    unknown: int = 0  # items of a stream not given to the constructor (ignored)

    @property
    def dropped_total(self) -> int:
        return sum(self.dropped.values())


class TimeSync(Generic[T]):
    """Sets of one item per stream whose keys lie within ``tolerance`` of each other.

    ``tolerance`` is in the keys' unit (ns for stamps: ``tolerance=20_000_000`` is 20 ms; 0 for
    exact ``seq``). Each stream's keys must grow (a stream that goes back, e.g. an engine
    restart for ``seq``, has its older items dropped when a later set is made).
    """

    def __init__(self, streams: Sequence[str], tolerance: int, max_buffer: int = 30) -> None:
        if len(streams) < 2 or len(set(streams)) != len(streams):
            raise ValueError(f"TimeSync needs 2 or more distinct streams, got {list(streams)}")
        if tolerance < 0 or not 1 <= max_buffer <= 10_000:
            raise ValueError("tolerance must be >= 0 and max_buffer in [1, 10000]")
        self.streams = list(streams)
        self.tolerance = tolerance
        self.max_buffer = max_buffer
        self.stats = SyncStats(dropped={s: 0 for s in streams})
        self._buf: dict[str, deque[tuple[int, T]]] = {s: deque() for s in streams}
        self._last_matched: dict[str, int] = {}

    def add(self, stream: str, key: int, item: T) -> list[dict[str, T]]:
        """Buffer ``item``; return the sets completed by it (usually none or one)."""
        buf = self._buf.get(stream)
        if buf is None:
            self.stats.unknown += 1
            return []
        if stream in self._last_matched and key <= self._last_matched[stream]:
            self.stats.dropped[stream] += 1  # older than a set already made: never matched
            return []
        if len(buf) >= self.max_buffer:
            buf.popleft()
            self.stats.dropped[stream] += 1
        buf.append((key, item))
        return self._match(key)

    def _match(self, key: int) -> list[dict[str, T]]:
        """A set around ``key`` (the newest item): from each stream the item nearest to it."""
        chosen: dict[str, tuple[int, T]] = {}
        for s, buf in self._buf.items():
            near = min(buf, key=lambda kv: abs(kv[0] - key), default=None)
            if near is None or abs(near[0] - key) > self.tolerance:
                return []
            chosen[s] = near
        keys = [k for k, _ in chosen.values()]
        if max(keys) - min(keys) > self.tolerance:
            return []
        for s, (k, _) in chosen.items():
            buf = self._buf[s]
            while buf and buf[0][0] <= k:  # the chosen one, and older ones it passed over
                if buf.popleft()[0] != k:
                    self.stats.dropped[s] += 1
            self._last_matched[s] = k
        self.stats.matched += 1
        return [{s: item for s, (_, item) in chosen.items()}]

    def pending(self) -> dict[str, int]:
        """Items waiting per stream."""
        return {s: len(b) for s, b in self._buf.items()}
