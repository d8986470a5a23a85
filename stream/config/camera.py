"""The ``cameras`` mapping (Frigate style): one engine serving several cameras, each with what
differs from the top-level ``source`` and ``engine`` sections (``CameraConfig``), resolved into
``CameraSettings`` (its source, engine settings and frames endpoint) by ``resolve_camera``."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import Field, ValidationError

from stream.config.base import ConfigError, ConfigModel, first_error
from stream.config.bus import BusConfig
from stream.config.engine import EngineConfig
from stream.config.source import SourceConfig
from stream.wire import MAX_PROMPT_CHARS, check_endpoint

# Engine keys a camera of a ``cameras:`` mapping may override (the rest are engine-wide: one
# detector and one model serve every camera).
PER_CAMERA_ENGINE_KEYS = (
    "prompt",
    "reground_every_frames",
    "reground_every_s",
    "iou_threshold",
    "drift_iou",
    "merge_iou",
    "score_threshold",
    "max_missed",
    "max_unseen",
    "reid_frames",
    "reid_distance",
    "drift_colour",
    "max_objects",
    "seed_with",
)
CAMERA_PORT_STRIDE = 10  # tcp frames port of the k-th camera: bus.frames port + 10 k


class CameraConfig(ConfigModel):
    """One camera of a ``cameras:`` mapping (Frigate style): what differs from the top-level
    ``source`` and ``engine`` sections."""

    source: str | dict[str, object] | None = Field(
        None,
        description="The camera's source: a URI (as --source), or source keys that override the top-level source section.",
    )
    prompt: str | None = Field(
        None,
        max_length=MAX_PROMPT_CHARS,
        description="Text prompt of this camera (default: engine.prompt; at most 1000 characters).",
    )
    fps: float | None = Field(
        None, gt=0, le=240, description="Frame rate of this camera's demo scene or image directory."
    )
    frames: str | None = Field(
        None,
        description="Frames endpoint this camera's capture binds (default: bus.frames for the first camera; the k-th gets the tcp port + 10 k, or the ipc path + '-NAME').",
    )
    engine: dict[str, object] = Field(
        default_factory=dict,
        description="Per-camera overrides of engine keys: "
        + ", ".join(PER_CAMERA_ENGINE_KEYS)
        + ".",
    )


@dataclass(frozen=True)
class CameraSettings:
    """One camera, resolved: its source, its engine settings and its frames endpoint."""

    name: str
    source: SourceConfig
    engine: EngineConfig
    frames: str


def resolve_camera(
    index: int,
    name: str,
    cam: CameraConfig,
    source: SourceConfig,
    engine: EngineConfig,
    bus: BusConfig,
) -> CameraSettings:
    """Camera ``name`` (the ``index``-th of the mapping) resolved against the top-level
    ``source``, ``engine`` and ``bus`` sections; ``ConfigError`` naming the camera and key of a
    bad override."""
    source_tree: dict[str, object] = source.model_dump()
    if isinstance(cam.source, str):
        source_tree["uri"] = cam.source
    elif cam.source is not None:
        source_tree.update(cam.source)
    if cam.fps is not None:
        source_tree["fps"] = cam.fps
    engine_tree: dict[str, object] = engine.model_dump()
    for key, value in cam.engine.items():
        if key not in PER_CAMERA_ENGINE_KEYS:
            where = "unknown engine key" if key not in engine_tree else "engine-wide key"
            raise ConfigError(
                f"cameras.{name}.engine.{str(key)[:64]}: {where}; a camera may set "
                + ", ".join(PER_CAMERA_ENGINE_KEYS)
            )
        engine_tree[key] = value
    if cam.prompt is not None:
        engine_tree["prompt"] = cam.prompt
    try:
        src = SourceConfig.model_validate(source_tree)
    except ValidationError as e:
        raise ConfigError(first_error(e, f"cameras.{name}.source.")) from None
    try:
        eng = EngineConfig.model_validate(engine_tree)
    except ValidationError as e:
        raise ConfigError(first_error(e, f"cameras.{name}.engine.")) from None
    frames = cam.frames or camera_frames_endpoint(bus.frames, index, name)
    try:
        check_endpoint(frames)
    except ValueError as e:
        raise ConfigError(f"bad config value for 'cameras.{name}.frames': {e}") from None
    return CameraSettings(name, src, eng, frames)


def camera_frames_endpoint(base: str, index: int, name: str) -> str:
    """The frames endpoint of the ``index``-th camera when the config names none: ``base`` for
    the first; then the tcp port + ``CAMERA_PORT_STRIDE * index``, or the ipc/inproc path with
    ``-NAME`` appended."""
    if index == 0:
        return base
    if base.startswith("tcp://"):
        host, port = base[6:].rsplit(":", 1)
        derived = int(port) + CAMERA_PORT_STRIDE * index
        if derived > 65535:
            raise ConfigError(
                f"camera {name!r}: no frames port left after {base} (set cameras.{name}.frames)"
            )
        return f"tcp://{host}:{derived}"
    return f"{base}-{name}"
