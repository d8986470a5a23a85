"""HTTP connection limits of the web server (``web.max_connections``, ``web.idle_timeout_s``).

``ConnectionGuard`` is the protocol factory of the listening socket, in front of aiohttp's: it
keeps at most ``max_connections`` connections open. At the limit a new connection replaces
the one that has waited longest without a request in progress (a client holding half-sent
headers, an idle keep-alive: browsers reconnect when they need to), so a fresh ``/healthz``
always gets through; when every connection is busy with a request, the new one is answered
``503`` at once and closed. Either way it is counted, never logged per connection. A
connection without a complete request is closed after ``idle_timeout_s`` by aiohttp's
keep-alive timer (which also runs before the first request), and the process's file limit is
raised, or the connection limit lowered, so that accepting never fails for lack of files.
"""

from __future__ import annotations

import asyncio
import json
import logging
import resource
import time
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from clients.jsontypes import JsonObject

log = logging.getLogger(__name__)

FILES_RESERVED = 256  # one accept burst (backlog 128), ZeroMQ, WebRTC peers, job files, logs
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def connection_limit(wanted: int) -> int:
    """``wanted``, or less where the file limit cannot be raised to hold that many sockets
    besides ``FILES_RESERVED`` other files."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = wanted + FILES_RESERVED
    if soft != resource.RLIM_INFINITY and soft < need:
        target = need if hard == resource.RLIM_INFINITY else min(need, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as e:
            log.warning("cannot raise the open-file limit to %d: %s", target, e)
    if soft != resource.RLIM_INFINITY and soft < need:
        limit = max(8, soft - FILES_RESERVED)
        log.warning(
            "web.max_connections %d lowered to %d: the open-file limit is %d", wanted, limit, soft
        )
        return limit
    return wanted


class _Refusal(asyncio.Protocol):
    """Answers ``503`` and closes: every connection is busy."""

    BODY = json.dumps(
        {"ok": False, "error": "too many connections: every one is busy; retry in a moment"}
    ).encode()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.WriteTransport)
        transport.write(
            b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
            b"Retry-After: 1\r\nConnection: close\r\n"
            + f"Content-Length: {len(self.BODY)}\r\n\r\n".encode()
            + self.BODY
        )
        transport.close()

    def data_received(self, data: bytes) -> None:
        """Whatever the client sends is ignored: the answer is already on its way."""


class _Counted(asyncio.Protocol):
    """aiohttp's handler of one connection, seen by the guard from accept to close (aiohttp
    registers a connection only once it is made, after a whole burst was accepted)."""

    def __init__(self, guard: ConnectionGuard, handler: RequestHandler) -> None:
        self.guard = guard
        self.handler = handler
        self.made = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self.guard.evicted_before_made(self.handler):
            transport.close()  # replaced while it waited in the accept burst
            return
        self.made = True
        self.handler.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self.made:
            self.handler.data_received(data)

    def eof_received(self) -> None:
        if self.made:
            self.handler.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self.guard._lost(self.handler)
        if self.made:
            self.handler.connection_lost(exc)

    def pause_writing(self) -> None:
        self.handler.pause_writing()

    def resume_writing(self) -> None:
        self.handler.resume_writing()


class ConnectionGuard:
    """Protocol factory that caps open connections around aiohttp's ``Server``.

    ``middleware`` must be installed on the app: it tells busy connections (a request in
    progress, a file being sent) from idle ones.
    """

    def __init__(
        self,
        server: web.Server,
        max_connections: int,
        on_limit: Callable[[str], None] | None = None,
    ) -> None:
        self._server = server
        self.max_connections = max_connections
        self._on_limit = on_limit or (lambda what: None)
        self._last_active: dict[RequestHandler, float] = {}  # every open connection
        self._busy: dict[RequestHandler, int] = {}
        self._closing: set[RequestHandler] = set()
        self.refused = 0
        self.evicted = 0

    def open_connections(self) -> int:
        return len(self._last_active) - len(self._closing)

    def _lost(self, handler: RequestHandler) -> None:
        self._last_active.pop(handler, None)
        self._busy.pop(handler, None)
        self._closing.discard(handler)

    def __call__(self) -> asyncio.BaseProtocol:
        if self.open_connections() >= self.max_connections:
            victim = self._longest_idle()
            if victim is None:
                self.refused += 1
                self._on_limit("connections_refused")
                return _Refusal()
            self._closing.add(victim)
            if victim.transport is not None:
                victim.force_close()
            self.evicted += 1
            self._on_limit("connections_evicted")
        handler = self._server()
        self._last_active[handler] = time.monotonic()
        return _Counted(self, handler)

    def evicted_before_made(self, handler: RequestHandler) -> bool:
        return handler in self._closing

    def _longest_idle(self) -> RequestHandler | None:
        """The connection idle longest (no request in progress): one already serving first,
        else the oldest still waiting in an accept burst."""
        idle = [
            (c.transport is None, t, i, c)
            for i, (c, t) in enumerate(self._last_active.items())
            if c not in self._busy and c not in self._closing
        ]
        return min(idle)[3] if idle else None

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        proto = request.protocol
        if not isinstance(proto, RequestHandler) or proto not in self._last_active:
            return await handler(request)
        self._busy[proto] = self._busy.get(proto, 0) + 1
        # busy until the response is sent: ``request.task`` also writes it (a file: all of it)
        request.task.add_done_callback(lambda _task: self._request_done(proto))
        return await handler(request)

    def _request_done(self, proto: RequestHandler) -> None:
        n = self._busy.pop(proto, 1) - 1
        if proto in self._last_active:
            if n > 0:
                self._busy[proto] = n
            self._last_active[proto] = time.monotonic()


def describe_limits(guard: ConnectionGuard, idle_timeout_s: float) -> JsonObject:
    """The guard's figures, for ``/api/stats``."""
    return {
        "connections": guard.open_connections(),
        "max_connections": guard.max_connections,
        "connections_refused": guard.refused,
        "connections_evicted": guard.evicted,
        "idle_timeout_s": idle_timeout_s,
    }
