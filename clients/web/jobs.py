"""Offline jobs of the web page: an uploaded video, a prompt, a seeding mode → annotated MP4 + JSONL.

Each job runs ``engine.offline.track_video`` in its own (spawned) worker process, one job at a
time; more wait in a queue of at most ``MAX_PENDING`` (the API answers 429 beyond). The worker
reports progress through a small JSON file in the job's directory that the server reads when a
page polls. Finished jobs are kept (newest ``MAX_KEPT``), older ones are deleted with their files.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import multiprocessing
import os
import shutil
import tempfile
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import av

from stream.config import Config

log = logging.getLogger(__name__)

MAX_PENDING = 4
MAX_KEPT = 16
JobState = Literal["queued", "running", "done", "failed"]


class UploadError(ValueError):
    """The uploaded file is not a video we can process; the message is for the user."""


@dataclass(frozen=True)
class VideoInfo:
    width: int
    height: int
    frames: int | None
    fps: float | None
    codec: str


def probe_video(path: Path) -> VideoInfo:
    """Open ``path`` with PyAV and decode its first frame; ``UploadError`` if that fails."""
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise UploadError("the file has no video stream")
            stream = container.streams.video[0]
            for frame in container.decode(stream):
                fps = float(stream.average_rate) if stream.average_rate else None
                return VideoInfo(
                    frame.width, frame.height, stream.frames or None, fps, stream.codec_context.name
                )
            raise UploadError("the video stream has no decodable frame")
    except av.FFmpegError as e:
        raise UploadError(
            f"not a video file that can be read ({e.strerror or type(e).__name__})"
        ) from None


@dataclass
class Job:
    id: str
    directory: Path
    video: Path
    prompt: str
    seed_with: str
    boxes: list[tuple[tuple[float, float, float, float], int]]
    info: VideoInfo
    state: JobState = "queued"
    error: str | None = None
    done: int = 0
    total: int | None = None
    frames: int = 0
    objects: int = 0
    created: float = field(default_factory=time.time)
    finished: float | None = None

    @property
    def out_mp4(self) -> Path:
        return self.directory / "annotated.mp4"

    @property
    def tracks_jsonl(self) -> Path:
        return self.directory / "tracks.jsonl"

    @property
    def progress_file(self) -> Path:
        return self.directory / "progress.json"

    def as_dict(self) -> dict[str, Any]:
        self.refresh_progress()
        total = self.total or self.info.frames
        return {
            "id": self.id,
            "state": self.state,
            "error": self.error,
            "prompt": self.prompt,
            "seed_with": self.seed_with,
            "done": self.done,
            "total": total,
            "progress": 1.0 if self.state == "done" else (self.done / total if total else 0.0),
            "frames": self.frames,
            "objects": self.objects,
            "video": {
                "width": self.info.width,
                "height": self.info.height,
                "fps": self.info.fps,
                "codec": self.info.codec,
            },
            "result": f"/api/jobs/{self.id}/video" if self.state == "done" else None,
            "tracks": f"/api/jobs/{self.id}/tracks" if self.state == "done" else None,
        }

    def refresh_progress(self) -> None:
        if self.state != "running":
            return
        try:
            data = json.loads(self.progress_file.read_text())
        except FileNotFoundError:
            return
        except (OSError, json.JSONDecodeError) as e:  # written by rename, so only on a real fault
            log.warning("job %s: unreadable progress file: %s", self.id, e)
            return
        self.done, self.total = int(data.get("done", 0)), data.get("total")


def _worker(
    cfg_json: str,
    video: str,
    out_mp4: str,
    tracks: str,
    progress_file: str,
    boxes: list[Any],
    result_file: str,
) -> None:
    """Runs in the spawned worker process."""
    from engine.offline import track_video

    cfg = Config.model_validate_json(cfg_json)
    last = [0.0]

    def progress(done: int, total: int | None) -> None:
        now = time.monotonic()
        if now - last[0] < 0.2 and not (total and done >= total):
            return
        last[0] = now
        tmp = progress_file + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"done": done, "total": total}, f)
        os.replace(tmp, progress_file)

    try:
        res = track_video(
            cfg,
            Path(video),
            boxes=[(tuple(b), int(f)) for b, f in boxes],
            out_mp4=Path(out_mp4),
            tracks_jsonl=Path(tracks),
            progress=progress,
        )
        outcome: dict[str, Any] = {"ok": True, "frames": res.frames, "objects": res.objects}
    except Exception as e:  # reported to the page as the job's error, not swallowed
        logging.getLogger(__name__).exception("offline job failed")
        outcome = {"ok": False, "error": f"{type(e).__name__}: {e}".splitlines()[0][:500]}
    with open(result_file, "w") as f:
        json.dump(outcome, f)


class JobManager:
    """Queue and run offline jobs, one at a time, each in a spawned process."""

    def __init__(self, cfg: Config, root: Path | None = None, poll_s: float = 0.2) -> None:
        self._cfg = cfg
        self._own_root = root is None
        self.root = root or Path(tempfile.mkdtemp(prefix="promptcam-web-jobs-"))
        self._poll_s = poll_s
        self.jobs: OrderedDict[str, Job] = OrderedDict()
        self._queue: asyncio.Queue[Job] = asyncio.Queue()
        self._runner: asyncio.Task[None] | None = None
        self._proc: multiprocessing.process.BaseProcess | None = None

    def new_upload_dir(self) -> tuple[str, Path]:
        job_id = uuid.uuid4().hex[:12]
        d = self.root / job_id
        d.mkdir(parents=True)
        return job_id, d

    def pending(self) -> int:
        return sum(1 for j in self.jobs.values() if j.state in ("queued", "running"))

    def submit(self, job: Job) -> None:
        if self._runner is None:
            self._runner = asyncio.get_running_loop().create_task(
                self._run_jobs(), name="offline-jobs"
            )
        self.jobs[job.id] = job
        self._queue.put_nowait(job)
        self._prune()

    def _prune(self) -> None:
        finished = [j for j in self.jobs.values() if j.state in ("done", "failed")]
        for j in finished[: max(0, len(finished) - MAX_KEPT)]:
            del self.jobs[j.id]
            shutil.rmtree(j.directory, ignore_errors=True)

    async def _run_jobs(self) -> None:
        while True:
            job = await self._queue.get()
            try:
                await self._run(job)
            except OSError as e:
                job.state, job.error = "failed", f"could not run the job: {e}"
                log.error("job %s: %s", job.id, job.error)
            job.finished = time.time()

    async def _run(self, job: Job) -> None:
        cfg = self._cfg.model_copy(
            update={
                "engine": self._cfg.engine.model_copy(
                    update={"prompt": job.prompt, "seed_with": job.seed_with}
                )
            }
        )
        result_file = job.directory / "result.json"
        ctx = multiprocessing.get_context("spawn")
        proc = ctx.Process(
            target=_worker,
            args=(
                cfg.model_dump_json(),
                str(job.video),
                str(job.out_mp4),
                str(job.tracks_jsonl),
                str(job.progress_file),
                [[list(b), f] for b, f in job.boxes],
                str(result_file),
            ),
            name=f"promptcam-job-{job.id}",
            daemon=True,
        )
        job.state = "running"
        self._proc = proc
        proc.start()
        log.info(
            "job %s started (pid %s): %s, prompt %r", job.id, proc.pid, job.video.name, job.prompt
        )
        while proc.is_alive():
            await asyncio.sleep(self._poll_s)
        proc.join()
        self._proc = None
        job.refresh_progress()
        try:
            outcome = json.loads(result_file.read_text())
        except (OSError, json.JSONDecodeError):
            outcome = {"ok": False, "error": f"the worker process died (exit code {proc.exitcode})"}
        if outcome.get("ok"):
            job.state, job.frames, job.objects = (
                "done",
                int(outcome["frames"]),
                int(outcome["objects"]),
            )
            job.done = job.frames
            log.info("job %s done: %d frames, %d objects", job.id, job.frames, job.objects)
        else:
            job.state, job.error = "failed", str(outcome.get("error"))
            log.warning("job %s failed: %s", job.id, job.error)

    async def close(self) -> None:
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner
        proc = self._proc
        if proc is not None and proc.is_alive():
            proc.terminate()
            proc.join(5)
            if proc.is_alive():
                proc.kill()
                proc.join(5)
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)
