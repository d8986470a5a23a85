"""The ``source`` section: where capture takes frames from (``stream.sources``), how it
paces and reconnects them, and the demo scene's knobs. One class, ``SourceConfig``."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from stream.config.base import ConfigModel


class SourceConfig(ConfigModel):
    uri: str = Field(
        "demo",
        description="Video source: webcam index or /dev/videoN, rtsp(s)/http(s) URL, file, image directory, or 'demo'.",
    )
    loop: bool = Field(False, description="Restart a video file or image directory at its end.")
    realtime: bool = Field(
        True,
        description="Pace files and image directories at their frame rate instead of as fast as they decode.",
    )
    fps: float | None = Field(
        None,
        gt=0,
        le=240,
        description="Frame rate for image directories and the demo scene (files and cameras use their own).",
    )
    width: int = Field(
        640,
        ge=32,
        le=7680,
        description="Frame width of the demo scene (and requested webcam width).",
    )
    height: int = Field(
        480,
        ge=32,
        le=4320,
        description="Frame height of the demo scene (and requested webcam height).",
    )
    max_pixels: int = Field(
        4096 * 2160,
        ge=64 * 64,
        le=7680 * 4320,
        description="Largest frame (width x height) a file, image, stream or webcam may declare, "
        "checked before decoding: a larger one is refused (a small file can declare frames that "
        "take gigabytes to decode). Default 4096x2160 (DCI 4K; UHD 3840x2160 either way up); "
        "at most 7680x4320, the largest frame the bus carries.",
    )
    demo_objects: int = Field(
        6, ge=0, le=32, description="Number of moving objects in the demo scene."
    )
    seed: int = Field(
        10,
        ge=0,
        description="Random seed of the demo scene (10 with 6 objects: two look-alike red balls, a green ball, red, purple and yellow boxes).",
    )
    open_timeout_s: float = Field(
        5.0, gt=0, le=120, description="Timeout for opening a network source."
    )
    read_timeout_s: float = Field(
        10.0,
        gt=0,
        le=120,
        description="Socket read timeout for network sources (longer than stall_timeout_s, so a stall is detected as one).",
    )
    stall_timeout_s: float = Field(
        5.0,
        gt=0,
        le=600,
        description="No frame for this long counts as a stall and forces a reconnect.",
    )
    reconnect_initial_s: float = Field(
        0.5, gt=0, le=60, description="First reconnect delay; doubles per failure (with jitter)."
    )
    reconnect_max_s: float = Field(
        10.0, gt=0, le=600, description="Upper bound of the reconnect delay."
    )
    encoding: Literal["bgr8", "jpeg"] = Field(
        "bgr8", description="Frame encoding on the frames topic."
    )
    jpeg_quality: int = Field(90, ge=10, le=100, description="JPEG quality when encoding is jpeg.")
