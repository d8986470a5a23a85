"""``promptcam record``: the annotated stream to MP4 and the tracks to JSONL, in rotating files.

Reads: ``annotated.<camera>`` and ``tracks.<camera>`` (one SUB socket, both topics). Writes
``<dir>/<camera>-<start time>.mp4`` (H.264 when PyAV's FFmpeg has an encoder, else MPEG-4, at
``record.fps``) and ``<dir>/<camera>-<start time>.jsonl`` (one tracks header per line, as
``promptcam subscribe`` prints). A new pair of files starts when the pair exceeds
``record.rotate_mb`` or the pair is older than ``record.rotate_s``. Every tracks message is
written; annotated frames are written as they come (the MP4's frame rate is nominal; a frame
the engine skipped is not in the file). Malformed messages are logged and counted, never
written. SIGINT/SIGTERM and ``--duration`` stop it cleanly: files are flushed and closed.
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from types import FrameType
from typing import IO, Any

import zmq

from stream import bus as zbus
from stream.config import Config, RecordConfig
from stream.media import Mp4Writer
from stream.wire import AnnotatedMessage, TracksMessage, WireError

log = logging.getLogger(__name__)


@dataclass
class RecorderStats:
    frames: int = 0
    tracks: int = 0
    files: list[Path] = field(default_factory=list)
    rejected: dict[str, int] = field(default_factory=dict)


class RotatingRecording:
    """An MP4 + JSONL pair that starts new files by size or age."""

    def __init__(self, directory: Path, camera: str, rec: RecordConfig) -> None:
        self.directory = directory
        self.camera = camera
        self.rec = rec
        self.stats = RecorderStats()
        self._mp4: Mp4Writer | None = None
        self._jsonl: IO[str] | None = None
        self._opened_at = 0.0
        self._index = 0

    def _open(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        base = self.directory / f"{self.camera}-{stamp}-{self._index:03d}"
        self._index += 1
        self._mp4 = Mp4Writer(base.with_suffix(".mp4"), self.rec.fps)
        self._jsonl = base.with_suffix(".jsonl").open("w", encoding="utf-8")
        self._opened_at = time.monotonic()
        self.stats.files += [base.with_suffix(".mp4"), base.with_suffix(".jsonl")]
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

    def write_frame(self, msg: AnnotatedMessage) -> None:
        self._maybe_rotate()
        assert self._mp4 is not None
        self._mp4.write(msg.image())
        self.stats.frames += 1

    def write_tracks(self, msg: TracksMessage) -> None:
        self._maybe_rotate()
        assert self._jsonl is not None
        self._jsonl.write(msg.to_json() + "\n")
        self.stats.tracks += 1

    def close(self) -> None:
        if self._mp4 is not None:
            self._mp4.close()
            self._mp4 = None
        if self._jsonl is not None:
            self._jsonl.close()
            self._jsonl = None


class Recorder:
    """Subscribe and record until ``stop`` is set or ``duration`` seconds have passed."""

    def __init__(
        self, cfg: Config, directory: Path | None = None, ctx: zmq.Context[Any] | None = None
    ) -> None:
        self.cfg = cfg
        self.camera = cfg.camera
        self.stop = threading.Event()
        self.recording = RotatingRecording(
            directory or cfg.record.directory, cfg.camera, cfg.record
        )
        self._ctx = ctx or zmq.Context.instance()
        self._max_payload = int(cfg.bus.max_payload_mb * 2**20)

    def _reject(self, reason: str, detail: str) -> None:
        rej = self.recording.stats.rejected
        rej[reason] = rej.get(reason, 0) + 1
        if sum(rej.values()) <= 10:
            log.warning("rejected message (%s): %s", reason, detail)

    def run(self, duration: float | None = None) -> RecorderStats:
        deadline = None if duration is None else time.monotonic() + duration
        ann = zbus.connect(
            self._ctx,
            zmq.SUB,
            self.cfg.bus.annotated,
            self.cfg.bus,
            subscribe=[f"annotated.{self.camera}".encode()],
            rcvhwm=50,
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
    """``promptcam record [--dir DIR] [--duration S]``."""
    from setproctitle import setproctitle

    setproctitle("promptcam: record")
    recorder = Recorder(cfg, Path(args.dir) if getattr(args, "dir", None) else None)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("signal %d: stopping the recording", signum)
        recorder.stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    stats = recorder.run(getattr(args, "duration", None))
    files = ", ".join(str(p) for p in stats.files) or "none"
    print(
        f"promptcam record: {stats.frames} frames, {stats.tracks} tracks messages; files: {files}",
        flush=True,
    )
    return 0
