"""The ``fleet`` section: engines as Ray actors and cameras placed on them (``clients/fleet``).
One class, ``FleetConfig``."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator

from stream.config.base import MAX_ENGINE_CAMERAS, ConfigModel

RESOURCE_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")


class FleetConfig(ConfigModel):
    """``promptcam fleet``: engines as Ray actors, cameras placed on them (clients/fleet)."""

    name: str = Field(
        "default",
        pattern=r"^[A-Za-z0-9_-]{1,64}$",
        description="Fleet name; its actors live in the Ray namespace 'promptcam-NAME', so several fleets can share a cluster.",
    )
    engines: int | None = Field(
        None,
        ge=1,
        le=1024,
        description="Engine actors; None: one per GPU of the cluster (1 on a CPU-only cluster).",
    )
    engine_gpus: float | None = Field(
        None,
        ge=0,
        le=16,
        description="GPUs per engine actor (Ray num_gpus); None: 1 when the cluster has GPUs, else 0.",
    )
    engine_cpus: float = Field(
        1.0, gt=0, le=1024, description="CPU share per engine actor (Ray num_cpus)."
    )
    engine_resources: list[str] = Field(
        default_factory=list,
        max_length=1024,
        description="Ray custom resource the k-th engine needs (a node label set with ray start --resources); engines past the list go anywhere.",
    )
    capture_cpus: float = Field(
        0.25, gt=0, le=64, description="CPU share per capture actor (Ray num_cpus)."
    )
    capture_resources: dict[str, str] = Field(
        default_factory=dict,
        description="camera -> Ray custom resource of the nodes near it: its capture actor runs only there.",
    )
    max_cameras_per_engine: int = Field(
        8,
        ge=1,
        le=MAX_ENGINE_CAMERAS,
        description="Most cameras one engine serves (an engine refuses more than its "
        "engine.max_cameras).",
    )
    max_objects_per_engine: int = Field(
        256,
        ge=1,
        le=100000,
        description="Most objects one engine tracks: each camera reserves its engine.max_objects.",
    )
    id_block: int = Field(
        1_000_000,
        ge=4,
        le=2**40,
        description="Object IDs leased per placement of a camera (and per renewal at half use); IDs are never reused in the fleet.",
    )
    reseed_objects: bool = Field(
        True,
        description="A camera moved to another engine starts with its last known objects as box prompts (new IDs), while its text prompt re-grounds.",
    )
    curve: Literal["auto", "on", "off"] = Field(
        "auto",
        description="CURVE on the fleet's ZeroMQ links (frames, tracks, annotated): auto = on when the cluster has more than one node or a node address that is not loopback.",
    )
    check_every_s: float = Field(
        0.5, gt=0, le=60, description="How often the controller checks engines and captures."
    )
    engine_timeout_s: float = Field(
        10.0,
        gt=0,
        le=600,
        description="An engine actor that does not answer for this long is counted as down and restarted.",
    )
    status_every_s: float = Field(
        5.0, gt=0, le=3600, description="`promptcam fleet` prints a status line this often."
    )
    local_cpus: int | None = Field(
        None,
        ge=1,
        le=4096,
        description="CPUs of the local Ray instance started when no --address is given (None: all).",
    )
    connect_timeout_s: float = Field(
        5.0,
        gt=0,
        le=600,
        description="`promptcam fleet ... --address`: give up joining the Ray cluster after this long (one line, exit 2), instead of Ray's own retries (over 40 s on an address that is not a Ray cluster).",
    )

    @field_validator("engine_resources")
    @classmethod
    def _resources(cls, v: list[str]) -> list[str]:
        for r in v:
            if not RESOURCE_RE.match(r):
                raise ValueError(f"bad Ray resource name {r[:80]!r}")
        return v

    @field_validator("capture_resources")
    @classmethod
    def _capture_resources(cls, v: dict[str, str]) -> dict[str, str]:
        for cam, r in v.items():
            if not RESOURCE_RE.match(r):
                raise ValueError(f"camera {cam[:64]!r}: bad Ray resource name {r[:80]!r}")
        return v


# Engine keys a camera of a ``cameras:`` mapping may override (the rest are engine-wide: one
