"""No half-dead process: a thread that dies takes its process down.

Every thread of the engine and the capture process that reads from outside catches what its
input can throw (rejects, counts, logs); a thread that dies anyway has a bug. ``ThreadDeath``
installs a ``threading.excepthook`` that logs the traceback once, records which thread died
and sets the process's stop event, so the main loop ends and the process exits non-zero
(``EXIT_THREAD_DIED``) and the launcher restarts it. Should the main loop not end within
``grace_s`` (it is blocked on the dead thread), the process is ended with ``os._exit``.
"""

from __future__ import annotations

import logging
import os
import threading

log = logging.getLogger(__name__)

EXIT_THREAD_DIED = 70  # EX_SOFTWARE: an internal error, restartable


class ThreadDeath:
    """The process's thread-death handler (one per process; ``install`` replaces the hook)."""

    def __init__(self, stop: threading.Event, grace_s: float = 10.0) -> None:
        self.stop = stop
        self.grace_s = grace_s
        self.died: str | None = None  # name of the first thread that died
        self._lock = threading.Lock()
        self._disarmed = threading.Event()

    def install(self) -> ThreadDeath:
        threading.excepthook = self._hook
        return self

    def _hook(self, args: threading.ExceptHookArgs) -> None:
        if args.exc_type is SystemExit:
            return
        name = args.thread.name if args.thread is not None else "?"
        with self._lock:
            first = self.died is None
            if first:
                self.died = name
        log.critical(
            "thread %s died (%s: %s); stopping the process",
            name,
            args.exc_type.__name__,
            args.exc_value,
            exc_info=(args.exc_type, args.exc_value, args.exc_traceback)
            if args.exc_value is not None
            else None,
        )
        self.stop.set()
        if first:
            threading.Thread(target=self._backstop, name="thread-death", daemon=True).start()

    def disarm(self) -> None:
        """No ``os._exit`` after a death (for a caller that ends the process itself)."""
        self._disarmed.set()

    def _backstop(self) -> None:
        if self._disarmed.wait(self.grace_s):
            return
        log.critical(
            "process did not stop within %.0fs after thread %s died", self.grace_s, self.died
        )
        os._exit(EXIT_THREAD_DIED)

    def exit_code(self, normal: int = 0) -> int:
        """``EXIT_THREAD_DIED`` once a thread died, else ``normal``."""
        return EXIT_THREAD_DIED if self.died is not None else normal
