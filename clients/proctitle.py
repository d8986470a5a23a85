"""Secrets out of the process title, as early as possible.

Anyone on the host can read every process's command line (``ps``, ``/proc/PID/cmdline``), so
an access token given as ``--token X`` or ``--set web.token=X``, or camera credentials in a URL
(``rtsp://user:pass@host/...``), are visible there. ``hide_secrets`` rewrites this process's
title with such values replaced by ``***``; ``clients.cli`` calls it before its slow imports,
so a secret given on the command line is visible only while the interpreter starts (tens of
milliseconds). It cannot be hidden before that: give the token in the environment
(``PROMPTCAM_TOKEN``, readable only by the same user) or in the config file (``web.token``)
instead. Children of ``promptcam run`` read the token from the run's private config file (mode
0600), never from their command line.

Only the standard library and ``setproctitle`` (a small C extension) are imported here.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence

TOKEN_ENV = "PROMPTCAM_TOKEN"
REDACTED = "***"
SECRET_FLAGS = ("--token",)
# config keys whose value is a secret (given as --set KEY=VALUE)
SECRET_KEY_RE = re.compile(r"^(?:[\w.]*\.)?(?:token|password|secret)$")
_USERINFO_RE = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)[^/@\s]*@")


def _redact_url(value: str) -> str:
    return _USERINFO_RE.sub(lambda m: f"{m.group('scheme')}{REDACTED}@", value)


def _redact_override(value: str) -> str:
    key, eq, _ = value.partition("=")
    if eq and SECRET_KEY_RE.match(key.strip()):
        return f"{key}={REDACTED}"
    return _redact_url(value)


def redact_argv(argv: Sequence[str]) -> list[str]:
    """``argv`` with secret values replaced by ``***``: the value of ``--token``, of ``--set
    KEY=VALUE`` for a secret key (``web.token``, ``*.password``, ...) and a URL's user info."""
    out: list[str] = []
    after: str | None = None  # the flag whose value comes next
    for arg in argv:
        if after is not None:
            out.append(REDACTED if after in SECRET_FLAGS else _redact_override(arg))
            after = None
            continue
        flag, eq, value = arg.partition("=")
        if arg in SECRET_FLAGS or arg == "--set":
            out.append(arg)
            after = arg
        elif eq and flag in SECRET_FLAGS:
            out.append(f"{flag}={REDACTED}")
        elif eq and flag == "--set":
            out.append(f"--set={_redact_override(value)}")
        else:
            out.append(_redact_url(arg))
    return out


def own_argv() -> list[str]:
    """This process's command line as the kernel shows it (``sys.argv`` where there is no
    ``/proc``)."""
    try:
        with open("/proc/self/cmdline", "rb") as f:
            raw = f.read()
    except OSError:
        return list(sys.argv)
    return [a.decode(errors="replace") for a in raw.rstrip(b"\0").split(b"\0")]


def hide_secrets(argv: Sequence[str] | None = None) -> bool:
    """Set this process's title to its command line (or ``argv``) without its secrets when it
    has any; True when the title was rewritten."""
    argv = own_argv() if argv is None else argv
    redacted = redact_argv(argv)
    if redacted == list(argv):
        return False
    try:
        from setproctitle import setproctitle
    except ImportError:  # a dependency of the package; without it the title cannot change
        return False
    setproctitle(" ".join(redacted))
    return True
