"""The controller's durable record in Ray's KV store (the GCS), so that a restarted controller
recovers the assignment, the ID high-water mark, the keys and the cameras added at runtime.

``ray.experimental.internal_kv`` is the key-value store in the GCS that Ray's own libraries keep
their state in; it lives as long as the cluster's GCS does. One JSON document per fleet, under
the fleet's namespace.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field

KEY = b"promptcam-fleet-state"
STATE_VERSION = 1


@dataclass
class CameraRecord:
    """One camera as the controller remembers it across its own restarts."""

    resource: str | None = None  # Ray resource its capture needs
    engine: str | None = None  # where it is placed (None: not placed)
    blocks: list[list[int]] = field(default_factory=list)  # ID blocks of the current placement
    prompt: str | None = None  # a prompt set at runtime (through the gateway) replaces the config's
    placements: int = 0  # how many times it was placed

    def as_dict(self) -> dict[str, object]:
        return {
            "resource": self.resource,
            "engine": self.engine,
            "blocks": [list(b) for b in self.blocks],
            "prompt": self.prompt,
            "placements": self.placements,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, object]) -> CameraRecord:
        blocks = d.get("blocks", [])
        return cls(
            resource=_opt_str(d.get("resource")),
            engine=_opt_str(d.get("engine")),
            blocks=[[int(a), int(b)] for a, b in blocks] if isinstance(blocks, list) else [],
            prompt=_opt_str(d.get("prompt")),
            placements=_int(d.get("placements", 0)),
        )


def _opt_str(v: object) -> str | None:
    return None if v is None else str(v)


def _int(v: object) -> int:
    if not isinstance(v, int | float | str):
        raise ValueError(f"not a number: {v!r}")
    return int(v)


@dataclass
class FleetRecord:
    """Everything the controller persists."""

    config: dict[str, object]  # the fleet's Config tree (with cameras added at runtime)
    next_free: int = 1  # ID high-water mark: every ID below it was handed out
    keys: dict[str, str] | None = None
    cameras: dict[str, CameraRecord] = field(default_factory=dict)
    drained: list[str] = field(default_factory=list)
    controller_starts: int = 0
    figures: dict[str, object] = field(default_factory=dict)  # faults, recoveries, recovery_s

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "v": STATE_VERSION,
                "config": self.config,
                "next_free": self.next_free,
                "keys": self.keys,
                "cameras": {k: v.as_dict() for k, v in self.cameras.items()},
                "drained": self.drained,
                "controller_starts": self.controller_starts,
                "figures": self.figures,
            }
        ).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> FleetRecord:
        d = json.loads(raw)
        if not isinstance(d, dict) or d.get("v") != STATE_VERSION:
            raise ValueError("not a promptcam fleet record of this version")
        return cls(
            config=d["config"],
            next_free=int(d["next_free"]),
            keys=d.get("keys"),
            cameras={k: CameraRecord.from_dict(v) for k, v in d.get("cameras", {}).items()},
            drained=list(d.get("drained", [])),
            controller_starts=int(d.get("controller_starts", 0)),
            figures=dict(d.get("figures", {})),
        )


class KvStore:
    """The fleet's record in the GCS KV store (needs a connected Ray worker or driver)."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace

    def load(self) -> FleetRecord | None:
        from ray.experimental import internal_kv

        raw = internal_kv._internal_kv_get(KEY, namespace=self.namespace)
        return None if raw is None else FleetRecord.from_json(raw)

    def save(self, record: FleetRecord) -> None:
        from ray.experimental import internal_kv

        internal_kv._internal_kv_put(
            KEY, record.to_json(), overwrite=True, namespace=self.namespace
        )

    def delete(self) -> None:
        from ray.experimental import internal_kv

        internal_kv._internal_kv_del(KEY, namespace=self.namespace)
