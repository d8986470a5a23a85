"""The ``record`` section: what ``promptcam record`` writes (MP4 + tracks JSONL, or MCAP), where,
and how it rotates files and rides out a full disk. One class, ``RecordConfig``."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from stream.config.base import ConfigModel


class RecordConfig(ConfigModel):
    directory: Path = Field(Path("recordings"), description="Where recordings are written.")
    rotate_mb: float | None = Field(
        512.0, gt=0, description="Start a new file after this many megabytes."
    )
    rotate_s: float | None = Field(
        3600.0, gt=0, description="Start a new file after this many seconds."
    )
    fps: float = Field(15.0, gt=0, le=120, description="Frame rate written into MP4 files.")
    retry_s: float = Field(
        5.0,
        gt=0,
        le=3600,
        description="While files cannot be written (a full disk), check this often whether they can again.",
    )
    min_free_mb: float = Field(
        16.0,
        ge=0,
        le=1e6,
        description="After a full disk, resume writing once its filesystem has this much free space.",
    )
    enabled: bool = Field(
        False,
        description="`promptcam run` starts a recorder child per camera (`promptcam record`), restarted like the others.",
    )
    format: Literal["mp4", "mcap"] = Field(
        "mp4",
        description="What the recorder writes: mp4 (MP4 + tracks JSONL) or mcap (ROS 2 messages, docs/robots.md); `promptcam record --format` overrides it.",
    )
    profile: Literal["ros2", "foxglove"] = Field(
        "ros2",
        description="MCAP message profile (format mcap): ROS 2 messages or Foxglove schemas; `--profile` overrides it.",
    )
