"""The ``bus`` section: the ZeroMQ endpoints between capture, engine and clients, their
limits, the shared-memory frame ring and optional CURVE encryption (``stream.bus``).
``BusConfig`` with its one sub-section ``CurveConfig``."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator, model_validator

from stream.config.base import ConfigModel, off_host
from stream.wire import check_endpoint


class CurveConfig(ConfigModel):
    server_secret_key_file: Path | None = Field(
        None, description="CURVE secret key of the binding side (zmq.auth format)."
    )
    server_public_key_file: Path | None = Field(
        None, description="CURVE public key of the binding side, given to connecting sides."
    )
    client_secret_key_file: Path | None = Field(
        None, description="CURVE secret key of a connecting side."
    )
    client_public_key_file: Path | None = Field(
        None, description="CURVE public key of a connecting side."
    )

    @property
    def enabled(self) -> bool:
        return self.server_public_key_file is not None


class BusConfig(ConfigModel):
    frames: str = Field(
        "tcp://127.0.0.1:5550", description="Frames PUB endpoint (capture binds, engine connects)."
    )
    tracks: str = Field("tcp://127.0.0.1:5551", description="Tracks PUB endpoint (engine binds).")
    annotated: str = Field(
        "tcp://127.0.0.1:5552", description="Annotated-frames PUB endpoint (engine binds)."
    )
    control: str = Field("tcp://127.0.0.1:5553", description="Control REP endpoint (engine binds).")
    detections: str | None = Field(
        "tcp://127.0.0.1:5554",
        description="External detections SUB endpoint (engine connects; CONTRACT: an optional "
        "input, applied when a detector publishes there); null: not subscribed.",
    )
    events: str = Field(
        "tcp://127.0.0.1:5555", description="Events PUB endpoint (promptcam events binds)."
    )
    allow_remote: bool = Field(False, description="Allow binding non-loopback addresses.")
    curve: CurveConfig = Field(
        default_factory=CurveConfig,
        description="Optional CURVE encryption for frames/tracks across hosts.",
    )
    staleness_ms: float = Field(
        1000.0,
        gt=0,
        le=60000,
        description="A received frame older than this is skipped and counted as stale.",
    )
    max_payload_mb: float = Field(
        96.0,
        gt=0,
        le=1024,
        description="Largest accepted frame (a bgr8 payload, or what a JPEG decodes to), in MiB; "
        "the default takes the largest source.width x source.height (7680x4320, 94.9 MiB).",
    )
    sndhwm: int = Field(4, ge=1, le=10000, description="Send high-water mark of frame publishers.")
    frames_shm: bool = Field(
        False,
        description="Put bgr8 frame payloads in a shared-memory ring (/dev/shm) and send only a reference over ZeroMQ: no kernel copies, for capture and engine on one host (frames endpoint ipc://, inproc:// or loopback tcp). Receivers must be promptcam's.",
    )
    shm_slots: int = Field(
        8,
        ge=2,
        le=256,
        description="Frames the shared-memory ring holds; a receiver holding a frame longer than this many frames sees it counted as overrun.",
    )

    @field_validator("frames", "tracks", "annotated", "control", "detections", "events")
    @classmethod
    def _endpoint(cls, v: str | None) -> str | None:
        return v if v is None else check_endpoint(v)

    @model_validator(mode="after")
    def _shm_same_host(self) -> BusConfig:
        if self.frames_shm and off_host(self.frames):
            raise ValueError(
                f"frames_shm needs capture and engine on one host, but frames is {self.frames}"
            )
        return self
