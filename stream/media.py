"""Writing video files: one MP4 writer (PyAV) shared by the offline job and the recorder.

A plain MP4 (``fragmented=False``, the offline job) is playable once closed: its index is
written last (and moved to the front, ``+faststart``). A fragmented MP4 (the recorder) is
playable as it grows: a keyframe every second starts a fragment (``moof`` + ``mdat``) that
carries its own index, so a recording cut short by a full disk or a kill keeps every complete
fragment; ``keep_complete_fragments`` cuts a torn last fragment off.
"""

from __future__ import annotations

import logging
import struct
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

import av
import av.container
import av.video.stream
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
    The size is fixed by the first frame; frames of another size are resized to it. Write
    errors (a full disk) raise ``OSError``; ``close`` then still releases the file."""

    def __init__(
        self, path: str | Path, fps: float, crf: int = 23, fragmented: bool = False
    ) -> None:
        self.path = Path(path)
        self.fps = fps
        self.fragmented = fragmented
        self.frames = 0
        self._crf = crf
        self._container: av.container.OutputContainer | None = None
        self._stream: av.video.stream.VideoStream | None = None
        self._size: tuple[int, int] | None = None

    @property
    def bytes_written(self) -> int:
        return self.path.stat().st_size if self.path.exists() else 0

    def _open(self, w: int, h: int) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        flags = "frag_keyframe+empty_moov+default_base_moof" if self.fragmented else "+faststart"
        self._container = av.open(str(self.path), mode="w", options={"movflags": flags})
        codec = _codec()
        rate = Fraction(self.fps).limit_denominator(1000)
        stream = self._container.add_stream(codec, rate=rate)
        assert isinstance(stream, av.video.stream.VideoStream)
        # H.264 in yuv420p wants even sizes of at least 2: odd ones are cropped, a 1-pixel
        # side is stretched to 2 (frames of another size are resized in write)
        stream.width, stream.height = max(2, w - w % 2), max(2, h - h % 2)
        stream.pix_fmt = "yuv420p"
        if self.fragmented:
            stream.codec_context.gop_size = max(1, round(self.fps))  # a fragment a second
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
        assert self._container is not None and self._stream is not None
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        self.frames += 1

    def close(self) -> None:
        """Flush the encoder and finalise the file; the file is released even if that fails."""
        container, self._container = self._container, None
        if container is None or self._stream is None:
            return
        try:
            for packet in self._stream.encode(None):
                container.mux(packet)
        finally:
            container.close()

    def __enter__(self) -> Mp4Writer:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _boxes(f: BinaryIO, length: int) -> list[tuple[bytes, int, int]]:
    """Complete top-level ISO-BMFF boxes of the file ``f`` (``length`` bytes long): (type,
    start, end), up to the first one that is torn (runs past the end) or malformed. Reads the
    box headers only."""
    out = []
    pos = 0
    while pos + 8 <= length:
        f.seek(pos)
        head = f.read(16)
        size, kind = struct.unpack_from(">I4s", head)
        header = 8
        if size == 1:
            if len(head) < 16:
                break
            (size,) = struct.unpack_from(">Q", head, 8)
            header = 16
        if size < header or pos + size > length:
            break  # size 0 ("to the end of the file") is never a finished box here
        out.append((kind, pos, pos + size))
        pos += size
    return out


def keep_complete_fragments(path: Path) -> int:
    """Cut a fragmented MP4 (``Mp4Writer(fragmented=True)``) after its last complete fragment,
    so that a file torn by a failed write plays to its end; returns the fragments kept (0: no
    frame survived: the file holds its header only, or is not an MP4)."""
    with path.open("r+b") as f:
        length = f.seek(0, 2)
        boxes = _boxes(f, length)
        if not boxes or boxes[0][0] != b"ftyp":
            return 0
        good_end, fragments, pending = 0, 0, False
        for kind, _start, end in boxes:
            if kind == b"moof":
                pending = True
                continue
            if kind == b"mdat" and pending:
                fragments += 1
            pending = False
            good_end = end
        if good_end < length:
            f.truncate(good_end)
    return fragments
