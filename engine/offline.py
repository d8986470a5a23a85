"""The offline job (``promptcam track VIDEO``): the same engine, in one process, over every
frame of a file; no ZeroMQ, no frame dropped. Grounding runs in line on its scheduled frames,
so a run is reproducible. Writes tracks as JSONL (one tracks header per frame) and/or the
annotated video.

Manual boxes are fitted to the frame before the models load: a box that extends beyond it is
clipped (with a warning), one wholly outside it is an error. SIGINT and SIGTERM stop the job
after the current frame: the outputs are finalised (a playable MP4, whole JSONL lines) and
the command says where they are; a second signal stops at once, still closing the outputs.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO, Any

import numpy as np

from engine.core.types import Box, PreparedFrame
from engine.offline_stages import FramePrefetch, OutputWriter, StageClock, TracksSink
from engine.pipeline import FrameInput, TrackingEngine
from engine.render import Renderer
from stream.boxes import clip_box, parse_box
from stream.config import Config
from stream.errors import EndOfStreamError, PromptError, RequestError, SourceError
from stream.media import Mp4Writer
from stream.preflight import OutputError
from stream.sources import FrameSource, open_source

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OfflineResult:
    frames: int
    objects: int  # distinct object ids seen
    fps: float  # of the input
    stopped: bool = False  # a stop request ended the job before the end of the video
    stage_ms: dict[str, float] = field(default_factory=dict)  # mean ms per frame of each stage


def fit_boxes(boxes: Sequence[tuple[Box, int]], width: int, height: int) -> dict[int, list[Box]]:
    """Manual (box, frame) prompts by frame, each fitted to the frame (``stream.boxes``)."""
    by_frame: dict[int, list[Box]] = defaultdict(list)
    for box, frame in boxes:
        fitted = clip_box(box, width, height)
        if fitted.clipped:
            log.warning(
                "--box %s@%d extends beyond the %dx%d frame: clipped to %s",
                ",".join(f"{v:g}" for v in box),
                frame,
                width,
                height,
                ",".join(f"{v:g}" for v in fitted.box),
            )
        by_frame[frame].append(fitted.box)
    return by_frame


# Smallest frame side a job tracks. Below it there is nothing for the models to find, and
# frames 1 or 3 px high are read as channels-first by the detectors' image processors, 1 px
# wide ones cannot be H.264-encoded: refused with one line instead of failing mid-job.
MIN_FRAME_SIDE = 16


def _first_frame(source: FrameSource, video: Path) -> np.ndarray:
    try:
        image = source.read()
    except EndOfStreamError:
        raise SourceError(f"{video}: no frame could be decoded") from None
    h, w = image.shape[:2]
    if min(h, w) < MIN_FRAME_SIDE:
        raise SourceError(
            f"{video}: frames are {w}x{h} pixels; a job needs at least "
            f"{MIN_FRAME_SIDE}x{MIN_FRAME_SIDE}"
        )
    return image


def _open_outputs(
    out_mp4: Path | None, tracks_jsonl: Path | None, fps: float
) -> tuple[Mp4Writer | None, IO[str] | None]:
    """The video writer and the tracks file; ``OutputError`` (one line) when one cannot be
    created (``promptcam track`` checked them before loading, but a directory can go since)."""
    writer = Mp4Writer(out_mp4, fps) if out_mp4 else None
    try:
        jsonl = tracks_jsonl.open("w") if tracks_jsonl else None
    except OSError as e:
        raise OutputError(f"cannot write {tracks_jsonl}: {e.strerror or e}") from None
    return writer, jsonl


def _close_outputs(writer: Mp4Writer | None, jsonl: IO[str] | None) -> None:
    """Close both outputs; a failure to (a full disk flushing the last bytes) is one line."""
    errors: list[str] = []
    for f in (writer, jsonl):
        if f is None:
            continue
        try:
            f.close()
        except OSError as e:
            errors.append(str(e.strerror or e))
    if errors:
        raise OutputError(f"cannot finish writing the outputs: {errors[0]}")


def track_video(
    cfg: Config,
    video: Path,
    *,
    boxes: Sequence[tuple[Box, int]] = (),
    out_mp4: Path | None = None,
    tracks_jsonl: Path | None = None,
    mcap: Path | None = None,
    mcap_profile: str = "ros2",
    progress: Callable[[int, int | None], None] | None = None,
    max_frames: int | None = None,
    stop: threading.Event | None = None,
) -> OfflineResult:
    """Track every frame of ``video``; ``boxes`` are manual (box, frame) prompts. Setting
    ``stop`` ends the job after the current frame, outputs finalised (``stopped`` in the result).
    ``mcap``: also the ROS 2 messages of every frame (``clients.robots.mcap_out``), or with
    ``mcap_profile`` ``foxglove`` the Foxglove ones (``clients.robots.foxglove_mcap``)."""
    if not cfg.engine.prompt.strip() and not boxes:
        raise PromptError("nothing to track: give --prompt TEXT and/or --box X1,Y1,X2,Y2[@FRAME]")
    if max_frames is not None and max_frames < 1:
        raise RequestError(f"--max-frames must be at least 1, got {max_frames}")
    source, first, by_frame, fps, total, engine = _open_job(cfg, video, boxes, max_frames)
    renderer = Renderer(jpeg_quality=cfg.engine.jpeg_quality)
    try:
        writer, jsonl = _open_outputs(out_mp4, tracks_jsonl, fps)
        sink = _open_mcap(mcap, mcap_profile, writer, jsonl)
    except BaseException:
        source.close()
        engine.close()
        raise
    clock = StageClock()
    frames = FramePrefetch(source, clock, engine.prepare)
    outputs = OutputWriter(
        cfg.camera, renderer, writer, jsonl, clock, sink, cfg.engine.jpeg_quality
    )
    run = _FrameRun(image=first)
    try:
        while run.image is not None and (max_frames is None or run.seq < max_frames):
            if stop is not None and stop.is_set():
                break
            _track_one(run, engine, by_frame, fps, clock, outputs)
            if progress is not None:
                progress(run.seq, total)
            run.image, run.prepared = frames.next() or (None, None)
    finally:
        frames.close()
        source.close()
        engine.close()
        _finish_outputs(outputs, sink, mcap, writer, jsonl)
    stopped = run.image is not None and (max_frames is None or run.seq < max_frames)
    if by_frame and not stopped:
        late = ", ".join(f"@{f}" for f in sorted(by_frame))
        raise RequestError(
            f"--box frames {late} are beyond the video's {run.seq} frames (outputs were written)"
        )
    return OfflineResult(run.seq, len(run.seen), fps, stopped, clock.means())


def _open_job(
    cfg: Config, video: Path, boxes: Sequence[tuple[Box, int]], max_frames: int | None
) -> tuple[FrameSource, np.ndarray, dict[int, list[Box]], float, int | None, TrackingEngine]:
    """The job's source (its first frame read), manual boxes by frame fitted to it, frames per
    second, the frame count if known, and the engine; the source closed if anything fails."""
    from engine.build import build_engine

    src_cfg = cfg.source.model_copy(update={"uri": str(video), "realtime": False, "loop": False})
    source = open_source(str(video), src_cfg)
    try:
        first = _first_frame(source, video)
        by_frame = fit_boxes(boxes, first.shape[1], first.shape[0])
        fps = source.fps or 30.0
        total: int | None = getattr(source, "frame_count", None)
        if max_frames is not None:
            total = min(total, max_frames) if total else max_frames
        engine = build_engine(cfg, background_grounding=False)
    except BaseException:
        source.close()
        raise
    return source, first, by_frame, fps, total, engine


@dataclass
class _FrameRun:
    """Where an offline job is: the next frame (prepared ahead, except the first, which the
    engine prepares itself), its sequence number, the track IDs seen so far."""

    image: np.ndarray | None
    prepared: PreparedFrame | None = None
    seq: int = 0
    seen: set[int] = field(default_factory=set)


def _track_one(
    run: _FrameRun,
    engine: TrackingEngine,
    by_frame: dict[int, list[Box]],
    fps: float,
    clock: StageClock,
    outputs: OutputWriter,
) -> None:
    """Track ``run``'s frame (its manual boxes prompted on it) and hand it to the outputs."""
    assert run.image is not None
    manual = [(b, "object") for b in by_frame.pop(run.seq, [])]
    frame = FrameInput(run.seq, int(run.seq * 1e9 / fps), run.image, run.prepared)
    result = engine.process(frame, manual)
    clock.add_all(result.timings_ms)
    clock.frames += 1
    run.seen.update(o.id for o in result.objects)
    try:
        outputs.put(run.image, result)  # written on its own thread while the next frame runs
    except OSError as e:  # a full disk: one line, the outputs closed by the caller
        raise OutputError(f"cannot write the outputs: {e.strerror or e}") from None
    run.seq += 1


def _open_mcap(
    mcap: Path | None, profile: str, writer: Mp4Writer | None, jsonl: IO[str] | None
) -> TracksSink | None:
    """The MCAP file of ``profile`` at ``mcap`` (None without one); on failure the outputs
    opened already are closed and an ``OutputError`` says why in one line."""
    if mcap is None:
        return None
    from clients.robots.foxglove_mcap import FoxgloveMcapFile
    from clients.robots.mcap_out import McapFile

    try:
        return FoxgloveMcapFile(mcap) if profile == "foxglove" else McapFile(mcap)
    except OSError as e:
        _close_outputs(writer, jsonl)
        raise OutputError(f"cannot write {mcap}: {e.strerror or e}") from None


def _finish_outputs(
    outputs: OutputWriter,
    sink: TracksSink | None,
    mcap: Path | None,
    writer: Mp4Writer | None,
    jsonl: IO[str] | None,
) -> None:
    """Every processed frame's outputs written, in order, the MCAP summary and footer written
    (the file complete), every file closed, whatever fails first (one-line ``OutputError``)."""
    try:
        outputs.close()
    except OSError as e:
        raise OutputError(f"cannot write the outputs: {e.strerror or e}") from None
    finally:
        try:
            if sink is not None:
                sink.close()
        except OSError as e:
            raise OutputError(f"cannot finish writing {mcap}: {e.strerror or e}") from None
        finally:
            _close_outputs(writer, jsonl)


def _progress_bar(enabled: bool) -> Callable[[int, int | None], None] | None:
    if not enabled:
        return None
    from tqdm import tqdm

    bar = tqdm(unit="frame", file=sys.stderr, dynamic_ncols=True)

    def update(done: int, total: int | None) -> None:
        if total and bar.total != total:
            bar.total = total
        bar.update(done - bar.n)

    return update


class _StopOnSignal:
    """SIGINT/SIGTERM set ``event`` (the job stops after its frame); a second one raises
    ``KeyboardInterrupt`` at once. Restores the previous handlers on exit."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.event = threading.Event()
        self.signum: int | None = None
        self._old: dict[int, Any] = {}

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        if self.event.is_set():
            raise KeyboardInterrupt
        self.signum = signum
        self.event.set()
        log.info("%s: stopping after the current frame", signal.Signals(signum).name)

    def __enter__(self) -> _StopOnSignal:
        self._old = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc: object) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)

    @property
    def name(self) -> str:
        return signal.Signals(self.signum or signal.SIGINT).name


def _partial_outputs(args: argparse.Namespace) -> str:
    paths = [Path(p) for p in (args.out, args.tracks, getattr(args, "mcap", None)) if p]
    found = [str(p.resolve()) for p in paths if p.exists()]
    return ", ".join(found) if found else "none (no frame was processed)"


def main(cfg: Config, args: argparse.Namespace) -> int:
    video = Path(args.video)
    if not video.exists():
        raise SourceError(f"{video}: no such file or directory")
    boxes = [parse_box(b) for b in args.box]
    mcap = getattr(args, "mcap", None)
    if not args.out and not args.tracks and not mcap:
        raise RequestError(
            "nothing to write: give --out OUT.mp4, --tracks OUT.jsonl and/or --mcap OUT.mcap"
        )
    profile = getattr(args, "profile", None)
    if profile and not mcap:
        raise RequestError("--profile applies to --mcap OUT.mcap only")
    if boxes and not args.prompt and not any(s.startswith("engine.prompt=") for s in args.set):
        cfg = cfg.model_copy(update={"engine": cfg.engine.model_copy(update={"prompt": ""})})
    with _StopOnSignal() as stop:
        try:
            res = track_video(
                cfg,
                video,
                boxes=boxes,
                out_mp4=Path(args.out) if args.out else None,
                tracks_jsonl=Path(args.tracks) if args.tracks else None,
                mcap=Path(mcap) if mcap else None,
                mcap_profile=profile or "ros2",
                progress=_progress_bar(not args.no_progress and sys.stderr.isatty()),
                max_frames=args.max_frames,
                stop=stop.event,
            )
        except KeyboardInterrupt:
            print(
                f"promptcam track: stopped at once by a second {stop.name}; partial outputs: "
                f"{_partial_outputs(args)}",
                file=sys.stderr,
                flush=True,
            )
            return 128 + (stop.signum or signal.SIGINT)
    summary: dict[str, object] = {
        "frames": res.frames,
        "objects": res.objects,
        "out": args.out,
        "tracks": args.tracks,
        "mcap": mcap,
        "stage_ms": res.stage_ms,
    }
    if res.stopped:
        summary["stopped"] = stop.name
    print(json.dumps(summary), flush=True)
    if res.stopped:
        print(
            f"promptcam track: stopped by {stop.name} after {res.frames} frames; partial "
            f"outputs (finalised): {_partial_outputs(args)}",
            file=sys.stderr,
            flush=True,
        )
        return 128 + (stop.signum or signal.SIGINT)
    return 0
