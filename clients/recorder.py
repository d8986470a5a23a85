"""``promptcam record``: the annotated stream to MP4 and the tracks to JSONL, in rotating files.

Reads: ``annotated.<camera>`` and ``tracks.<camera>`` (one SUB socket, both topics). Writes
``<dir>/<camera>-<start time>.mp4`` (H.264 when PyAV's FFmpeg has an encoder, else MPEG-4, at
``record.fps``; fragmented, a fragment a second, so a file cut short still plays) and ``<dir>/<camera>-<start time>.jsonl`` (one tracks header per line, as
``promptcam subscribe`` prints). A new pair of files starts when the pair exceeds
``record.rotate_mb`` or the pair is older than ``record.rotate_s``. Every tracks message is
written; annotated frames are written as they come (the MP4's frame rate is nominal; a frame
the engine skipped is not in the file). Malformed messages are logged and counted, never
written. SIGINT/SIGTERM and ``--duration`` stop it cleanly: files are flushed and closed.
A full disk stops the files where they are, playable, with one line; recording resumes in new
files when space is back (``RotatingRecording``).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import logging
import shutil
import signal
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from types import FrameType
from typing import IO, TYPE_CHECKING

import zmq

from stream import bus as zbus
from stream.config import Config, RecordConfig
from stream.errors import PromptcamError
from stream.media import Mp4Writer, keep_complete_fragments
from stream.wire import AnnotatedMessage, TracksMessage, WireError

if TYPE_CHECKING:
    from clients.robots.mcap_out import RotatingMcap

log = logging.getLogger(__name__)


MIN_SIDE = 2  # H.264 (yuv420p) frames are at least 2x2
SPACE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)  # errors that free space can cure
READY_LINE = "promptcam record: recording"  # the launcher's readiness mark (clients/launcher.py)


class RecordError(PromptcamError):
    """The recording cannot start (e.g. its directory cannot be created); one line."""


@dataclass
class RecorderStats:
    frames: int = 0
    tracks: int = 0
    files: list[Path] = field(default_factory=list)
    rejected: dict[str, int] = field(default_factory=dict)
    write_errors: int = 0  # times writing failed (a full disk), each followed by new files
    dropped_frames: int = 0  # received while files could not be written
    dropped_tracks: int = 0


class RotatingRecording:
    """An MP4 + JSONL pair that starts new files by size or age.

    When a write fails (``OSError``: a full disk, a quota), the pair is closed where it stands:
    the MP4 is fragmented, so it is cut back to its last complete fragment and plays; the JSONL
    is cut back to its last whole line; a file left with nothing is removed. That is said in one
    line; messages are then dropped (and counted) until, checked every ``record.retry_s``, the
    filesystem has ``record.min_free_mb`` free again: a new pair starts, said in one line."""

    def __init__(self, directory: Path, camera: str, rec: RecordConfig) -> None:
        self.directory = directory
        self.camera = camera
        self.rec = rec
        self.stats = RecorderStats()
        self._mp4: Mp4Writer | None = None
        self._jsonl: IO[str] | None = None
        self._paths: tuple[Path, Path] | None = None
        self._opened_at = 0.0
        self._index = 0
        self._failed_at: float | None = None  # monotonic time of the last failed write
        self._next_check = 0.0

    def _open(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        base = self.directory / f"{self.camera}-{stamp}-{self._index:03d}"
        self._index += 1
        mp4, jsonl = base.with_suffix(".mp4"), base.with_suffix(".jsonl")
        self._paths = (mp4, jsonl)
        self.stats.files += [mp4, jsonl]
        self._mp4 = Mp4Writer(mp4, self.rec.fps, fragmented=True)
        self._jsonl = jsonl.open("w", encoding="utf-8", buffering=1)  # whole lines reach the file
        self._opened_at = time.monotonic()
        log.info("recording to %s.{mp4,jsonl}", base)

    def _maybe_rotate(self) -> None:
        if self._mp4 is None:
            self._open()
            return
        too_old = (
            self.rec.rotate_s is not None
            and time.monotonic() - self._opened_at >= self.rec.rotate_s
        )
        too_big = (
            self.rec.rotate_mb is not None and self.bytes_written >= self.rec.rotate_mb * 2**20
        )
        if too_old or too_big:
            self.close()
            self._open()

    @property
    def bytes_written(self) -> int:
        """Bytes in the current pair (the MP4 muxer writes in chunks, so this lags a little)."""
        mp4 = self._mp4.bytes_written if self._mp4 is not None else 0
        return mp4 + (self._jsonl.tell() if self._jsonl is not None else 0)

    def _can_write(self) -> bool:
        """False while writes fail (a full disk) and space has not come back yet; checks the
        free space at most every ``record.retry_s``."""
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
        log.warning(
            "recording resumes: %.1f MB free in %s after %.0f s; dropped %d frames and %d tracks "
            "messages meanwhile",
            free / 2**20,
            self.directory,
            now - self._failed_at,
            self.stats.dropped_frames,
            self.stats.dropped_tracks,
        )
        self._failed_at = None
        return True

    def write_frame(self, msg: AnnotatedMessage) -> None:
        image = msg.image()  # a bad JPEG is the sender's fault (WireError), not the disk's
        if not self._can_write():
            self.stats.dropped_frames += 1
            return
        try:
            self._maybe_rotate()
            assert self._mp4 is not None
            self._mp4.write(image)
        except OSError as e:
            self.stats.dropped_frames += 1
            self._write_failed(e)
            return
        self.stats.frames += 1

    def write_tracks(self, msg: TracksMessage) -> None:
        if not self._can_write():
            self.stats.dropped_tracks += 1
            return
        try:
            self._maybe_rotate()
            assert self._jsonl is not None
            self._jsonl.write(msg.to_json() + "\n")
        except OSError as e:
            self.stats.dropped_tracks += 1
            self._write_failed(e)
            return
        self.stats.tracks += 1

    def _write_failed(self, e: OSError) -> None:
        if self.stats.frames + self.stats.tracks == 0 and e.errno not in SPACE_ERRNOS:
            self._salvage()
            raise RecordError(f"cannot record to {self.directory}: {e.strerror or e}") from None
        self.stats.write_errors += 1
        kept = self._salvage()
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

    def _salvage(self) -> str:
        """Close the current pair after a failed write, keep what plays, say what was kept."""
        mp4, jsonl = self._mp4, self._jsonl
        self._mp4 = self._jsonl = None
        for closer in (mp4, jsonl):
            if closer is not None:
                with contextlib.suppress(OSError):  # the same error again, already reported
                    closer.close()
        if self._paths is None:
            return "nothing was written"
        mp4_path, jsonl_path = self._paths
        self._paths = None
        kept = []
        fragments = keep_complete_fragments(mp4_path) if mp4_path.exists() else 0
        lines = _keep_whole_lines(jsonl_path) if jsonl_path.exists() else 0
        for path, n, what in (
            (mp4_path, fragments, "fragments of video, playable"),
            (jsonl_path, lines, "whole lines"),
        ):
            if n:
                kept.append(f"{path.name} ({n} {what})")
            else:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                self.stats.files.remove(path)
        return f"kept {', '.join(kept)}" if kept else "the new files held nothing and were removed"

    def close(self) -> None:
        if self._mp4 is not None or self._jsonl is not None:
            try:
                if self._mp4 is not None:
                    self._mp4.close()
                if self._jsonl is not None:
                    self._jsonl.close()
            except OSError as e:
                self._write_failed(e)
                return
        self._mp4 = self._jsonl = None
        self._paths = None


def _keep_whole_lines(path: Path, chunk: int = 1 << 20) -> int:
    """Cut ``path`` after its last newline (a torn last line goes); returns the lines kept."""
    lines, end, pos = 0, 0, 0
    with path.open("r+b") as f:
        while block := f.read(chunk):
            n = block.count(b"\n")
            if n:
                lines += n
                end = pos + block.rfind(b"\n") + 1
            pos += len(block)
        if end < pos:
            f.truncate(end)
    return lines


class Recorder:
    """Subscribe and record until ``stop`` is set or ``duration`` seconds have passed.
    ``fmt``: ``mp4`` (MP4 + JSONL) or ``mcap`` (ROS 2 messages, ``clients.robots.mcap_out``;
    ``profile`` ``foxglove``: Foxglove's schemas, ``clients.robots.foxglove_mcap``)."""

    def __init__(
        self,
        cfg: Config,
        directory: Path | None = None,
        ctx: zmq.Context[zmq.Socket[bytes]] | None = None,
        fmt: str = "mp4",
        profile: str = "ros2",
    ) -> None:
        self.cfg = cfg
        self.camera = cfg.camera
        self.stop = threading.Event()
        self.recording: RotatingRecording | RotatingMcap
        where = directory or cfg.record.directory
        if fmt == "mcap":
            from clients.robots.mcap_out import RotatingMcap

            self.recording = RotatingMcap(where, cfg.camera, cfg.record, profile)
        else:
            self.recording = RotatingRecording(where, cfg.camera, cfg.record)
        self._ctx = ctx or zmq.Context.instance()
        self._max_payload = int(cfg.bus.max_payload_mb * 2**20)

    def _reject(self, reason: str, detail: str) -> None:
        rej = self.recording.stats.rejected
        rej[reason] = rej.get(reason, 0) + 1
        if sum(rej.values()) <= 10:
            log.warning("rejected message (%s): %s", reason, detail)

    def _check_size(self, msg: AnnotatedMessage) -> None:
        """``WireError`` (counted as ``too_small``) for a frame H.264 cannot hold: under
        ``MIN_SIDE`` pixels a side (odd sizes are cropped to even by the writer)."""
        if msg.width < MIN_SIDE or msg.height < MIN_SIDE:
            raise WireError(
                "too_small",
                f"frame {msg.seq} of {msg.width}x{msg.height} is under {MIN_SIDE} pixels a side: "
                "not recorded",
            )

    def run(self, duration: float | None = None) -> RecorderStats:
        deadline = None if duration is None else time.monotonic() + duration
        directory = self.recording.directory
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise RecordError(
                f"cannot create the recording directory {directory}: {e.strerror}"
            ) from None
        ann = zbus.connect(
            self._ctx,
            zmq.SUB,
            self.cfg.bus.annotated,
            self.cfg.bus,
            subscribe=[f"annotated.{self.camera}".encode()],
            rcvhwm=50,
            curve=True,
        )
        trk = zbus.connect(
            self._ctx,
            zmq.SUB,
            self.cfg.bus.tracks,
            self.cfg.bus,
            subscribe=[f"tracks.{self.camera}".encode()],
            rcvhwm=1000,
            curve=True,
        )
        poller = zmq.Poller()
        poller.register(ann, zmq.POLLIN)
        poller.register(trk, zmq.POLLIN)
        try:
            while not self.stop.is_set() and (deadline is None or time.monotonic() < deadline):
                for sock, _ in poller.poll(100):
                    parts = sock.recv_multipart(copy=True)
                    try:
                        if sock is ann:
                            msg_a = AnnotatedMessage.from_parts(parts, self._max_payload)
                            if msg_a.camera == self.camera:
                                if isinstance(self.recording, RotatingRecording):
                                    self._check_size(msg_a)  # an H.264 limit; MCAP keeps JPEGs
                                self.recording.write_frame(msg_a)
                        else:
                            msg_t = TracksMessage.from_parts(parts)
                            if msg_t.camera == self.camera:
                                self.recording.write_tracks(msg_t)
                    except WireError as e:
                        self._reject(e.reason, str(e))
        finally:
            ann.close(0)
            trk.close(0)
            self.recording.close()
        return self.recording.stats


def main(cfg: Config, args: argparse.Namespace) -> int:
    """``promptcam record [--dir DIR] [--duration S] [--format mp4|mcap] [--profile ros2|foxglove]``."""
    from setproctitle import setproctitle

    fmt = getattr(args, "format", None) or cfg.record.format
    if getattr(args, "profile", None) and fmt != "mcap":
        raise RecordError(f"--profile applies to --format mcap only, not --format {fmt}")
    setproctitle("promptcam: record")
    recorder = Recorder(
        cfg,
        Path(args.dir) if getattr(args, "dir", None) else None,
        fmt=fmt,
        profile=getattr(args, "profile", None) or cfg.record.profile,
    )

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("signal %d: stopping the recording", signum)
        recorder.stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    print(f"{READY_LINE} camera {cfg.camera} to {recorder.recording.directory} ({fmt})", flush=True)
    stats = recorder.run(getattr(args, "duration", None))
    files = ", ".join(str(p) for p in stats.files) or "none"
    dropped = (
        f"; {stats.write_errors} write failures (disk full?), dropped {stats.dropped_frames} "
        f"frames and {stats.dropped_tracks} tracks messages"
        if stats.write_errors
        else ""
    )
    if stats.rejected:
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(stats.rejected.items()))
        dropped += f"; rejected {sum(stats.rejected.values())} messages ({reasons})"
    print(
        f"promptcam record: {stats.frames} frames, {stats.tracks} tracks messages{dropped}; "
        f"files: {files}",
        flush=True,
    )
    return 0
