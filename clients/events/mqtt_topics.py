"""Topic names of the MQTT output (CONTRACT v1.2) and the Home Assistant discovery payloads.

Topics under ``prefix``: ``available``, ``events``, ``reviews``, ``<camera>/<label>`` and
``<camera>/<zone>/<label>`` (retained counts; ``all`` for every label), ``<camera>/<label>/snapshot``
(JPEG, retained), ``<camera>/status``, ``<camera>/prompt/set`` (command) and
``<camera>/prompt/state`` (the prompt the engine accepted, retained). Discovery configs go to
``<discovery_prefix>/<component>/<node>/<object>/config`` (retained), as Home Assistant's MQTT
discovery reads them: each with a ``unique_id``, a ``device`` block (one device per camera) and
the availability topic.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from clients.events.mqtt_config import MqttConfig, slug, topic_level

ALL = "all"
STATUS_OPTIONS = ["live", "waiting", "offline"]
HA_TEXT_MAX = 255  # Home Assistant's text entity holds at most 255 characters


def _id(name: str) -> str:
    """A Home Assistant id part for ``name``: its slug, plus a short hash when the slug is not
    the name itself (so 'red ball' and 'red_ball' get different ids)."""
    s = slug(name)
    if s == name:
        return s
    return f"{s}_{hashlib.sha1(name.encode()).hexdigest()[:6]}"


@dataclass(frozen=True)
class Topics:
    """The topic names of one ``MqttConfig``."""

    cfg: MqttConfig

    @property
    def available(self) -> str:
        return f"{self.cfg.prefix}/available"

    @property
    def events(self) -> str:
        return f"{self.cfg.prefix}/events"

    @property
    def reviews(self) -> str:
        return f"{self.cfg.prefix}/reviews"

    def count(self, camera: str, label: str, zone: str | None = None) -> str:
        where = f"{self.cfg.prefix}/{topic_level(camera)}"
        if zone is not None:
            where += f"/{topic_level(zone)}"
        return f"{where}/{topic_level(label)}"

    def snapshot(self, camera: str, label: str) -> str:
        return f"{self.cfg.prefix}/{topic_level(camera)}/{topic_level(label)}/snapshot"

    def status(self, camera: str) -> str:
        return f"{self.cfg.prefix}/{topic_level(camera)}/status"

    def prompt_set(self, camera: str) -> str:
        return f"{self.cfg.prefix}/{topic_level(camera)}/prompt/set"

    def prompt_state(self, camera: str) -> str:
        return f"{self.cfg.prefix}/{topic_level(camera)}/prompt/state"

    @property
    def prompt_set_filter(self) -> str:
        return f"{self.cfg.prefix}/+/prompt/set"

    def camera_of_command(self, topic: str) -> str | None:
        """The camera level of a ``<prefix>/<camera>/prompt/set`` topic, else None."""
        head, tail = f"{self.cfg.prefix}/", "/prompt/set"
        if not (topic.startswith(head) and topic.endswith(tail)):
            return None
        camera = topic[len(head) : len(topic) - len(tail)]
        return camera if camera and "/" not in camera else None

    # ------------------------------------------------------------------ discovery

    @property
    def node(self) -> str:
        return _id(self.cfg.prefix.replace("/", "_"))

    def _config(
        self, component: str, camera: str, what: str, payload: dict[str, object]
    ) -> tuple[str, bytes]:
        object_id = f"{_id(camera)}_{what}"
        unique = f"{self.node}_{object_id}"
        body = {
            "unique_id": unique,
            "availability_topic": self.available,
            "payload_available": "online",
            "payload_not_available": "offline",
            "device": {
                "identifiers": [f"{self.node}_{_id(camera)}"],
                "name": f"{self.cfg.prefix} {camera}",
                "manufacturer": "promptcam",
                "model": "promptcam events",
            },
            **payload,
        }
        topic = f"{self.cfg.discovery_prefix}/{component}/{self.node}/{object_id}/config"
        return topic, json.dumps(body, separators=(",", ":")).encode()

    def camera_discovery(self, camera: str) -> list[tuple[str, bytes]]:
        """Per camera: its status sensor and the prompt as a text entity."""
        return [
            self._config(
                "sensor",
                camera,
                "status",
                {
                    "name": "status",
                    "state_topic": self.status(camera),
                    "device_class": "enum",
                    "options": STATUS_OPTIONS,
                },
            ),
            self._config(
                "text",
                camera,
                "prompt",
                {
                    "name": "prompt",
                    "command_topic": self.prompt_set(camera),
                    "state_topic": self.prompt_state(camera),
                    # the engine takes longer prompts than a Home Assistant text holds: the
                    # entity shows their first HA_TEXT_MAX characters (the topic has them all)
                    "value_template": f"{{{{ value[:{HA_TEXT_MAX}] }}}}",
                    "max": HA_TEXT_MAX,
                    "mode": "text",
                },
            ),
        ]

    def label_discovery(self, camera: str, label: str) -> list[tuple[str, bytes]]:
        """Per camera and label: the count sensor and the latest snapshot as a camera entity."""
        return [
            self._config(
                "sensor",
                camera,
                f"{_id(label)}_count",
                {
                    "name": f"{label} count",
                    "state_topic": self.count(camera, label),
                    "state_class": "measurement",
                    "icon": "mdi:counter",
                },
            ),
            self._config(
                "camera",
                camera,
                f"{_id(label)}_snapshot",
                {"name": f"{label} snapshot", "topic": self.snapshot(camera, label)},
            ),
        ]

    def zone_discovery(self, camera: str, zone: str) -> list[tuple[str, bytes]]:
        """Per zone: occupancy (a binary sensor on the zone's count of every label)."""
        return [
            self._config(
                "binary_sensor",
                camera,
                f"{_id(zone)}_occupancy",
                {
                    "name": f"{zone} occupancy",
                    "state_topic": self.count(camera, ALL, zone),
                    "value_template": "{{ 'ON' if (value | int(0)) > 0 else 'OFF' }}",
                    "device_class": "occupancy",
                },
            )
        ]
