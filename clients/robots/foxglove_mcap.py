"""MCAP files of the Foxglove mapping (``clients.robots.foxglove_map``): profile ``foxglove``.

Written with ``mcap``'s writer (like the ``ros2`` profile's ``McapFile``: a file object we
own, so a full disk raises ``OSError`` here and the recorder salvages the file), carrying
exactly what ``foxglove-sdk``'s own MCAP writer carries: Foxglove's protobuf schemas
(``foxglove.CompressedImage``, ``foxglove.ImageAnnotations``, ``foxglove.RawImage``, the
``FileDescriptorSet`` the SDK ships, schema encoding ``protobuf``) and messages encoded by the
SDK's classes (message encoding ``protobuf``), which the Foxglove app opens natively
(tests/test_foxglove.py compares the schemas and bytes with a file the SDK writes). The
header's profile is empty, as the SDK writes it (MCAP has no registered Foxglove profile).
Log time = capture time; publish time = the engine's publish time where the message has one.
"""

from __future__ import annotations

from pathlib import Path
from typing import IO

from foxglove.messages import CompressedImage, ImageAnnotations, RawImage
from mcap.writer import CompressionType, Writer

from clients.robots import foxglove_map as fm
from clients.robots.mcap_handle import McapHandle
from stream.wire import TracksMessage

SCHEMAS: dict[str, type[CompressedImage] | type[ImageAnnotations] | type[RawImage]] = {
    fm.IMAGE: CompressedImage,
    fm.DETECTIONS: ImageAnnotations,
    fm.MASKS: RawImage,
}


class FoxgloveMcapFile(McapHandle):
    """One MCAP file with the three Foxglove topics of every camera written to it."""

    _writer: Writer

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: IO[bytes] = path.open("wb")
        self._writer = Writer(self._file, chunk_size=1024 * 1024, compression=CompressionType.ZSTD)
        self._writer.start(profile="", library="promptcam")
        self._schemas: dict[str, int] = {}
        for kind, cls in SCHEMAS.items():
            s = cls.get_schema()
            self._schemas[kind] = self._writer.register_schema(s.name, s.encoding, s.data)
        self._channels: dict[tuple[str, str], int] = {}
        self._closed = False

    def _channel(self, camera: str, kind: str) -> int:
        key = (camera, kind)
        if key not in self._channels:
            self._channels[key] = self._writer.register_channel(
                fm.topic(camera, kind), "protobuf", self._schemas[kind]
            )
        return self._channels[key]

    def _write(self, camera: str, kind: str, data: bytes, log_ns: int, pub_ns: int) -> None:
        self._writer.add_message(self._channel(camera, kind), log_ns, data, pub_ns)

    def write_tracks(self, msg: TracksMessage) -> None:
        """The message's ``ImageAnnotations`` and label ``RawImage`` (both mapped before
        either is written; ``FoxgloveMappingError`` writes nothing)."""
        h = msg.header
        mapped = fm.map_tracks(msg)
        ann, mask = mapped.annotations.encode(), mapped.mask.encode()
        self._write(h.camera, fm.DETECTIONS, ann, h.t_capture_ns, h.t_publish_ns)
        self._write(h.camera, fm.MASKS, mask, h.t_capture_ns, h.t_publish_ns)

    def write_jpeg(self, camera: str, t_capture_ns: int, jpeg: bytes | memoryview) -> None:
        """An annotated (or raw) JPEG frame as a ``CompressedImage``."""
        data = fm.compressed_image(camera, t_capture_ns, jpeg).encode()
        self._write(camera, fm.IMAGE, data, t_capture_ns, t_capture_ns)
