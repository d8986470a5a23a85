"""Shared-memory frame payloads for one host (``bus.frames_shm``).

Over a socket, every 1080p ``bgr8`` frame (6.2 MB) is copied by the kernel twice, from the
publisher into the socket and out into the receiver's new buffer, which caps the frame bus at
this machine's copy bandwidth. With ``bus.frames_shm`` the capture process writes each frame
once into a ring of slots in a POSIX shared-memory segment (``/dev/shm/promptcam-*``) and the
ZeroMQ frame message carries, instead of the payload part, a reference to it in its header:
``"shm": {"name": str, "slot": int, "gen": int}``. A receiver maps the segment read-only and
reads the frame in place.

The segment starts with a 4096-byte header: magic ``PCAMSHM1``, then ``slot_bytes``, ``slots`` and
``stride`` (little-endian u64), so a reader checks a reference against the ring's real geometry.
Each slot starts with a 64-byte header, ``gen`` then ``seq`` (little-endian u64), and is a
seqlock: the writer makes ``gen`` odd, writes the frame, then makes it even; the
message names the even ``gen``. A reader that finds another ``gen`` in the slot, before or after
reading, knows the slot was reused for a newer frame (the ring has ``bus.shm_slots`` slots, so a
reader is overrun only when it holds a reference for that many frames): the frame is counted as
overrun, never handed on torn. On x86 the stores are seen in program order; the lock round trip
in :func:`_fence` is a full barrier on weakly ordered CPUs too.

The segment is reserved with ``posix_fallocate``, so a too-small ``/dev/shm`` is an error at
creation (the capture then falls back to inline payloads) and not a SIGBUS on a later write.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import re
import secrets
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SHM_DIR = Path("/dev/shm")
PREFIX = "promptcam-"
NAME_RE = re.compile(r"^promptcam-[A-Za-z0-9_.-]{1,200}$")
MAGIC = b"PCAMSHM1"
SEGMENT_HEADER = 4096
SLOT_HEADER = 64
_ALIGN = 4096
_fence_lock = threading.Lock()


def _fence() -> None:
    """A full memory barrier: an uncontended lock round trip (atomic read-modify-writes)."""
    with _fence_lock:
        pass


class ShmError(OSError):
    """A shared-memory segment cannot be created or read; the message is one line."""


class ShmOverrun(Exception):
    """The slot was reused for a newer frame before the reader was done with it."""


@dataclass(frozen=True)
class ShmRef:
    """Where a frame's payload lies: segment ``name``, ``slot`` index, seqlock generation."""

    name: str
    slot: int
    gen: int

    def as_dict(self) -> dict[str, object]:
        return {"name": self.name, "slot": self.slot, "gen": self.gen}


def _slot_stride(nbytes: int) -> int:
    return -(-(SLOT_HEADER + nbytes) // _ALIGN) * _ALIGN


def _slot(buf: np.ndarray, stride: int, slot: int) -> tuple[np.ndarray, int]:
    """A slot's header (u64 view: ``gen``, ``seq``) and the offset of its payload in ``buf``."""
    off = SEGMENT_HEADER + slot * stride
    return buf[off : off + SLOT_HEADER].view("<u8"), off + SLOT_HEADER


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", text)[:64]


def sweep_stale() -> list[str]:
    """Remove this user's segments whose creating process is gone (a capture that was killed
    cannot unlink its own); the names removed."""
    removed: list[str] = []
    try:
        entries = list(SHM_DIR.glob(f"{PREFIX}*"))
    except OSError:
        return removed
    for path in entries:
        parts = path.name.rsplit("-", 2)
        if len(parts) != 3 or not parts[1].isdigit():
            continue
        try:
            if path.stat().st_uid != os.getuid() or Path(f"/proc/{parts[1]}").exists():
                continue
            path.unlink()
        except OSError:
            continue
        removed.append(path.name)
    return removed


class ShmRing:
    """Writer side: a segment of ``slots`` slots of ``slot_bytes`` payload each, owned (and
    unlinked on close) by the process that created it."""

    def __init__(self, camera: str, slot_bytes: int, slots: int) -> None:
        if slot_bytes <= 0 or slots < 2:
            raise ValueError(f"need slot_bytes > 0 and at least 2 slots, got {slot_bytes}, {slots}")
        self.slot_bytes = slot_bytes
        self.slots = slots
        self.stride = _slot_stride(slot_bytes)
        sweep_stale()
        self.name = f"{PREFIX}{_safe(camera)}-{os.getpid()}-{secrets.token_hex(4)}"
        self.path = SHM_DIR / self.name
        size = SEGMENT_HEADER + self.stride * slots
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError as e:
            raise ShmError(f"cannot create {self.path}: {e.strerror}") from None
        try:
            os.posix_fallocate(fd, 0, size)  # reserve now: a full tmpfs fails here, not later
            self._map = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        except OSError as e:
            os.close(fd)
            self.path.unlink(missing_ok=True)
            raise ShmError(
                f"cannot reserve {size / 2**20:.0f} MiB in {SHM_DIR} for {slots} frame slots: {e.strerror}"
            ) from None
        os.close(fd)
        self._buf = np.frombuffer(self._map, dtype=np.uint8)
        self._buf[: len(MAGIC)] = np.frombuffer(MAGIC, np.uint8)
        self._buf[8:32].view("<u8")[:] = (slot_bytes, slots, self.stride)
        self._next = 0

    def write(self, seq: int, payload: np.ndarray) -> ShmRef:
        """Copy one frame into the next slot; the reference to put in its message."""
        data = np.ascontiguousarray(payload).reshape(-1).view(np.uint8)
        if data.nbytes != self.slot_bytes:
            raise ValueError(
                f"frame of {data.nbytes} bytes in a ring of {self.slot_bytes}-byte slots"
            )
        slot = self._next
        self._next = (slot + 1) % self.slots
        hdr, off = _slot(self._buf, self.stride, slot)
        gen = int(hdr[0]) + 1 if int(hdr[0]) % 2 == 0 else int(hdr[0])
        hdr[0] = gen  # odd: being written
        _fence()
        self._buf[off : off + data.nbytes] = data
        hdr[1] = seq
        _fence()
        hdr[0] = gen + 1
        return ShmRef(self.name, slot, gen + 1)

    def close(self) -> None:
        if getattr(self, "_map", None) is None:
            return
        self._buf = np.empty(0, np.uint8)
        with contextlib.suppress(BufferError):  # a view still alive keeps the mapping
            self._map.close()
        self._map = None  # type: ignore[assignment]
        self.path.unlink(missing_ok=True)


class _Mapped:
    """One segment mapped read-only, its geometry read from its header and checked."""

    def __init__(self, name: str) -> None:
        try:
            fd = os.open(SHM_DIR / name, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError as e:
            raise ShmError(f"cannot open shared-memory segment {name!r}: {e.strerror}") from None
        try:
            size = os.fstat(fd).st_size
            self.map = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ) if size else None
        except OSError as e:
            raise ShmError(f"cannot map shared-memory segment {name!r}: {e.strerror}") from None
        finally:
            os.close(fd)
        self.buf = np.frombuffer(self.map if self.map is not None else b"", dtype=np.uint8)
        if size < SEGMENT_HEADER or self.buf[: len(MAGIC)].tobytes() != MAGIC:
            raise ShmError(f"shared-memory segment {name!r} is not a frame ring")
        slot_bytes, slots, stride = (int(x) for x in self.buf[8:32].view("<u8"))
        if stride != _slot_stride(slot_bytes) or SEGMENT_HEADER + slots * stride != size:
            raise ShmError(f"shared-memory segment {name!r} has an inconsistent layout")
        self.slot_bytes, self.slots, self.stride = slot_bytes, slots, stride


class ShmReader:
    """Reader side: maps segments read-only on first use and keeps the ``keep`` most recently
    used (a capture that restarts or changes resolution makes a new one; the old one's memory
    is freed when its last mapping goes)."""

    def __init__(self, keep: int = 2) -> None:
        self.keep = keep
        self._maps: OrderedDict[str, _Mapped] = OrderedDict()
        self._lock = threading.Lock()

    def _segment(self, name: str) -> _Mapped:
        if not NAME_RE.match(name):
            raise ShmError(f"shared-memory segment name {name[:80]!r} is not a promptcam one")
        with self._lock:
            seg = self._maps.get(name)
            if seg is None:
                seg = _Mapped(name)
                self._maps[name] = seg
                while len(self._maps) > self.keep:
                    self._maps.popitem(last=False)
            else:
                self._maps.move_to_end(name)
            return seg

    def view(self, ref: ShmRef, nbytes: int) -> memoryview:
        """A read-only view of the frame ``ref`` names, without copying. Raises ``ShmError`` for a
        reference that does not fit the ring, ``ShmOverrun`` if the slot holds another frame."""
        seg = self._segment(ref.name)
        if nbytes != seg.slot_bytes:
            raise ShmError(
                f"segment {ref.name!r} holds frames of {seg.slot_bytes} bytes, header says {nbytes}"
            )
        if not 0 <= ref.slot < seg.slots:
            raise ShmError(
                f"slot {ref.slot} lies outside segment {ref.name!r} of {seg.slots} slots"
            )
        hdr, off = _slot(seg.buf, seg.stride, ref.slot)
        if int(hdr[0]) != ref.gen:
            raise ShmOverrun(
                f"slot {ref.slot} of {ref.name} holds generation {int(hdr[0])}, not {ref.gen}"
            )
        _fence()
        return seg.buf[off : off + nbytes].data

    def intact(self, ref: ShmRef) -> bool:
        """True while the slot still holds the frame ``ref`` names: check after reading a view."""
        _fence()
        with self._lock:
            seg = self._maps.get(ref.name)
        if seg is None or not 0 <= ref.slot < seg.slots:
            return False
        return int(_slot(seg.buf, seg.stride, ref.slot)[0][0]) == ref.gen

    def close(self) -> None:
        with self._lock:
            self._maps.clear()
