# cyclonedds' field types (array[float64, 36], sequence[...]) are runtime objects mypy cannot
# read as types: only these codes are off, only here.
# mypy: disable-error-code="valid-type,type-arg,assignment,arg-type"
"""The ROS 2 messages of ``clients.robots.ros2`` as DDS types, in ROS 2's DDS naming.

ROS 2 (``rosidl`` + ``rmw_cyclonedds_cpp``) names the DDS type of ``pkg/msg/Type``
``pkg::msg::dds_::Type_`` and serialises it as plain CDR (XCDR1, little-endian, encapsulation
``00 01 00 00``). These ``IdlStruct``s are the ``.msg`` definitions in ``ros2.MSG_TEXT`` field
for field, in order, with the same types: ``float64`` -> ``float64``, ``float64[36]`` ->
``array[float64, 36]``, ``uint8[]`` -> ``sequence[uint8]``, ``string`` -> ``str``; every type
keyless (``@final``, no ``@key``), as ROS 2 generates them. ``tests/test_dds.py`` checks the
field lists against the ``.msg`` text and the bytes against ``rosbags``' CDR serialiser.

``Image`` and ``CompressedImage`` end in ``uint8[] data``; cyclonedds packs a ``sequence[uint8]``
byte by byte (``struct.pack`` of 307,200 arguments: 40 ms for a 640x480 label image), so their
``serialize`` writes the rest of the sample with cyclonedds and appends the sequence itself
(uint32 length, then the bytes: the same CDR, in one copy).
"""

# No ``from __future__ import annotations``: cyclonedds reads the field types at class creation.
import dataclasses
import struct
import sys
from dataclasses import dataclass, field
from typing import cast

import cyclonedds.idl.types as t
from cyclonedds.idl import IdlStruct
from cyclonedds.idl._support import Buffer, Endianness

from clients.robots.ros2 import CompressedImageMsg, Detection2DArrayMsg, HeaderMsg, ImageMsg


def dds_type_name(ros_type: str) -> str:
    """``vision_msgs/msg/Detection2DArray`` -> ``vision_msgs::msg::dds_::Detection2DArray_``."""
    pkg, kind, name = ros_type.split("/")
    return f"{pkg}::{kind}::dds_::{name}_"


@dataclass
class Time(IdlStruct, typename=dds_type_name("builtin_interfaces/msg/Time")):
    sec: t.int32 = 0
    nanosec: t.uint32 = 0


@dataclass
class Header(IdlStruct, typename=dds_type_name("std_msgs/msg/Header")):
    stamp: Time = field(default_factory=Time)
    frame_id: str = ""


@dataclass
class Point(IdlStruct, typename=dds_type_name("geometry_msgs/msg/Point")):
    x: t.float64 = 0.0
    y: t.float64 = 0.0
    z: t.float64 = 0.0


@dataclass
class Quaternion(IdlStruct, typename=dds_type_name("geometry_msgs/msg/Quaternion")):
    x: t.float64 = 0.0
    y: t.float64 = 0.0
    z: t.float64 = 0.0
    w: t.float64 = 1.0


@dataclass
class Pose(IdlStruct, typename=dds_type_name("geometry_msgs/msg/Pose")):
    position: Point = field(default_factory=Point)
    orientation: Quaternion = field(default_factory=Quaternion)


@dataclass
class PoseWithCovariance(IdlStruct, typename=dds_type_name("geometry_msgs/msg/PoseWithCovariance")):
    pose: Pose = field(default_factory=Pose)
    covariance: t.array[t.float64, 36] = field(default_factory=lambda: [0.0] * 36)


@dataclass
class Point2D(IdlStruct, typename=dds_type_name("vision_msgs/msg/Point2D")):
    x: t.float64 = 0.0
    y: t.float64 = 0.0


@dataclass
class Pose2D(IdlStruct, typename=dds_type_name("vision_msgs/msg/Pose2D")):
    position: Point2D = field(default_factory=Point2D)
    theta: t.float64 = 0.0


@dataclass
class BoundingBox2D(IdlStruct, typename=dds_type_name("vision_msgs/msg/BoundingBox2D")):
    center: Pose2D = field(default_factory=Pose2D)
    size_x: t.float64 = 0.0
    size_y: t.float64 = 0.0


@dataclass
class ObjectHypothesis(IdlStruct, typename=dds_type_name("vision_msgs/msg/ObjectHypothesis")):
    class_id: str = ""
    score: t.float64 = 0.0


@dataclass
class ObjectHypothesisWithPose(
    IdlStruct, typename=dds_type_name("vision_msgs/msg/ObjectHypothesisWithPose")
):
    hypothesis: ObjectHypothesis = field(default_factory=ObjectHypothesis)
    pose: PoseWithCovariance = field(default_factory=PoseWithCovariance)


@dataclass
class Detection2D(IdlStruct, typename=dds_type_name("vision_msgs/msg/Detection2D")):
    header: Header = field(default_factory=Header)
    results: t.sequence[ObjectHypothesisWithPose] = field(default_factory=list)
    bbox: BoundingBox2D = field(default_factory=BoundingBox2D)
    id: str = ""


@dataclass
class Detection2DArray(IdlStruct, typename=dds_type_name("vision_msgs/msg/Detection2DArray")):
    header: Header = field(default_factory=Header)
    detections: t.sequence[Detection2D] = field(default_factory=list)


def _serialize_data_tail(
    sample: "Image | CompressedImage",
    buffer: Buffer | None,
    endianness: Endianness | None,
    use_version_2: bool | None,
) -> bytes:
    """``sample`` (whose last field is ``data: uint8[]``) as CDR, the bytes copied at once."""
    if buffer is not None or endianness is not None or use_version_2 or sys.byteorder != "little":
        return IdlStruct.serialize(sample, buffer, endianness, use_version_2)
    head = IdlStruct.serialize(dataclasses.replace(sample, data=b""), None, None, use_version_2)
    # the field is annotated with cyclonedds' IDL type; its value is bytes (ros2's messages)
    data = cast(bytes, sample.data)
    # ``head`` ends in the empty sequence's uint32 length (0), already aligned to 4
    return head[:-4] + struct.pack("<I", len(data)) + bytes(data)


@dataclass
class Image(IdlStruct, typename=dds_type_name("sensor_msgs/msg/Image")):
    header: Header = field(default_factory=Header)
    height: t.uint32 = 0
    width: t.uint32 = 0
    encoding: str = ""
    is_bigendian: t.uint8 = 0
    step: t.uint32 = 0
    data: t.sequence[t.uint8] = b""

    def serialize(
        self,
        buffer: Buffer | None = None,
        endianness: Endianness | None = None,
        use_version_2: bool | None = None,
    ) -> bytes:
        return _serialize_data_tail(self, buffer, endianness, use_version_2)


@dataclass
class CompressedImage(IdlStruct, typename=dds_type_name("sensor_msgs/msg/CompressedImage")):
    header: Header = field(default_factory=Header)
    format: str = ""
    data: t.sequence[t.uint8] = b""

    def serialize(
        self,
        buffer: Buffer | None = None,
        endianness: Endianness | None = None,
        use_version_2: bool | None = None,
    ) -> bytes:
        return _serialize_data_tail(self, buffer, endianness, use_version_2)


# ROS 2 type name -> its DDS struct (every type of ``ros2.MSG_TEXT``)
TYPES: dict[str, type[IdlStruct]] = {
    "builtin_interfaces/msg/Time": Time,
    "std_msgs/msg/Header": Header,
    "geometry_msgs/msg/Point": Point,
    "geometry_msgs/msg/Quaternion": Quaternion,
    "geometry_msgs/msg/Pose": Pose,
    "geometry_msgs/msg/PoseWithCovariance": PoseWithCovariance,
    "vision_msgs/msg/Point2D": Point2D,
    "vision_msgs/msg/Pose2D": Pose2D,
    "vision_msgs/msg/BoundingBox2D": BoundingBox2D,
    "vision_msgs/msg/ObjectHypothesis": ObjectHypothesis,
    "vision_msgs/msg/ObjectHypothesisWithPose": ObjectHypothesisWithPose,
    "vision_msgs/msg/Detection2D": Detection2D,
    "vision_msgs/msg/Detection2DArray": Detection2DArray,
    "sensor_msgs/msg/Image": Image,
    "sensor_msgs/msg/CompressedImage": CompressedImage,
}


def _header(h: HeaderMsg) -> Header:
    s = h["stamp"]
    return Header(Time(s["sec"], s["nanosec"]), h["frame_id"])


def detection_array(m: Detection2DArrayMsg) -> Detection2DArray:
    """The DDS sample of ``ros2.detections``'s dict."""
    header = _header(m["header"])
    dets = []
    for d in m["detections"]:
        results = []
        for r in d["results"]:
            hyp, pose = r["hypothesis"], r["pose"]
            p, o = pose["pose"]["position"], pose["pose"]["orientation"]
            results.append(
                ObjectHypothesisWithPose(
                    ObjectHypothesis(hyp["class_id"], hyp["score"]),
                    PoseWithCovariance(
                        Pose(
                            Point(p["x"], p["y"], p["z"]),
                            Quaternion(o["x"], o["y"], o["z"], o["w"]),
                        ),
                        list(pose["covariance"]),
                    ),
                )
            )
        b = d["bbox"]
        c = b["center"]
        bbox = BoundingBox2D(
            Pose2D(Point2D(c["position"]["x"], c["position"]["y"]), c["theta"]),
            b["size_x"],
            b["size_y"],
        )
        dets.append(Detection2D(header, results, bbox, d["id"]))
    return Detection2DArray(header, dets)


def image(m: ImageMsg) -> Image:
    """The DDS sample of ``ros2.masks``'s dict."""
    return Image(
        _header(m["header"]),
        m["height"],
        m["width"],
        m["encoding"],
        m["is_bigendian"],
        m["step"],
        m["data"],
    )


def compressed_image(m: CompressedImageMsg) -> CompressedImage:
    """The DDS sample of ``ros2.compressed_image``'s dict."""
    return CompressedImage(_header(m["header"]), m["format"], m["data"])
