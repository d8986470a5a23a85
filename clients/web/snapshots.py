"""Snapshots of the live view: the newest annotated frame and the tracks message of that same
frame (matched by ``seq``), as a PNG and JSON.

``FrameHistory`` keeps the last few annotated frames and tracks messages as they arrive (called
from the feed threads; bounded: ``frames`` JPEGs and ``tracks`` messages, older ones dropped),
and the last few snapshots taken, so that the page can fetch the PNG of the snapshot it was
just given.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import TypeVar

import cv2

from stream.wire import AnnotatedMessage, TracksMessage, decode_jpeg

T = TypeVar("T")


@dataclass(frozen=True)
class Snapshot:
    frame: AnnotatedMessage
    tracks: TracksMessage

    @property
    def seq(self) -> int:
        return self.frame.seq

    def png(self) -> bytes:
        """The annotated frame as PNG (decodes the JPEG: run it off the event loop)."""
        ok, buf = cv2.imencode(".png", decode_jpeg(bytes(self.frame.jpeg)))
        if not ok:
            raise ValueError("the frame could not be encoded as PNG")
        return buf.tobytes()


class FrameHistory:
    """The newest annotated frames and tracks messages of one camera, by ``seq``."""

    def __init__(self, frames: int = 8, tracks: int = 64, snapshots: int = 8) -> None:
        self._lock = threading.Lock()
        self._frames: OrderedDict[int, AnnotatedMessage] = OrderedDict()
        self._tracks: OrderedDict[int, TracksMessage] = OrderedDict()
        self._snapshots: OrderedDict[int, Snapshot] = OrderedDict()
        self._limits = (frames, tracks, snapshots)

    @staticmethod
    def _put(store: OrderedDict[int, T], seq: int, item: T, limit: int) -> None:
        store.pop(seq, None)
        store[seq] = item
        while len(store) > limit:
            store.popitem(last=False)

    def add_frame(self, msg: AnnotatedMessage) -> None:
        with self._lock:
            self._put(self._frames, msg.seq, msg, self._limits[0])

    def add_tracks(self, msg: TracksMessage) -> None:
        with self._lock:
            self._put(self._tracks, msg.header.seq, msg, self._limits[1])

    def take(self) -> Snapshot | None:
        """The newest frame that has its tracks message, kept for ``get``; None if none has."""
        with self._lock:
            for seq in reversed(self._frames):
                tracks = self._tracks.get(seq)
                if tracks is not None:
                    snap = Snapshot(self._frames[seq], tracks)
                    self._put(self._snapshots, seq, snap, self._limits[2])
                    return snap
        return None

    def get(self, seq: int) -> Snapshot | None:
        """A snapshot taken earlier (the newest few are kept)."""
        with self._lock:
            return self._snapshots.get(seq)
