"""Offline jobs of the web page: an uploaded video, a prompt and/or boxes, a seeding mode →
annotated MP4 + JSONL.

A job is uploaded as a ``draft`` (the page shows its frames and the user draws boxes on them)
and then started, or uploaded and started at once. Each runs ``engine.offline.track_video`` in
its own (spawned) worker process, one job at a time; more wait in a queue of at most
``MAX_PENDING`` (the API answers 429 beyond). The worker reports progress through a small JSON
file in the job's directory that the server reads when a page polls; the ETA comes from the
rate so far. A job can be cancelled in any state: a running worker is terminated, and a
cancelled job's files are deleted. Finished jobs are kept (newest ``MAX_KEPT``), drafts at most
``MAX_DRAFTS`` and ``DRAFT_TTL_S``; older ones are deleted with their files.

Files: one directory per web process, ``$TMPDIR/promptcam-web-jobs-<pid>-*``, with an ``owner``
file (pid and start time of that process). It is removed when the server stops; a web process
that was killed leaves it behind, so each new one first removes the directories whose owner is
gone. The worker dies with the web process (``PR_SET_PDEATHSIG``).
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
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import av
import psutil

from clients.jsontypes import JsonObject
from stream.config import Config, SourceConfig
from stream.sources import SourceTooLargeError, check_frame_size

log = logging.getLogger(__name__)

MAX_PENDING = 4
MAX_UPLOADS = 2  # uploads in progress at once
MAX_KEPT = 16
MAX_DRAFTS = 4
DRAFT_TTL_S = 3600.0
ROOT_PREFIX = "promptcam-web-jobs-"
UNOWNED_STALE_S = 24 * 3600.0  # a directory without an owner file (older versions)
JobState = Literal["draft", "queued", "running", "done", "failed", "cancelled"]
FINISHED: tuple[JobState, ...] = ("done", "failed", "cancelled")
Boxes = list[tuple[tuple[float, float, float, float], int]]


class UploadError(ValueError):
    """The uploaded file is not a video we can process; the message is for the user."""


@dataclass(frozen=True)
class VideoInfo:
    width: int
    height: int
    frames: int | None
    fps: float | None
    codec: str


def probe_video(
    path: Path, max_pixels: int = SourceConfig.model_fields["max_pixels"].default
) -> VideoInfo:
    """Open ``path`` with PyAV and decode its first frame; ``UploadError`` if that fails or if
    its frames are larger than ``max_pixels`` (``source.max_pixels``: checked before decoding)."""
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise UploadError("the file has no video stream")
            stream = container.streams.video[0]
            cc = stream.codec_context
            try:
                check_frame_size(cc.width, cc.height, max_pixels)
            except SourceTooLargeError as e:
                raise UploadError(str(e)) from None
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
    boxes: Boxes
    info: VideoInfo
    name: str = "video"
    state: JobState = "queued"
    error: str | None = None
    done: int = 0
    total: int | None = None
    frames: int = 0
    objects: int = 0
    created: float = field(default_factory=time.time)
    submitted: float | None = None  # time.time() when it was started by its user (queued)
    started: float | None = None  # time.time() when its worker started
    started_at: float | None = None  # time.monotonic() when its worker started
    finished: float | None = None
    cancel_requested: bool = False

    @property
    def out_mp4(self) -> Path:
        return self.directory / "annotated.mp4"

    @property
    def tracks_jsonl(self) -> Path:
        return self.directory / "tracks.jsonl"

    @property
    def progress_file(self) -> Path:
        return self.directory / "progress.json"

    def eta_s(self, now: float | None = None) -> float | None:
        """Seconds left at the rate so far (None until a frame is done or without a total)."""
        total = self.total or self.info.frames
        if self.state != "running" or self.started_at is None or not total or self.done <= 0:
            return None
        elapsed = (time.monotonic() if now is None else now) - self.started_at
        return max(0.0, elapsed * (total - self.done) / self.done)

    def as_dict(self) -> JsonObject:
        self.refresh_progress()
        total = self.total or self.info.frames
        eta = self.eta_s()
        return {
            "id": self.id,
            "name": self.name,
            "state": self.state,
            "error": self.error,
            "prompt": self.prompt,
            "seed_with": self.seed_with,
            "boxes": [{"box": list(b), "frame": f} for b, f in self.boxes],
            "done": self.done,
            "total": total,
            "progress": 1.0 if self.state == "done" else (self.done / total if total else 0.0),
            "eta_s": None if eta is None else round(eta, 1),
            "created": self.created,
            "submitted": self.submitted,
            "started": self.started,
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
            "preview": f"/api/jobs/{self.id}/frames/0.jpg" if self.video.exists() else None,
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
    boxes: Boxes,
    result_file: str,
    parent_pid: int,
) -> None:
    """Runs in the spawned worker process."""
    from clients.launcher import die_with_parent
    from engine.offline import track_video

    die_with_parent(parent_pid)
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
            boxes=[(b, int(f)) for b, f in boxes],
            out_mp4=Path(out_mp4),
            tracks_jsonl=Path(tracks),
            progress=progress,
        )
        outcome: JsonObject = {"ok": True, "frames": res.frames, "objects": res.objects}
    except Exception as e:  # reported to the page as the job's error, not swallowed
        logging.getLogger(__name__).exception("offline job failed")
        outcome = {"ok": False, "error": f"{type(e).__name__}: {e}".splitlines()[0][:500]}
    with open(result_file, "w") as f:
        json.dump(outcome, f)


def _owner_line() -> str:
    me = psutil.Process()
    return f"{me.pid} {me.create_time():.3f}\n"


def _owner_alive(line: str) -> bool:
    try:
        pid_text, created_text = line.split()
        pid, created = int(pid_text), float(created_text)
        return abs(psutil.Process(pid).create_time() - created) < 1.0
    except (ValueError, psutil.Error):
        return False


def sweep_stale_roots(parent: Path | None = None) -> int:
    """Remove the job directories of web processes that are gone; how many were removed."""
    parent = parent or Path(tempfile.gettempdir())
    removed = 0
    for d in parent.glob(f"{ROOT_PREFIX}*"):
        if not d.is_dir() or d.is_symlink():
            continue
        owner = d / "owner"
        try:
            if owner.exists():
                if _owner_alive(owner.read_text()):
                    continue
            elif (
                time.time()
                - max((p.stat().st_mtime for p in d.rglob("*")), default=d.stat().st_mtime)
                < UNOWNED_STALE_S
            ):
                continue
        except OSError:
            continue
        shutil.rmtree(d, ignore_errors=True)
        if not d.exists():
            removed += 1
            log.info("removed %s, left by a web process that is gone", d)
    return removed


class JobManager:
    """Queue and run offline jobs, one at a time, each in a spawned process."""

    def __init__(self, cfg: Config, root: Path | None = None, poll_s: float = 0.2) -> None:
        self._cfg = cfg
        self._own_root = root is None
        if root is None:
            sweep_stale_roots()
            root = Path(tempfile.mkdtemp(prefix=f"{ROOT_PREFIX}{os.getpid()}-"))
            (root / "owner").write_text(_owner_line())
        self.root = root
        self._poll_s = poll_s
        self.jobs: OrderedDict[str, Job] = OrderedDict()
        self._queue: asyncio.Queue[Job] = asyncio.Queue()
        self._runner: asyncio.Task[None] | None = None
        self._proc: multiprocessing.process.BaseProcess | None = None
        self.uploads = 0  # in progress

    def new_upload_dir(self) -> tuple[str, Path]:
        job_id = uuid.uuid4().hex[:12]
        d = self.root / job_id
        d.mkdir(parents=True)
        return job_id, d

    @contextlib.contextmanager
    def uploading(self) -> Iterator[None]:
        """Counts an upload in progress (``MAX_UPLOADS`` at once)."""
        self.uploads += 1
        try:
            yield
        finally:
            self.uploads -= 1

    def pending(self) -> int:
        return sum(1 for j in self.jobs.values() if j.state in ("queued", "running"))

    def listing(self) -> list[Job]:
        """Every kept job, newest first."""
        return sorted(self.jobs.values(), key=lambda j: j.created, reverse=True)

    def add_draft(self, job: Job) -> None:
        job.state = "draft"
        self.jobs[job.id] = job
        self._prune()

    def start(self, job: Job, prompt: str, seed_with: str, boxes: Boxes) -> None:
        """Queue a draft with what to track."""
        job.prompt, job.seed_with, job.boxes = prompt, seed_with, boxes
        self.submit(job)

    def submit(self, job: Job) -> None:
        if self._runner is None:
            self._runner = asyncio.get_running_loop().create_task(
                self._run_jobs(), name="offline-jobs"
            )
        job.state = "queued"
        job.submitted = time.time()
        self.jobs[job.id] = job
        self._queue.put_nowait(job)
        self._prune()

    def cancel(self, job: Job) -> None:
        """Cancel a job: a draft or queued job at once, a running one when its worker ends."""
        if job.state in ("draft", "queued"):
            self._finish_cancelled(job)
        elif job.state == "running":
            job.cancel_requested = True
            proc = self._proc
            if proc is not None and proc.is_alive():
                proc.terminate()

    def _finish_cancelled(self, job: Job) -> None:
        job.state, job.finished = "cancelled", time.time()
        shutil.rmtree(job.directory, ignore_errors=True)
        log.info("job %s cancelled", job.id)

    def _prune(self) -> None:
        now = time.time()
        drafts = [j for j in self.jobs.values() if j.state == "draft"]
        for j in drafts[: max(0, len(drafts) - MAX_DRAFTS)]:
            self._drop(j)
        for j in drafts:
            if now - j.created > DRAFT_TTL_S and j.id in self.jobs:
                self._drop(j)
        finished = [j for j in self.jobs.values() if j.state in FINISHED]
        for j in finished[: max(0, len(finished) - MAX_KEPT)]:
            self._drop(j)

    def _drop(self, job: Job) -> None:
        del self.jobs[job.id]
        shutil.rmtree(job.directory, ignore_errors=True)

    async def _run_jobs(self) -> None:
        while True:
            job = await self._queue.get()
            if job.state != "queued":  # cancelled while it waited
                continue
            try:
                await self._run(job)
            except OSError as e:
                job.state, job.error = "failed", f"could not run the job: {e}"
                log.error("job %s: %s", job.id, job.error)
            job.finished = time.time()
            self._prune()

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
                list(job.boxes),
                str(result_file),
                os.getpid(),
            ),
            name=f"promptcam-job-{job.id}",
            daemon=True,
        )
        job.state = "running"
        job.started, job.started_at = time.time(), time.monotonic()
        self._proc = proc
        proc.start()
        log.info("job %s started (pid %s): %s, prompt %r", job.id, proc.pid, job.name, job.prompt)
        while proc.is_alive():
            await asyncio.sleep(self._poll_s)
        proc.join()
        self._proc = None
        if job.cancel_requested:
            self._finish_cancelled(job)
            return
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
