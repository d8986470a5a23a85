"""Checks a command makes before it starts work: that its output files can be written.

A job that loads models, then finds it cannot create ``--tracks /proc/nope/t.jsonl``, has wasted
the load and used to end in a traceback. :func:`check_outputs` is called before anything loads
(``clients/cli.py``'s preflight): each path's directory exists and is a directory, the path is
not a directory, the file can be opened for writing (tried: a new file is created and removed
again, an existing one opened without truncation), no two outputs are one file and no output is
an input. Failures are :class:`OutputError`, one line naming the flag and the path.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Sequence
from pathlib import Path

from stream.errors import PromptcamError


class OutputError(PromptcamError):
    """An output path cannot be written; the message is one line."""


def _reason(e: OSError) -> str:
    return e.strerror or errno.errorcode.get(e.errno or 0, type(e).__name__)


def check_output_path(path: Path, flag: str) -> None:
    """``OutputError`` unless ``path`` can be written (see the module docstring). An existing
    file is left as it is; a new one is created and removed (nothing is left behind)."""
    where = f"{flag} {path}"
    p = path.expanduser()
    if not p.name or p.is_dir():
        raise OutputError(f"{where}: is a directory, give a file name")
    parent = p.absolute().parent
    if not parent.exists():
        raise OutputError(f"{where}: directory {parent} does not exist")
    if not parent.is_dir():
        raise OutputError(f"{where}: {parent} is not a directory")
    if p.exists() and not p.is_file():
        # a FIFO or a device (/dev/null): opening it might block or have effects; ask only
        if not os.access(p, os.W_OK):
            raise OutputError(f"{where}: not writable")
        return
    try:
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o666)
    except FileExistsError:
        try:
            fd = os.open(p, os.O_WRONLY | os.O_NONBLOCK)  # no O_TRUNC: the file is kept as is
        except OSError as e:
            raise OutputError(f"{where}: cannot write it: {_reason(e)}") from None
        os.close(fd)
        return
    except OSError as e:
        raise OutputError(f"{where}: cannot create it: {_reason(e)}") from None
    os.close(fd)
    with contextlib.suppress(OSError):
        p.unlink()


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a.expanduser(), b.expanduser())
    except OSError:
        return a.expanduser().absolute() == b.expanduser().absolute()


def check_outputs(outputs: Sequence[tuple[str, Path]], inputs: Sequence[Path] = ()) -> None:
    """Check every ``(flag, path)`` output: writable, no two the same file, none an input."""
    for flag, path in outputs:
        check_output_path(path, flag)
    for i, (flag, path) in enumerate(outputs):
        for other_flag, other in outputs[i + 1 :]:
            if _same_file(path, other):
                raise OutputError(f"{flag} and {other_flag} are the same file: {path}")
        for source in inputs:
            if _same_file(path, source):
                raise OutputError(f"{flag} {path} is an input of the job: it would be overwritten")
