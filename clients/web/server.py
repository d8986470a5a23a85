"""``promptcam web``: the live view and control page (aiohttp + aiortc).

Reads: ``annotated.<camera>`` (video) and ``tracks.<camera>`` (object list) from the engine,
newest message only (older ones are dropped and never queued); sends control requests
(``set_prompt``, ``stats``) to the engine's REP socket from executor threads. Serves:

- ``/`` the live page, ``/offline`` the offline page, ``/static/*``;
- ``POST /offer`` WebRTC SDP exchange (H.264 only: one shared encoder per camera, see video.py);
- ``POST /api/prompt``, ``GET /api/objects``, ``GET /api/stats``;
- ``POST /api/jobs`` (multipart upload), ``GET /api/jobs/{id}``, ``GET /api/jobs/{id}/video``,
  ``GET /api/jobs/{id}/tracks`` (offline jobs, see jobs.py);
- ``GET /healthz`` (never needs the token), ``GET /metrics`` (Prometheus text).

Binds ``web.host`` (loopback by default). When ``web.token`` is set (it must be off loopback)
every other route needs it as ``?token=``, ``Authorization: Bearer`` or ``X-Promptcam-Token``.
Bodies are bounded (``web.max_body_kb``; uploads ``web.max_upload_mb``): 413 beyond.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hmac
import json
import logging
import math
import shutil
import signal
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq
from aiohttp import BodyPartReader, web
from aiortc import RTCPeerConnection, RTCRtpSender, RTCSessionDescription
from aiortc.exceptions import OperationError
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from clients.web.feeds import LatestFeed, annotated_feed, tracks_feed
from clients.web.ice import filter_sdp_to_loopback, restrict_ice_to_loopback, rtc_configuration
from clients.web.jobs import Job, JobManager, UploadError, probe_video
from clients.web.video import VideoHub, ViewerTrack
from stream import bus as zbus
from stream.config import LOOPBACK_HOSTS, Config
from stream.errors import PromptcamError
from stream.wire import AnnotatedMessage, TracksMessage

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"
CONTROL_TIMEOUT_MS = 2000
KEYFRAMES_AFTER_CONNECT_S = (0.2, 0.3, 0.5, 1.0)
H264_CODECS = [
    c for c in RTCRtpSender.getCapabilities("video").codecs if c.mimeType.lower() == "video/h264"
]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class RateMeter:
    """Events per second over the last few seconds, from a monotonically growing count."""

    def __init__(self, window_s: float = 3.0) -> None:
        self._window = window_s
        self._samples: deque[tuple[float, int]] = deque(maxlen=64)

    def rate(self, count: int) -> float:
        now = time.monotonic()
        if not self._samples or now - self._samples[-1][0] >= 0.25:
            self._samples.append((now, count))
        while len(self._samples) > 2 and now - self._samples[1][0] >= self._window:
            self._samples.popleft()
        t0, c0 = self._samples[0]
        return (count - c0) / (now - t0) if now - t0 > 0.2 else 0.0


class Metrics:
    """The web process's Prometheus metrics, in their own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.viewers = Gauge("promptcam_web_viewers", "Connected WebRTC viewers.", registry=r)
        self.frames_sent = Counter(
            "promptcam_web_frames_sent", "Encoded video frames handed to viewers.", registry=r
        )
        self.frames_encoded = Counter(
            "promptcam_web_frames_encoded",
            "Video frames encoded (one shared encoder per camera, whatever the viewers).",
            registry=r,
        )
        self.keyframes = Counter(
            "promptcam_web_keyframes_encoded", "Keyframes among the encoded frames.", registry=r
        )
        self.packets_dropped = Counter(
            "promptcam_web_viewer_packets_dropped",
            "Encoded frames a viewer skipped (fell behind or joined: waits for a keyframe).",
            registry=r,
        )
        self.annotated = Counter(
            "promptcam_web_annotated_frames_received",
            "Annotated frames received from the engine.",
            registry=r,
        )
        self.tracks = Counter(
            "promptcam_web_tracks_received", "Tracks messages received from the engine.", registry=r
        )
        self.rejected = Counter(
            "promptcam_web_rejected_messages",
            "Malformed messages from the engine.",
            ["reason"],
            registry=r,
        )
        self.request_errors = Counter(
            "promptcam_web_request_errors",
            "HTTP requests answered with an error.",
            ["status"],
            registry=r,
        )
        self.latency = Histogram(
            "promptcam_web_frame_latency_seconds",
            "Capture to encoded frame handed to a viewer's sender.",
            buckets=(0.01, 0.02, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0),
            registry=r,
        )
        self.frames_sent_n = 0
        self.frames_encoded_n = 0
        self.annotated_n = 0
        self.tracks_n = 0
        self.latencies: deque[float] = deque(maxlen=300)


@dataclass
class WebState:
    cfg: Config
    camera: str
    metrics: Metrics
    annotated: LatestFeed[AnnotatedMessage]
    tracks: LatestFeed[TracksMessage]
    hub: VideoHub
    jobs: JobManager
    pcs: set[RTCPeerConnection]
    rate_in: RateMeter
    rate_out: RateMeter
    rate_tracks: RateMeter


STATE = web.AppKey("state", WebState)


# --------------------------------------------------------------------------- middlewares


def _token_of(request: web.Request) -> str | None:
    auth = request.headers.get("Authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    return request.headers.get("X-Promptcam-Token") or request.query.get("token")


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"ok": False, "error": message}, status=status)


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error is a JSON body with one readable line, and is counted."""
    st = request.app[STATE]
    try:
        resp = await handler(request)
    except web.HTTPException as e:
        if e.status < 400:
            raise
        st.metrics.request_errors.labels(str(e.status)).inc()
        msg = e.text if e.text and not e.text.startswith(f"{e.status}:") else e.reason
        return _error(e.status, msg or e.reason)
    if resp.status >= 400:
        st.metrics.request_errors.labels(str(resp.status)).inc()
    return resp


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    expected = request.app[STATE].cfg.web.token
    if expected and request.path != "/healthz":
        given = _token_of(request) or ""
        if not hmac.compare_digest(given.encode(), expected.encode()):
            raise web.HTTPUnauthorized(
                text="missing or wrong token (use ?token=, Authorization: Bearer or X-Promptcam-Token)"
            )
    return await handler(request)


@web.middleware
async def body_limit_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    web_cfg = request.app[STATE].cfg.web
    limit = (
        int(web_cfg.max_upload_mb * 2**20)
        if request.path == "/api/jobs"
        else int(web_cfg.max_body_kb * 1024)
    )
    if request.content_length is not None and request.content_length > limit:
        raise web.HTTPRequestEntityTooLarge(
            max_size=limit,
            actual_size=request.content_length,
            text=f"request body of {request.content_length} bytes exceeds the limit of {limit} bytes",
        )
    return await handler(request)


async def _read_json(request: web.Request) -> dict[str, Any]:
    limit = int(request.app[STATE].cfg.web.max_body_kb * 1024)
    body = await request.content.read(limit + 1)
    if len(body) > limit:
        raise web.HTTPRequestEntityTooLarge(
            max_size=limit,
            actual_size=len(body),
            text=f"request body exceeds the limit of {limit} bytes",
        )
    try:
        obj = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise web.HTTPBadRequest(text="request body is not JSON") from None
    if not isinstance(obj, dict):
        raise web.HTTPBadRequest(text="request body must be a JSON object")
    return obj


async def _control(
    state: WebState, payload: dict[str, Any], timeout_ms: int = CONTROL_TIMEOUT_MS
) -> dict[str, Any]:
    """A control request in an executor thread (ZeroMQ REQ blocks)."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(
        None, zbus.request, state.cfg.bus.control, payload, timeout_ms, state.cfg.bus
    )


# --------------------------------------------------------------------------- pages and API


async def page_index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC_DIR / "index.html")


async def page_offline(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC_DIR / "offline.html")


async def healthz(request: web.Request) -> web.Response:
    st = request.app[STATE]
    _, _, age = st.annotated.latest()
    return web.json_response(
        {
            "ok": True,
            "camera": st.camera,
            "last_annotated_age_s": None if math.isinf(age) else round(age, 3),
            "viewers": len(st.pcs),
        }
    )


async def metrics(request: web.Request) -> web.Response:
    st = request.app[STATE]
    st.metrics.viewers.set(len(st.pcs))
    return web.Response(
        body=generate_latest(st.metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
    )


async def offer(request: web.Request) -> web.Response:
    st = request.app[STATE]
    params = await _read_json(request)
    sdp, kind = params.get("sdp"), params.get("type")
    if not isinstance(sdp, str) or kind != "offer":
        raise web.HTTPBadRequest(text='expected {"sdp": "<offer SDP>", "type": "offer"}')
    if not sdp.startswith("v=0") or "m=video" not in sdp:
        raise web.HTTPBadRequest(
            text="malformed SDP offer: it must start with v=0 and have a video section (m=video)"
        )
    if st.cfg.web.ice_loopback_only:
        sdp, dropped = filter_sdp_to_loopback(sdp)
        if dropped:
            log.debug("dropped %d non-loopback ICE candidates from an offer", dropped)
    pc = RTCPeerConnection(configuration=rtc_configuration())
    viewer = st.hub.subscribe()
    try:
        # The transceiver exists before the offer is applied, so the offer's video section
        # binds to it and its codec preferences (H.264 only: the shared encoder's packets are
        # H.264) decide what is negotiated.
        transceiver = pc.addTransceiver(viewer, direction="sendonly")
        transceiver.setCodecPreferences(H264_CODECS)
        sender = transceiver.sender
        # aiortc calls this on a PLI/FIR; its own encoder is not used for packets
        setattr(sender, "_send_keyframe", viewer.request_keyframe)  # noqa: B010
        await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
        if transceiver.mid is None:
            raise ValueError("no video section")
        answer = await pc.createAnswer()
        await pc.setLocalDescription(answer)
    except OperationError as e:
        viewer.stop()
        await pc.close()
        raise web.HTTPBadRequest(
            text=f"no common video codec: this server sends H.264 only ({e})"
        ) from None
    except (ValueError, TypeError, KeyError, IndexError, AttributeError, zmq.ZMQError) as e:
        # aiortc's SDP parser reports malformed input with any of these
        viewer.stop()
        await pc.close()
        raise web.HTTPBadRequest(
            text=f"malformed SDP offer: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
        ) from None

    st.pcs.add(pc)
    st.metrics.viewers.set(len(st.pcs))

    keyframes: list[asyncio.Task[None]] = []

    @pc.on("connectionstatechange")
    async def on_state() -> None:
        log.info("viewer %x: %s", id(pc), pc.connectionState)
        if pc.connectionState == "connected" and not keyframes:
            keyframes.append(asyncio.get_running_loop().create_task(_keyframes(pc, viewer)))
        if pc.connectionState in ("failed", "closed"):
            for t in keyframes:
                t.cancel()
            await _close_pc(st, pc, viewer)

    local = pc.localDescription
    answer_sdp = local.sdp
    if st.cfg.web.ice_loopback_only:
        answer_sdp, _ = filter_sdp_to_loopback(answer_sdp)
    return web.json_response({"sdp": answer_sdp, "type": local.type})


async def _keyframes(pc: RTCPeerConnection, viewer: ViewerTrack) -> None:
    """Ask the shared encoder for a few keyframes soon after a viewer connects.

    Media can arrive before the viewer's DTLS side is ready and its first keyframe is then
    lost; browsers ask again (PLI), but not every receiver does (aiortc does not on a decode
    error), and it would see nothing until the next keyframe. The encoder also makes one
    every ``video.KEYFRAME_EVERY_S``.
    """
    for delay in KEYFRAMES_AFTER_CONNECT_S:
        await asyncio.sleep(delay)
        if pc.connectionState != "connected":
            return
        viewer.request_keyframe()


async def _close_pc(st: WebState, pc: RTCPeerConnection, viewer: Any) -> None:
    viewer.stop()
    st.pcs.discard(pc)
    st.metrics.viewers.set(len(st.pcs))
    await pc.close()


async def api_prompt(request: web.Request) -> web.Response:
    st = request.app[STATE]
    body = await _read_json(request)
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or len(prompt) > 1000:
        raise web.HTTPBadRequest(text='expected {"prompt": "<text, up to 1000 characters>"}')
    try:
        reply = await _control(st, {"cmd": "set_prompt", "prompt": prompt})
    except PromptcamError as e:
        raise web.HTTPServiceUnavailable(text=str(e)) from None
    if not reply.get("ok"):
        raise web.HTTPBadRequest(
            text=f"engine refused the prompt: {reply.get('error', 'unknown error')}"
        )
    return web.json_response({"ok": True, "prompt": prompt})


async def api_objects(request: web.Request) -> web.Response:
    st = request.app[STATE]
    msg, _, age = st.tracks.latest()
    if msg is None:
        return web.json_response({"ok": True, "seq": None, "prompt": None, "objects": []})
    h = msg.header
    return web.json_response(
        {
            "ok": True,
            "seq": h.seq,
            "prompt": h.prompt,
            "t_capture_ns": h.t_capture_ns,
            "received_age_s": round(age, 3),
            "latency_ms": round((time.time_ns() - h.t_capture_ns) / 1e6, 1),
            "objects": [
                {
                    "id": o.id,
                    "label": o.label,
                    "score": round(o.score, 3),
                    "age": o.age,
                    "state": o.state,
                    "box": o.box,
                }
                for o in h.objects
            ],
        }
    )


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


async def api_stats(request: web.Request) -> web.Response:
    st = request.app[STATE]
    m = st.metrics
    lat = list(m.latencies)
    enc = st.hub.encoder
    web_stats: dict[str, Any] = {
        "viewers": len(st.pcs),
        "annotated_fps_in": round(st.rate_in.rate(m.annotated_n), 2),
        "tracks_fps_in": round(st.rate_tracks.rate(m.tracks_n), 2),
        "video_fps_out": round(st.rate_out.rate(m.frames_sent_n) / max(1, len(st.hub.viewers)), 2),
        "frames_sent": m.frames_sent_n,
        "annotated_received": m.annotated_n,
        "frames_encoded": enc.encoded,
        "keyframes": enc.keyframes,
        "frames_skipped": enc.skipped,
        "viewer_packets_dropped": sorted((v.dropped for v in st.hub.viewers), reverse=True),
        "rejected": st.annotated.rejected_total + st.tracks.rejected_total,
        "latency_ms_p50": None if not lat else round(1e3 * (_percentile(lat, 0.5) or 0), 1),
        "latency_ms_p95": None if not lat else round(1e3 * (_percentile(lat, 0.95) or 0), 1),
    }
    msg, _, _ = st.tracks.latest()
    if msg is not None:
        web_stats["tracks_latency_ms"] = round(
            (msg.header.t_publish_ns - msg.header.t_capture_ns) / 1e6, 1
        )
    engine: dict[str, Any] | None = None
    engine_error: str | None = None
    try:
        reply = await _control(st, {"cmd": "stats"}, 1000)
        if reply.get("ok"):
            engine = reply.get("stats")
        else:
            engine_error = str(reply.get("error"))
    except PromptcamError as e:
        engine_error = str(e)
    return web.json_response(
        {"ok": True, "web": web_stats, "engine": engine, "engine_error": engine_error}
    )


# --------------------------------------------------------------------------- offline jobs


def _parse_boxes(text: str) -> list[tuple[tuple[float, float, float, float], int]]:
    from stream.boxes import parse_box

    return [parse_box(b) for b in text.replace(";", "\n").split() if b.strip()]


async def api_job_create(request: web.Request) -> web.Response:
    st = request.app[STATE]
    if st.jobs.pending() >= 4:
        raise web.HTTPTooManyRequests(text="too many offline jobs queued; wait for one to finish")
    if not request.content_type.startswith("multipart/"):
        raise web.HTTPBadRequest(text="expected a multipart/form-data upload with a 'video' file")
    limit = int(st.cfg.web.max_upload_mb * 2**20)
    job_id, directory = st.jobs.new_upload_dir()
    fields: dict[str, str] = {}
    video: Path | None = None
    try:
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader):
                raise web.HTTPBadRequest(text="nested multipart bodies are not accepted")
            name = part.name
            if name == "video":
                video = directory / "input.video"
                size = 0
                with video.open("wb") as f:
                    while chunk := await part.read_chunk(1 << 20):
                        size += len(chunk)
                        if size > limit:
                            raise web.HTTPRequestEntityTooLarge(
                                max_size=limit,
                                actual_size=size,
                                text=f"upload exceeds the limit of {st.cfg.web.max_upload_mb:g} MB",
                            )
                        await asyncio.get_running_loop().run_in_executor(None, f.write, chunk)
                if size == 0:
                    raise web.HTTPBadRequest(text="the uploaded file is empty")
            elif name in ("prompt", "seed_with", "boxes"):
                value = await part.read(decode=True)
                if len(value) > 4096:
                    raise web.HTTPRequestEntityTooLarge(
                        max_size=4096, actual_size=len(value), text=f"form field {name} is too long"
                    )
                fields[name] = value.decode("utf-8", "replace")
        if video is None:
            raise web.HTTPBadRequest(text="no video file in the upload (form field 'video')")
        seed_with = fields.get("seed_with", st.cfg.engine.seed_with)
        if seed_with not in ("box", "mask", "points"):
            raise web.HTTPBadRequest(
                text=f"seed_with must be box, mask or points, got {seed_with[:20]!r}"
            )
        prompt = fields.get("prompt", "").strip()
        try:
            boxes = _parse_boxes(fields.get("boxes", ""))
        except PromptcamError as e:
            raise web.HTTPBadRequest(text=str(e)) from None
        if not prompt and not boxes:
            raise web.HTTPBadRequest(
                text="give a text prompt (e.g. 'person. car.') or at least one box"
            )
        try:
            info = await asyncio.get_running_loop().run_in_executor(None, probe_video, video)
        except UploadError as e:
            raise web.HTTPBadRequest(text=f"bad video file: {e}") from None
    except web.HTTPException:
        shutil.rmtree(directory, ignore_errors=True)
        raise
    job = Job(job_id, directory, video, prompt, seed_with, boxes, info)
    st.jobs.submit(job)
    return web.json_response(job.as_dict(), status=201)


def _job(request: web.Request) -> Job:
    job = request.app[STATE].jobs.jobs.get(request.match_info["job_id"])
    if job is None:
        raise web.HTTPNotFound(text="no such job")
    return job


async def api_job(request: web.Request) -> web.Response:
    return web.json_response(_job(request).as_dict())


async def _job_file(
    request: web.Request, path: Path, content_type: str, filename: str
) -> web.FileResponse:
    job = _job(request)
    if job.state != "done" or not path.exists():
        raise web.HTTPNotFound(text="the job has no result yet")
    headers = {"Content-Type": content_type}
    if request.query.get("download"):
        headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    return web.FileResponse(path, headers=headers)


async def api_job_video(request: web.Request) -> web.FileResponse:
    job = _job(request)
    return await _job_file(request, job.out_mp4, "video/mp4", f"promptcam-{job.id}.mp4")


async def api_job_tracks(request: web.Request) -> web.FileResponse:
    job = _job(request)
    return await _job_file(
        request, job.tracks_jsonl, "application/x-ndjson", f"promptcam-{job.id}.jsonl"
    )


# --------------------------------------------------------------------------- app


def create_app(
    cfg: Config, *, ctx: zmq.Context[Any] | None = None, jobs_root: Path | None = None
) -> web.Application:
    """The web application; feeds start and stop with it (``on_startup``/``on_cleanup``)."""
    camera = cfg.web.camera or cfg.camera
    m = Metrics()

    def on_annotated(msg: AnnotatedMessage) -> None:
        m.annotated.inc()
        m.annotated_n += 1

    def on_tracks(msg: TracksMessage) -> None:
        m.tracks.inc()
        m.tracks_n += 1

    def on_reject(reason: str) -> None:
        m.rejected.labels(reason).inc()

    ann = annotated_feed(
        cfg.bus.annotated,
        camera,
        max_payload=int(cfg.bus.max_payload_mb * 2**20),
        bus=cfg.bus,
        ctx=ctx,
        on_message=on_annotated,
        on_reject=on_reject,
    )
    trk = tracks_feed(
        cfg.bus.tracks, camera, bus=cfg.bus, ctx=ctx, on_message=on_tracks, on_reject=on_reject
    )

    def on_sent(latency_s: float | None) -> None:
        m.frames_sent.inc()
        m.frames_sent_n += 1
        if latency_s is not None:
            m.latency.observe(latency_s)
            m.latencies.append(latency_s)

    def on_encoded(keyframe: bool) -> None:
        m.frames_encoded.inc()
        m.frames_encoded_n += 1
        if keyframe:
            m.keyframes.inc()

    def on_dropped(n: int) -> None:
        m.packets_dropped.inc(n)

    app = web.Application(
        middlewares=[errors_middleware, auth_middleware, body_limit_middleware],
        client_max_size=int(cfg.web.max_body_kb * 1024),
    )
    state = WebState(
        cfg,
        camera,
        m,
        ann,
        trk,
        VideoHub(ann, cfg.web.video_fps, on_sent, on_encoded, on_dropped),
        JobManager(cfg, jobs_root),
        set(),
        RateMeter(),
        RateMeter(),
        RateMeter(),
    )
    app[STATE] = state
    app.router.add_get("/", page_index)
    app.router.add_get("/offline", page_offline)
    app.router.add_static("/static/", STATIC_DIR)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    app.router.add_post("/offer", offer)
    app.router.add_post("/api/prompt", api_prompt)
    app.router.add_get("/api/objects", api_objects)
    app.router.add_get("/api/stats", api_stats)
    app.router.add_post("/api/jobs", api_job_create)
    app.router.add_get("/api/jobs/{job_id}", api_job)
    app.router.add_get("/api/jobs/{job_id}/video", api_job_video)
    app.router.add_get("/api/jobs/{job_id}/tracks", api_job_tracks)

    async def start_feeds(app: web.Application) -> None:
        ann.start()
        trk.start()

    async def stop_all(app: web.Application) -> None:
        for pc in list(state.pcs):
            await pc.close()
        state.pcs.clear()
        state.hub.close()
        await state.jobs.close()
        ann.close()
        trk.close()

    app.on_startup.append(start_feeds)
    app.on_shutdown.append(stop_all)
    return app


async def serve(
    cfg: Config, stop: asyncio.Event, on_ready: Callable[[str], None] | None = None
) -> None:
    """Run the site until ``stop`` is set."""
    if cfg.web.ice_loopback_only:
        restrict_ice_to_loopback()
    app = create_app(cfg)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, cfg.web.host, cfg.web.port)
    try:
        await site.start()
    except OSError as e:
        await runner.cleanup()
        raise PromptcamError(
            f"cannot listen on {cfg.web.host}:{cfg.web.port}: {e.strerror}"
        ) from None
    server = site._server
    sockets = getattr(server, "sockets", None) or []
    port = sockets[0].getsockname()[1] if sockets else cfg.web.port
    host = cfg.web.host if ":" not in cfg.web.host else f"[{cfg.web.host}]"
    url = f"http://{host}:{port}/"
    if cfg.web.token:
        url += f"?token={cfg.web.token}"
    if on_ready is not None:
        on_ready(url)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main(cfg: Config, args: argparse.Namespace) -> int:
    """``promptcam web``."""
    from setproctitle import setproctitle

    setproctitle("promptcam: web")
    if cfg.web.host not in LOOPBACK_HOSTS and cfg.web.ice_loopback_only:
        log.warning(
            "web.host %s is not loopback but web.ice_loopback_only is set: remote browsers cannot connect video",
            cfg.web.host,
        )

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)

        def ready(url: str) -> None:
            print(f"promptcam web: serving on {url}", flush=True)

        await serve(cfg, stop, ready)

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())
    return 0
