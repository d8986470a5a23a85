"""The ``foxglove:`` config section (``promptcam foxglove``, and its ``promptcam run`` child).
This module must not import ``stream.config`` (which imports it)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")  # stream.config.LOOPBACK_HOSTS

# Why an address off loopback needs foxglove.allow_unauthenticated (one line, config and CLI).
NO_TOKEN_CHECK = (
    "foxglove-sdk 0.30's WebSocket server has no hook to check a token, so anyone who reaches "
    "the port sees every camera"
)


class FoxgloveConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    enabled: bool = Field(
        False, description="`promptcam run` also starts `promptcam foxglove` as a child."
    )
    host: str = Field(
        "127.0.0.1",
        min_length=1,
        max_length=255,
        description="Foxglove WebSocket bind address; off loopback only with allow_unauthenticated.",
    )
    port: int = Field(
        8765, ge=0, le=65535, description="Foxglove WebSocket port (0: any free port)."
    )
    allow_unauthenticated: bool = Field(
        False,
        description="Allow a non-loopback host although the server cannot check a token (put an authenticating proxy in front).",
    )
    max_cameras: int = Field(
        64,
        ge=1,
        le=1024,
        description="Most cameras given channels; messages of cameras beyond are rejected and counted.",
    )
    backlog: int = Field(
        256,
        ge=8,
        le=65536,
        description="Messages queued per client; beyond, the oldest is dropped (a slow client misses frames, the others do not).",
    )

    @model_validator(mode="after")
    def _token_rule(self) -> FoxgloveConfig:
        if self.host not in LOOPBACK and not self.allow_unauthenticated:
            raise ValueError(
                f"foxglove.host {self.host} is not loopback: {NO_TOKEN_CHECK}; set "
                "foxglove.allow_unauthenticated=true (--allow-unauthenticated) to serve it anyway"
            )
        return self
