"""The live row of ``bench --parts quality``: ``promptcam run`` on a demo scene at real-time
speed, scored against the scene's ground truth, beside the same engine on every frame offline.

The scene (``LIVE_LEAD + window`` frames, rendered and saved as JPEG quality 95, as the other
rows) is a directory of images that the real launcher's capture reads at the scene's frame rate
(``source.realtime``); capture numbers frames from 0, so a frame's ``seq`` is its index in the
scene. The launcher starts capture, engine and web at once, and the engine loads its models
while capture already runs: the engine joins the scene at whatever frame comes first after it
is ready (``LIVE_LEAD`` frames leave it time to). Its tracks are received with
``clients.subscriber.TracksSubscriber`` (what ``promptcam subscribe`` prints), written as tracks
JSONL and read back with the evaluator's reader.

Alignment: the scored window is the ``window`` frames from the first frame the engine published
(``live_window``). A real-time engine behind the camera skips frames; scored are:
- ``live``: the frames in the window the engine published (``restrict``), against the ground
  truth of exactly those frames;
- ``live, every frame``: every frame of the window, a skipped frame counting as empty;
- ``offline``: the same engine (``run_promptcam``: every frame, grounding in line, starting
  fresh on the window's first frame like the live engine) scored on the frames the live engine
  published, so that both see the same frames scored (the target: live within 0.05 HOTA).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from clients.bench.evaluate import (
    EvalError,
    QualityReport,
    TrackSequence,
    evaluate,
    read_tracks,
    sequence_from_results,
)
from stream.config import Config
from stream.demo import DemoScene
from stream.groundtruth import GroundTruthWriter

log = logging.getLogger(__name__)

LIVE_LEAD = 900  # frames before the window: the engine's model loading (60 s at 15 frames/s)
LIVE_WINDOW = 150  # frames scored
START_SLACK_S = 60.0  # beyond the scene's own length, how long the run may take to finish


@dataclass(frozen=True)
class LiveResult:
    seed: int
    first: int  # the window's first frame (the first the engine published)
    window: list[int]  # the window's frames the engine published
    window_size: int
    live: QualityReport  # on the published frames
    live_every: QualityReport  # every frame of the window (skipped frames empty)
    offline: QualityReport  # the offline engine on the published frames
    offline_every: QualityReport  # the offline engine on every frame of the window


def live_window(published: Iterable[int], n_frames: int, window: int) -> list[int]:
    """The frames scored live: those published in the ``window`` frames from the first
    published one, within the scene's ``n_frames`` (a seq beyond the scene, e.g. after a
    capture restart, is none of them). ``EvalError`` when the engine published no frame."""
    seqs = sorted({s for s in published if 0 <= s < n_frames})
    if not seqs:
        raise EvalError("the live engine published no frame of the scene")
    first = seqs[0]
    return [s for s in seqs if s < first + window]


def restrict(seq: TrackSequence, keep: Iterable[int], empty_missing: bool = False) -> TrackSequence:
    """``seq`` on the frames ``keep`` only; a frame ``seq`` lacks is an error, or (with
    ``empty_missing``) an empty frame (a frame the engine skipped)."""
    from clients.bench.evaluate import FrameObjects

    frames = {}
    for k in keep:
        if k in seq.frames:
            frames[k] = seq.frames[k]
        elif empty_missing:
            frames[k] = FrameObjects()
        else:
            raise EvalError(f"frame seq {k} is not in the sequence")
    return TrackSequence(seq.width, seq.height, seq.prompt, frames)


def _write_scene(scene: DemoScene, n: int, video: Path) -> None:
    video.mkdir()
    for i in range(n):
        rgb = np.ascontiguousarray(scene.render_frame(i).image[:, :, ::-1])
        Image.fromarray(rgb).save(video / f"{i:05d}.jpg", quality=95)


def _truth(scene: DemoScene, frames: Iterable[int], path: Path) -> TrackSequence:
    with path.open("w") as f:
        writer = GroundTruthWriter(f)
        for i in frames:
            writer.write(scene.render_frame(i), i)
    return read_tracks(path)


def _run_config(cfg: Config, video: Path, workdir: Path, fps: float) -> Config:
    ipc = f"ipc://{workdir}"
    tree = cfg.model_dump(mode="json")
    tree["source"].update({"uri": str(video), "fps": fps, "realtime": True, "loop": False})
    tree["bus"].update(
        {
            "frames": f"{ipc}/frames",
            "tracks": f"{ipc}/tracks",
            "annotated": f"{ipc}/annotated",
            "control": f"{ipc}/control",
            "events": f"{ipc}/events",
        }
    )
    tree["web"]["port"] = 0
    tree["run"]["status_file"] = str(workdir / "status.json")
    tree["engine"]["state_file"] = str(workdir / "engine-state.json")
    return Config.model_validate(tree)


def record_live(
    cfg: Config, video: Path, n_frames: int, window: int, workdir: Path, fps: float
) -> Path:
    """``promptcam run`` on ``video``; its tracks as JSONL until the engine published the
    window's last frame (or the scene ended); returns the JSONL's path."""
    from clients.launcher import write_child_config
    from clients.subscriber import TracksSubscriber

    run_cfg = _run_config(cfg, video, workdir, fps)
    config = write_child_config(run_cfg, workdir)
    limit = n_frames / fps + START_SLACK_S
    out = workdir / "live.tracks.jsonl"
    log_path = workdir / "run.log"
    cmd = [sys.executable, "-m", "clients.cli", "run", "--config", str(config)]
    cmd += ["--duration", f"{limit:.0f}", "--log-level", "WARNING"]
    with log_path.open("w") as log_file:
        proc = subprocess.Popen(
            cmd, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
        first: int | None = None
        try:
            with TracksSubscriber(run_cfg.bus.tracks, bus=run_cfg.bus) as sub, out.open("w") as f:
                deadline = time.monotonic() + limit
                while time.monotonic() < deadline and proc.poll() is None:
                    msg = sub.recv(timeout=1.0)
                    if msg is None:
                        continue
                    seq = msg.header.seq
                    if not 0 <= seq < n_frames:
                        continue
                    f.write(msg.to_json() + "\n")
                    first = seq if first is None else first
                    if seq >= min(first + window, n_frames) - 1:
                        break
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
    if first is None:
        tail = log_path.read_text()[-2000:]
        raise EvalError(f"the live engine published no frame in {limit:.0f}s; run log: {tail!r}")
    return out


def run_live(
    cfg: Config,
    workdir: Path,
    seed: int,
    objects: int,
    size: tuple[int, int],
    window: int = LIVE_WINDOW,
    lead: int = LIVE_LEAD,
) -> LiveResult:
    """The live row on scene ``seed`` (see the module docstring); ``cfg``: the text-prompt
    config of the bench (models, prompt, grounding every 20 frames)."""
    from clients.bench.quality import run_promptcam

    scene = DemoScene(size[0], size[1], objects, seed=seed)
    n = lead + window
    video = workdir / f"live-seed{seed}"
    _write_scene(scene, n, video)
    tracks = record_live(cfg, video, n, window, workdir, scene.fps)
    pred = read_tracks(tracks)
    published = live_window(pred.frames, n, window)
    first = published[0]
    every = list(range(first, min(first + window, n)))
    truth = _truth(scene, every, workdir / f"live-seed{seed}.gt.jsonl")
    files = sorted(video.iterdir())[first : every[-1] + 1]
    images = [np.asarray(Image.open(p).convert("RGB"))[:, :, ::-1].copy() for p in files]
    times = [round(i * 1e9 / scene.fps) for i in every]
    results, _ = run_promptcam(cfg, images, seqs=every, times_ns=times)
    offline = sequence_from_results(results)
    return LiveResult(
        seed=seed,
        first=first,
        window=published,
        window_size=len(every),
        live=evaluate(restrict(pred, published), restrict(truth, published)),
        live_every=evaluate(restrict(pred, every, empty_missing=True), truth),
        offline=evaluate(restrict(offline, published), restrict(truth, published)),
        offline_every=evaluate(offline, truth),
    )
