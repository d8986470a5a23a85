"""The root of the configuration: ``Config`` composes one section per subsystem (source, bus,
models, engine, web, record, run, fleet, events, mqtt, foxglove, dds) with the ``cameras``
mapping, and checks what spans sections (cameras against the engine's limit, events' zones
against their cameras, frame sizes against the bus). Loading it from YAML is
``stream.config.loading``."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from clients.events.config import EventsConfig
from clients.events.mqtt_config import MqttConfig
from clients.robots.foxglove_config import FoxgloveConfig
from stream.config.base import MAX_ENGINE_CAMERAS, ConfigError, ConfigModel
from stream.config.bus import BusConfig
from stream.config.camera import CameraConfig, CameraSettings, resolve_camera
from stream.config.engine import EngineConfig
from stream.config.fleet import FleetConfig
from stream.config.models import ModelsConfig
from stream.config.record import RecordConfig
from stream.config.robots import DdsConfig
from stream.config.run import RunConfig
from stream.config.source import SourceConfig
from stream.config.web import WebConfig
from stream.wire import is_camera_name


class Config(ConfigModel):
    """The whole configuration: one section per subsystem, the camera (or cameras) they serve,
    and the checks that need several sections at once."""

    camera: str = Field(
        "cam0",
        description="Camera name, used in topics; with a cameras mapping, the camera a one-camera command (capture, prompt, subscribe, record, object) addresses.",
    )
    cameras: dict[str, CameraConfig] = Field(
        default_factory=dict,
        description="Several cameras served by one engine: name -> {source, prompt, fps, frames, engine}. Empty: one camera, named by 'camera', from the source and engine sections.",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="Log level."
    )
    source: SourceConfig = Field(default_factory=SourceConfig)
    bus: BusConfig = Field(default_factory=BusConfig)
    models: ModelsConfig = Field(default_factory=ModelsConfig)
    engine: EngineConfig = Field(default_factory=EngineConfig)
    web: WebConfig = Field(default_factory=WebConfig)
    record: RecordConfig = Field(default_factory=RecordConfig)
    run: RunConfig = Field(default_factory=RunConfig)
    fleet: FleetConfig = Field(default_factory=FleetConfig)
    events: EventsConfig = Field(default_factory=EventsConfig)
    mqtt: MqttConfig = Field(default_factory=MqttConfig)
    foxglove: FoxgloveConfig = Field(
        default_factory=FoxgloveConfig,
        description="Live Foxglove WebSocket (`promptcam foxglove`; docs/robots.md).",
    )
    dds: DdsConfig = Field(default_factory=DdsConfig)

    @field_validator("camera")
    @classmethod
    def _camera(cls, v: str) -> str:
        if not is_camera_name(v):
            raise ValueError("expected 1-64 letters, digits, '_' or '-'")
        return v

    @model_validator(mode="after")
    def _cameras_resolve(self) -> Config:
        n, limit = len(self.cameras), self.engine.max_cameras
        if n > limit:
            raise ConfigError(
                f"cameras: {n} configured, over engine.max_cameras={limit} (one engine serves "
                f"at most {MAX_ENGINE_CAMERAS}; run a fleet or several engines for more)"
            )
        settings = self.camera_settings()  # every camera's settings are checked at load time
        for cam in self.fleet.capture_resources:
            if cam not in settings:
                raise ConfigError(
                    f"fleet.capture_resources names camera {cam[:64]!r}, which is not configured "
                    f"(cameras: {', '.join(settings)})"
                )
        self._check_events(settings)
        return self

    def _check_events(self, settings: dict[str, CameraSettings]) -> None:
        """Zones and lines against their camera: a known camera, labels of its prompt, pixel
        points inside the demo scene's frame (the one frame size known before frames arrive)."""
        from stream.prompts import normalize_prompt

        for name in self.events.cameras:
            if name not in settings:
                raise ConfigError(
                    f"events.cameras names camera {name[:64]!r}, which is not configured "
                    f"(cameras: {', '.join(settings)})"
                )
            cam = settings[name]
            prompt = cam.engine.prompt
            labels = normalize_prompt(prompt) if prompt.strip() else None
            demo = cam.source.uri == "demo"
            size = (cam.source.width, cam.source.height) if demo else None
            try:
                self.events.check_camera(name, labels, size)
            except ValueError as e:
                raise ConfigError(str(e)) from None

    def check_frame_size(self) -> None:
        """``ConfigError`` when frames of ``source.width`` x ``source.height`` (the demo scene, the
        size requested from a webcam) of any camera would exceed ``bus.max_payload_mb``:
        receivers would refuse every frame, so say so before anything starts."""
        limit = self.bus.max_payload_mb * 2**20
        for name, cam in self.camera_settings().items():
            s = cam.source
            nbytes = s.width * s.height * 3
            if nbytes > limit:
                need = -(-nbytes // 2**20)
                where = f"camera {name}: " if self.cameras else ""
                raise ConfigError(
                    f"{where}source.width x source.height = {s.width}x{s.height} makes "
                    f"{nbytes / 2**20:.1f} MiB frames, over bus.max_payload_mb="
                    f"{self.bus.max_payload_mb:g}; set bus.max_payload_mb={need} or more"
                )

    def camera_settings(self) -> dict[str, CameraSettings]:
        """Every camera, resolved (in config order); raises ``ConfigError`` naming the camera and
        key of a bad override."""
        if not self.cameras:
            return {
                self.camera: CameraSettings(self.camera, self.source, self.engine, self.bus.frames)
            }
        out: dict[str, CameraSettings] = {}
        used: dict[str, str] = {}
        for index, (name, cam) in enumerate(self.cameras.items()):
            if not is_camera_name(name):
                raise ConfigError(
                    f"camera name {name[:80]!r}: expected 1-64 letters, digits, '_' or '-'"
                )
            settings = resolve_camera(index, name, cam, self.source, self.engine, self.bus)
            other = used.get(settings.frames)
            if other is not None:
                raise ConfigError(
                    f"cameras {other!r} and {name!r} both use frames endpoint {settings.frames}"
                )
            used[settings.frames] = name
            out[name] = settings
        return out

    def selected_camera(self) -> str | None:
        """The camera a one-camera command addresses: ``camera``, when it is one of the cameras
        (or there is no mapping); None when a mapping does not name it."""
        if not self.cameras or self.camera in self.cameras:
            return self.camera
        return None

    def for_camera(self, name: str | None = None) -> Config:
        """The one-camera view of camera ``name`` (default: the selected camera): its source,
        engine settings and frames endpoint in the top-level sections, no mapping. What a
        one-camera process (capture, record) runs on."""
        settings = self.camera_settings()
        if name is None:  # a camera asked for (--camera, camera:) that the mapping lacks: named
            name = self.camera if "camera" in self.model_fields_set else self.selected_camera()
        if name is None or name not in settings:
            known = ", ".join(settings)
            what = "choose one with --camera" if name is None else f"no camera {name!r}"
            raise ConfigError(f"the config defines cameras {known}: {what}")
        cam = settings[name]
        tree = self.model_dump(mode="json")
        tree.update(
            camera=name,
            cameras={},
            source=cam.source.model_dump(mode="json"),
            engine=cam.engine.model_dump(mode="json"),
        )
        tree["bus"]["frames"] = cam.frames
        tree["fleet"]["capture_resources"] = {}  # placement of a fleet: no meaning for one camera
        return Config.model_validate(tree)
