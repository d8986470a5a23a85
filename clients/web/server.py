"""``promptcam web``: the live view and control page (aiohttp + aiortc), for every camera.

Shows the cameras of its camera list (camera_list.py: the engine's ``cameras`` reply, followed
at runtime; ``web.camera`` set: that camera only). Reads, for each: ``annotated.<camera>``
(video) and ``tracks.<camera>`` (object list) from the engine, on one socket per topic kind,
newest message per camera only (older ones are dropped and never queued; the last few are kept
for snapshots, see snapshots.py); ``capture.<camera>`` status and the engine's ``stats`` for
the camera banner (camera_state.py); sends control requests from executor threads. Serves:

- ``/`` the live page (a grid of the cameras), ``/offline`` the offline page, ``/static/*``;
- ``POST /offer?camera=NAME`` WebRTC SDP exchange for one camera (H.264 only: one shared
  encoder per camera, running while someone watches it, see video.py). A page opens one peer
  connection per camera it shows: cameras come and go at runtime without renegotiating a
  shared connection, and one camera's connection failing or reconnecting leaves the others'
  alone;
- the live page's API (live_api.py), the offline page's (offline_api.py) and the events'
  (events_api.py: events, snapshots, counts, zones);
- ``GET /healthz`` (never needs the token), ``GET /metrics`` (Prometheus text).

Binds ``web.host`` (loopback by default). When ``web.token`` is set (it must be off loopback)
every other route needs it as ``?token=``, ``Authorization: Bearer`` or ``X-Promptcam-Token``.
Limits: bodies ``web.max_body_kb`` (uploads ``web.max_upload_mb``), 413 beyond; a body must
arrive within ``web.request_timeout_s`` (408); at most ``web.max_viewers`` viewers per camera
(503 beyond: each camera's viewers share its encoder, so the cap bounds the fan-out of every
encoder, and a page that shows every camera takes one slot of each), each closed if not
connected within ``web.connect_timeout_s``; at most
``web.max_connections`` connections, idle ones closed after ``web.idle_timeout_s`` (limits.py).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hmac
import logging
import math
import signal
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path

import zmq
from aiohttp import web
from aiortc import RTCPeerConnection, RTCRtpSender, RTCSessionDescription
from aiortc.exceptions import OperationError
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from clients.jsontypes import JsonObject, ZmqContext
from clients.web import events_api, live_api, offline_api
from clients.web.camera_list import CameraLister, camera_lister
from clients.web.camera_state import SiteMonitor
from clients.web.channels import CameraChannel, CameraChannels
from clients.web.context import STATE, WebState, camera_of, error_response, read_json
from clients.web.feeds import annotated_feed, tracks_feed
from clients.web.ice import filter_sdp_to_loopback, restrict_ice_to_loopback, rtc_configuration
from clients.web.jobs import JobManager
from clients.web.limits import ConnectionGuard, connection_limit
from clients.web.metrics import Metrics
from clients.web.sdp import offer_problem
from clients.web.video import ViewerTrack
from stream.config import LOOPBACK_HOSTS, Config
from stream.errors import PromptcamError

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"
KEYFRAMES_AFTER_CONNECT_S = (0.2, 0.3, 0.5, 1.0)
H264_CODECS = [
    c for c in RTCRtpSender.getCapabilities("video").codecs if c.mimeType.lower() == "video/h264"
]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


# --------------------------------------------------------------------------- middlewares


def _token_of(request: web.Request) -> bytes:
    """The token the request gives, as bytes (b"" when none). aiohttp decodes header bytes that
    are not UTF-8 as lone surrogates: they are encoded back as they came, so such a token is a
    wrong token (401) like any other."""
    auth = request.headers.get("Authorization", "")
    if auth.lower().startswith("bearer "):
        given: str | None = auth[7:].strip()
    else:
        given = request.headers.get("X-Promptcam-Token") or request.query.get("token")
    return (given or "").encode("utf-8", "surrogateescape")


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
        return error_response(e.status, msg or e.reason)
    if resp.status >= 400:
        st.metrics.request_errors.labels(str(resp.status)).inc()
    return resp


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    expected = request.app[STATE].cfg.web.token
    if (
        expected
        and request.path != "/healthz"
        and not hmac.compare_digest(_token_of(request), expected.encode())
    ):
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


@web.middleware
async def busy_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Tells the connection guard which connections have a request in progress."""
    guard = request.app[STATE].guard
    if guard is None:
        return await handler(request)
    return await guard.middleware(request, handler)


# --------------------------------------------------------------------------- pages, health


async def page_index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC_DIR / "index.html")


async def page_offline(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC_DIR / "offline.html")


async def healthz(request: web.Request) -> web.Response:
    st = request.app[STATE]
    ages: dict[str, float | None] = {}
    for ch in st.channels:
        _, _, age = ch.annotated.latest()
        ages[ch.name] = None if math.isinf(age) else round(age, 3)
    known = [a for a in ages.values() if a is not None]
    names = list(ages)
    return web.json_response(
        {
            "ok": True,
            "camera": names[0] if len(names) == 1 else None,
            "cameras": ages,
            "last_annotated_age_s": min(known) if known else None,
            "viewers": st.channels.viewers(),
        }
    )


async def metrics(request: web.Request) -> web.Response:
    st = request.app[STATE]
    for ch in st.channels:
        st.metrics.viewers.labels(ch.name).set(len(ch.pcs))
    return web.Response(
        body=generate_latest(st.metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
    )


# --------------------------------------------------------------------------- WebRTC viewers


def _first_line(e: BaseException) -> str:
    return str(e).splitlines()[0][:200] if str(e) else type(e).__name__


def _offer_sdp(st: WebState, ch: CameraChannel, params: JsonObject) -> str:
    """The offer's SDP, checked (400 when malformed, 503 when the camera has all the viewers
    it may), its non-loopback candidates dropped when ``web.ice_loopback_only``."""
    sdp, kind = params.get("sdp"), params.get("type")
    if not isinstance(sdp, str) or kind != "offer":
        raise web.HTTPBadRequest(text='expected {"sdp": "<offer SDP>", "type": "offer"}')
    problem = offer_problem(sdp)
    if problem:
        raise web.HTTPBadRequest(text=f"malformed SDP offer: {problem}")
    if len(ch.pcs) >= st.cfg.web.max_viewers:
        st.metrics.limit("viewers_refused")
        raise web.HTTPServiceUnavailable(
            text=f"too many viewers of camera {ch.name} ({st.cfg.web.max_viewers}, web.max_viewers): close another page"
        )
    if st.cfg.web.ice_loopback_only:
        sdp, dropped = filter_sdp_to_loopback(sdp)
        if dropped:
            log.debug("dropped %d non-loopback ICE candidates from an offer", dropped)
    return sdp


async def _negotiate(
    st: WebState, ch: CameraChannel, pc: RTCPeerConnection, viewer: ViewerTrack, sdp: str
) -> None:
    """Apply the offer and make the answer; on any failure the viewer is closed (400 for a
    bad offer)."""
    try:
        # The transceiver exists before the offer is applied, so the offer's video section
        # binds to it and its codec preferences (H.264 only: the shared encoder's packets are
        # H.264) decide what is negotiated.
        transceiver = pc.addTransceiver(viewer, direction="sendonly")
        transceiver.setCodecPreferences(H264_CODECS)
        # aiortc calls this on a PLI/FIR; its own encoder is not used for packets
        setattr(transceiver.sender, "_send_keyframe", viewer.request_keyframe)  # noqa: B010
        await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
        if transceiver.mid is None:
            raise ValueError("no video section")
        await pc.setLocalDescription(await pc.createAnswer())
    except OperationError as e:
        await _close_pc(st, ch, pc, viewer)
        raise web.HTTPBadRequest(
            text=f"no common video codec: this server sends H.264 only ({e})"
        ) from None
    except (
        ValueError,
        TypeError,
        KeyError,
        IndexError,
        AttributeError,
        AssertionError,  # aiortc's SDP parser asserts on some malformed values
        zmq.ZMQError,
    ) as e:
        await _close_pc(st, ch, pc, viewer)
        raise web.HTTPBadRequest(text=f"malformed SDP offer: {_first_line(e)}") from None
    except BaseException:
        await _close_pc(st, ch, pc, viewer)
        raise


def _watch(st: WebState, ch: CameraChannel, pc: RTCPeerConnection, viewer: ViewerTrack) -> None:
    """The viewer's tasks: keyframes once it connects, closing when it fails or closes, and
    reclaiming it if it never connects."""
    tasks: set[asyncio.Task[None]] = set()
    loop = asyncio.get_running_loop()

    def spawn(coro: Coroutine[None, None, None]) -> None:
        task = loop.create_task(coro)
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    @pc.on("connectionstatechange")
    async def on_state() -> None:
        log.info("viewer %x of %s: %s", id(pc), ch.name, pc.connectionState)
        if pc.connectionState == "connected":
            spawn(_keyframes(pc, viewer))
        if pc.connectionState in ("failed", "closed"):
            for t in list(tasks):
                if t is not asyncio.current_task():
                    t.cancel()
            await _close_pc(st, ch, pc, viewer)

    spawn(_reclaim_unconnected(st, ch, pc, viewer))


async def offer(request: web.Request) -> web.Response:
    st = request.app[STATE]
    ch = camera_of(request)
    sdp = _offer_sdp(st, ch, await read_json(request))
    pc = RTCPeerConnection(configuration=rtc_configuration())
    viewer = ch.hub.subscribe()
    ch.pcs.add(pc)  # counted at once, so concurrent offers cannot pass the viewer limit
    await _negotiate(st, ch, pc, viewer, sdp)
    if ch.closed:  # the camera went away while the offer was answered
        await _close_pc(st, ch, pc, viewer)
        raise web.HTTPNotFound(text=f"camera {ch.name} is no longer shown")
    st.metrics.viewers.labels(ch.name).set(len(ch.pcs))
    _watch(st, ch, pc, viewer)
    answer_sdp = pc.localDescription.sdp
    if st.cfg.web.ice_loopback_only:
        answer_sdp, _ = filter_sdp_to_loopback(answer_sdp)
    return web.json_response({"sdp": answer_sdp, "type": pc.localDescription.type})


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


async def _reclaim_unconnected(
    st: WebState, ch: CameraChannel, pc: RTCPeerConnection, viewer: ViewerTrack
) -> None:
    """Close a viewer that did not connect within ``web.connect_timeout_s`` (an offer without
    usable candidates, a page closed meanwhile): it would hold a slot and the encoder."""
    await asyncio.sleep(st.cfg.web.connect_timeout_s)
    if pc in ch.pcs and pc.connectionState != "connected":
        st.metrics.limit("viewers_timed_out")
        log.info(
            "viewer %x not connected after %gs (%s): closed",
            id(pc),
            st.cfg.web.connect_timeout_s,
            pc.connectionState,
        )
        await _close_pc(st, ch, pc, viewer)


async def _close_pc(
    st: WebState, ch: CameraChannel, pc: RTCPeerConnection, viewer: ViewerTrack
) -> None:
    viewer.stop()
    ch.pcs.discard(pc)
    if not ch.closed:  # a closed camera's series are gone
        st.metrics.viewers.labels(ch.name).set(len(ch.pcs))
    await pc.close()


# --------------------------------------------------------------------------- app


async def follow_cameras(st: WebState, every_s: float = 0.5) -> None:
    """Keep the channels equal to the site monitor's camera list (it asks once a second)."""
    while True:
        try:
            st.channels.sync([c.camera for c in st.site.cameras()])
        except Exception:  # one bad round must not stop following
            log.exception("following the camera list failed")
        await asyncio.sleep(every_s)


def _add_routes(app: web.Application) -> None:
    app.router.add_get("/", page_index)
    app.router.add_get("/offline", page_offline)
    app.router.add_static("/static/", STATIC_DIR)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    app.router.add_post("/offer", offer)
    live_api.add_routes(app)
    offline_api.add_routes(app)
    events_api.add_routes(app)


def _add_lifecycle(app: web.Application, state: WebState) -> None:
    """Feeds, the site monitor and the camera follower start with the app and stop with it."""
    follower: list[asyncio.Task[None]] = []

    async def start_feeds(app: web.Application) -> None:
        state.annotated.start()
        state.tracks.start()
        state.site.start()
        follower.append(asyncio.get_running_loop().create_task(follow_cameras(state)))

    async def stop_all(app: web.Application) -> None:
        for task in follower:
            task.cancel()
        await state.channels.close()
        await state.jobs.close()
        state.site.close()
        state.annotated.close()
        state.tracks.close()

    app.on_startup.append(start_feeds)
    app.on_shutdown.append(stop_all)


def create_app(
    cfg: Config,
    *,
    ctx: ZmqContext | None = None,
    jobs_root: Path | None = None,
    cameras: CameraLister | None = None,
) -> web.Application:
    """The web application; feeds start and stop with it (``on_startup``/``on_cleanup``).
    ``cameras``: where the camera list comes from (default: ``camera_lister(cfg)``)."""
    lister = cameras or camera_lister(cfg)
    m = Metrics()

    def on_reject(reason: str) -> None:
        m.rejected.labels(reason).inc()

    ann = annotated_feed(
        cfg.bus.annotated,
        max_payload=int(cfg.bus.max_payload_mb * 2**20),
        bus=cfg.bus,
        ctx=ctx,
        on_reject=on_reject,
    )
    trk = tracks_feed(cfg.bus.tracks, bus=cfg.bus, ctx=ctx, on_reject=on_reject)
    site = SiteMonitor(cfg, lister, ctx=ctx)
    channels = CameraChannels(m, ann, trk, site, cfg.web.video_fps)
    ann.set_on_message(channels.on_annotated)
    trk.set_on_message(channels.on_tracks)
    channels.sync([c.camera for c in lister.initial()])
    m.add_camera_figures(channels.figures)

    app = web.Application(
        middlewares=[busy_middleware, errors_middleware, auth_middleware, body_limit_middleware],
        client_max_size=int(cfg.web.max_body_kb * 1024),
    )
    state = WebState(cfg, m, channels, site, ann, trk, JobManager(cfg, jobs_root))
    app[STATE] = state
    _add_routes(app)
    _add_lifecycle(app, state)
    return app


async def serve(
    cfg: Config,
    stop: asyncio.Event,
    on_ready: Callable[[str], None] | None = None,
    cameras: CameraLister | None = None,
) -> None:
    """Run the site until ``stop`` is set; ``cameras`` as for ``create_app``."""
    if cfg.web.ice_loopback_only:
        restrict_ice_to_loopback()
    app = create_app(cfg, cameras=cameras)
    # keepalive_timeout also runs before a connection's first request: partial headers end
    runner = web.AppRunner(app, access_log=None, keepalive_timeout=cfg.web.idle_timeout_s)
    await runner.setup()
    assert runner.server is not None
    st = app[STATE]
    st.guard = ConnectionGuard(
        runner.server, connection_limit(cfg.web.max_connections), st.metrics.limit
    )
    loop = asyncio.get_running_loop()
    try:
        server = await loop.create_server(st.guard, cfg.web.host, cfg.web.port, backlog=128)
    except OSError as e:
        await runner.cleanup()
        raise PromptcamError(
            f"cannot listen on {cfg.web.host}:{cfg.web.port}: {e.strerror}"
        ) from None
    port = server.sockets[0].getsockname()[1] if server.sockets else cfg.web.port
    host = cfg.web.host if ":" not in cfg.web.host else f"[{cfg.web.host}]"
    url = f"http://{host}:{port}/"
    if cfg.web.token:
        url += f"?token={cfg.web.token}"
    if on_ready is not None:
        on_ready(url)
    try:
        await stop.wait()
    finally:
        server.close()
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
