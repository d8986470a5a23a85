"""Writing video files: one MP4 writer (PyAV) shared by the offline job and the recorder."""

from __future__ import annotations

import logging
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import Any

import av
import numpy as np

log = logging.getLogger(__name__)


def _codec() -> str:
    for name in ("libx264", "libopenh264", "mpeg4"):
        try:
            av.codec.Codec(name, "w")
            return name
        except Exception:  # av raises UnknownCodecError or ValueError depending on version
            continue
    return "mpeg4"


class Mp4Writer:
    """Append BGR frames to an MP4 (H.264 when the FFmpeg build has an encoder, else MPEG-4).
    The size is fixed by the first frame; frames of another size are resized to it."""

    def __init__(self, path: str | Path, fps: float, crf: int = 23) -> None:
        self.path = Path(path)
        self.fps = fps
        self.frames = 0
        self._crf = crf
        self._container: Any = None
        self._stream: Any = None
        self._size: tuple[int, int] | None = None

    @property
    def bytes_written(self) -> int:
        return self.path.stat().st_size if self.path.exists() else 0

    def _open(self, w: int, h: int) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._container = av.open(str(self.path), mode="w", options={"movflags": "+faststart"})
        codec = _codec()
        rate = Fraction(self.fps).limit_denominator(1000)
        stream = self._container.add_stream(codec, rate=rate)
        stream.width, stream.height = w - w % 2, h - h % 2
        stream.pix_fmt = "yuv420p"
        if codec == "libx264":
            stream.options = {"crf": str(self._crf), "preset": "veryfast"}
        self._stream = stream
        self._size = (stream.width, stream.height)

    def write(self, image_bgr: np.ndarray) -> None:
        h, w = image_bgr.shape[:2]
        if self._container is None:
            self._open(w, h)
        assert self._size is not None
        if (w, h) != self._size:
            import cv2

            image_bgr = cv2.resize(image_bgr, self._size)
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image_bgr), format="bgr24")
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        self.frames += 1

    def close(self) -> None:
        if self._container is None:
            return
        for packet in self._stream.encode(None):
            self._container.mux(packet)
        self._container.close()
        self._container = None

    def __enter__(self) -> Mp4Writer:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
