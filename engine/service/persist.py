"""The engine process's runtime state in ``engine.state_file`` (``engine.state``): each
camera's prompt and manual objects, and the object-ID reservations, kept across restarts.

Written when a command changed it, else at most once every ``STATE_SAVE_EVERY_S`` while manual
objects (whose boxes move) exist or the last write failed. Manual objects kept from the last
run are re-seeded from their last boxes on their camera's first frame.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from engine.ids import IdReservations
from engine.pipeline import MultiCameraEngine
from engine.service.feeds import CameraFeed, CameraFeeds
from engine.state import EngineState, StateFile, snapshot
from stream.errors import PromptcamError

log = logging.getLogger(__name__)
STATE_SAVE_EVERY_S = 1.0


class RuntimeState:
    """What ``engine.state_file`` holds for this engine, and when it is written (loop thread,
    except ``persist_ids``, which the ID reservations call when they take a new block)."""

    def __init__(
        self,
        path: Path | None,
        state_file: StateFile | None,
        restored: Mapping[str, EngineState] | None,
        kept_ids: Mapping[str, int] | None,
    ) -> None:
        """``state_file``: ``path`` already locked and read (``restored``, ``kept_ids``: what it
        held); without it, ``path`` (if any) is locked and read here."""
        if state_file is None and path is not None:
            state_file = StateFile(path)
            state_file.lock()
            if restored is None and kept_ids is None:
                kept = state_file.load()
                restored, kept_ids = kept.cameras, kept.ids
        self._path = path  # engine.state_file
        self.file = state_file
        self.restored: Mapping[str, EngineState] = restored or {}
        self._kept_ids: Mapping[str, int] = kept_ids or {}
        self._state: dict[str, EngineState] = dict(self.restored)
        self.dirty = state_file is not None
        self._saved_at = 0.0
        self._failed = False  # the last write failed: retried at most once a second
        self._ids: IdReservations | None = None

    def attach(self, ids: IdReservations) -> None:
        """Keep ``ids``' reservations with the state (from what the file held)."""
        if self.file is None:
            return
        self._ids = ids
        ids.attach(self._kept_ids, self.persist_ids)

    def _id_blocks(self) -> dict[str, int]:
        return {} if self._ids is None else self._ids.as_dict()

    def persist_ids(self) -> bool:
        """Write the ID reservations now (with the state as last written): an ID block is used
        only once this returns (``engine.ids``)."""
        assert self.file is not None
        ok = self.file.save(self._state, self._id_blocks())
        self._failed = not ok
        return ok

    def _camera_state(self, engine: MultiCameraEngine, feed: CameraFeed) -> EngineState:
        """A camera's state now; manual objects still waiting for its first frame are kept."""
        cam = engine.camera(feed.name)
        st = snapshot(cam.prompt, cam.manager.tracks(), self._state.get(feed.name))
        if feed.to_restore:
            st = EngineState(st.prompt, (*feed.to_restore, *st.objects))
        return st

    def save(self, engine: MultiCameraEngine, feeds: CameraFeeds) -> None:
        """Write the runtime state if it is due (see the module docstring)."""
        if self.file is None:
            return
        now = time.monotonic()
        moving = any(s.objects for s in self._state.values()) or self._failed
        if not self.dirty and (now - self._saved_at < STATE_SAVE_EVERY_S or not moving):
            return
        state = {feed.name: self._camera_state(engine, feed) for feed in feeds}
        if self.dirty or self._failed or state != self._state:
            self._failed = not self.file.save(state, self._id_blocks())
        self._state = state
        self.dirty = False
        self._saved_at = now

    def restore(
        self,
        engine: MultiCameraEngine,
        feeds: CameraFeeds,
        set_prompt: Callable[[str, str], list[str]],
    ) -> None:
        """Each served camera's kept prompt now (through ``set_prompt``, which loads the
        detector if need be), its manual objects on its first frame (``restore_objects``)."""
        for name, state in self.restored.items():
            feed = feeds.get(name)
            if feed is None:
                log.info("kept state of camera %s not restored: not configured", name)
                continue
            log.info(
                "camera %s: restoring %s from %s (the engine was restarted)",
                name,
                state.describe(),
                self._path,
            )
            if state.prompt != engine.camera(name).prompt:  # "" too: cleared at runtime
                try:
                    set_prompt(name, state.prompt)
                except PromptcamError as e:
                    log.warning("camera %s: kept prompt %r not restored: %s", name, state.prompt, e)
            feed.to_restore = state.objects

    def restore_objects(self, engine: MultiCameraEngine, feed: CameraFeed) -> None:
        """Re-seed the camera's kept manual objects from their last boxes (its first frame)."""
        objects, feed.to_restore = feed.to_restore, ()
        cam = engine.camera(feed.name)
        restored = 0
        for o in objects:
            try:
                cam.add_object(o.box, o.label)
                restored += 1
            except PromptcamError as e:
                log.warning(
                    "camera %s: manual object %d (%s) not restored: %s",
                    feed.name,
                    o.id,
                    o.label,
                    e,
                )
        log.info(
            "camera %s: restored %d manual object(s), re-seeded from their last boxes",
            feed.name,
            restored,
        )
        self.dirty = True

    def close(self) -> None:
        if self.file is not None:
            self.file.unlock()
