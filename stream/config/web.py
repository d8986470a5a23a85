"""The ``web`` section: the web page's HTTP server, its access token and its WebRTC viewers
(``clients/web``). One class, ``WebConfig``."""

from __future__ import annotations

from pydantic import Field, model_validator

from stream.config.base import LOOPBACK_HOSTS, ConfigModel


class WebConfig(ConfigModel):
    host: str = Field("127.0.0.1", description="HTTP bind address.")
    port: int = Field(8080, ge=0, le=65535, description="HTTP port (0: any free port).")
    token: str | None = Field(
        None, min_length=8, description="Access token; required when host is not loopback."
    )
    camera: str | None = Field(
        None,
        description="Show this camera only (default: every camera the engine serves, followed at runtime).",
    )
    max_upload_mb: float = Field(
        200.0, gt=0, le=10000, description="Largest accepted video upload."
    )
    max_body_kb: float = Field(
        64.0, gt=0, le=10240, description="Largest accepted non-upload request body."
    )
    video_fps: float = Field(
        30.0, gt=0, le=120, description="Most frames per second sent to a viewer."
    )
    ice_loopback_only: bool = Field(
        True, description="Offer only loopback ICE candidates (tests, single-host use)."
    )
    max_viewers: int = Field(
        8,
        ge=1,
        le=256,
        description="Most WebRTC viewers of one camera at once (they share its encoder; a page showing every camera takes one of each); an offer beyond gets 503.",
    )
    connect_timeout_s: float = Field(
        20.0,
        ge=1,
        le=300,
        description="A viewer whose WebRTC connection is not up this long after its offer (no usable ICE candidates, a client gone) is closed and its slot freed.",
    )
    max_connections: int = Field(
        256,
        ge=8,
        le=65536,
        description="Most open HTTP connections (kept below the process's file limit); at the limit a new connection replaces the longest-idle one, or gets 503 when every one is busy.",
    )
    idle_timeout_s: float = Field(
        15.0,
        ge=1,
        le=3600,
        description="An HTTP connection without a complete request for this long is closed (idle keep-alive and partial request headers alike).",
    )
    request_timeout_s: float = Field(
        30.0,
        ge=1,
        le=3600,
        description="Longest wait for a request body (uploads: for each next chunk); beyond, 408.",
    )

    @model_validator(mode="after")
    def _token(self) -> WebConfig:
        if self.host not in LOOPBACK_HOSTS and not self.token:
            raise ValueError("web.host is not loopback, so web.token must be set")
        return self
