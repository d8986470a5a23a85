"""Best snapshot per event: a JPEG of the frame with the object's mask outlined, and the mask as
a PNG, at ``<folder of events.database>/snapshots/<event_id>.jpg`` and ``.png``.

- ``SnapshotFiles``: the files. Written to a temporary name and renamed, so a reader never sees
  half a file and a refused write (disk full) leaves the previous snapshot as it was; the
  refusal is one logged line, counted in ``errors``. ``prune`` keeps the folder under a size
  budget by deleting the files of the oldest ended events first.
- ``FrameCache``: the last frames of each camera (annotated JPEGs as they came, or raw frames),
  keyed by capture time, decoded only when a snapshot is taken.
- ``SnapshotKeeper``: per active event, the best candidate so far by quality (confidence x mask
  pixels); a candidate better than the last written one is encoded when its frame is in the
  cache and at least ``snapshot_every`` frames of the event have passed since the last encode,
  so the work is bounded (one encode per event per N frames at most).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clients.bench.evaluate import rle_counts
from clients.events.masks import decode_rle
from stream.wire import TracksMessage, confidence_of, encode_jpeg

log = logging.getLogger(__name__)

EVENT_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
OUTLINE_BGR = (0, 255, 0)
FRAMES_PER_CAMERA = 48  # ~3 s at 15 fps: the annotated frame of a tracks message arrives later
CANDIDATE_TTL = 64  # tracks messages of a camera after which an unmatched candidate is dropped


def outline(
    image: np.ndarray, mask: np.ndarray, colour: tuple[int, int, int] = OUTLINE_BGR
) -> np.ndarray:
    """A copy of ``image`` (HxWx3 BGR) with the boundary of ``mask`` (HxW bool) drawn 2 px wide."""
    out = image.copy()
    m = mask
    inner = m.copy()
    inner[1:, :] &= m[:-1, :]
    inner[:-1, :] &= m[1:, :]
    inner[:, 1:] &= m[:, :-1]
    inner[:, :-1] &= m[:, 1:]
    edge = m & ~inner
    thick = edge.copy()
    thick[1:, :] |= edge[:-1, :]
    thick[:, 1:] |= edge[:, :-1]
    out[thick] = colour
    return out


def encode_png(mask: np.ndarray) -> bytes:
    import cv2

    ok, buf = cv2.imencode(".png", mask.astype(np.uint8) * 255)
    if not ok:
        raise ValueError("PNG encoding failed")
    return buf.tobytes()


class SnapshotFiles:
    """The snapshot folder (see the module docstring)."""

    def __init__(self, directory: str | Path) -> None:
        self.dir = Path(directory).expanduser()
        self.dir.mkdir(parents=True, exist_ok=True)
        self.errors = 0
        self.written = 0
        self.written_bytes = 0

    def paths(self, event_id: str) -> tuple[Path, Path] | None:
        """(jpg, png) of an event, or None for an id that is not a plain name (no traversal)."""
        if not isinstance(event_id, str) or not EVENT_ID_RE.match(event_id):
            return None
        return self.dir / f"{event_id}.jpg", self.dir / f"{event_id}.png"

    def write(self, event_id: str, jpeg: bytes, png: bytes) -> bool:
        """Both files of ``event_id``, replaced atomically; False (logged, counted) when refused."""
        paths = self.paths(event_id)
        if paths is None:
            raise ValueError(f"snapshot: bad event id {event_id[:80]!r}")
        tmps = [p.with_name(f".{p.name}.tmp") for p in paths]
        try:
            for tmp, data in zip(tmps, (jpeg, png), strict=True):
                with open(tmp, "wb") as f:
                    f.write(data)
            for tmp, p in zip(tmps, paths, strict=True):
                os.replace(tmp, p)
        except OSError as e:
            for tmp in tmps:
                with contextlib.suppress(OSError):
                    tmp.unlink()
            self.errors += 1
            if self.errors <= 10 or self.errors % 1000 == 0:
                log.error(
                    "snapshot of event %s not written to %s (%s): the earlier one is kept, "
                    "%d refused so far",
                    event_id,
                    self.dir,
                    e.strerror or e,
                    self.errors,
                )
            return False
        self.written += 1
        self.written_bytes += len(jpeg) + len(png)
        return True

    def read_jpeg(self, event_id: str) -> bytes | None:
        paths = self.paths(event_id)
        if paths is None:
            return None
        try:
            return paths[0].read_bytes()
        except OSError:
            return None

    def delete(self, event_id: str) -> int:
        """Remove an event's files; bytes freed."""
        paths = self.paths(event_id)
        freed = 0
        for p in paths or ():
            with contextlib.suppress(OSError):
                size = p.stat().st_size
                p.unlink()
                freed += size
        return freed

    def sizes(self) -> dict[str, int]:
        """Event id -> bytes of its files (temporary files of a crash removed)."""
        out: dict[str, int] = {}
        with os.scandir(self.dir) as it:
            for entry in it:
                name = entry.name
                if name.startswith("."):
                    if name.endswith(".tmp"):
                        with contextlib.suppress(OSError):
                            os.unlink(entry.path)
                    continue
                stem, dot, ext = name.rpartition(".")
                if not dot or ext not in ("jpg", "png"):
                    continue
                with contextlib.suppress(OSError):
                    out[stem] = out.get(stem, 0) + entry.stat().st_size
        return out

    def prune(
        self, max_bytes: int, oldest_first: list[str], keep: Callable[[str], bool]
    ) -> list[str]:
        """Delete files until the folder holds at most ``max_bytes``: files of no known event
        first (``keep`` False), then in the order of ``oldest_first`` (ended events, oldest
        first). Returns the ids whose files were deleted."""
        sizes = self.sizes()
        total = sum(sizes.values())
        deleted: list[str] = []
        for eid in [e for e in sizes if not keep(e)]:
            total -= self.delete(eid)
            sizes.pop(eid)
        for eid in oldest_first:
            if total <= max_bytes:
                break
            if eid in sizes:
                total -= self.delete(eid)
                deleted.append(eid)
        return deleted

    def total_bytes(self) -> int:
        return sum(self.sizes().values())


# --------------------------------------------------------------------------- frames


FrameLoader = Callable[[], np.ndarray]  # decodes the frame (HxWx3 BGR) when a snapshot needs it


class FrameCache:
    """The last ``per_camera`` frames of each camera by capture time, kept undecoded."""

    def __init__(self, per_camera: int = FRAMES_PER_CAMERA, max_cameras: int = 256) -> None:
        self.per_camera = per_camera
        self.max_cameras = max_cameras
        self._frames: dict[str, OrderedDict[int, FrameLoader]] = {}
        self.decode_errors = 0

    def put(self, camera: str, t_capture_ns: int, loader: FrameLoader) -> None:
        frames = self._frames.get(camera)
        if frames is None:
            if len(self._frames) >= self.max_cameras:
                return
            frames = self._frames[camera] = OrderedDict()
        frames[t_capture_ns] = loader
        while len(frames) > self.per_camera:
            frames.popitem(last=False)

    def has(self, camera: str, t_capture_ns: int) -> bool:
        frames = self._frames.get(camera)
        return frames is not None and t_capture_ns in frames

    def image(self, camera: str, t_capture_ns: int) -> np.ndarray | None:
        frames = self._frames.get(camera)
        loader = frames.get(t_capture_ns) if frames is not None else None
        if loader is None:
            return None
        try:
            img = loader()
        except ValueError as e:  # WireError included: a JPEG that does not decode
            self.decode_errors += 1
            log.warning("camera %s: snapshot frame not decodable (%s)", camera[:64], e)
            return None
        return img if img.ndim == 3 and img.shape[2] == 3 else None


# --------------------------------------------------------------------------- the keeper


@dataclass
class _Candidate:
    t_ns: int
    counts: str
    width: int
    height: int
    quality: float
    index: int  # the camera's message index it came from


@dataclass
class _Best:
    quality: float = -1.0
    last_encode: int = -(10**9)  # message index of the last encode
    pending: _Candidate | None = None
    written: bool = False


class SnapshotKeeper:
    """Chooses and writes the best snapshot of each event of one camera (module docstring)."""

    def __init__(
        self, camera: str, files: SnapshotFiles, frames: FrameCache, every: int, quality: int
    ) -> None:
        self.camera = camera
        self.files = files
        self.frames = frames
        self.every = every
        self.jpeg_quality = quality
        self._best: dict[str, _Best] = {}
        self._index = 0
        self.encodes = 0

    def observe(self, msg: TracksMessage, active: dict[int, str]) -> None:
        """Note candidates of the active events (object id -> event id) in ``msg``."""
        self._index += 1
        h = msg.header
        for obj in h.objects:
            eid = active.get(obj.id)
            if eid is None or obj.state == "lost":
                continue
            b = self._best.setdefault(eid, _Best())
            area = _rle_area(obj.mask.counts, h.height, h.width)
            conf = obj.confidence if obj.confidence is not None else confidence_of(obj.score)
            quality = float(conf) * area
            best_pending = b.pending.quality if b.pending is not None else b.quality
            if area > 0 and quality > best_pending:
                b.pending = _Candidate(
                    h.t_capture_ns, obj.mask.counts, h.width, h.height, quality, self._index
                )

    def flush(self) -> list[str]:
        """Write the due candidates whose frames have arrived; the event ids that got their
        first snapshot."""
        first: list[str] = []
        for eid, b in self._best.items():
            c = b.pending
            if c is None:
                continue
            if self._index - c.index > CANDIDATE_TTL:
                b.pending = None
                continue
            if self._index - b.last_encode < self.every or not self.frames.has(self.camera, c.t_ns):
                continue
            b.pending = None
            if self._write(eid, c):
                b.quality, b.last_encode = c.quality, self._index
                if not b.written:
                    b.written = True
                    first.append(eid)
        return first

    def forget(self, event_id: str) -> None:
        self._best.pop(event_id, None)

    def _write(self, eid: str, c: _Candidate) -> bool:
        image = self.frames.image(self.camera, c.t_ns)
        if image is None:
            return False
        try:
            mask = decode_rle(c.counts, c.height, c.width)
        except ValueError:
            return False
        if mask.shape != image.shape[:2]:
            import cv2

            mask = cv2.resize(
                mask.astype(np.uint8),
                (image.shape[1], image.shape[0]),
                interpolation=cv2.INTER_NEAREST,
            ).astype(bool)
        self.encodes += 1
        return self.files.write(
            eid, encode_jpeg(outline(image, mask), self.jpeg_quality), encode_png(mask)
        )


def _rle_area(counts: str, height: int, width: int) -> int:
    """Foreground pixels of a COCO compressed RLE string without decoding the mask (odd runs);
    0 for a malformed string."""
    try:
        runs = rle_counts(counts, height, width)
    except ValueError:
        return 0
    return int(runs[1::2].sum())
