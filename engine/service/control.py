"""The control server of the engine process: the ``control`` socket (a ROUTER: REQ and DEALER
clients alike) and the bounded queue of commands the frame loop runs between ticks.

The control thread never waits for a command: it answers ``stats`` and ``cameras`` at once,
keeps at most ``MAX_PENDING_COMMANDS`` commands pending (beyond: an immediate "busy" error) and
replies to each when the loop has run it (or, not started within ``COMMAND_TIMEOUT_S``, with a
timeout error), so a crowd of clients cannot make ``stats`` unreachable. Malformed requests are
rejected, counted by reason and answered with a one-line error.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TYPE_CHECKING

import zmq

from engine.service.commands import ROUTES, Command, Reply
from stream import bus as zbus
from stream.config import BusConfig
from stream.errors import PromptcamError
from stream.wire import WireError, control_reply, parse_control

if TYPE_CHECKING:
    from engine.service.loop import EngineProcess

log = logging.getLogger(__name__)
CONTROL_DROP_BYTES = 1 << 20
MAX_PENDING_COMMANDS = 64  # control commands queued or running; beyond: "busy" at once
COMMAND_TIMEOUT_S = 30.0
BURST = 256  # requests read in one go before the replies that are due go out
BUSY = "engine busy: too many pending commands"
TIMED_OUT = f"engine did not execute the command within {COMMAND_TIMEOUT_S:g}s"


@dataclass
class _Pending:
    """A control command waiting for the frame loop, and where its reply goes."""

    envelope: list[bytes]
    future: Future[Reply]
    deadline: float


def split_envelope(parts: list[bytes]) -> tuple[list[bytes], list[bytes]]:
    """A ROUTER message as (routing envelope, request parts): up to the first empty delimiter
    part (REQ clients), else the peer's identity alone (DEALER clients that send none)."""
    for i, part in enumerate(parts[1:], start=1):
        if part == b"":
            return parts[: i + 1], parts[i + 1 :]
    return parts[:1], parts[1:]


class ControlServer:
    """The ``control`` socket and its thread (``serve``), and the command queue the frame loop
    drains (``run_queued``)."""

    def __init__(
        self,
        ctx: zmq.Context[zmq.Socket[bytes]],
        bus: BusConfig,
        service: EngineProcess,
        stop: threading.Event,
    ) -> None:
        self._service = service
        self._stop = stop
        self._commands: queue.Queue[tuple[Command, Future[Reply]]] = queue.Queue(
            maxsize=MAX_PENDING_COMMANDS
        )
        self._pending: list[_Pending] = []  # control thread only
        self.pending_max = 0
        self.replies_dropped = 0
        self.rejected: dict[str, int] = {}
        # Requests up to MAX_CONTROL_BYTES are parsed; larger ones get an error reply; beyond
        # 1 MiB ZeroMQ drops them unread (and the peer's connection), so memory stays bounded.
        # ROUTER, not REP: replies go out when their command has run, in any order.
        self._sock = zbus.bind(ctx, zmq.ROUTER, bus.control, bus, maxmsgsize=CONTROL_DROP_BYTES)

    @property
    def pending(self) -> int:
        return len(self._pending)

    # ------------------------------------------------------------------ the control thread

    def serve(self) -> None:
        """The control thread: read requests, answer them, until stopped."""
        sock = self._sock
        while not self._stop.is_set():
            if sock.poll(10 if self._pending else 100, zmq.POLLIN):
                for _ in range(BURST):  # a bounded burst, then the replies that are due
                    try:
                        parts = sock.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    self._on_request(parts)
            self._answer_done()

    def _on_request(self, parts: list[bytes]) -> None:
        envelope, body = split_envelope(parts)
        try:
            outcome = self._dispatch(body)
        except Exception as e:  # a bug must not end the control thread: count it like bad input
            log.exception("control request could not be handled")
            self._reject("internal")
            outcome = control_reply(False, error=f"internal error: {e.__class__.__name__}")
        if isinstance(outcome, bytes):
            self._send_reply(envelope, outcome)
        else:
            self._pending.append(_Pending(envelope, outcome, time.monotonic() + COMMAND_TIMEOUT_S))
            self.pending_max = max(self.pending_max, len(self._pending))

    def _answer_done(self) -> None:
        now = time.monotonic()
        waiting: list[_Pending] = []
        for p in self._pending:
            if p.future.done():
                reply = self._reply_of(p.future)
            elif now > p.deadline and p.future.cancel():  # not started: it never will be
                reply = control_reply(False, error=TIMED_OUT)
            else:
                waiting.append(p)
                continue
            self._send_reply(p.envelope, reply)
        self._pending = waiting

    def _reply_of(self, fut: Future[Reply]) -> bytes:
        error = fut.exception()
        if error is not None:
            self._reject("refused")
            return control_reply(False, error=str(error))
        return control_reply(True, **fut.result())

    def _send_reply(self, envelope: list[bytes], reply: bytes) -> None:
        try:
            self._sock.send_multipart([*envelope, reply], zmq.NOBLOCK)
        except zmq.ZMQError:  # the client's queue is full (it does not read): its loss
            self.replies_dropped += 1

    def _reject(self, reason: str) -> None:
        self.rejected[reason] = self.rejected.get(reason, 0) + 1
        n = sum(self.rejected.values())
        if n <= 10 or n % 1000 == 0:
            log.warning("rejected control request (%s), %d so far", reason, n)

    def _dispatch(self, parts: list[bytes]) -> bytes | Future[Reply]:
        """The reply to a request, or the future of the command that will make it."""
        if len(parts) != 1:
            self._reject("bad_parts")
            return control_reply(
                False, error=f"request must be one JSON part, got {len(parts)} parts"
            )
        try:
            req = parse_control(parts[0])
        except WireError as e:
            self._reject(e.reason)
            return control_reply(False, error=str(e))
        route = ROUTES[type(req)]
        if not route.on_loop:
            try:
                return control_reply(True, **route.command(req)(self._service))
            except PromptcamError as e:  # refused as an on-loop command is
                return control_reply(False, error=str(e))
        if len(self._pending) >= MAX_PENDING_COMMANDS:
            self._reject("busy")
            return control_reply(False, error=BUSY)
        fut: Future[Reply] = Future()
        try:
            self._commands.put_nowait((route.command(req), fut))
        except queue.Full:
            self._reject("busy")
            return control_reply(False, error=BUSY)
        return fut

    # ------------------------------------------------------------------ other threads

    def handle_request(self, raw: bytes) -> bytes:
        """Answer one control request (JSON bytes) as the control socket would; callable from
        any thread (what needs the models runs on the loop; this waits for it)."""
        outcome = self._dispatch([raw])
        if isinstance(outcome, bytes):
            return outcome
        try:
            outcome.result(timeout=COMMAND_TIMEOUT_S)
        except TimeoutError:
            if outcome.cancel():  # not started: it never will be
                return control_reply(False, error=TIMED_OUT)
            outcome.exception()  # running: its result comes
        except PromptcamError:
            pass  # the reply says it
        return self._reply_of(outcome)

    def call(self, cmd: Command, timeout: float = COMMAND_TIMEOUT_S) -> Reply:
        """Run ``cmd(service)`` on the frame loop, between ticks, and return its result; raises
        what it raises (``PromptcamError``), or ``TimeoutError``."""
        fut: Future[Reply] = Future()
        try:
            self._commands.put((cmd, fut), timeout=timeout)
        except queue.Full:
            raise PromptcamError(BUSY) from None
        return fut.result(timeout=timeout)

    # ------------------------------------------------------------------ the frame loop

    def run_queued(self, ran_one: Callable[[], None]) -> bool:
        """Run the queued commands (frame loop, between ticks), calling ``ran_one`` after each
        before its requester hears back; whether any ran."""
        ran = False
        while True:
            try:
                cmd, fut = self._commands.get_nowait()
            except queue.Empty:
                return ran
            if not fut.set_running_or_notify_cancel():
                continue  # timed out while queued: its requester was told so
            ran = True
            try:
                result = cmd(self._service)
                ran_one()  # a reply's effect shows in the next stats/cameras
                fut.set_result(result)
            except PromptcamError as e:
                fut.set_exception(e)
            except Exception as e:  # keep the engine running; the requester gets the error
                log.exception("control command failed")
                fut.set_exception(PromptcamError(f"internal error: {e.__class__.__name__}: {e}"))

    def close(self) -> None:
        self._sock.close(0)
