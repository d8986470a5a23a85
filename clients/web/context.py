"""What every route of the web server works with: the app's ``WebState``, reading a JSON body
within the limits (``web.max_body_kb``, ``web.request_timeout_s``), checking user text and the
``camera`` a request names (``camera_of``: that camera's ``CameraChannel``), and control
requests to the engine."""

from __future__ import annotations

import asyncio
import json
import math
from dataclasses import dataclass

from aiohttp import web

from clients.jsontypes import JsonObject
from clients.web.camera_state import SiteMonitor
from clients.web.channels import CameraChannel, CameraChannels
from clients.web.feeds import TopicFeed
from clients.web.jobs import JobManager
from clients.web.limits import ConnectionGuard
from clients.web.metrics import Metrics
from stream import bus as zbus
from stream.config import Config
from stream.errors import PromptcamError
from stream.wire import AnnotatedMessage, TracksMessage

CONTROL_TIMEOUT_MS = 2000
MAX_PROMPT_CHARS = 1000
MAX_LABEL_CHARS = 64


@dataclass
class WebState:
    cfg: Config
    metrics: Metrics
    channels: CameraChannels
    site: SiteMonitor
    annotated: TopicFeed[AnnotatedMessage]
    tracks: TopicFeed[TracksMessage]
    jobs: JobManager
    guard: ConnectionGuard | None = None  # set by serve() once the socket listens


STATE = web.AppKey("state", WebState)


def error_response(status: int, message: str) -> web.Response:
    return web.json_response({"ok": False, "error": message}, status=status)


async def read_body(request: web.Request) -> bytes:
    """The whole body, within ``web.max_body_kb`` (413) and ``web.request_timeout_s`` (408)."""
    web_cfg = request.app[STATE].cfg.web
    try:
        return await asyncio.wait_for(request.read(), web_cfg.request_timeout_s)
    except asyncio.TimeoutError:
        request.app[STATE].metrics.limit("body_timeouts")
        raise web.HTTPRequestTimeout(
            text=f"the request body did not arrive within {web_cfg.request_timeout_s:g} s"
        ) from None


async def read_json(request: web.Request) -> JsonObject:
    body = await read_body(request)
    try:
        obj = json.loads(body)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise web.HTTPBadRequest(text="request body is not JSON") from None
    if not isinstance(obj, dict):
        raise web.HTTPBadRequest(text="request body must be a JSON object")
    return obj


def clean_text(value: object, what: str, max_chars: int, *, allow_empty: bool = False) -> str:
    """``value`` stripped, if it is text a person could have typed: a string of at most
    ``max_chars`` printable characters (no control characters, no lone surrogates)."""
    if not isinstance(value, str):
        raise web.HTTPBadRequest(text=f"{what} must be text")
    text = value.strip()
    if not text and not allow_empty:
        raise web.HTTPBadRequest(text=f"{what} is empty")
    if len(text) > max_chars:
        raise web.HTTPBadRequest(text=f"{what} is longer than {max_chars} characters")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise web.HTTPBadRequest(text=f"{what} is not valid Unicode text") from None
    if not text.isprintable():
        raise web.HTTPBadRequest(text=f"{what} contains control characters")
    return text


def box_of(value: object) -> list[float]:
    """A box ``[x1, y1, x2, y2]`` of finite numbers with x2 > x1 and y2 > y1."""
    if not isinstance(value, list) or len(value) != 4:
        raise web.HTTPBadRequest(text="box must be [x1, y1, x2, y2]")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        raise web.HTTPBadRequest(text="box must hold 4 numbers")
    box = [float(v) for v in value]
    if not all(math.isfinite(v) and abs(v) < 1e6 for v in box):
        raise web.HTTPBadRequest(text="box coordinates must be finite pixel positions")
    x1, y1, x2, y2 = box
    if not (x2 > x1 and y2 > y1):
        raise web.HTTPBadRequest(text="the box has no area (draw it from one corner to the other)")
    return box


MAX_NAMES_SHOWN = 12


def describe_cameras(names: list[str]) -> str:
    """``a, b, c`` (the first few of many), or ``no camera``."""
    if not names:
        return "no camera"
    more = len(names) - MAX_NAMES_SHOWN
    return ", ".join(names[:MAX_NAMES_SHOWN]) + (f" and {more} more" if more > 0 else "")


def camera_of(request: web.Request) -> CameraChannel:
    """The camera a request names (``?camera=``): 404 for one this server does not show. It
    may be left out when the server shows one camera; with several it is required (400)."""
    st = request.app[STATE]
    name = request.query.get("camera")
    if name is None:
        only = st.channels.only()
        if only is not None:
            return only
        names = st.channels.names()
        if not names:
            raise web.HTTPNotFound(text="this server shows no camera now")
        raise web.HTTPBadRequest(
            text=f"this server shows several cameras ({describe_cameras(names)}): name one with ?camera=NAME"
        )
    channel = st.channels.get(name)
    if channel is None:
        raise web.HTTPNotFound(
            text=f"unknown camera {name[:64]!r}: this server shows {describe_cameras(st.channels.names())}"
        )
    return channel


async def control(
    st: WebState,
    payload: JsonObject,
    camera: str | None,
    timeout_ms: int = CONTROL_TIMEOUT_MS,
) -> JsonObject:
    """A control request naming ``camera`` (v1.1; None: none named), in an executor thread
    (ZeroMQ REQ blocks); 503 when the engine does not answer."""
    loop = asyncio.get_running_loop()
    if camera is not None:
        payload = {**payload, "camera": camera}
    try:
        return await loop.run_in_executor(
            None, zbus.request, st.cfg.bus.control, payload, timeout_ms, st.cfg.bus
        )
    except PromptcamError as e:
        raise web.HTTPServiceUnavailable(text=str(e)) from None


async def control_ok(st: WebState, payload: JsonObject, camera: str, what: str) -> JsonObject:
    """``control`` for ``camera``, with a refusal of the engine as 400 naming ``what`` was
    refused."""
    reply = await control(st, payload, camera)
    if not reply.get("ok"):
        raise web.HTTPBadRequest(
            text=f"engine refused {what}: {str(reply.get('error', 'unknown error'))[:300]}"
        )
    return reply
