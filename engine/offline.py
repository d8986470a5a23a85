"""The offline job (``promptcam track VIDEO``): the same engine, in one process, over every
frame of a file; no ZeroMQ, no frame dropped. Grounding runs in line on its scheduled frames,
so a run is reproducible. Writes tracks as JSONL (one tracks header per frame) and/or the
annotated video."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from engine.outputs import render_result, to_tracks_message
from engine.pipeline import FrameInput
from engine.render import Renderer
from stream.config import Config
from stream.errors import EndOfStreamError, PromptError, SourceError
from stream.media import Mp4Writer
from stream.sources import open_source

log = logging.getLogger(__name__)
Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class OfflineResult:
    frames: int
    objects: int  # distinct object ids seen
    fps: float  # of the input


def track_video(
    cfg: Config,
    video: Path,
    *,
    boxes: Sequence[tuple[Box, int]] = (),
    out_mp4: Path | None = None,
    tracks_jsonl: Path | None = None,
    progress: Callable[[int, int | None], None] | None = None,
    max_frames: int | None = None,
) -> OfflineResult:
    """Track every frame of ``video``; ``boxes`` are manual (box, frame) prompts."""
    from engine.build import build_engine

    if not cfg.engine.prompt.strip() and not boxes:
        raise PromptError("nothing to track: give --prompt TEXT and/or --box X1,Y1,X2,Y2[@FRAME]")
    src_cfg = cfg.source.model_copy(update={"uri": str(video), "realtime": False, "loop": False})
    source = open_source(str(video), src_cfg)
    fps = source.fps or 30.0
    total = getattr(source, "frame_count", None)
    if max_frames is not None:
        total = min(total, max_frames) if total else max_frames
    by_frame: dict[int, list[Box]] = defaultdict(list)
    for box, frame in boxes:
        by_frame[frame].append(box)
    engine = build_engine(cfg, background_grounding=False)
    renderer = Renderer(jpeg_quality=cfg.engine.jpeg_quality)
    writer = Mp4Writer(out_mp4, fps) if out_mp4 else None
    jsonl = tracks_jsonl.open("w") if tracks_jsonl else None
    seen: set[int] = set()
    seq = 0
    try:
        while max_frames is None or seq < max_frames:
            try:
                image = source.read()
            except EndOfStreamError:
                break
            manual = [(b, "object") for b in by_frame.pop(seq, [])]
            result = engine.process(FrameInput(seq, int(seq * 1e9 / fps), image), manual)
            seen.update(o.id for o in result.objects)
            if jsonl is not None:
                jsonl.write(
                    to_tracks_message(
                        cfg.camera, result, t_publish_ns=result.t_capture_ns
                    ).to_json()
                    + "\n"
                )
            if writer is not None:
                writer.write(render_result(renderer, image, result))
            seq += 1
            if progress is not None:
                progress(seq, total)
    finally:
        source.close()
        engine.close()
        if writer is not None:
            writer.close()
        if jsonl is not None:
            jsonl.close()
    if seq == 0:
        raise SourceError(f"{video}: no frame could be decoded")
    if by_frame:
        late = ", ".join(f"@{f}" for f in sorted(by_frame))
        raise PromptError(
            f"--box frames {late} are beyond the video's {seq} frames (outputs were written)"
        )
    return OfflineResult(seq, len(seen), fps)


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


def main(cfg: Config, args: argparse.Namespace) -> int:
    from clients.cli import parse_box

    video = Path(args.video)
    if not video.exists():
        raise SourceError(f"{video}: no such file or directory")
    boxes = [parse_box(b) for b in args.box]
    if not args.out and not args.tracks:
        raise PromptError("nothing to write: give --out OUT.mp4 and/or --tracks OUT.jsonl")
    if boxes and not args.prompt and not any(s.startswith("engine.prompt=") for s in args.set):
        cfg = cfg.model_copy(update={"engine": cfg.engine.model_copy(update={"prompt": ""})})
    res = track_video(
        cfg,
        video,
        boxes=boxes,
        out_mp4=Path(args.out) if args.out else None,
        tracks_jsonl=Path(args.tracks) if args.tracks else None,
        progress=_progress_bar(not args.no_progress and sys.stderr.isatty()),
        max_frames=args.max_frames,
    )
    print(
        json.dumps(
            {"frames": res.frames, "objects": res.objects, "out": args.out, "tracks": args.tracks}
        )
    )
    return 0
