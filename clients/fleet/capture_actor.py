"""The capture actor: ``stream.capture.Capture`` for one camera, on a node near the camera.

Placed by the Ray resource named for its camera in ``fleet.capture_resources`` (a label given to
the nodes near that camera with ``ray start --resources``), or anywhere. Publishes
``frame.<camera>`` on a port of the node address Ray reports (CURVE with the fleet's keys when
the fleet says so; frames never go through shared memory, engines may be on other hosts).
A source that cannot be opened at start is reported as failed, with its error line; a live
source that drops is reconnected by the capture itself; a process that dies is restarted by Ray
(and the controller re-points the camera's engine at the new endpoint).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from enum import StrEnum

import zmq

from clients.fleet.keys import FleetKeys, KeyFiles
from clients.fleet.messages import CaptureInfo, CaptureStatus, ConfigTree
from clients.fleet.node import is_loopback, setup_actor_logging, tcp, whereabouts
from stream.bus import BusError, free_port
from stream.config import Config
from stream.errors import PromptcamError

log = logging.getLogger(__name__)

BIND_ATTEMPTS = 5


class CaptureState(StrEnum):
    """The capture actor's own states; while running, its status shows the capture's."""

    STARTING = "starting"
    FINISHED = "finished"  # the source ended
    STOPPED = "stopped"
    FAILED = "failed"  # the source cannot be opened (``error`` says why)


def capture_config(tree: ConfigTree, camera: str, node_ip: str, files: KeyFiles | None) -> Config:
    """The one-camera config of ``camera`` with its frames on a free port of ``node_ip``."""
    one = Config.model_validate(tree).for_camera(camera).model_dump(mode="json")
    one["bus"].update(
        frames=tcp(node_ip, free_port(node_ip)),
        frames_shm=False,
        allow_remote=not is_loopback(node_ip),
        curve=files.curve_config() if files is not None else {},
    )
    return Config.model_validate(one)


class CaptureActor:
    """See the module docstring; created by the controller as a named, detached Ray actor."""

    def __init__(self, camera: str, cfg_tree: ConfigTree, keys: Mapping[str, str] | None) -> None:
        from stream.capture import Capture

        setup_actor_logging(Config.model_validate(cfg_tree).log_level)
        self.camera = camera
        self.where = whereabouts()
        self._files = KeyFiles(FleetKeys.from_dict(keys)) if keys else None
        self._ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self._auth = self._files.authenticator(self._ctx) if self._files else None
        self._tree = cfg_tree
        self._stop = threading.Event()
        self.error = ""
        self.state = CaptureState.STARTING
        self.cfg = capture_config(cfg_tree, camera, self.where.node_ip, self._files)
        self.capture = Capture(self.cfg, self._stop, self._ctx)
        self._thread = threading.Thread(target=self._run, name=f"capture-{camera}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        from stream.capture import Capture

        for attempt in range(BIND_ATTEMPTS):
            try:
                self.capture.run()
                stopped = self._stop.is_set()
                self.state = CaptureState.STOPPED if stopped else CaptureState.FINISHED
                return
            except BusError as e:
                if attempt == BIND_ATTEMPTS - 1 or "in use" not in str(e):
                    self._fail(str(e))
                    return
                self.cfg = capture_config(self._tree, self.camera, self.where.node_ip, self._files)
                self.capture = Capture(self.cfg, self._stop, self._ctx)
            except PromptcamError as e:
                self._fail(str(e))
                return
            except Exception as e:  # reported, not raised: the controller shows it
                log.exception("camera %s: capture failed", self.camera)
                self._fail(f"{e.__class__.__name__}: {e}")
                return

    def _fail(self, error: str) -> None:
        self.state = CaptureState.FAILED
        self.error = error
        log.error("camera %s: %s", self.camera, error)

    def info(self) -> CaptureInfo:
        return {"camera": self.camera, **self.where.as_dict()}

    def status(self) -> CaptureStatus:
        """Where its frames are, its capture counters, and failed/finished with the error line."""
        stats = self.capture.stats.as_dict()
        done = self.state in (CaptureState.FAILED, CaptureState.FINISHED)
        state = self.state.value if done else str(stats["state"])
        return {
            "incarnation": self.where.incarnation,
            "frames": self.cfg.bus.frames,
            "state": state,
            "error": self.error or stats.get("last_error", ""),
            "stats": stats,
        }

    def watch(self, timeout_s: float) -> str:
        self._stop.wait(timeout_s)
        return self.where.incarnation

    def stop(self) -> bool:
        self._stop.set()
        self._thread.join(timeout=10.0)
        if self._auth is not None:
            self._auth.stop()
        self._ctx.destroy(linger=0)
        if self._files is not None:
            self._files.close()
        return not self._thread.is_alive()
