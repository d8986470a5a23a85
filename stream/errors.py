"""The exceptions promptcam turns into one-line errors at the command line."""

from __future__ import annotations


class PromptcamError(Exception):
    """Base of expected, user-facing failures: the message is one readable line."""


class SourceError(PromptcamError):
    """A video source cannot be opened or read."""


class SourceConnectionError(SourceError):
    """A (network or device) source is unreachable; capture retries these."""


class EndOfStreamError(SourceError):
    """A finite source (file, image directory) has no more frames."""


class ModelLoadError(PromptcamError):
    """Model weights or configs cannot be found, fetched or matched."""


class PromptError(PromptcamError):
    """A text prompt or a manual box/point prompt is invalid."""


class RequestError(PromptcamError):
    """A request cannot be served as asked: an unknown camera or object, a camera already
    served, a frame no longer held, a limit reached, an option out of range, a request the engine
    refused. Not about what a prompt says (:class:`PromptError`); both are one-line errors on the
    command line and ``{"ok": false, "error": ...}`` on the control socket."""
