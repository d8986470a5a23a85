"""The ``<prefix>/<camera>/prompt/set`` command topic: checked, rate limited, then sent to the
engine's control socket as the ``set_prompt`` request ``promptcam prompt --camera`` sends.

A command is refused (logged, counted by reason, never raised) when its camera is not
configured, it is larger than the engine's prompt limit, not UTF-8, holds control characters,
has no phrase by the engine's rule (``stream.prompts.normalize_prompt``), comes faster than the
camera's token bucket allows (``command_rate`` per second, ``command_burst`` at once), or while
``MAX_WAITING`` commands already wait for the engine. Checks run in paho's network thread and
cost microseconds; the engine is asked from one worker thread.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable
from enum import Enum

from stream.errors import PromptcamError
from stream.prompts import normalize_prompt, prompt_text
from stream.wire import MAX_PROMPT_CHARS

log = logging.getLogger(__name__)

MAX_WAITING = 4
MAX_COMMAND_BYTES = MAX_PROMPT_CHARS * 4  # UTF-8 of the longest prompt the engine takes


class Rejection(str, Enum):
    UNKNOWN_CAMERA = "unknown_camera"
    TOO_LARGE = "too_large"
    NOT_UTF8 = "not_utf8"
    CONTROL_CHARS = "control_chars"
    NO_PHRASE = "no_phrase"
    RATE_LIMITED = "rate_limited"
    BUSY = "busy"
    ENGINE_REFUSED = "engine_refused"
    ENGINE_UNREACHABLE = "engine_unreachable"


SendPrompt = Callable[[str, str], dict[str, object]]  # (camera, prompt) -> the engine's reply
Applied = Callable[[str, str, list[str]], None]  # (camera, prompt text, labels)


class _Bucket:
    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate, self.burst = rate, float(burst)
        self.tokens, self.t = float(burst), now

    def take(self, now: float) -> bool:
        self.tokens = min(self.burst, self.tokens + (now - self.t) * self.rate)
        self.t = now
        if self.tokens < 1.0:
            return False
        self.tokens -= 1.0
        return True


class PromptCommands:
    """``handle(camera, payload)`` from the MQTT thread; ``close`` stops the worker."""

    def __init__(
        self,
        cameras: set[str],
        send: SendPrompt,
        applied: Applied,
        rate: float,
        burst: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cameras = set(cameras)
        self._send = send
        self._applied = applied
        self._rate, self._burst, self._clock = rate, burst, clock
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()
        self.rejected: Counter[str] = Counter()
        self.accepted = 0
        self.received = 0
        self._work: queue.Queue[tuple[str, str] | None] = queue.Queue(MAX_WAITING)
        self._worker = threading.Thread(target=self._run, name="mqtt-prompt", daemon=True)
        self._worker.start()

    def stats(self) -> dict[str, object]:
        with self._lock:
            return {
                "received": self.received,
                "accepted": self.accepted,
                "rejected": dict(self.rejected),
            }

    def _reject(self, camera: str, reason: Rejection, detail: str = "") -> None:
        with self._lock:
            self.rejected[reason.value] += 1
            n = sum(self.rejected.values())
        if n <= 10 or n % 1000 == 0:
            log.warning(
                "MQTT prompt command for camera %r rejected: %s%s (%d rejected so far)",
                camera[:64],
                reason.value,
                f" ({detail[:120]})" if detail else "",
                n,
            )

    def handle(self, camera: str, payload: bytes) -> None:
        with self._lock:
            self.received += 1
        if camera not in self.cameras:
            return self._reject(camera, Rejection.UNKNOWN_CAMERA)
        if len(payload) > MAX_COMMAND_BYTES:
            return self._reject(camera, Rejection.TOO_LARGE, f"{len(payload)} bytes")
        try:
            text = payload.decode("utf-8")
        except UnicodeDecodeError:
            return self._reject(camera, Rejection.NOT_UTF8)
        if len(text) > MAX_PROMPT_CHARS:
            return self._reject(camera, Rejection.TOO_LARGE, f"{len(text)} characters")
        if not text.isprintable():
            return self._reject(camera, Rejection.CONTROL_CHARS)
        try:
            normalize_prompt(text)
        except PromptcamError as e:
            return self._reject(camera, Rejection.NO_PHRASE, str(e))
        with self._lock:
            now = self._clock()
            bucket = self._buckets.setdefault(camera, _Bucket(self._rate, self._burst, now))
            allowed = bucket.take(now)
        if not allowed:
            return self._reject(camera, Rejection.RATE_LIMITED)
        try:
            self._work.put_nowait((camera, text))
        except queue.Full:
            self._reject(camera, Rejection.BUSY, f"{MAX_WAITING} commands wait for the engine")

    def _run(self) -> None:
        while True:
            item = self._work.get()
            if item is None:
                return
            camera, text = item
            try:
                reply = self._send(camera, text)
            except PromptcamError as e:
                self._reject(camera, Rejection.ENGINE_UNREACHABLE, str(e))
                continue
            except Exception as e:  # a bug must not end the worker: later commands would wait
                log.exception("prompt command for camera %s failed", camera)
                self._reject(camera, Rejection.ENGINE_UNREACHABLE, repr(e))
                continue
            if not reply.get("ok"):
                self._reject(camera, Rejection.ENGINE_REFUSED, str(reply.get("error", "")))
                continue
            labels = reply.get("labels")
            phrases = (
                [str(x) for x in labels] if isinstance(labels, list) else normalize_prompt(text)
            )
            with self._lock:
                self.accepted += 1
            log.info("camera %s: prompt set over MQTT: %s", camera, prompt_text(phrases))
            self._applied(camera, text, phrases)

    def close(self, timeout: float = 2.0) -> None:
        try:
            self._work.put(None, timeout=timeout)
        except queue.Full:
            return
        self._worker.join(timeout)
