"""MCAP files of the ROS 2 mapping (``clients.robots.ros2``), written with ``mcap-ros2-support``.

``McapFile`` is one file (profile ``ros2``, CDR messages, ``ros2msg`` schemas, zstd chunks):
each tracks message becomes a ``Detection2DArray`` on ``/promptcam/<camera>/detections`` and a
label ``Image`` on ``/promptcam/<camera>/masks``; each annotated JPEG a ``CompressedImage`` on
``/promptcam/<camera>/image``. Log time = the capture time (so ``ros2 bag play`` replays at the
camera's pace), publish time = the engine's publish time where the message has one.
``close`` writes the summary and footer: a file is complete only after it.
``RotatingMcap`` is the recorder's form: new files by size or age, like the MP4 recording.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import struct
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, TYPE_CHECKING

from mcap.records import Schema
from mcap_ros2.writer import Writer

from clients.recorder import SPACE_ERRNOS, RecordError, RecorderStats
from clients.robots import ros2
from clients.robots.mcap_handle import McapHandle
from stream.config import RecordConfig
from stream.wire import AnnotatedMessage, TracksMessage

if TYPE_CHECKING:
    from clients.robots.foxglove_mcap import FoxgloveMcapFile

log = logging.getLogger(__name__)

MAGIC = b"\x89MCAP0\r\n"
CHUNK_OPCODE = 0x06


def keep_complete_records(path: Path) -> int:
    """Cut an MCAP file that lost its end (a failed write) after its last complete record, so
    that a streaming reader reads every message in it up to there; returns the complete chunks
    kept (0: nothing but the header, the file is worth removing)."""
    size = path.stat().st_size
    with path.open("r+b") as f:
        if f.read(len(MAGIC)) != MAGIC:
            f.truncate(0)
            return 0
        pos, chunks = len(MAGIC), 0
        while pos + 9 <= size:  # a record: opcode (1 byte), length (uint64 LE), content
            f.seek(pos)
            head = f.read(9)
            end = pos + 9 + struct.unpack_from("<Q", head, 1)[0]
            if end > size:
                break
            chunks += head[0] == CHUNK_OPCODE
            pos = end
        f.truncate(pos)
    return chunks


class McapFile(McapHandle):
    """One MCAP file with the three ROS 2 topics of every camera written to it."""

    _writer: Writer

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: IO[bytes] = path.open("wb")
        self._writer = Writer(self._file)
        self._schemas: dict[str, Schema] = {
            name: self._writer.register_msgdef(name, ros2.schema_text(name))
            for name in (ros2.DETECTIONS_TYPE, ros2.IMAGE_TYPE, ros2.COMPRESSED_TYPE)
        }
        self._closed = False

    def _write(
        self,
        topic: str,
        kind: str,
        message: ros2.Detection2DArrayMsg | ros2.ImageMsg | ros2.CompressedImageMsg,
        log_ns: int,
        pub_ns: int,
    ) -> None:
        self._writer.write_message(
            topic, self._schemas[kind], message, log_time=log_ns, publish_time=pub_ns
        )

    def write_tracks(self, msg: TracksMessage) -> None:
        """The message's ``Detection2DArray`` and label ``Image``."""
        h = msg.header
        det, masks = ros2.detections(msg), ros2.masks(msg)  # both mapped before either is written
        for kind, topic_kind, m in (
            (ros2.DETECTIONS_TYPE, "detections", det),
            (ros2.IMAGE_TYPE, "masks", masks),
        ):
            self._write(ros2.topic(h.camera, topic_kind), kind, m, h.t_capture_ns, h.t_publish_ns)

    def write_jpeg(self, camera: str, t_capture_ns: int, jpeg: bytes | memoryview) -> None:
        """An annotated (or raw) JPEG frame as a ``CompressedImage``."""
        m = ros2.compressed_image(camera, t_capture_ns, jpeg)
        self._write(
            ros2.topic(camera, "image"), ros2.COMPRESSED_TYPE, m, t_capture_ns, t_capture_ns
        )


class RotatingMcap:
    """``promptcam record --format mcap``: MCAP files ``<camera>-<start time>-NNN.mcap`` that
    start anew after ``record.rotate_mb`` or ``record.rotate_s``. A failed write (a full disk)
    drops messages, counted, until ``record.min_free_mb`` are free again (checked every
    ``record.retry_s``); the file that failed is cut after its last complete chunk (no footer:
    a streaming reader reads it to there), or removed when it holds none; said in one line."""

    def __init__(
        self, directory: Path, camera: str, rec: RecordConfig, profile: str = "ros2"
    ) -> None:
        self.directory = directory
        self.camera = camera
        self.rec = rec
        self.profile = profile  # ros2 (McapFile) or foxglove (foxglove_mcap.FoxgloveMcapFile)
        self.stats = RecorderStats()
        self._file: McapFile | FoxgloveMcapFile | None = None
        self._opened_at = 0.0
        self._index = 0
        self._failed_at: float | None = None
        self._next_check = 0.0

    def _open(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        path = self.directory / f"{self.camera}-{stamp}-{self._index:03d}.mcap"
        self._index += 1
        if self.profile == "foxglove":
            from clients.robots.foxglove_mcap import FoxgloveMcapFile

            self._file = FoxgloveMcapFile(path)
        else:
            self._file = McapFile(path)
        self.stats.files.append(path)
        self._opened_at = time.monotonic()
        log.info("recording to %s", path)

    def _ready(self) -> McapFile | FoxgloveMcapFile | None:
        """The file to write to, a new one when due; None when closing the old one failed."""
        f = self._file
        if f is not None:
            too_old = (
                self.rec.rotate_s is not None
                and time.monotonic() - self._opened_at >= self.rec.rotate_s
            )
            too_big = (
                self.rec.rotate_mb is not None and f.bytes_written >= self.rec.rotate_mb * 2**20
            )
            if not (too_old or too_big):
                return f
            self.close()
            if self._failed_at is not None:
                return None
        self._open()
        assert self._file is not None
        return self._file

    def _can_write(self) -> bool:
        if self._failed_at is None:
            return True
        now = time.monotonic()
        if now < self._next_check:
            return False
        self._next_check = now + self.rec.retry_s
        try:
            free = shutil.disk_usage(self.directory).free
        except OSError:
            return False
        if free < self.rec.min_free_mb * 2**20:
            return False
        log.warning("recording resumes: %.1f MB free in %s", free / 2**20, self.directory)
        self._failed_at = None
        return True

    def write_frame(self, msg: AnnotatedMessage) -> None:
        if not self._can_write():
            self.stats.dropped_frames += 1
            return
        try:
            f = self._ready()
            if f is None:
                self.stats.dropped_frames += 1
                return
            f.write_jpeg(msg.camera, msg.t_capture_ns, msg.jpeg)
        except OSError as e:
            self.stats.dropped_frames += 1
            self._write_failed(e)
            return
        self.stats.frames += 1

    def write_tracks(self, msg: TracksMessage) -> None:
        """Raises ``ros2.Ros2MappingError`` (``FoxgloveMappingError`` with profile foxglove;
        nothing written) for a message with no ROS 2 (Foxglove) form."""
        if not self._can_write():
            self.stats.dropped_tracks += 1
            return
        try:
            f = self._ready()
            if f is None:
                self.stats.dropped_tracks += 1
                return
            f.write_tracks(msg)
        except OSError as e:
            self.stats.dropped_tracks += 1
            self._write_failed(e)
            return
        self.stats.tracks += 1

    def _salvage(self) -> str:
        """Close the current file after a failed write, keep what reads, say what was kept."""
        f, self._file = self._file, None
        if f is None:
            return "nothing was written"
        f.abandon()
        try:
            chunks = keep_complete_records(f.path)
        except OSError:
            chunks = 0
        if chunks:
            return f"kept {f.path.name} ({chunks} complete chunks, no footer)"
        with contextlib.suppress(OSError):
            f.path.unlink()
        self.stats.files.remove(f.path)
        return f"removed {f.path.name} (no complete chunk)"

    def _write_failed(self, e: OSError) -> None:
        kept = self._salvage()
        if self.stats.frames + self.stats.tracks == 0 and e.errno not in SPACE_ERRNOS:
            raise RecordError(f"cannot record to {self.directory}: {e.strerror or e}") from None
        self.stats.write_errors += 1
        self._failed_at = time.monotonic()
        self._next_check = self._failed_at + self.rec.retry_s
        log.error(
            "recording stopped: cannot write to %s (%s); %s; dropping messages until %g MB are "
            "free (checked every %g s)",
            self.directory,
            e.strerror or e,
            kept,
            self.rec.min_free_mb,
            self.rec.retry_s,
        )

    def close(self) -> None:
        """Finish the current file (summary and footer); a failure salvages it as a write."""
        f = self._file
        if f is None:
            return
        try:
            f.close()
        except OSError as e:
            self._write_failed(e)
            return
        self._file = None
