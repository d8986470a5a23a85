"""Routes of the offline page (jobs: see jobs.py). Errors are worded for the page.

- ``POST /api/jobs``: multipart upload, form fields ``video`` (the file), and either
  ``draft=1`` (a draft: the page shows its frames, the user draws boxes, then starts it) or
  ``prompt`` / ``seed_with`` / ``boxes`` (``X1,Y1,X2,Y2@FRAME`` separated by spaces or ``;``)
  to start at once;
- ``GET /api/jobs`` (all kept jobs, newest first), ``GET /api/jobs/{id}``;
- ``GET /api/jobs/{id}/frames/{n}.jpg``: frame ``n`` of the input (the preview);
- ``POST /api/jobs/{id}/start`` ``{"prompt", "seed_with", "boxes": [{"box": [x1,y1,x2,y2],
  "frame": n}]}``; ``POST /api/jobs/{id}/cancel``;
- ``GET /api/jobs/{id}/video``, ``GET /api/jobs/{id}/tracks`` (``?download=1``: as a file).

Uploads are bounded (``web.max_upload_mb``, at most ``jobs.MAX_UPLOADS`` at once) and each next
chunk must come within ``web.request_timeout_s``; an upload that fails or is aborted by the
client leaves nothing on disk.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections.abc import Awaitable
from pathlib import Path
from typing import TypeVar

import cv2
from aiohttp import BodyPartReader, web

from clients.web.context import MAX_PROMPT_CHARS, STATE, WebState, box_of, clean_text, read_json
from clients.web.jobs import (
    MAX_PENDING,
    MAX_UPLOADS,
    Boxes,
    Job,
    UploadError,
    VideoInfo,
    probe_video,
)
from clients.web.preview import PreviewError, read_frame
from stream.boxes import parse_box
from stream.errors import PromptcamError

log = logging.getLogger(__name__)

MAX_FIELD_BYTES = 4096
MAX_BOXES = 64
SEED_MODES = ("box", "mask", "points")
FIELDS = ("prompt", "seed_with", "boxes", "draft")
NOTHING_TO_TRACK = (
    "type what to track (for example 'person. car.') or draw at least one box on the preview"
)


# --------------------------------------------------------------------------- checks


def _check_box(
    box: list[float], frame: int, info: VideoInfo, n: int
) -> tuple[tuple[float, float, float, float], int]:
    """Box ``n`` (1-based, for messages) clipped to the frame; 400 if it lies outside or its
    frame is past the end."""
    if frame < 0:
        raise web.HTTPBadRequest(text=f"box {n}: frame numbers start at 0")
    if info.frames is not None and frame >= info.frames:
        raise web.HTTPBadRequest(
            text=f"box {n}: frame {frame} is past the end of the video ({info.frames} frames)"
        )
    x1, y1, x2, y2 = box
    if x2 <= 0 or y2 <= 0 or x1 >= info.width or y1 >= info.height:
        raise web.HTTPBadRequest(text=f"box {n} lies outside the {info.width}×{info.height} frame")
    clipped = (max(0.0, x1), max(0.0, y1), min(float(info.width), x2), min(float(info.height), y2))
    return clipped, frame


def _boxes_from_text(text: str, info: VideoInfo) -> Boxes:
    items = [b for b in text.replace(";", " ").split() if b.strip()]
    if len(items) > MAX_BOXES:
        raise web.HTTPBadRequest(text=f"at most {MAX_BOXES} boxes, got {len(items)}")
    out: Boxes = []
    for n, item in enumerate(items, 1):
        try:
            box, frame = parse_box(item)
        except PromptcamError:
            raise web.HTTPBadRequest(
                text=f"box {n} ({item[:40]!r}) is not X1,Y1,X2,Y2@FRAME with X2>X1 and Y2>Y1"
            ) from None
        out.append(_check_box(list(box), frame, info, n))
    return out


T = TypeVar("T")


def _boxes_from_json(value: object, info: VideoInfo) -> Boxes:
    if value is None:
        return []
    if not isinstance(value, list) or len(value) > MAX_BOXES:
        raise web.HTTPBadRequest(text=f"boxes must be a list of at most {MAX_BOXES} boxes")
    out: Boxes = []
    for n, item in enumerate(value, 1):
        if not isinstance(item, dict):
            raise web.HTTPBadRequest(text=f"box {n} must be {{box, frame}}")
        frame = item.get("frame", 0)
        if not isinstance(frame, int) or isinstance(frame, bool):
            raise web.HTTPBadRequest(text=f"box {n}: its frame must be a whole number")
        try:
            box = box_of(item.get("box"))
        except web.HTTPBadRequest as e:
            raise web.HTTPBadRequest(text=f"box {n}: {e.text}") from None
        out.append(_check_box(box, frame, info, n))
    return out


def _seed_of(value: object, default: str) -> str:
    seed = default if value is None else value
    if seed not in SEED_MODES:
        raise web.HTTPBadRequest(text="seeding must be box, mask or points")
    return str(seed)


def _job(request: web.Request) -> Job:
    job = request.app[STATE].jobs.jobs.get(request.match_info["job_id"])
    if job is None:
        raise web.HTTPNotFound(text="no such job (finished jobs are kept for a while only)")
    return job


# --------------------------------------------------------------------------- upload


async def _timed(st: WebState, aw: Awaitable[T]) -> T:
    try:
        return await asyncio.wait_for(aw, st.cfg.web.request_timeout_s)
    except asyncio.TimeoutError:
        st.metrics.limit("body_timeouts")
        raise web.HTTPRequestTimeout(
            text=f"the upload stalled for {st.cfg.web.request_timeout_s:g} s"
        ) from None


async def _read_field(st: WebState, part: BodyPartReader, name: str) -> str:
    data = b""
    while chunk := await _timed(st, part.read_chunk(1024)):
        data += chunk
        if len(data) > MAX_FIELD_BYTES:
            raise web.HTTPRequestEntityTooLarge(
                max_size=MAX_FIELD_BYTES,
                actual_size=len(data),
                text=f"form field {name} is too long",
            )
    return data.decode("utf-8", "replace")


async def _read_video(st: WebState, part: BodyPartReader, path: Path) -> int:
    limit = int(st.cfg.web.max_upload_mb * 2**20)
    loop = asyncio.get_running_loop()
    size = 0
    with path.open("wb") as f:
        while chunk := await _timed(st, part.read_chunk(1 << 20)):
            size += len(chunk)
            if size > limit:
                raise web.HTTPRequestEntityTooLarge(
                    max_size=limit,
                    actual_size=size,
                    text=f"the file is larger than the limit of {st.cfg.web.max_upload_mb:g} MB",
                )
            await loop.run_in_executor(None, f.write, chunk)
    if size == 0:
        raise web.HTTPBadRequest(text="the file is empty")
    return size


async def _read_upload(
    st: WebState, request: web.Request, directory: Path
) -> tuple[Path, str, dict[str, str]]:
    reader = await _timed(st, request.multipart())
    fields: dict[str, str] = {}
    video: Path | None = None
    name = "video"
    while (part := await _timed(st, reader.next())) is not None:
        if not isinstance(part, BodyPartReader):
            raise web.HTTPBadRequest(text="nested multipart bodies are not accepted")
        if part.name == "video":
            if video is not None:
                raise web.HTTPBadRequest(text="one video per job")
            video = directory / "input.video"
            await _read_video(st, part, video)
            given = Path(part.filename or "video").name
            name = "".join(c for c in given if c.isprintable())[:80] or "video"
        elif part.name in FIELDS:
            fields[part.name] = await _read_field(st, part, part.name)
        else:
            raise web.HTTPBadRequest(text=f"unexpected form field {str(part.name)[:40]!r}")
    if video is None:
        raise web.HTTPBadRequest(text="choose a video file first")
    return video, name, fields


async def api_job_create(request: web.Request) -> web.Response:
    st = request.app[STATE]
    if st.jobs.pending() >= MAX_PENDING:
        raise web.HTTPTooManyRequests(text="too many videos are queued; wait for one to finish")
    if st.jobs.uploads >= MAX_UPLOADS:
        raise web.HTTPTooManyRequests(text="other uploads are in progress; try again when they end")
    if not request.content_type.startswith("multipart/"):
        raise web.HTTPBadRequest(text="expected a multipart/form-data upload with a 'video' file")
    job_id, directory = st.jobs.new_upload_dir()
    try:
        with st.jobs.uploading():
            video, name, fields = await _read_upload(st, request, directory)
            try:
                info = await asyncio.get_running_loop().run_in_executor(
                    None, probe_video, video, st.cfg.source.max_pixels
                )
            except UploadError as e:
                raise web.HTTPBadRequest(text=f"this file cannot be used: {e}") from None
            job = Job(job_id, directory, video, "", st.cfg.engine.seed_with, [], info, name=name)
            if fields.get("draft", "").strip() in ("1", "true", "yes"):
                st.jobs.add_draft(job)
                return web.json_response(job.as_dict(), status=201)
            job.seed_with = _seed_of(fields.get("seed_with"), st.cfg.engine.seed_with)
            job.prompt = clean_text(
                fields.get("prompt", ""), "the prompt", MAX_PROMPT_CHARS, allow_empty=True
            )
            job.boxes = _boxes_from_text(fields.get("boxes", ""), info)
            if not job.prompt and not job.boxes:
                raise web.HTTPBadRequest(text=NOTHING_TO_TRACK)
    except ConnectionError:
        st.metrics.limit("uploads_aborted")
        log.info("upload %s aborted by the client; its files are removed", job_id)
        _remove(directory)
        raise web.HTTPBadRequest(text="the upload was aborted") from None
    except BaseException:
        _remove(directory)
        raise
    st.jobs.submit(job)
    return web.json_response(job.as_dict(), status=201)


def _remove(directory: Path) -> None:
    shutil.rmtree(directory, ignore_errors=True)


# --------------------------------------------------------------------------- the other routes


async def api_jobs(request: web.Request) -> web.Response:
    jobs = request.app[STATE].jobs
    return web.json_response({"ok": True, "jobs": [j.as_dict() for j in jobs.listing()]})


async def api_job(request: web.Request) -> web.Response:
    return web.json_response(_job(request).as_dict())


async def api_job_start(request: web.Request) -> web.Response:
    st = request.app[STATE]
    job = _job(request)
    body = await read_json(request)
    if job.state != "draft":
        raise web.HTTPConflict(text=f"this job is {job.state}, it cannot be started again")
    if st.jobs.pending() >= MAX_PENDING:
        raise web.HTTPTooManyRequests(text="too many videos are queued; wait for one to finish")
    prompt = clean_text(body.get("prompt", ""), "the prompt", MAX_PROMPT_CHARS, allow_empty=True)
    seed = _seed_of(body.get("seed_with"), st.cfg.engine.seed_with)
    boxes = _boxes_from_json(body.get("boxes"), job.info)
    if not prompt and not boxes:
        raise web.HTTPBadRequest(text=NOTHING_TO_TRACK)
    st.jobs.start(job, prompt, seed, boxes)
    return web.json_response(job.as_dict())


async def api_job_cancel(request: web.Request) -> web.Response:
    st = request.app[STATE]
    job = _job(request)
    if job.state in ("done", "failed", "cancelled"):
        raise web.HTTPConflict(text=f"this job is already {job.state}")
    st.jobs.cancel(job)
    return web.json_response(job.as_dict())


async def api_job_frame(request: web.Request) -> web.Response:
    job = _job(request)
    raw = request.match_info["n"]
    if not raw.isdigit() or len(raw) > 9:
        raise web.HTTPNotFound(text="frame numbers are whole numbers from 0")
    n = int(raw)
    if job.info.frames is not None and n >= job.info.frames:
        raise web.HTTPNotFound(
            text=f"frame {n} is past the end of the video ({job.info.frames} frames)"
        )
    if not job.video.exists():
        raise web.HTTPNotFound(text="the video of this job is gone")

    def encode() -> bytes:
        ok, buf = cv2.imencode(".jpg", read_frame(job.video, n), [cv2.IMWRITE_JPEG_QUALITY, 85])
        if not ok:
            raise PreviewError("the frame could not be encoded")
        return buf.tobytes()

    async with request.app[PREVIEWS]:
        try:
            jpeg = await asyncio.get_running_loop().run_in_executor(None, encode)
        except PreviewError as e:
            raise web.HTTPNotFound(text=str(e)) from None
    return web.Response(
        body=jpeg, content_type="image/jpeg", headers={"Cache-Control": "max-age=3600"}
    )


async def _job_file(
    request: web.Request, job: Job, path: Path, content_type: str, filename: str
) -> web.FileResponse:
    if job.state != "done" or not path.exists():
        raise web.HTTPNotFound(text="the job has no result yet")
    headers = {"Content-Type": content_type}
    if request.query.get("download"):
        headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    return web.FileResponse(path, headers=headers)


async def api_job_video(request: web.Request) -> web.FileResponse:
    job = _job(request)
    return await _job_file(request, job, job.out_mp4, "video/mp4", f"promptcam-{job.id}.mp4")


async def api_job_tracks(request: web.Request) -> web.FileResponse:
    job = _job(request)
    return await _job_file(
        request, job, job.tracks_jsonl, "application/x-ndjson", f"promptcam-{job.id}.jsonl"
    )


PREVIEWS = web.AppKey("previews", asyncio.Semaphore)


def add_routes(app: web.Application) -> None:
    app[PREVIEWS] = asyncio.Semaphore(2)  # frame decodes at once
    r = app.router
    r.add_post("/api/jobs", api_job_create)
    r.add_get("/api/jobs", api_jobs)
    r.add_get("/api/jobs/{job_id}", api_job)
    r.add_post("/api/jobs/{job_id}/start", api_job_start)
    r.add_post("/api/jobs/{job_id}/cancel", api_job_cancel)
    r.add_get("/api/jobs/{job_id}/frames/{n}.jpg", api_job_frame)
    r.add_get("/api/jobs/{job_id}/video", api_job_video)
    r.add_get("/api/jobs/{job_id}/tracks", api_job_tracks)
