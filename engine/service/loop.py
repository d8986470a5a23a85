"""The engine process's frame loop: ``EngineProcess`` ties the feeds, the models, the
publishers, the control server, external detections and the runtime state together.

Each tick takes the newest frame of every camera that has a new one, so every camera is served
once per tick whatever its rate (a 30 fps camera cannot starve a 5 fps one), and a camera
whose source stopped is simply not in the tick. The frame loop owns the models; control
commands run on it between ticks, so nothing else ever touches model state. Cameras can be
added and removed at runtime (``add_camera`` / ``remove_camera``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import zmq

from engine.camera import CameraTracker
from engine.outputs import AnnotatedPublisher, TracksPublisher
from engine.pipeline import FrameInput, FrameResult, MultiCameraEngine, TrackingEngine
from engine.render import Renderer
from engine.service.board import StatsBoard
from engine.service.commands import Command, Reply
from engine.service.control import COMMAND_TIMEOUT_S, ControlServer
from engine.service.detections import DetectionsInput
from engine.service.feeds import CameraFeeds
from engine.service.persist import RuntimeState
from engine.service.stats import EngineStats
from engine.state import EngineState, StateFile
from stream import bus as zbus
from stream.config import Config, EngineConfig
from stream.errors import PromptcamError, RequestError
from stream.wire import now_ns

log = logging.getLogger(__name__)
Context = zmq.Context[zmq.Socket[bytes]]


class EngineProcess:
    """Frame loop + control server + publishers for every camera of the engine."""

    def __init__(
        self,
        cfg: Config,
        engine: MultiCameraEngine | TrackingEngine,
        stop: threading.Event | None = None,
        restored: Mapping[str, EngineState] | None = None,
        *,
        ctx: Context | None = None,
        serve_configured: bool = True,
        state_file: StateFile | None = None,
        kept_ids: Mapping[str, int] | None = None,
    ) -> None:
        """``ctx``: the ZeroMQ context to use (e.g. one with a ZAP authenticator; the caller
        destroys it), default a context of its own. ``serve_configured``: add every camera of
        ``cfg`` to ``engine``; False serves only the cameras ``engine`` already has (none: a
        fleet engine, cameras added with ``add_camera``). ``state_file``: ``engine.state_file``
        already locked and read (``restored``, ``kept_ids``: what it held); without it, the
        engine locks and reads ``engine.state_file`` itself."""
        self.cfg = cfg
        self.engine = engine.engine if isinstance(engine, TrackingEngine) else engine
        self.stop = stop or threading.Event()
        self._own_ctx = ctx is None
        self.ctx: Context = zmq.Context() if ctx is None else ctx
        self.detections = DetectionsInput(self.ctx, cfg.bus)
        self.state = RuntimeState(cfg.engine.state_file, state_file, restored, kept_ids)
        self.state.attach(self.engine.ids)
        self._busy_with: str | None = None  # a long step of the frame loop (loading a model)
        self.feeds = CameraFeeds(cfg.bus, self.ctx)
        self._serve_cameras(serve_configured)
        self.state.restore(self.engine, self.feeds, self.set_prompt)
        self.tracks, self.annotated = self._bind_publishers()
        self.control = ControlServer(self.ctx, cfg.bus, self, self.stop)
        self._threads = [threading.Thread(target=self.control.serve, name="control", daemon=True)]
        if cfg.bus.detections:
            self._threads.append(
                threading.Thread(
                    target=self.detections.serve, args=(self.stop,), name="detections", daemon=True
                )
            )
        self.board = StatsBoard(
            self.engine,
            self.feeds,
            (self.tracks, self.annotated),
            self.control,
            self.detections,
            lambda: self._busy_with,
        )

    def _serve_cameras(self, serve_configured: bool) -> None:
        settings = self.cfg.camera_settings()
        for name, cam in settings.items():
            if serve_configured and name not in self.engine.cameras:
                self.engine.add_camera(name, cam.engine)
        for name in self.engine.cameras:
            if name not in settings:
                raise RequestError(f"engine camera {name!r} is not in the configuration")
            self.feeds.add(self.feeds.open(name, settings[name].frames))

    def _bind_publishers(self) -> tuple[TracksPublisher, AnnotatedPublisher | None]:
        b = self.cfg.bus
        tracks_sock = zbus.bind(self.ctx, zmq.PUB, b.tracks, b, sndhwm=100, curve=True)
        annotated = None
        if self.cfg.engine.annotate:
            ann_sock = zbus.bind(self.ctx, zmq.PUB, b.annotated, b, sndhwm=4, curve=True)
            renderer = Renderer(jpeg_quality=self.cfg.engine.jpeg_quality)
            annotated = AnnotatedPublisher(ann_sock, renderer)
        return TracksPublisher(tracks_sock, self._on_published), annotated

    @property
    def cameras(self) -> list[str]:
        return self.feeds.names

    def _on_published(
        self, camera: str, result: FrameResult, image: np.ndarray, publish_ms: float
    ) -> None:
        """The tracks publisher's thread: a frame's tracks went out."""
        end_to_end_ms = (now_ns() - result.t_capture_ns) / 1e6
        feed = self.feeds.get(camera)
        if feed is not None:
            feed.fps_out.tick()
            feed.published += 1
            feed.latency_ms["publish_ms"] = publish_ms
            feed.latency_ms["end_to_end_ms"] = end_to_end_ms
            if self.annotated is not None:
                self.annotated.offer(camera, result, image)
        self.board.latency_ms["publish_ms"] = publish_ms
        self.board.latency_ms["end_to_end_ms"] = end_to_end_ms

    # ------------------------------------------------------------------ control

    def handle_request(self, raw: bytes) -> bytes:
        """Answer one control request (JSON bytes) as the control socket would; callable from
        any thread (what needs the models runs on the loop; this waits for it)."""
        return self.control.handle_request(raw)

    def call(self, cmd: Command, timeout: float = COMMAND_TIMEOUT_S) -> Reply:
        """Run ``cmd(self)`` on the frame loop, between ticks, and return its result; raises
        what it raises (``PromptcamError``), or ``TimeoutError``."""
        return self.control.call(cmd, timeout)

    def tracker(self, camera: str | None) -> CameraTracker:
        """The camera a request addresses: named, or the only one."""
        if camera is None:
            if len(self.feeds) == 1:
                return self.engine.camera(self.feeds.names[0])
            if len(self.feeds) == 0:
                raise RequestError("this engine serves no camera now (add one with add_camera)")
            raise RequestError(
                f"this engine serves several cameras ({self.feeds.known()}): "
                "the request must name one in 'camera'"
            )
        self.feeds.require(camera)
        return self.engine.camera(camera)

    def set_prompt(self, camera: str | None, text: str) -> list[str]:
        cam = self.tracker(camera)
        if self.engine.detector is None and text.strip():
            log.info("loading the detector for the first text prompt")
            self._load_detector()
        return cam.set_prompt(text)

    def _load_detector(self) -> None:
        from engine.build import load_detector

        self._busy_with = "loading the detector"
        try:
            self.engine.set_detector(load_detector(self.cfg))
        finally:
            self._busy_with = None

    def add_camera(
        self,
        name: str,
        frames: str,
        prompt: str | None,
        *,
        engine: EngineConfig | None = None,
        first_id: int | None = None,
        id_limit: int | None = None,
    ) -> None:
        """Serve camera ``name`` from ``frames`` (runs on the loop) with the engine settings
        ``engine`` (default: the engine section), its text prompt replaced by ``prompt`` when
        given; ``first_id``/``id_limit``: the block its object IDs come from."""
        if name in self.feeds:
            raise RequestError(f"camera {name!r} is already served")
        limit = self.cfg.engine.max_cameras
        if len(self.feeds) >= limit:
            raise RequestError(
                f"this engine serves {len(self.feeds)} cameras, its engine.max_cameras={limit}: "
                "remove one first"
            )
        base = self.cfg.engine if engine is None else engine
        engine_cfg = base if prompt is None else _with_prompt(base, prompt)
        if engine_cfg.prompt.strip() and self.engine.detector is None:
            self._load_detector()
        feed = self.feeds.open(name, frames)
        try:
            feed.receiver.start()
        except Exception as e:
            feed.receiver.close()
            raise RequestError(f"cannot subscribe to {frames}: {e}") from None
        try:
            self.engine.add_camera(name, engine_cfg, first_id=first_id, id_limit=id_limit)
        except PromptcamError:
            feed.receiver.close()
            raise
        self.feeds.add(feed)
        log.info("camera %s added: frames from %s", name, frames)

    def lease_ids(self, name: str, first_id: int, id_limit: int) -> None:
        """Queue a further block of IDs for camera ``name`` (runs on the loop)."""
        self.tracker(name).manager.add_id_block(first_id, id_limit)

    def remove_camera(self, name: str) -> None:
        """Stop serving ``name``: its tracks end, its memory is freed, its topics stop."""
        self.feeds.require(name)
        self.feeds.pop(name).receiver.close()
        self.engine.remove_camera(name)
        if self.annotated is not None:
            self.annotated.forget(name)
        log.info("camera %s removed", name)

    def _run_queued(self) -> None:
        """Control commands and external detections, between ticks."""
        ran = self.control.run_queued(self.board.refresh)
        self.detections.apply_queued(self.engine, self.feeds)
        if ran:
            self.state.dirty = True
            self._save_state()

    # ------------------------------------------------------------------ runtime state

    def _save_state(self) -> None:
        self.state.save(self.engine, self.feeds)

    # ------------------------------------------------------------------ stats

    def engine_stats(self) -> EngineStats:
        """The frame loop's latest figures (any thread)."""
        return self.board.latest()

    def stats(self) -> dict[str, Any]:
        """The control ``stats`` reply (``StatsBoard.stats``)."""
        return self.board.stats()

    def camera_list(self) -> list[Reply]:
        """The control ``cameras`` reply."""
        return self.board.camera_list()

    # ------------------------------------------------------------------ the loop

    def run(self, max_frames: int | None = None) -> int:
        """Serve until stopped (or until ``max_frames`` ticks)."""
        self.feeds.start()
        for t in self._threads:
            t.start()
        log.info(
            "engine: cameras %s, tracks on %s, control on %s",
            ", ".join(f"{f.name} <- {f.frames}" for f in self.feeds),
            self.cfg.bus.tracks,
            self.cfg.bus.control,
        )
        last_log = time.monotonic()
        processed = 0
        try:
            while not self.stop.is_set():
                self._run_queued()
                frames = self.feeds.newest()
                if not frames:
                    self.board.refresh()
                    continue
                if not self._tick(frames):
                    break  # the publisher is gone (its death stops the process)
                processed += 1
                if max_frames is not None and processed >= max_frames:
                    break
                if time.monotonic() - last_log > self.cfg.engine.stats_every_s:
                    last_log = time.monotonic()
                    self._log_stats()
        finally:
            self.close()
        return 0

    def _tick(self, frames: dict[str, FrameInput]) -> bool:
        """One tick over ``frames``; False when the tracks publisher is gone."""
        results = self.engine.tick(frames)
        published = True
        for name, result in results.items():
            feed = self.feeds[name]
            if feed.to_restore:
                self.state.restore_objects(self.engine, feed)
            feed.latency_ms.update(result.timings_ms)
            feed.latency_ms["grounding_ms"] = self.engine.camera(name).counters.last_grounding_ms
            published = published and self.tracks.put(name, result, frames[name].image, self.stop)
        if not published:
            return False
        self.board.latency_ms.update(next(iter(results.values())).timings_ms)
        self.board.refresh()
        self._save_state()
        return True

    def _log_stats(self) -> None:
        st = self.stats()
        log.info(
            "fps in %.1f out %.1f, cameras %d, objects %d, dropped %d, e2e %.0f ms",
            st["fps_in"],
            st["fps_out"],
            len(st["cameras"]),
            st.get("objects", 0),
            st["frames_dropped"],
            st["latency_ms"].get("end_to_end_ms", 0.0),
        )

    def close(self) -> None:
        self.stop.set()
        self.feeds.close()
        for t in self._threads:
            if t.is_alive():
                t.join(timeout=2.0)
        self.tracks.close()
        if self.annotated is not None:
            self.annotated.close()
        self.control.close()
        self.engine.close()
        self.state.close()
        if self._own_ctx:
            self.ctx.destroy(linger=0)


def _with_prompt(cfg: EngineConfig, prompt: str) -> EngineConfig:
    return EngineConfig.model_validate({**cfg.model_dump(), "prompt": prompt})
