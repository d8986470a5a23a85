"""The ROS 2 mapping of a tracks message (CONTRACT v1.2, "Robots"; docs/robots.md).

No ROS 2 is needed: messages are plain dicts in the field layout of the ROS 2 types, which
``mcap_ros2``'s CDR encoder takes, and the ``.msg`` definitions are kept here as text
(``vision_msgs`` 4.x, ``sensor_msgs``, ``std_msgs``, ``geometry_msgs``, ``builtin_interfaces``,
as in ROS 2 Humble/Jazzy), concatenated with their dependencies the way ``ros2 bag`` writes an
MCAP schema (encoding ``ros2msg``).

- ``/promptcam/<camera>/detections``: ``vision_msgs/msg/Detection2DArray``; header stamp = the
  capture time, ``frame_id`` = the camera; one ``Detection2D`` per object in message order:
  ``bbox`` centre and size in pixels (``theta`` 0), ``results[0].hypothesis.class_id`` = label,
  ``.score`` = confidence (the sigmoid of the score where an older message has none),
  ``id`` = the track id as a decimal string. Lost tracks (``state`` ``lost``: the engine keeps
  them for a moment with their last box, while nothing is seen) are left out of every topic.
- ``/promptcam/<camera>/masks``: ``sensor_msgs/msg/Image``, one label image per tracks message,
  same stamp: pixel value ``i + 1`` = ``detections[i]``, 0 = no object; ``mono8`` for up to
  255 objects, ``mono16`` (little-endian) beyond. A pixel in several masks takes the object
  listed first.
- ``/promptcam/<camera>/image``: ``sensor_msgs/msg/CompressedImage``, format ``jpeg``, the
  annotated frame, stamped with its capture time.
"""

from __future__ import annotations

from typing import Protocol, TypedDict

import numpy as np

from stream.wire import TrackedObject, TracksMessage, WireError, confidence_of

NS = 1_000_000_000
INT32_MAX = 2**31 - 1
MONO8_MAX_OBJECTS = 255

DETECTIONS_TYPE = "vision_msgs/msg/Detection2DArray"
IMAGE_TYPE = "sensor_msgs/msg/Image"
COMPRESSED_TYPE = "sensor_msgs/msg/CompressedImage"


# The ROS 2 messages as dicts (mcap_ros2's encoder takes them; ``dds_types`` builds the DDS
# samples from them): field names and nesting are the ROS 2 message definitions'.


class TimeMsg(TypedDict):
    sec: int
    nanosec: int


class HeaderMsg(TypedDict):
    stamp: TimeMsg
    frame_id: str


class PointMsg(TypedDict):
    x: float
    y: float
    z: float


class QuaternionMsg(TypedDict):
    x: float
    y: float
    z: float
    w: float


class PoseMsg(TypedDict):
    position: PointMsg
    orientation: QuaternionMsg


class PoseWithCovarianceMsg(TypedDict):
    pose: PoseMsg
    covariance: list[float]


class HypothesisMsg(TypedDict):
    class_id: str
    score: float


class HypothesisWithPoseMsg(TypedDict):
    hypothesis: HypothesisMsg
    pose: PoseWithCovarianceMsg


class Point2DMsg(TypedDict):
    x: float
    y: float


class Pose2DMsg(TypedDict):
    position: Point2DMsg
    theta: float


class BoundingBox2DMsg(TypedDict):
    center: Pose2DMsg
    size_x: float
    size_y: float


class Detection2DMsg(TypedDict):
    header: HeaderMsg
    results: list[HypothesisWithPoseMsg]
    bbox: BoundingBox2DMsg
    id: str


class Detection2DArrayMsg(TypedDict):
    """``vision_msgs/msg/Detection2DArray``."""

    header: HeaderMsg
    detections: list[Detection2DMsg]


class ImageMsg(TypedDict):
    """``sensor_msgs/msg/Image``."""

    header: HeaderMsg
    height: int
    width: int
    encoding: str
    is_bigendian: int
    step: int
    data: bytes


class CompressedImageMsg(TypedDict):
    """``sensor_msgs/msg/CompressedImage``."""

    header: HeaderMsg
    format: str
    data: bytes


class DecodedImage(Protocol):
    """A decoded ``sensor_msgs/Image`` (``mcap_ros2``'s or ``rosbags``' message)."""

    @property
    def encoding(self) -> str: ...
    @property
    def is_bigendian(self) -> int: ...
    @property
    def height(self) -> int: ...
    @property
    def width(self) -> int: ...
    @property
    def step(self) -> int: ...
    @property
    def data(self) -> bytes | memoryview: ...


def topic(camera: str, kind: str) -> str:
    """``/promptcam/<camera>/<kind>`` (kind: detections, masks, image)."""
    return f"/promptcam/{camera}/{kind}"


class Ros2MappingError(WireError):
    """A message with no ROS 2 form (a stamp beyond ``builtin_interfaces/Time``): rejected and
    counted (reason ``no_ros2_form``) like any message that breaks the contract."""

    def __init__(self, detail: str) -> None:
        super().__init__("no_ros2_form", detail)


# --------------------------------------------------------------------------- .msg definitions

# Each type's own definition, as its package ships it (comments left out).
MSG_TEXT: dict[str, str] = {
    "builtin_interfaces/msg/Time": "int32 sec\nuint32 nanosec\n",
    "std_msgs/msg/Header": "builtin_interfaces/Time stamp\nstring frame_id\n",
    "geometry_msgs/msg/Point": "float64 x\nfloat64 y\nfloat64 z\n",
    "geometry_msgs/msg/Quaternion": "float64 x 0\nfloat64 y 0\nfloat64 z 0\nfloat64 w 1\n",
    "geometry_msgs/msg/Pose": "Point position\nQuaternion orientation\n",
    "geometry_msgs/msg/PoseWithCovariance": "Pose pose\nfloat64[36] covariance\n",
    "vision_msgs/msg/Point2D": "float64 x\nfloat64 y\n",
    "vision_msgs/msg/Pose2D": "vision_msgs/Point2D position\nfloat64 theta\n",
    "vision_msgs/msg/BoundingBox2D": "vision_msgs/Pose2D center\nfloat64 size_x\nfloat64 size_y\n",
    "vision_msgs/msg/ObjectHypothesis": "string class_id\nfloat64 score\n",
    "vision_msgs/msg/ObjectHypothesisWithPose": (
        "ObjectHypothesis hypothesis\ngeometry_msgs/PoseWithCovariance pose\n"
    ),
    "vision_msgs/msg/Detection2D": (
        "std_msgs/Header header\nObjectHypothesisWithPose[] results\nBoundingBox2D bbox\n"
        "string id\n"
    ),
    "vision_msgs/msg/Detection2DArray": "std_msgs/Header header\nDetection2D[] detections\n",
    "sensor_msgs/msg/Image": (
        "std_msgs/Header header\nuint32 height\nuint32 width\nstring encoding\n"
        "uint8 is_bigendian\nuint32 step\nuint8[] data\n"
    ),
    "sensor_msgs/msg/CompressedImage": "std_msgs/Header header\nstring format\nuint8[] data\n",
}

# The types each one uses, in the order ``ros2 bag`` lists them (depth first).
_DEPENDS: dict[str, list[str]] = {
    "std_msgs/msg/Header": ["builtin_interfaces/msg/Time"],
    "geometry_msgs/msg/Pose": ["geometry_msgs/msg/Point", "geometry_msgs/msg/Quaternion"],
    "geometry_msgs/msg/PoseWithCovariance": ["geometry_msgs/msg/Pose"],
    "vision_msgs/msg/Pose2D": ["vision_msgs/msg/Point2D"],
    "vision_msgs/msg/BoundingBox2D": ["vision_msgs/msg/Pose2D"],
    "vision_msgs/msg/ObjectHypothesisWithPose": [
        "vision_msgs/msg/ObjectHypothesis",
        "geometry_msgs/msg/PoseWithCovariance",
    ],
    "vision_msgs/msg/Detection2D": [
        "std_msgs/msg/Header",
        "vision_msgs/msg/ObjectHypothesisWithPose",
        "vision_msgs/msg/BoundingBox2D",
    ],
    "vision_msgs/msg/Detection2DArray": ["std_msgs/msg/Header", "vision_msgs/msg/Detection2D"],
    "sensor_msgs/msg/Image": ["std_msgs/msg/Header"],
    "sensor_msgs/msg/CompressedImage": ["std_msgs/msg/Header"],
}

_SEPARATOR = "=" * 80


def _dependencies(name: str, seen: list[str]) -> list[str]:
    for dep in _DEPENDS.get(name, []):
        if dep not in seen:
            seen.append(dep)
            _dependencies(dep, seen)
    return seen


def schema_text(name: str) -> str:
    """The MCAP ``ros2msg`` schema of ``name``: its definition, then each type it uses once,
    after a line of 80 ``=`` and ``MSG: pkg/Type`` (the form ``ros2 bag record`` writes)."""
    parts = [MSG_TEXT[name]]
    for dep in _dependencies(name, []):
        pkg, _, typ = dep.split("/")
        parts.append(f"{_SEPARATOR}\nMSG: {pkg}/{typ}\n{MSG_TEXT[dep]}")
    return "\n".join(parts)


# --------------------------------------------------------------------------- messages


def stamp(t_ns: int) -> TimeMsg:
    """``builtin_interfaces/Time`` of a wall-clock time in nanoseconds."""
    sec, nanosec = divmod(int(t_ns), NS)
    if not 0 <= sec <= INT32_MAX:
        raise Ros2MappingError(f"time {t_ns} ns does not fit builtin_interfaces/Time")
    return {"sec": sec, "nanosec": nanosec}


def _header(camera: str, t_ns: int) -> HeaderMsg:
    return {"stamp": stamp(t_ns), "frame_id": camera}


def confidence(obj: TrackedObject) -> float:
    """The object's 0-1 confidence: the message's, else the sigmoid of its score (pre-v1.2)."""
    return obj.confidence if obj.confidence is not None else confidence_of(obj.score)


def _detection(header: HeaderMsg, obj: TrackedObject) -> Detection2DMsg:
    x1, y1, x2, y2 = (float(v) for v in obj.box)
    return {
        "header": header,
        "results": [
            {
                "hypothesis": {"class_id": obj.label, "score": confidence(obj)},
                "pose": {
                    "pose": {
                        "position": {"x": 0.0, "y": 0.0, "z": 0.0},
                        "orientation": {"x": 0.0, "y": 0.0, "z": 0.0, "w": 1.0},
                    },
                    "covariance": [0.0] * 36,
                },
            }
        ],
        "bbox": {
            "center": {"position": {"x": (x1 + x2) / 2, "y": (y1 + y2) / 2}, "theta": 0.0},
            "size_x": x2 - x1,
            "size_y": y2 - y1,
        },
        "id": str(obj.id),
    }


def shown(msg: TracksMessage) -> list[TrackedObject]:
    """The objects a robot is given, in message order: all but lost tracks."""
    return [o for o in msg.header.objects if o.state != "lost"]


def detections(msg: TracksMessage) -> Detection2DArrayMsg:
    """``vision_msgs/msg/Detection2DArray`` of a tracks message (lost tracks left out)."""
    h = msg.header
    header = _header(h.camera, h.t_capture_ns)
    return {"header": header, "detections": [_detection(header, o) for o in shown(msg)]}


def label_image(msg: TracksMessage) -> np.ndarray:
    """HxW labels: ``i + 1`` where object ``i`` of ``shown`` (message order) is, 0 elsewhere;
    where masks overlap, the object listed first. uint8 up to 255 objects, else uint16."""
    from pycocotools import mask as mask_utils

    h = msg.header
    objects = shown(msg)
    n = len(objects)
    labels = np.zeros((h.height, h.width), np.uint8 if n <= MONO8_MAX_OBJECTS else np.uint16)
    for i in range(n - 1, -1, -1):  # the first listed is painted last, so it wins overlaps
        rle = objects[i].mask
        mask = mask_utils.decode({"size": list(rle.size), "counts": rle.counts.encode()})
        np.copyto(labels, labels.dtype.type(i + 1), where=mask.view(bool))  # 0/1 bytes, no copy
    return labels


def masks(msg: TracksMessage) -> ImageMsg:
    """``sensor_msgs/msg/Image`` label image of a tracks message (``label_image``)."""
    h = msg.header
    labels = label_image(msg)
    encoding = "mono8" if labels.dtype == np.uint8 else "mono16"
    return {
        "header": _header(h.camera, h.t_capture_ns),
        "height": h.height,
        "width": h.width,
        "encoding": encoding,
        "is_bigendian": 0,
        "step": h.width * labels.dtype.itemsize,
        "data": labels.astype(labels.dtype.newbyteorder("<"), copy=False).tobytes(),
    }


def decode_label_image(image: DecodedImage) -> np.ndarray:
    """The HxW label array of a decoded ``sensor_msgs/Image`` (``masks``'s form): any object
    with the ``Image`` fields (``mcap_ros2``'s or ``rosbags``' decoded message)."""
    if image.encoding not in ("mono8", "mono16"):
        raise Ros2MappingError(f"mask image encoding {image.encoding!r} is not mono8/mono16")
    dtype = np.dtype(np.uint8 if image.encoding == "mono8" else np.uint16)
    dtype = dtype.newbyteorder(">" if image.is_bigendian else "<")
    rows = np.frombuffer(bytes(image.data), np.uint8).reshape(image.height, image.step)
    return (
        rows[:, : image.width * dtype.itemsize]
        .copy()
        .view(dtype)
        .reshape(image.height, image.width)
    )


def compressed_image(
    camera: str, t_capture_ns: int, jpeg: bytes | memoryview
) -> CompressedImageMsg:
    """``sensor_msgs/msg/CompressedImage`` (format ``jpeg``) of an annotated or raw frame."""
    return {"header": _header(camera, t_capture_ns), "format": "jpeg", "data": bytes(jpeg)}
