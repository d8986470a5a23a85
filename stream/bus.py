"""ZeroMQ sockets as promptcam uses them: loopback-only binds unless allowed, linger 0,
optional CURVE encryption, and receive with a poll timeout so nothing blocks forever."""

from __future__ import annotations

import contextlib
import logging
import random
import socket
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeAlias, overload

import zmq
import zmq.auth

from stream.config import BusConfig, off_host
from stream.errors import PromptcamError

log = logging.getLogger(__name__)

# The sockets and contexts promptcam makes: pyzmq's default classes (``send`` takes and
# ``recv`` gives bytes).
Socket: TypeAlias = "zmq.Socket[bytes]"
Context: TypeAlias = "zmq.Context[zmq.Socket[bytes]]"


class BusError(PromptcamError):
    """A socket could not be bound or connected; the message is one line."""


def _ephemeral_range() -> tuple[int, int]:
    try:
        lo, hi = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(lo), int(hi)
    except (OSError, ValueError):
        return 32768, 60999


_handed_out: set[int] = set()
_rng = random.Random()


def free_loopback_port() -> int:
    """A loopback TCP port that binds now, not handed out before by this process, and outside
    the kernel's ephemeral range. A port the kernel picks for ``bind(0)`` comes from that range,
    where every outgoing connection (ZeroMQ's connects and reconnects among them) also takes its
    local port, so it can be taken between being picked and being bound by a server."""
    return free_port("127.0.0.1")


def free_port(host: str) -> int:
    """:func:`free_loopback_port` for any local address ``host`` (IPv4 or IPv6)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    lo, hi = _ephemeral_range()
    outside = [(a, b) for a, b in ((3024, lo - 1), (hi + 1, 65535)) if b - a >= 1000]
    if not outside:  # the ephemeral range covers (nearly) everything: let the kernel pick
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.bind((host, 0))
            return int(s.getsockname()[1])
    first, last = max(outside, key=lambda r: r[1] - r[0])
    for _ in range(200):
        port = _rng.randint(first, last)
        if port in _handed_out:
            continue
        with socket.socket(family, socket.SOCK_STREAM) as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise BusError(f"no free port on {host} outside the ephemeral range {lo}-{hi}")


def free_loopback_endpoint() -> str:
    """``tcp://127.0.0.1:PORT`` on a :func:`free_loopback_port`."""
    return f"tcp://127.0.0.1:{free_loopback_port()}"


def check_bind_allowed(endpoint: str, allow_remote: bool) -> None:
    if off_host(endpoint) and not allow_remote:
        raise BusError(
            f"refusing to bind {endpoint}: not a loopback address (set bus.allow_remote: true to allow)"
        )


def _curve_server(sock: Socket, bus: BusConfig) -> None:
    c = bus.curve
    if c.server_secret_key_file is None:
        raise BusError("bus.curve.server_secret_key_file is required on the binding side")
    pub, sec = zmq.auth.load_certificate(str(c.server_secret_key_file))
    if sec is None:
        raise BusError(f"{c.server_secret_key_file} holds no secret key")
    sock.curve_secretkey = sec
    sock.curve_publickey = pub
    sock.curve_server = True


def _curve_client(sock: Socket, bus: BusConfig) -> None:
    c = bus.curve
    if c.client_secret_key_file is None or c.server_public_key_file is None:
        raise BusError(
            "bus.curve needs client_secret_key_file and server_public_key_file on the connecting side"
        )
    pub, sec = zmq.auth.load_certificate(str(c.client_secret_key_file))
    server_pub, _ = zmq.auth.load_certificate(str(c.server_public_key_file))
    if sec is None:
        raise BusError(f"{c.client_secret_key_file} holds no secret key")
    sock.curve_secretkey = sec
    sock.curve_publickey = pub
    sock.curve_serverkey = server_pub


def bind(
    ctx: Context,
    kind: int,
    endpoint: str,
    bus: BusConfig | None = None,
    sndhwm: int | None = None,
    curve: bool = False,
    maxmsgsize: int | None = None,
) -> Socket:
    """A socket of ``kind`` bound to ``endpoint`` (loopback unless ``bus.allow_remote``).
    ``maxmsgsize``: larger incoming parts are dropped by ZeroMQ unread (peer disconnected)."""
    bus = bus or BusConfig()
    check_bind_allowed(endpoint, bus.allow_remote)
    sock = ctx.socket(kind)
    sock.linger = 0
    if sndhwm is not None:
        sock.sndhwm = sndhwm
    if maxmsgsize is not None:
        sock.maxmsgsize = maxmsgsize
    if curve and bus.curve.enabled:
        _curve_server(sock, bus)
    try:
        sock.bind(endpoint)
    except zmq.ZMQError as e:
        sock.close(0)
        if e.errno == zmq.EADDRINUSE:
            raise BusError(
                f"cannot bind {endpoint}: address already in use (is another promptcam running?)"
            ) from None
        raise BusError(f"cannot bind {endpoint}: {e.strerror}") from None
    return sock


def connect(
    ctx: Context,
    kind: int,
    endpoint: str,
    bus: BusConfig | None = None,
    subscribe: Sequence[bytes] = (),
    rcvhwm: int | None = None,
    curve: bool = False,
    maxmsgsize: int | None = None,
) -> Socket:
    """A socket of ``kind`` connected to ``endpoint``; SUB sockets subscribe to ``subscribe``."""
    bus = bus or BusConfig()
    sock = ctx.socket(kind)
    sock.linger = 0
    if maxmsgsize is not None:
        sock.maxmsgsize = maxmsgsize
    if rcvhwm is not None:
        sock.rcvhwm = rcvhwm
    if curve and bus.curve.enabled:
        _curve_client(sock, bus)
    for prefix in subscribe:
        sock.setsockopt(zmq.SUBSCRIBE, prefix)
    try:
        sock.connect(endpoint)
    except zmq.ZMQError as e:
        sock.close(0)
        raise BusError(f"cannot connect {endpoint}: {e.strerror}") from None
    return sock


class Subscription:
    """A SUB socket (``connect`` with ``maxmsgsize``) that gets its connection back after libzmq
    dropped it for good.

    libzmq closes a connection that brings a part over ``maxmsgsize`` and, since it counts that as
    a protocol error, never reconnects it: the subscriber would wait forever. A monitor watches
    the socket: a disconnect that libzmq does not follow with its own reconnect attempt within
    ``RECONNECT_WAIT_S`` is answered by a fresh socket, counted in ``dropped`` and logged (a
    disconnect libzmq retries itself, a publisher restarting, is only counted in ``disconnects``).
    One thread owns it, like any socket."""

    RECONNECT_WAIT_S = 0.5

    def __init__(
        self,
        ctx: Context,
        endpoint: str,
        bus: BusConfig | None,
        subscribe: Sequence[bytes],
        maxmsgsize: int,
        what: str = "messages",
        curve: bool = False,
    ) -> None:
        self._args = (ctx, endpoint, bus, tuple(subscribe), maxmsgsize, curve)
        self.what = what
        self.disconnects = 0
        self.dropped = 0
        self._lost_at: float | None = None
        self.sock, self._monitor = self._open()

    def _open(self) -> tuple[Socket, Socket]:
        ctx, endpoint, bus, subscribe, maxmsgsize, curve = self._args
        sock = connect(
            ctx, zmq.SUB, endpoint, bus, subscribe=subscribe, curve=curve, maxmsgsize=maxmsgsize
        )
        monitor = sock.get_monitor_socket(zmq.EVENT_DISCONNECTED | zmq.EVENT_CONNECT_RETRIED)
        monitor.linger = 0
        self._poller = zmq.Poller()
        self._poller.register(sock, zmq.POLLIN)
        self._poller.register(monitor, zmq.POLLIN)
        return sock, monitor

    def poll(self, timeout_ms: int) -> bool:
        """True when a message can be received; watches the connection meanwhile."""
        ready = dict(self._poller.poll(timeout_ms))
        if self._monitor in ready:
            self._on_events()
        if self._lost_at is not None and time.monotonic() - self._lost_at > self.RECONNECT_WAIT_S:
            self._reopen()
            return False
        return self.sock in ready

    def _on_events(self) -> None:
        from zmq.utils.monitor import recv_monitor_message

        while self._monitor.poll(0):
            event = recv_monitor_message(self._monitor)["event"]
            if event == zmq.EVENT_DISCONNECTED:
                self.disconnects += 1
                self._lost_at = time.monotonic()
            elif event == zmq.EVENT_CONNECT_RETRIED:
                self._lost_at = None  # libzmq reconnects this one itself

    def _reopen(self) -> None:
        self.dropped += 1
        self._lost_at = None
        if self.dropped <= 10 or self.dropped % 1000 == 0:
            log.warning(
                "%s connection to %s dropped by ZeroMQ for good (a message part over the %d-byte "
                "limit?), %d so far; connecting again",
                self.what,
                self._args[1],
                self._args[4],
                self.dropped,
            )
        self.close()
        self.sock, self._monitor = self._open()

    def close(self) -> None:
        with contextlib.suppress(zmq.ZMQError):  # already closed
            self.sock.disable_monitor()
        self._monitor.close(0)
        self.sock.close(0)


@overload
def recv_multipart_timeout(
    sock: Socket, timeout_ms: int, copy: Literal[True]
) -> list[bytes] | None: ...
@overload
def recv_multipart_timeout(
    sock: Socket, timeout_ms: int, copy: Literal[False] = False
) -> list[zmq.Frame] | None: ...
def recv_multipart_timeout(
    sock: Socket, timeout_ms: int, copy: bool = False
) -> list[bytes] | list[zmq.Frame] | None:
    """One multipart message (``bytes`` parts with ``copy``, else ``zmq.Frame``), or None when
    nothing arrives within ``timeout_ms``."""
    if sock.poll(timeout_ms, zmq.POLLIN):
        return sock.recv_multipart(0, copy, False)
    return None


def request(
    endpoint: str,
    payload: Mapping[str, object],
    timeout_ms: int = 5000,
    bus: BusConfig | None = None,
) -> dict[str, Any]:
    """Send one control request (REQ) and return the JSON reply; ``BusError`` on timeout."""
    import json

    ctx: Context = zmq.Context.instance()
    sock = connect(ctx, zmq.REQ, endpoint, bus)
    try:
        sock.send(json.dumps(payload).encode())
        if not sock.poll(timeout_ms, zmq.POLLIN):
            raise BusError(
                f"no reply from {endpoint} within {timeout_ms / 1000:.1f}s (is the engine running?)"
            )
        reply = json.loads(sock.recv())
        if not isinstance(reply, dict):
            raise BusError(f"malformed reply from {endpoint}")
        return reply
    finally:
        sock.close(0)
