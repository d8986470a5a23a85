"""The fleet page: one page for every camera of the fleet, served by the gateway.

``/`` a grid with every camera's annotated video (MJPEG from the relay's newest JPEGs) and its
state, engine, node, fps and objects, plus the engines and nodes; ``/api/status`` the fleet
status (the controller's, as ``promptcam fleet status --json`` prints it, plus the relay's
counts); ``/snapshot/{camera}.jpg`` the newest annotated frame; ``/mjpeg/{camera}`` a
``multipart/x-mixed-replace`` stream of them at most ``web.video_fps``; ``/healthz``.
Binds ``web.host``:``web.port`` (loopback unless configured); with ``web.token`` set (required
off loopback) every route but ``/healthz`` needs it (``?token=``, ``Authorization: Bearer`` or
``X-Promptcam-Token``). At most ``MAX_STREAMS`` video streams at once (503 beyond).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web

from stream.config import WebConfig

log = logging.getLogger(__name__)

STATIC = Path(__file__).resolve().parent / "static" / "fleet.html"
MAX_STREAMS = 32
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class FleetPage:
    """The page server in its own thread and event loop. ``status()`` gives the status JSON;
    ``jpeg(camera)`` the newest JPEG and a counter that grows with every new one."""

    def __init__(
        self,
        cfg: WebConfig,
        status: Callable[[], dict[str, object]],
        jpeg: Callable[[str], tuple[bytes | None, int]],
    ) -> None:
        self.cfg = cfg
        self._status = status
        self._jpeg = jpeg
        self._streams = 0
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._serve, name="fleet-page", daemon=True)

    def start(self, timeout: float = 10.0) -> FleetPage:
        self._thread.start()
        self._started.wait(timeout)
        if self._error is not None:
            raise self._error
        return self

    def _app(self) -> web.Application:
        app = web.Application(middlewares=[self._auth])
        app.router.add_get("/", self._index)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/api/status", self._api_status)
        app.router.add_get("/snapshot/{camera}.jpg", self._snapshot)
        app.router.add_get("/mjpeg/{camera}", self._mjpeg)
        return app

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._runner = web.AppRunner(self._app(), access_log=None)
            self._loop.run_until_complete(self._runner.setup())
            site = web.TCPSite(self._runner, self.cfg.host, self.cfg.port)
            self._loop.run_until_complete(site.start())
        except BaseException as e:  # reported to start(): a port in use, a bad host
            self._error = e
            self._started.set()
            return
        self._started.set()
        self._loop.run_forever()
        self._loop.run_until_complete(self._runner.cleanup())
        self._loop.close()

    @web.middleware
    async def _auth(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        expected = self.cfg.token
        if expected and request.path != "/healthz":
            auth = request.headers.get("Authorization", "")
            given = (
                auth[7:].strip()
                if auth.lower().startswith("bearer ")
                else request.headers.get("X-Promptcam-Token") or request.query.get("token") or ""
            )
            if not hmac.compare_digest(given.encode(), expected.encode()):
                raise web.HTTPUnauthorized(text="missing or wrong token")
        return await handler(request)

    async def _index(self, request: web.Request) -> web.Response:
        return web.Response(text=STATIC.read_text(), content_type="text/html")

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async def _api_status(self, request: web.Request) -> web.Response:
        status = await asyncio.get_running_loop().run_in_executor(None, self._status)
        return web.json_response(status)

    async def _snapshot(self, request: web.Request) -> web.Response:
        data, _ = self._jpeg(request.match_info["camera"])
        if data is None:
            raise web.HTTPNotFound(text="no annotated frame of this camera yet")
        return web.Response(body=data, content_type="image/jpeg")

    async def _mjpeg(self, request: web.Request) -> web.StreamResponse:
        camera = request.match_info["camera"]
        if self._streams >= MAX_STREAMS:
            raise web.HTTPServiceUnavailable(text=f"at most {MAX_STREAMS} video streams")
        self._streams += 1
        resp = web.StreamResponse(
            headers={"Content-Type": "multipart/x-mixed-replace; boundary=frame"}
        )
        try:
            await resp.prepare(request)
            last = -1
            period = 1.0 / self.cfg.video_fps
            while True:
                data, n = self._jpeg(camera)
                if data is not None and n != last:
                    last = n
                    await resp.write(
                        b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: "
                        + str(len(data)).encode()
                        + b"\r\n\r\n"
                        + data
                        + b"\r\n"
                    )
                await asyncio.sleep(period)
        except ConnectionResetError:
            pass  # the viewer left
        finally:
            self._streams -= 1
        return resp

    def close(self) -> None:
        if self._thread.is_alive() and self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5.0)
