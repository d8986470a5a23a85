"""The Foxglove mapping of a tracks message (CONTRACT v1.2, "Robots"; docs/robots.md).

Messages are ``foxglove-sdk``'s own classes (``foxglove.messages``), so what an MCAP file of
profile ``foxglove`` and the live WebSocket (``clients.robots.foxglove_server``) carry is
Foxglove's protobuf schemas (``foxglove.CompressedImage`` ...), which the Foxglove app opens
without any extension. Same topics as the ROS 2 mapping (``clients.robots.ros2``), stamped with
the capture time, ``frame_id`` = the camera:

- ``/promptcam/<camera>/image``: ``foxglove.CompressedImage``, format ``jpeg``, the annotated
  frame.
- ``/promptcam/<camera>/detections``: ``foxglove.ImageAnnotations`` (Foxglove has no
  detection-array schema; the annotations draw the detections): per object, in message
  order, its box as a ``LineLoop`` of 4 points (x1,y1 x2,y1 x2,y2 x1,y2), its mask as up to
  ``MAX_CONTOURS`` filled ``LineLoop`` polygons (outer contours of the decoded mask, simplified
  to at most ``MAX_CONTOUR_POINTS`` points each), and one text ``#<id> <label> <confidence>``
  at the box's top-left corner; each carries metadata ``id``, ``label`` (and ``confidence`` on
  the text, ``kind`` box/mask on the points). The array's metadata: ``camera``, ``seq`` and
  ``ids`` (the track ids, comma-separated, in message order: the label image's index map).
- ``/promptcam/<camera>/masks``: ``foxglove.RawImage`` label image, the ROS 2 mapping's:
  pixel ``i + 1`` = object ``i`` of the message, lost tracks left out (``ids[i]``), 0 = none,
  ``mono8`` up to 255 objects, ``mono16`` (little-endian) beyond; a pixel in several masks goes
  to the object listed first. Why a label image and not a colour RGBA overlay: it is exact
  (every mask comes back pixel for pixel, ids by index), a quarter of the bytes of RGBA on the
  WebSocket, the same decoder serves both profiles; the colours are drawn by the annotations'
  filled polygons over the image, and Foxglove's Image panel shows the label image with a
  colour map.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass

import cv2
import numpy as np
from foxglove.messages import (
    Color,
    CompressedImage,
    ImageAnnotations,
    KeyValuePair,
    Point2,
    PointsAnnotation,
    PointsAnnotationType,
    RawImage,
    TextAnnotation,
    Timestamp,
)

from clients.robots import ros2
from stream.wire import TrackedObject, TracksMessage, WireError

NS = 1_000_000_000
UINT32_MAX = 2**32 - 1
MAX_CONTOURS = 8  # per object: the largest outer contours
MAX_CONTOUR_POINTS = 64  # per contour, after simplification
MIN_CONTOUR_AREA = 4.0  # pixels: smaller specks are left out of the polygons (not the mask)
MASK_FILL_ALPHA = 0.35
FONT_SIZE = 14.0

# the ROS 2 mapping's topics (CONTRACT v1.2: the same topics with Foxglove schemas)
IMAGE, DETECTIONS, MASKS = "image", "detections", "masks"
KINDS = (IMAGE, DETECTIONS, MASKS)


def topic(camera: str, kind: str) -> str:
    """``/promptcam/<camera>/<kind>`` (kind: image, detections, masks)."""
    return ros2.topic(camera, kind)


class FoxgloveMappingError(WireError):
    """A message with no Foxglove form (a stamp beyond ``foxglove.Timestamp``'s uint32
    seconds): rejected and counted (reason ``no_foxglove_form``)."""

    def __init__(self, detail: str) -> None:
        super().__init__("no_foxglove_form", detail)


def timestamp(t_ns: int) -> Timestamp:
    """``foxglove.Timestamp`` of a wall-clock time in nanoseconds."""
    sec, nsec = divmod(int(t_ns), NS)
    if not 0 <= sec <= UINT32_MAX:
        raise FoxgloveMappingError(f"time {t_ns} ns does not fit foxglove.Timestamp")
    return Timestamp(sec, nsec)


def color_of(track_id: int, alpha: float = 1.0) -> Color:
    """A colour per track id: hues a golden angle apart, so neighbouring ids differ."""
    hue = (int(track_id) * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.75, 0.95)
    return Color(r=r, g=g, b=b, a=alpha)


def extent(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """``(y1, y2, x1, x2)`` of the mask's pixels (exclusive ends), None for an empty mask."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return None
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def contours(mask: np.ndarray, ext: tuple[int, int, int, int] | None = None) -> list[np.ndarray]:
    """The mask's outer contours as Kx2 float arrays of pixel-centre coordinates, largest
    first: at most ``MAX_CONTOURS``, each simplified (Douglas-Peucker, the tolerance doubled
    from half a pixel) to at most ``MAX_CONTOUR_POINTS`` points, and of 3 points at least.
    Traced within the mask's extent only (a small crop of a large frame); ``ext``: that
    extent (``extent``) when the caller has it."""
    ext = ext or extent(mask)
    if ext is None:
        return []
    y1, y2, x1, x2 = ext
    crop = np.zeros((y2 - y1 + 2, x2 - x1 + 2), np.uint8)  # a free border: contours close
    crop[1:-1, 1:-1] = mask[y1:y2, x1:x2]
    found, _ = cv2.findContours(
        crop, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE, offset=(x1 - 1, y1 - 1)
    )
    found = sorted(found, key=cv2.contourArea, reverse=True)
    out: list[np.ndarray] = []
    for c in found[:MAX_CONTOURS]:
        if cv2.contourArea(c) < MIN_CONTOUR_AREA and len(out) > 0:
            break
        eps = 0.5
        simple = cv2.approxPolyDP(c, eps, True)
        while len(simple) > MAX_CONTOUR_POINTS:
            eps *= 2
            simple = cv2.approxPolyDP(c, eps, True)
        if len(simple) >= 3:  # a line or a point has no polygon (the label image keeps it)
            out.append(simple.reshape(-1, 2).astype(np.float64) + 0.5)
    return out


def _kv(**pairs: object) -> list[KeyValuePair]:
    return [KeyValuePair(key=k, value=str(v)) for k, v in pairs.items()]


@dataclass(frozen=True)
class Mapped:
    """The Foxglove messages of one tracks message."""

    annotations: ImageAnnotations
    mask: RawImage


def _label_image(
    masks: list[np.ndarray],
    extents: list[tuple[int, int, int, int] | None],
    height: int,
    width: int,
) -> np.ndarray:
    """The label image: pixel ``i + 1`` = object ``i``, 0 = none, ``uint8`` up to
    ``ros2.MONO8_MAX_OBJECTS`` objects, ``uint16`` beyond."""
    n = len(masks)
    dtype = np.uint8 if n <= ros2.MONO8_MAX_OBJECTS else np.uint16
    labels = np.zeros((height, width), dtype)
    for i in range(n - 1, -1, -1):  # the first listed is painted last: it wins overlaps
        ext = extents[i]
        if ext is not None:  # painted within the mask's extent only
            r1, r2, c1, c2 = ext
            where = masks[i][r1:r2, c1:c2]
            np.copyto(labels[r1:r2, c1:c2], labels.dtype.type(i + 1), where=where)
    return labels


def _object_annotations(
    o: TrackedObject, mask: np.ndarray, ext: tuple[int, int, int, int] | None, ts: Timestamp
) -> tuple[list[PointsAnnotation], TextAnnotation]:
    """One object's box and mask polygons, and its text."""
    x1, y1, x2, y2 = (float(v) for v in o.box)
    colour = color_of(o.id)
    conf = ros2.confidence(o)
    box = [Point2(x=x1, y=y1), Point2(x=x2, y=y1), Point2(x=x2, y=y2), Point2(x=x1, y=y2)]
    points = [
        PointsAnnotation(
            timestamp=ts,
            type=PointsAnnotationType.LineLoop,
            points=box,
            outline_color=colour,
            thickness=2.0,
            metadata=_kv(id=o.id, label=o.label, kind="box"),
        )
    ]
    for c in contours(mask, ext) if ext is not None else []:
        points.append(
            PointsAnnotation(
                timestamp=ts,
                type=PointsAnnotationType.LineLoop,
                points=[Point2(x=float(x), y=float(y)) for x, y in c],
                outline_color=colour,
                fill_color=color_of(o.id, MASK_FILL_ALPHA),
                thickness=1.0,
                metadata=_kv(id=o.id, label=o.label, kind="mask"),
            )
        )
    text = TextAnnotation(
        timestamp=ts,
        position=Point2(x=x1, y=y1),
        text=f"#{o.id} {o.label} {conf:.2f}",
        font_size=FONT_SIZE,
        text_color=Color(r=1.0, g=1.0, b=1.0, a=1.0),
        background_color=colour,
        metadata=_kv(id=o.id, label=o.label, confidence=repr(conf)),
    )
    return points, text


def map_tracks(msg: TracksMessage) -> Mapped:
    """``ImageAnnotations`` and the ``RawImage`` label image of a tracks message (each mask
    decoded once for both)."""
    h = msg.header
    ts = timestamp(h.t_capture_ns)
    objects = ros2.shown(msg)  # lost tracks left out, as on the ROS 2 topics
    masks = [o.decode_mask() for o in objects]
    extents = [extent(m) for m in masks]
    labels = _label_image(masks, extents, h.height, h.width)
    points: list[PointsAnnotation] = []
    texts: list[TextAnnotation] = []
    for o, mask, ext in zip(objects, masks, extents, strict=True):
        obj_points, text = _object_annotations(o, mask, ext, ts)
        points.extend(obj_points)
        texts.append(text)
    ann = ImageAnnotations(
        timestamp=ts,
        points=points,
        texts=texts,
        metadata=_kv(camera=h.camera, seq=h.seq, ids=",".join(str(o.id) for o in objects)),
    )
    raw = RawImage(
        timestamp=ts,
        frame_id=h.camera,
        width=h.width,
        height=h.height,
        encoding="mono8" if labels.dtype == np.uint8 else "mono16",
        step=h.width * labels.dtype.itemsize,
        data=labels.astype(labels.dtype.newbyteorder("<"), copy=False).tobytes(),
    )
    return Mapped(ann, raw)


def compressed_image(camera: str, t_capture_ns: int, jpeg: bytes | memoryview) -> CompressedImage:
    """``foxglove.CompressedImage`` (format ``jpeg``) of an annotated or raw frame."""
    return CompressedImage(
        timestamp=timestamp(t_capture_ns), frame_id=camera, data=bytes(jpeg), format="jpeg"
    )


def decode_label_image(image: object) -> np.ndarray:
    """The HxW label array of a decoded ``foxglove.RawImage`` (``map_tracks``'s form): any
    object with its fields (``encoding``, ``width``, ``height``, ``step``, ``data``)."""
    enc = getattr(image, "encoding", None)
    if enc not in ("mono8", "mono16"):
        raise FoxgloveMappingError(f"mask image encoding {enc!r} is not mono8/mono16")
    dtype = np.dtype(np.uint8 if enc == "mono8" else "<u2")
    width, height, step = (int(getattr(image, k)) for k in ("width", "height", "step"))
    rows = np.frombuffer(bytes(getattr(image, "data")), np.uint8).reshape(height, step)  # noqa: B009
    return rows[:, : width * dtype.itemsize].copy().view(dtype).reshape(height, width)
