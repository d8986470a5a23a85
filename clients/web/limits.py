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
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

log = logging.getLogger(__name__)

FILES_RESERVED = 128  # ZeroMQ sockets, WebRTC peers, job files, logs: never for connections
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
        # keyed by aiohttp's handlers (no weak references): pruned to the open ones per call
        self._busy: dict[RequestHandler, int] = {}
        self._last_active: dict[RequestHandler, float] = {}
        self._closing: set[RequestHandler] = set()
        self.refused = 0
        self.evicted = 0

    def open_connections(self) -> int:
        return sum(1 for c in self._server.connections if c not in self._closing)

    def _prune(self) -> None:
        open_now = set(self._server.connections)
        for d in (self._last_active, self._busy):
            for c in [c for c in d if c not in open_now]:
                del d[c]
        self._closing &= open_now

    def __call__(self) -> asyncio.BaseProtocol:
        self._prune()
        if self.open_connections() >= self.max_connections:
            victim = self._longest_idle()
            if victim is None:
                self.refused += 1
                self._on_limit("connections_refused")
                return _Refusal()
            self._closing.add(victim)
            victim.force_close()
            self.evicted += 1
            self._on_limit("connections_evicted")
        proto = self._server()
        self._last_active[proto] = time.monotonic()
        return proto

    def _longest_idle(self) -> RequestHandler | None:
        idle = [
            c for c in self._server.connections if c not in self._busy and c not in self._closing
        ]
        return min(idle, key=lambda c: self._last_active.get(c, 0.0), default=None)

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        proto = request.protocol
        if not isinstance(proto, RequestHandler):
            return await handler(request)
        self._busy[proto] = self._busy.get(proto, 0) + 1
        try:
            resp = await handler(request)
            if isinstance(resp, web.FileResponse) and not resp.prepared:
                await resp.prepare(request)  # the file is sent now, while marked busy
            return resp
        finally:
            n = self._busy.pop(proto, 1) - 1
            if n > 0:
                self._busy[proto] = n
            self._last_active[proto] = time.monotonic()


def describe_limits(guard: ConnectionGuard, idle_timeout_s: float) -> dict[str, Any]:
    """The guard's figures, for ``/api/stats``."""
    return {
        "connections": guard.open_connections(),
        "max_connections": guard.max_connections,
        "connections_refused": guard.refused,
        "connections_evicted": guard.evicted,
        "idle_timeout_s": idle_timeout_s,
    }
