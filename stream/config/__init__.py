"""One typed configuration for every promptcam process.

Loaded once at the entry point (``load_config``) from ``configs/default.yaml`` (or ``--config``),
then overridden from the command line with dotted keys, and passed down. Unknown keys and
out-of-range values are rejected with one readable line naming the key (``ConfigError``).

One module per subsystem, each with its one section class (Frigate's shape): ``source``,
``bus``, ``models``, ``engine``, ``web``, ``record``, ``robots`` (``dds``), ``run``, ``fleet``
and ``camera`` (the ``cameras`` mapping); ``root`` composes them into ``Config`` (with the
sections that live beside their subsystem: ``engine.lifecycle`` in ``engine/lifecycle/config.py``,
``events`` and ``mqtt`` in ``clients/events/``, ``foxglove`` in ``clients/robots/``);
``loading`` reads YAML and ``--set`` overrides; ``base`` holds what they share.
"""

from stream.config.base import (
    CONFIGS_DIR,
    DEFAULT_CONFIG_PATH,
    LOOPBACK_HOSTS,
    MAX_ENGINE_CAMERAS,
    SOCKETS_PER_CAMERA,
    ConfigError,
    off_host,
    shorten,
)
from stream.config.bus import BusConfig, CurveConfig
from stream.config.camera import CameraConfig, CameraSettings
from stream.config.engine import EngineConfig
from stream.config.fleet import FleetConfig
from stream.config.loading import (
    MAX_CONFIG_BYTES,
    MAX_CONFIG_VALUES,
    load_config,
    parse_override,
)
from stream.config.models import ModelsConfig
from stream.config.record import RecordConfig
from stream.config.robots import DdsConfig
from stream.config.root import Config
from stream.config.run import RunConfig
from stream.config.source import SourceConfig
from stream.config.web import WebConfig

__all__ = [
    "CONFIGS_DIR",
    "DEFAULT_CONFIG_PATH",
    "LOOPBACK_HOSTS",
    "MAX_CONFIG_BYTES",
    "MAX_CONFIG_VALUES",
    "MAX_ENGINE_CAMERAS",
    "SOCKETS_PER_CAMERA",
    "BusConfig",
    "CameraConfig",
    "CameraSettings",
    "Config",
    "ConfigError",
    "CurveConfig",
    "DdsConfig",
    "EngineConfig",
    "FleetConfig",
    "ModelsConfig",
    "RecordConfig",
    "RunConfig",
    "SourceConfig",
    "WebConfig",
    "load_config",
    "off_host",
    "parse_override",
    "shorten",
]
