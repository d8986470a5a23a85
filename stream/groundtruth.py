"""Ground truth of demo scenes as tracks JSONL, and ``promptcam scene`` (a scene to files).

The ground truth of a frame is a tracks message (CONTRACT.md schema) whose objects are the
visible scene objects: ``id`` the scene object's id (kept when it leaves and comes back),
``label`` its description (``"red ball"``), ``score`` 1, ``box`` the tight box of its visible
pixels, ``mask`` those pixels (COCO RLE), ``age`` frames since it was first visible, ``state``
``new`` on that frame, else ``tracked``. ``promptcam eval PRED GT`` reads it.

``promptcam scene --out DIR_OR.mp4 --gt GT.jsonl``: the frames as PNG files in a directory
(lossless: the masks stay exact for the pixels ``promptcam track DIR`` reads) or as an MP4.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import IO

import cv2

from stream.config import Config
from stream.demo import DemoScene, SceneFrame
from stream.errors import SourceError
from stream.wire import TrackedObject, TracksMessage, encode_mask

log = logging.getLogger(__name__)


class GroundTruthWriter:
    """Writes one ground-truth tracks line per frame, keeping each object's first frame."""

    def __init__(self, out: IO[str], camera: str = "cam0", prompt: str = "") -> None:
        self._out = out
        self._camera = camera
        self._prompt = prompt
        self._first: dict[int, int] = {}

    def message(self, frame: SceneFrame, seq: int | None = None) -> TracksMessage:
        seq = frame.index if seq is None else seq
        h, w = frame.ids.shape
        objects = []
        for g in frame.truth:
            first = self._first.setdefault(g.id, seq)
            objects.append(
                TrackedObject.model_construct(
                    id=g.id,
                    label=g.description,
                    score=1.0,
                    confidence=1.0,
                    box=list(g.box),
                    mask=encode_mask(frame.mask(g.id)),
                    age=seq - first,
                    state="new" if seq == first else "tracked",
                )
            )
        return TracksMessage.build(self._camera, seq, 0, w, h, self._prompt, objects, 0)

    def write(self, frame: SceneFrame, seq: int | None = None) -> None:
        self._out.write(self.message(frame, seq).to_json() + "\n")


def export_scene(
    scene: DemoScene, frames: int, out: Path, gt: Path, start: int = 0, camera: str = "cam0"
) -> int:
    """Write frames ``start .. start+frames-1`` of ``scene`` to ``out`` (a directory of PNGs, or
    an ``.mp4``) and their ground truth to ``gt`` (sequence numbers from 0); returns frames."""
    from stream.media import Mp4Writer

    video = out.suffix.lower() in (".mp4", ".mkv", ".mov")
    writer = Mp4Writer(out, scene.fps, crf=12) if video else None
    if not video:
        out.mkdir(parents=True, exist_ok=True)
    with gt.open("w") as f:
        truth = GroundTruthWriter(f, camera)
        try:
            for seq in range(frames):
                frame = scene.render_frame(start + seq)
                if writer is not None:
                    writer.write(frame.image)
                elif not cv2.imwrite(str(out / f"{seq:06d}.png"), frame.image):
                    raise SourceError(f"cannot write {out / f'{seq:06d}.png'}")
                truth.write(frame, seq)
        finally:
            if writer is not None:
                writer.close()
    return frames


def main(cfg: Config, args: argparse.Namespace) -> int:
    if args.frames < 1:
        raise SourceError(f"--frames must be >= 1, got {args.frames}")
    if args.start < 0:
        raise SourceError(f"--start must be >= 0, got {args.start}")
    s = cfg.source
    seed = s.seed if args.seed is None else args.seed
    if seed < 0:
        raise SourceError(f"--seed must be >= 0, got {seed}")
    scene = DemoScene(s.width, s.height, s.demo_objects, seed, s.fps or 15.0)
    n = export_scene(scene, args.frames, Path(args.out), Path(args.gt), args.start, cfg.camera)
    print(json.dumps({"frames": n, "out": args.out, "gt": args.gt, "seed": seed}))
    return 0
