"""Zones and lines edited on the web page, kept in ``zones.json`` beside the events database.

The page saves a camera's zones and lines with ``PUT /api/cameras/<camera>/zones``: the web
server validates them with ``clients.events.config``'s models and writes
``<folder of events.database>/zones.json`` (a temporary file, then an atomic ``os.replace``, so a
reader never sees half a file). The file holds ``{"v": 1, "cameras": {NAME: {"zones": {...},
"lines": {...}}}}``; a camera in the file replaces that camera's ``events.cameras`` entry of the
config file as a whole (so a zone deleted on the page stays deleted), cameras not in the file
keep the config's geometry.

The events service loads the file at start and ``ZonesWatcher.poll`` reloads it when it
changes (its size, modification time or inode): every camera's event logic gets the new
geometry at once. A file that cannot be read or validated is one logged line (counted in
``ZonesWatcher.errors``), and the geometry in use stays as it was.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import ValidationError

from clients.events.config import CameraEventsConfig, EventsConfig

if TYPE_CHECKING:
    from clients.events.service import EventsService

log = logging.getLogger(__name__)

ZONES_FILE = "zones.json"
SNAPSHOTS_DIR = "snapshots"
FILE_VERSION = 1
MAX_FILE_BYTES = 4 * 2**20  # 256 cameras x 64 shapes x 64 points fit well within this
POLL_EVERY_S = 1.0


def zones_path(database: str | Path) -> Path:
    """``zones.json`` beside the events database ``database``."""
    return Path(database).expanduser().parent / ZONES_FILE


def snapshots_dir(database: str | Path) -> Path:
    """The folder of the events' snapshot JPEGs and mask PNGs (``<id>.jpg``, ``<id>.png``)."""
    return Path(database).expanduser().parent / SNAPSHOTS_DIR


def describe_error(camera: str, e: ValidationError) -> str:
    """A pydantic error of a camera's zones and lines as one line naming the camera and the
    zone or line: ``events.cameras.cam0: zone 'door': polygon crosses itself (...)``."""
    err = e.errors()[0]
    loc = [str(p) for p in err["loc"]]
    where = f"events.cameras.{camera}"
    if len(loc) >= 2 and loc[0] in ("zones", "lines"):
        where += f": {loc[0][:-1]} {loc[1][:64]!r}"
        loc = loc[2:]
    elif loc:
        where += f": {loc[0]}"
        loc = loc[1:]
    msg = str(err["msg"]).removeprefix("Value error, ")
    field = ".".join(loc)
    return f"{where}: {field + ': ' if field else ''}{msg}".replace("\n", " ")[:400]


def parse_camera(camera: str, tree: object) -> CameraEventsConfig:
    """One camera's ``{"zones": ..., "lines": ...}``; ``ValueError`` (one line) when bad."""
    if not isinstance(tree, dict):
        raise ValueError(f"events.cameras.{camera}: expected an object with zones and lines")
    try:
        return CameraEventsConfig.model_validate(tree)
    except ValidationError as e:
        raise ValueError(describe_error(camera, e)) from None


def load_zones(path: Path) -> dict[str, CameraEventsConfig]:
    """The cameras of a zones file ({} when there is none); ``ValueError`` (one line) when it
    cannot be read or is not valid."""
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        return {}
    except OSError as e:
        raise ValueError(f"{path}: cannot be read ({e.strerror})") from None
    if len(raw) > MAX_FILE_BYTES:
        raise ValueError(f"{path}: larger than {MAX_FILE_BYTES} bytes")
    try:
        tree = json.loads(raw)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise ValueError(f"{path}: not JSON") from None
    if not isinstance(tree, dict) or tree.get("v") != FILE_VERSION:
        raise ValueError(f'{path}: expected {{"v": {FILE_VERSION}, "cameras": {{...}}}}')
    cameras = tree.get("cameras")
    if not isinstance(cameras, dict):
        raise ValueError(f"{path}: 'cameras' must be an object")
    try:
        return {str(name): parse_camera(str(name), cam) for name, cam in cameras.items()}
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None


def save_camera(path: Path, camera: str, geometry: CameraEventsConfig | None) -> None:
    """Replace ``camera``'s entry of the zones file (None: remove it), atomically. The file is
    read first (``ValueError`` when it is not valid: it is left as it is)."""
    cameras = load_zones(path)
    if geometry is None:
        cameras.pop(camera, None)
    else:
        cameras[camera] = geometry
    tree = {
        "v": FILE_VERSION,
        "cameras": {
            name: cam.model_dump(mode="json", exclude_defaults=True)
            for name, cam in cameras.items()
        },
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".zones-", suffix=".json", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(tree, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def effective(cfg: EventsConfig, cameras: dict[str, CameraEventsConfig]) -> EventsConfig:
    """``cfg`` with each camera of the zones file replacing that camera's geometry."""
    if not cameras:
        return cfg
    return cfg.model_copy(update={"cameras": {**cfg.cameras, **cameras}})


class ZonesWatcher:
    """Loads ``path`` into an events service, and again whenever it changes."""

    def __init__(self, path: Path, every_s: float = POLL_EVERY_S) -> None:
        self.path = path
        self.every_s = every_s
        self.base: EventsConfig | None = None  # the config file's geometry
        self._stamp: tuple[int, int, int] | None = None
        self._next = 0.0
        self.loads = 0
        self.errors = 0

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            st = self.path.stat()
        except OSError:
            return None
        return (st.st_ino, st.st_size, st.st_mtime_ns)

    def poll(self, service: EventsService, force: bool = False) -> bool:
        """Apply the file to ``service`` when it changed since the last call (checked at most
        every ``every_s``, unless ``force``); True when the geometry was replaced."""
        now = time.monotonic()
        if not force and now < self._next:
            return False
        self._next = now + self.every_s
        if self.base is None:
            self.base = service.cfg
        stamp = self._stat()
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        try:
            cameras = load_zones(self.path)
        except ValueError as e:
            self.errors += 1
            log.error("zones file not applied, the zones in use are kept: %s", e)
            return False
        apply_geometry(service, effective(self.base, cameras))
        self.loads += 1
        log.info("zones file %s applied: %d cameras", self.path, len(cameras))
        return True


def apply_geometry(service: EventsService, cfg: EventsConfig) -> None:
    """Give ``service`` and each camera's event logic the zones and lines of ``cfg``. An object's
    state in a zone that is gone or changed is dropped (judged afresh from the next frame)."""
    service.cfg = cfg
    for logic in service.cameras.values():
        logic.set_geometry(cfg)
    if service.mqtt is not None:  # count topics and discovery follow the zones in use
        service.mqtt.set_zones({name: list(c.zones) for name, c in cfg.cameras.items()})
