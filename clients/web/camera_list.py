"""Which cameras the web server shows: a pluggable source of the camera list.

The server asks its ``CameraLister`` once a second (from the site monitor's thread, so a lister
may block) and follows the answer: a camera that appears gets its feeds, encoder and view, one
that goes away is closed. ``initial()`` is what it shows before the first answer.

- ``EngineCameras``: the engine's control reply ``{"cmd":"cameras"}`` (CONTRACT v1.1), so
  cameras added or removed at runtime (``add_camera`` / ``remove_camera``) appear and go;
  before the engine answers, the cameras of the configuration.
- ``FixedCameras``: always the same cameras (``web.camera`` set: that camera only).

A fleet gateway supplies its own lister (the cameras its controller has placed).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import zmq

from stream import bus as zbus
from stream.config import Config
from stream.errors import PromptcamError
from stream.wire import is_camera_name

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CameraInfo:
    """One camera of a camera list: its name and, when known, its frames endpoint (where its
    capture publishes its status)."""

    camera: str
    frames: str | None = None


class CameraLister(Protocol):
    """Where the web server's camera list comes from."""

    def initial(self) -> list[CameraInfo]:
        """The cameras to show before ``list_cameras`` first answers (no I/O)."""
        ...

    def list_cameras(self) -> list[CameraInfo] | None:
        """The cameras now, in display order; None when unknown now (keep the last list).
        May block (about a second at most): it is called off the event loop."""
        ...


def _config_cameras(cfg: Config) -> list[CameraInfo]:
    return [CameraInfo(name, cam.frames) for name, cam in cfg.camera_settings().items()]


class FixedCameras:
    """Always ``cameras``."""

    def __init__(self, cameras: Sequence[CameraInfo]) -> None:
        self._cameras = list(cameras)

    def initial(self) -> list[CameraInfo]:
        return list(self._cameras)

    def list_cameras(self) -> list[CameraInfo] | None:
        return list(self._cameras)


class EngineCameras:
    """The cameras the engine on ``cfg.bus.control`` serves (control ``cameras``)."""

    def __init__(self, cfg: Config, timeout_ms: int = 1000) -> None:
        self._cfg = cfg
        self._timeout_ms = timeout_ms
        self._configured = {c.camera: c for c in _config_cameras(cfg)}
        self._warned = False

    def initial(self) -> list[CameraInfo]:
        return list(self._configured.values())

    def list_cameras(self) -> list[CameraInfo] | None:
        try:
            reply = zbus.request(
                self._cfg.bus.control, {"cmd": "cameras"}, self._timeout_ms, self._cfg.bus
            )
        except (PromptcamError, ValueError, zmq.ZMQError) as e:
            log.debug("camera list: %s", e)
            return None
        cameras = parse_cameras_reply(reply)
        if cameras is None and not self._warned:
            self._warned = True
            log.warning("the engine's cameras reply is not usable: %s", str(reply)[:200])
        return cameras


def parse_cameras_reply(reply: object) -> list[CameraInfo] | None:
    """The cameras of a control ``cameras`` reply, None when it is not a usable one (an error
    reply, wrong types). Entries with a bad name are left out; a repeated name counts once."""
    if not isinstance(reply, dict) or reply.get("ok") is not True:
        return None
    entries = reply.get("cameras")
    if not isinstance(entries, list):
        return None
    out: dict[str, CameraInfo] = {}
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        name, frames = entry.get("camera"), entry.get("frames")
        if not isinstance(name, str) or not is_camera_name(name) or name in out:
            continue
        out[name] = CameraInfo(name, frames if isinstance(frames, str) else None)
    return list(out.values())


def camera_lister(cfg: Config) -> CameraLister:
    """The lister a configuration asks for: ``web.camera`` set, that camera only; else the
    engine's cameras."""
    if cfg.web.camera:
        frames = {c.camera: c.frames for c in _config_cameras(cfg)}
        return FixedCameras([CameraInfo(cfg.web.camera, frames.get(cfg.web.camera))])
    return EngineCameras(cfg)
