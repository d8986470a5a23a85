"""Configuration of the MQTT output of the events service (``mqtt:`` at the top of the config).

Kept apart from ``clients.events.mqtt`` so that loading a config never imports paho. This module
must not import ``stream.config`` (which imports it).
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, model_validator

# Topic levels made of letters, digits, '_' and '-', joined by '/': no wildcard, no empty level.
TOPIC_RE = r"^[A-Za-z0-9_-]{1,64}(/[A-Za-z0-9_-]{1,64}){0,7}$"
CLIENT_ID_RE = r"^[A-Za-z0-9_.-]{1,64}$"
HOST_RE = r"^[A-Za-z0-9_.:-]{1,253}$"


class MqttConfig(BaseModel):
    """MQTT output (paho-mqtt): Frigate-shaped topics under ``prefix``, Home Assistant discovery
    under ``discovery_prefix``, the ``<prefix>/<camera>/prompt/set`` command topic."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    enabled: bool = Field(False, description="Publish events, counts and status over MQTT.")
    host: str = Field("127.0.0.1", pattern=HOST_RE, description="Broker host name or address.")
    port: int = Field(1883, ge=1, le=65535, description="Broker TCP port.")
    prefix: str = Field(
        "promptcam",
        pattern=TOPIC_RE,
        description="Topic prefix: '<prefix>/events', '<prefix>/<camera>/<label>', ... (1-8 levels of letters, digits, '_', '-').",
    )
    client_id: str = Field(
        "promptcam-events",
        pattern=CLIENT_ID_RE,
        description="MQTT client id (unique per broker: a second client with the same id takes the session over).",
    )
    username: str | None = Field(
        None, min_length=1, max_length=256, description="Broker user name (none: anonymous)."
    )
    password: str | None = Field(
        None,
        min_length=1,
        max_length=256,
        description="Broker password (with username; never logged).",
    )
    qos: int = Field(
        1,
        ge=0,
        le=2,
        description="QoS of published messages: 1 (default) or 2 deliver what was queued while the broker was away; 0 may lose messages on a disconnect.",
    )
    keepalive: int = Field(
        30,
        ge=5,
        le=3600,
        description="Seconds between keepalive pings (the broker's last-will timeout is 1.5x).",
    )
    reconnect_min_s: int = Field(
        1, ge=1, le=300, description="First reconnect delay after the broker goes away (seconds)."
    )
    reconnect_max_s: int = Field(
        30,
        ge=1,
        le=3600,
        description="Longest reconnect delay: the delay doubles from reconnect_min_s up to this.",
    )
    queue_limit: int = Field(
        10000,
        ge=10,
        le=1_000_000,
        description="Messages kept while the broker is away (delivered in order on reconnect); beyond, the oldest are dropped and counted.",
    )
    discovery: bool = Field(
        True, description="Publish Home Assistant MQTT discovery configs (retained)."
    )
    discovery_prefix: str = Field(
        "homeassistant", pattern=TOPIC_RE, description="Home Assistant's discovery prefix."
    )
    status_waiting_s: float = Field(
        5.0,
        ge=0.5,
        le=3600.0,
        description="A camera whose tracks stop for this long is 'waiting' (then 'offline').",
    )
    status_offline_s: float = Field(
        60.0,
        ge=1.0,
        le=86400.0,
        description="A camera whose tracks stop for this long is 'offline' (at least status_waiting_s).",
    )
    command_rate: float = Field(
        1.0,
        gt=0.0,
        le=100.0,
        description="Prompt commands accepted per second and camera (token bucket); beyond, rejected and counted.",
    )
    command_burst: int = Field(
        5,
        ge=1,
        le=1000,
        description="Prompt commands accepted at once before command_rate applies.",
    )
    command_timeout_s: float = Field(
        5.0,
        ge=0.1,
        le=60.0,
        description="Seconds to wait for the engine's reply to a prompt command.",
    )

    @model_validator(mode="after")
    def _order(self) -> MqttConfig:
        if self.reconnect_max_s < self.reconnect_min_s:
            raise ValueError(
                f"reconnect_max_s ({self.reconnect_max_s}) is below reconnect_min_s ({self.reconnect_min_s})"
            )
        if self.status_offline_s < self.status_waiting_s:
            raise ValueError(
                f"status_offline_s ({self.status_offline_s:g}) is below status_waiting_s ({self.status_waiting_s:g})"
            )
        if self.password is not None and self.username is None:
            raise ValueError("password is set without a username")
        return self


_UNSAFE = re.compile(r"[/+#\x00-\x1f]")


def topic_level(name: str) -> str:
    """``name`` as one topic level: '/', '+', '#' and control characters become '_' (a label
    such as 'a/b' would otherwise add a level, '+' or '#' would be refused by the broker)."""
    return _UNSAFE.sub("_", name) or "_"


def slug(name: str) -> str:
    """``name`` as a Home Assistant object id part: letters, digits and '_' only."""
    return re.sub(r"[^a-z0-9_]", "_", name.lower())[:64] or "_"


CameraZones = dict[str, tuple[str, list[str]]]  # camera -> (its prompt, its zone names)
