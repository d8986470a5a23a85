"""The ``dds`` section: the ROS 2 mapping published on DDS by ``promptcam dds``
(``clients/robots``). One class, ``DdsConfig``; the Foxglove WebSocket's section is
``clients.robots.foxglove_config.FoxgloveConfig``."""

from __future__ import annotations

from pydantic import Field

from stream.config.base import ConfigModel


class DdsConfig(ConfigModel):
    """``promptcam dds``: the ROS 2 mapping published on DDS (Cyclone DDS), docs/robots.md."""

    enabled: bool = Field(
        False, description="`promptcam run` starts a `dds` child publishing every camera."
    )
    domain_id: int = Field(
        0, ge=0, le=232, description="DDS domain, as ROS_DOMAIN_ID on the ROS 2 side."
    )
    interface: str | None = Field(
        "lo",
        pattern=r"^[A-Za-z0-9_.:%-]{1,64}$",
        description="The only network interface (name or address) Cyclone DDS uses; the ROS 2 side must use it too (CYCLONEDDS_URI). None: Cyclone's own choice, or CYCLONEDDS_URI.",
    )
    masks: bool = Field(True, description="Publish the label image on /promptcam/<camera>/masks.")
    image: bool = Field(
        True, description="Publish the annotated JPEG on /promptcam/<camera>/image."
    )
    max_cameras: int = Field(
        64,
        ge=1,
        le=1024,
        description="Cameras published at most (three writers each); messages of further cameras are rejected and counted.",
    )
