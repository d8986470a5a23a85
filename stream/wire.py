"""Wire types for every ZeroMQ message in CONTRACT.md (schema version 1).

Each message is multipart ``[topic, header, *payload]``: an ASCII topic, one UTF-8 JSON header,
and raw payload parts. ``to_parts`` builds the parts (frame buffers are passed through without
copying, for ``send_multipart(..., copy=False)``); ``from_parts`` validates topic, JSON, version,
field types and payload size and raises ``WireError`` with a one-line reason on anything wrong,
and nothing else, whatever the bytes (``loads_json``: nesting too deep, integers too long, NaN;
text that is not valid Unicode, such as a lone surrogate, which could not be sent on again;
prompts and labels longer than ``MAX_PROMPT_CHARS`` / ``MAX_LABEL_CHARS``; a JPEG whose own
frame header disagrees with the message header, checked before anything is decoded).
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Annotated, Any, Literal, NoReturn, TypeVar

import numpy as np
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    model_validator,
)

from stream.shm import NAME_RE, ShmError, ShmOverrun, ShmReader, ShmRef, ShmRing

SCHEMA_VERSION = 1
MAX_HEADER_BYTES = 16 * 1024 * 1024
DEFAULT_MAX_PAYLOAD = 96 * 1024 * 1024  # bus.max_payload_mb: an 8K bgr8 frame (94.9 MiB) fits
# The web page's prompt box takes up to 1000 characters (clients/web/server.py); the engine takes
# no more from anyone, so a tracks message never carries a huge prompt. Labels (one per object in
# every tracks message) are a phrase each.
MAX_PROMPT_CHARS = 1000
MAX_LABEL_CHARS = 200
MAX_DETECTIONS = 1024  # per external detections message (Grounding DINO gives at most 900)
MAX_INT = 2**63 - 1  # JSON integers beyond 64 bits break other languages' receivers

# A message part as received or sent: bytes, bytearray, memoryview, numpy array or zmq.Frame;
# a part of any other type is refused (``bad_part``) when read.
Part = object


class WireError(ValueError):
    """A message does not follow the contract. ``reason`` is a short counter key."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


def now_ns() -> int:
    return time.time_ns()


def clip(text: str, n: int = 80) -> str:
    """``text`` cut to ``n`` characters (for error lines quoting what a peer sent)."""
    return text if len(text) <= n else text[: n - 3] + "..."


def _no_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not JSON")


def loads_json(raw: bytes | bytearray | memoryview | str, what: str = "message") -> Any:
    """Strict JSON from a peer; ``WireError`` (reason ``bad_json``) on anything else: not UTF-8,
    not JSON, NaN/Infinity, nesting deeper than the interpreter's recursion limit, integers with
    more digits than Python converts (4,300)."""
    try:
        return json.loads(
            bytes(raw) if isinstance(raw, memoryview) else raw, parse_constant=_no_constant
        )
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise WireError("bad_json", f"{what} is not UTF-8 JSON ({e.__class__.__name__})") from None
    except RecursionError:
        raise WireError("bad_json", f"{what} is nested too deeply") from None
    except ValueError as e:  # integer too long, NaN/Infinity
        raise WireError("bad_json", f"{what}: {clip(str(e))}") from None


def _unicode(text: str) -> str:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("text is not valid Unicode (a lone surrogate)") from None
    return text


# Text a peer sends that the engine may send on: valid Unicode (JSON lets "\ud800" through).
Text = Annotated[str, AfterValidator(_unicode)]
# ZeroMQ endpoints. Linux's sockaddr_un holds a 108-byte path with its NUL: an ipc path of more
# bytes cannot be bound or connected (libzmq fails with ENAMETOOLONG, which once killed a thread).
ENDPOINT_SCHEMES = ("tcp", "ipc", "inproc")
MAX_IPC_PATH_BYTES = 107
MAX_ENDPOINT_CHARS = 1024
_ENDPOINT_RE = re.compile(r"^(tcp|ipc|inproc)://([^\s\x00-\x1f]+)$")
_TCP_RE = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[^\[\]:/]+|[0-9A-Fa-f:]+):(\d{1,5})$")


def check_endpoint(endpoint: str) -> str:
    """``endpoint`` when it is one ZeroMQ can bind or connect: ``tcp://HOST:PORT`` with a port in
    1-65535, ``ipc://PATH`` of at most ``MAX_IPC_PATH_BYTES`` bytes, or ``inproc://NAME``; else
    ``ValueError`` with one line saying why. The one check of config files and control requests."""
    if len(endpoint) > MAX_ENDPOINT_CHARS:
        raise ValueError(f"endpoint is longer than {MAX_ENDPOINT_CHARS} characters")
    m = _ENDPOINT_RE.match(endpoint)
    if m is None:
        scheme = endpoint.split("://", 1)[0] if "://" in endpoint else ""
        if scheme and scheme not in ENDPOINT_SCHEMES:
            raise ValueError(
                f"unknown endpoint scheme {clip(repr(scheme), 40)} "
                "(expected tcp://HOST:PORT, ipc://PATH or inproc://NAME)"
            )
        raise ValueError("expected tcp://HOST:PORT, ipc://PATH or inproc://NAME")
    scheme, rest = m.group(1), m.group(2)
    if scheme == "tcp":
        t = _TCP_RE.match(rest)
        if t is None:
            raise ValueError("expected tcp://HOST:PORT with a numeric port")
        port = int(t.group(2))
        if not 1 <= port <= 65535:
            raise ValueError(f"TCP port {port} is out of range (1-65535)")
    elif scheme == "ipc":
        size = len(rest.encode("utf-8", "surrogatepass"))
        if size > MAX_IPC_PATH_BYTES:
            raise ValueError(
                f"ipc path of {size} bytes is longer than the {MAX_IPC_PATH_BYTES} a Unix "
                "socket address holds; use a shorter path"
            )
    return endpoint


Prompt = Annotated[str, Field(max_length=MAX_PROMPT_CHARS), AfterValidator(_unicode)]
Label = Annotated[str, Field(max_length=MAX_LABEL_CHARS), AfterValidator(_unicode)]
Endpoint = Annotated[str, AfterValidator(check_endpoint)]
Count = Annotated[int, Field(ge=0, le=MAX_INT)]
Finite = Annotated[float, Field(allow_inf_nan=False)]


def _buf(part: Part) -> memoryview:
    if isinstance(part, memoryview):
        return part
    if isinstance(part, (bytes, bytearray)):
        return memoryview(part)
    if isinstance(part, np.ndarray):
        return memoryview(np.ascontiguousarray(part).reshape(-1).view(np.uint8).data)
    b = getattr(part, "buffer", None)  # zmq.Frame
    if b is not None:
        return memoryview(b)
    raise WireError("bad_part", f"unsupported message part type {type(part).__name__}")


def _topic(part: Part, kind: str) -> str:
    raw = bytes(_buf(part))
    try:
        topic = raw.decode("ascii")
    except UnicodeDecodeError:
        raise WireError("bad_topic", "topic is not ASCII") from None
    prefix, _, camera = topic.partition(".")
    if prefix != kind or not camera:
        raise WireError("bad_topic", f"expected topic '{kind}.<camera>', got {topic[:80]!r}")
    return camera


class _Header(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)
    v: int
    camera: str


_H = TypeVar("_H", bound=_Header)


def _header(part: Part, model: type[_H]) -> _H:
    raw = _buf(part)
    if raw.nbytes > MAX_HEADER_BYTES:
        raise WireError("bad_size", f"header of {raw.nbytes} bytes is too large")
    obj = loads_json(raw, "header")
    if not isinstance(obj, dict):
        raise WireError("bad_json", "header is not a JSON object")
    if obj.get("v") != SCHEMA_VERSION:
        raise WireError(
            "bad_version", f"expected v={SCHEMA_VERSION}, got {clip(repr(obj.get('v')), 40)}"
        )
    try:
        return model.model_validate(obj)
    except ValidationError as e:
        raise WireError("bad_field", _field_error(e)) from None


def _field_error(e: ValidationError, skip: int = 0) -> str:
    """The first validation error as ``field 'a.b': what`` (both clipped)."""
    err = e.errors(include_url=False, include_input=False)[0]
    loc = ".".join(str(p) for p in err["loc"][skip:]) or "request"
    msg = err["msg"].removeprefix("Value error, ")
    return f"field '{clip(loc, 60)}': {clip(msg, 120)}"


def _parse(parts: Sequence[Part], kind: str, n_parts: int, model: type[_H]) -> _H:
    """Check the part count, the topic ``<kind>.<camera>`` and the header, and that the header's
    camera is the topic's."""
    if len(parts) != n_parts:
        raise WireError("bad_parts", f"{kind} message needs {n_parts} parts, got {len(parts)}")
    camera = _topic(parts[0], kind)
    h = _header(parts[1], model)
    if h.camera != camera:
        raise WireError(
            "bad_field", f"header camera {h.camera!r} differs from topic camera {camera!r}"
        )
    return h


def _dump(obj: Mapping[str, object]) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


# --------------------------------------------------------------------------- frame


class ShmRefHeader(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)
    name: Annotated[str, Field(pattern=NAME_RE.pattern)]
    slot: Annotated[int, Field(ge=0, le=1_000_000)]
    gen: Annotated[int, Field(ge=2, le=MAX_INT)]


class FrameHeader(_Header):
    seq: Count
    t_capture_ns: Count
    width: Annotated[int, Field(gt=0, le=16384)]
    height: Annotated[int, Field(gt=0, le=16384)]
    encoding: Literal["bgr8", "jpeg"]
    shm: ShmRefHeader | None = None


@dataclass(frozen=True)
class FrameMessage:
    """One captured frame. ``data`` is the raw BGR buffer or a JPEG, never copied on receive.

    With ``shm`` set (``bus.frames_shm``, see ``stream.shm``) the payload lies in a shared-memory
    slot instead of a message part; on the receiving side ``data`` is then a read-only view of
    that slot, valid while :meth:`intact`, and :meth:`owned` copies it out."""

    camera: str
    seq: int
    t_capture_ns: int
    width: int
    height: int
    encoding: Literal["bgr8", "jpeg"]
    data: memoryview | bytes | np.ndarray = field(repr=False)
    shm: ShmRef | None = None
    shm_reader: ShmReader | None = field(default=None, repr=False, compare=False)

    @property
    def topic(self) -> bytes:
        return f"frame.{self.camera}".encode()

    @classmethod
    def from_image(
        cls,
        camera: str,
        seq: int,
        image: np.ndarray,
        t_capture_ns: int | None = None,
        encoding: Literal["bgr8", "jpeg"] = "bgr8",
        jpeg_quality: int = 90,
    ) -> FrameMessage:
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected an HxWx3 uint8 BGR image, got {image.shape} {image.dtype}")
        h, w = image.shape[:2]
        data: memoryview | bytes | np.ndarray
        if encoding == "jpeg":
            data = encode_jpeg(image, jpeg_quality)
        else:
            data = np.ascontiguousarray(image)
        return cls(
            camera,
            seq,
            t_capture_ns if t_capture_ns is not None else now_ns(),
            w,
            h,
            encoding,
            data,
        )

    def header(self) -> dict[str, object]:
        h: dict[str, object] = {
            "v": SCHEMA_VERSION,
            "camera": self.camera,
            "seq": self.seq,
            "t_capture_ns": self.t_capture_ns,
            "width": self.width,
            "height": self.height,
            "encoding": self.encoding,
        }
        if self.shm is not None:
            h["shm"] = self.shm.as_dict()
        return h

    def to_parts(self) -> list[Any]:  # bytes, and a bgr8 payload as numpy array or memoryview
        if self.shm is not None:
            return [self.topic, _dump(self.header())]
        return [self.topic, _dump(self.header()), self.data]

    def to_shm(self, ring: ShmRing) -> FrameMessage:
        """This ``bgr8`` frame written into the next slot of ``ring``, as a message naming it."""
        if self.encoding != "bgr8":
            raise ValueError("only bgr8 frames go through shared memory")
        return replace(self, shm=ring.write(self.seq, self.image()))

    def intact(self) -> bool:
        """False once a shared-memory frame's slot was reused (always True for inline payloads)."""
        if self.shm is None or self.shm_reader is None:
            return True
        return self.shm_reader.intact(self.shm)

    def owned(self) -> FrameMessage:
        """A frame whose payload is this process's own: shared-memory payloads are copied out and
        checked unchanged (``ShmOverrun`` otherwise); inline ones are returned as they are."""
        if self.shm is None or self.shm_reader is None:
            return self
        data = np.frombuffer(self.data, np.uint8).copy()
        if not self.intact():
            raise ShmOverrun(
                f"frame {self.seq} of camera {self.camera} was overwritten while copied"
            )
        return replace(self, data=data, shm=None, shm_reader=None)

    @classmethod
    def from_parts(
        cls,
        parts: Sequence[Part],
        max_payload: int = DEFAULT_MAX_PAYLOAD,
        shm_reader: ShmReader | None = None,
    ) -> FrameMessage:
        """Validate a frame message. A shared-memory payload needs ``shm_reader``; a slot already
        reused for a newer frame raises ``ShmOverrun`` (not malformed: the reader was late)."""
        n_parts = len(parts) if len(parts) in (2, 3) else 3
        h = _parse(parts, "frame", n_parts, FrameHeader)
        if h.shm is not None:
            return cls._from_shm(h, n_parts, max_payload, shm_reader)
        if n_parts != 3:
            raise WireError("bad_parts", "frame message needs 3 parts, got 2")
        payload = _buf(parts[2])
        n = payload.nbytes
        if n > max_payload:
            raise WireError("bad_size", f"payload of {n} bytes exceeds limit {max_payload}")
        if h.encoding == "bgr8" and n != h.width * h.height * 3:
            raise WireError(
                "bad_size",
                f"bgr8 payload is {n} bytes, expected {h.width}x{h.height}x3={h.width * h.height * 3}",
            )
        if h.encoding == "jpeg":
            _check_jpeg(payload, h.width, h.height, max_payload)
        return cls(h.camera, h.seq, h.t_capture_ns, h.width, h.height, h.encoding, payload)

    @classmethod
    def _from_shm(
        cls, h: FrameHeader, n_parts: int, max_payload: int, reader: ShmReader | None
    ) -> FrameMessage:
        assert h.shm is not None
        if n_parts != 2:
            raise WireError("bad_parts", "frame message with a shared-memory payload needs 2 parts")
        if h.encoding != "bgr8":
            raise WireError("bad_field", "field 'shm': only bgr8 frames go through shared memory")
        n = h.width * h.height * 3
        if n > max_payload:
            raise WireError("bad_size", f"payload of {n} bytes exceeds limit {max_payload}")
        if reader is None:
            raise WireError(
                "shm_unsupported",
                "frame payload is in shared memory; this receiver takes inline payloads only",
            )
        ref = ShmRef(h.shm.name, h.shm.slot, h.shm.gen)
        try:
            view = reader.view(ref, n)
        except ShmError as e:
            raise WireError("bad_shm", str(e)) from None
        return cls(h.camera, h.seq, h.t_capture_ns, h.width, h.height, "bgr8", view, ref, reader)

    def image(self) -> np.ndarray:
        """The frame as an HxWx3 uint8 BGR array (a view for bgr8, decoded for jpeg)."""
        if self.encoding == "bgr8":
            arr = (
                np.frombuffer(self.data, dtype=np.uint8)
                if not isinstance(self.data, np.ndarray)
                else self.data
            )
            return arr.reshape(self.height, self.width, 3)
        img = decode_jpeg(bytes(self.data) if not isinstance(self.data, bytes) else self.data)
        if img.shape[:2] != (self.height, self.width):
            raise WireError(
                "bad_payload",
                f"jpeg is {img.shape[1]}x{img.shape[0]}, header says {self.width}x{self.height}",
            )
        return img


# Start-of-frame markers SOF0..SOF15, less DHT (C4), JPG (C8) and DAC (CC).
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def jpeg_size(data: Part) -> tuple[int, int]:
    """(width, height) as a JPEG's frame header (SOFn) declares them, read without decoding;
    ``WireError`` (``bad_payload``) when there is no readable frame header before the scan."""
    b = _buf(data)
    if b.format != "B" or b.ndim != 1:
        b = b.cast("B")
    n = b.nbytes
    if n < 4 or b[0] != 0xFF or b[1] != 0xD8:
        raise WireError("bad_payload", "jpeg payload does not start with a JPEG marker")
    i = 2
    while i + 4 <= n:
        if b[i] != 0xFF:
            raise WireError("bad_payload", f"jpeg: no marker at byte {i}")
        marker = b[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # standalone markers
            i += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image / start of scan before any frame header
            break
        length = (b[i + 2] << 8) | b[i + 3]
        if length < 2:
            raise WireError("bad_payload", f"jpeg: segment length {length} at byte {i}")
        if marker in _SOF_MARKERS:
            if i + 9 > n or length < 8:
                break
            height = (b[i + 5] << 8) | b[i + 6]
            width = (b[i + 7] << 8) | b[i + 8]
            if width == 0 or height == 0:
                raise WireError("bad_payload", f"jpeg declares a {width}x{height} frame")
            return width, height
        i += 2 + length
    raise WireError("bad_payload", "jpeg has no frame header (SOF) before its image data")


def _check_jpeg(payload: Part, width: int, height: int, max_payload: int) -> None:
    """A JPEG payload must declare the header's size, and decoded fit the payload limit, so that
    nothing larger than a ``bgr8`` frame of the limit is ever decoded."""
    w, h = jpeg_size(payload)
    if (w, h) != (width, height):
        raise WireError("bad_payload", f"jpeg is {w}x{h}, header says {width}x{height}")
    if w * h * 3 > max_payload:
        raise WireError(
            "bad_size", f"jpeg decodes to {w}x{h}x3={w * h * 3} bytes, over limit {max_payload}"
        )


def encode_jpeg(image: np.ndarray, quality: int = 90) -> bytes:
    import cv2

    ok, buf = cv2.imencode(".jpg", image, [int(cv2.IMWRITE_JPEG_QUALITY), int(quality)])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return buf.tobytes()


def decode_jpeg(data: bytes) -> np.ndarray:
    import cv2

    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise WireError("bad_payload", "jpeg payload cannot be decoded")
    return img


# --------------------------------------------------------------------------- tracks


class RleMask(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)
    size: Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=2, max_length=2)]
    counts: str


def encode_mask(mask: np.ndarray) -> RleMask:
    """An HxW bool mask as COCO compressed RLE (pycocotools), as the tracks topic carries it."""
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask, dtype=np.uint8))
    counts = rle["counts"]
    return RleMask.model_construct(
        size=[int(mask.shape[0]), int(mask.shape[1])],
        counts=counts.decode() if isinstance(counts, bytes) else counts,
    )


def confidence_of(score: float) -> float:
    """The 0-1 confidence of an object whose ``score`` is an object score logit (SAM 2's, and the
    trackers'): its logistic sigmoid (CONTRACT v1.2: what the page and the annotated video show;
    ``score`` stays on the wire as it was)."""
    return 1.0 / (1.0 + math.exp(-max(-60.0, min(60.0, float(score)))))


class TrackedObject(BaseModel):
    """One object in a tracks message. ``confidence`` (v1.2) is absent from older messages."""

    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)
    id: Count
    label: Text
    score: float
    confidence: Annotated[float, Field(ge=0.0, le=1.0)] | None = None
    box: Annotated[list[float], Field(min_length=4, max_length=4)]
    mask: RleMask
    age: Annotated[int, Field(ge=0)]
    state: Literal["new", "tracked", "lost"]

    def decode_mask(self) -> np.ndarray:
        """The mask as an HxW bool array (pycocotools RLE decode)."""
        from pycocotools import mask as mask_utils

        rle = {"size": list(self.mask.size), "counts": self.mask.counts.encode()}
        mask: np.ndarray = mask_utils.decode(rle).astype(bool)
        return mask


# An engine start (``engine.ids.new_epoch``): tracks headers carry it since contract v1.2;
# optional for readers of older messages.
Epoch = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")]


class TracksHeader(_Header):
    seq: Count
    t_capture_ns: Count
    t_publish_ns: Count
    width: Annotated[int, Field(gt=0)]
    height: Annotated[int, Field(gt=0)]
    prompt: Text
    objects: list[TrackedObject]
    epoch: Epoch | None = None


@dataclass(frozen=True)
class TracksMessage:
    """Tracking result of one processed frame (also when no object is present)."""

    header: TracksHeader

    @property
    def camera(self) -> str:
        return self.header.camera

    @property
    def topic(self) -> bytes:
        return f"tracks.{self.header.camera}".encode()

    @classmethod
    def build(
        cls,
        camera: str,
        seq: int,
        t_capture_ns: int,
        width: int,
        height: int,
        prompt: str,
        objects: Sequence[TrackedObject],
        t_publish_ns: int | None = None,
        epoch: str | None = None,
    ) -> TracksMessage:
        """``epoch``: the engine start that produced it (left out of the header when None)."""
        h = TracksHeader.model_construct(
            v=SCHEMA_VERSION,
            camera=camera,
            seq=seq,
            t_capture_ns=t_capture_ns,
            t_publish_ns=t_publish_ns if t_publish_ns is not None else now_ns(),
            width=width,
            height=height,
            prompt=prompt,
            objects=list(objects),
            epoch=epoch,
        )
        return cls(h)

    def to_json(self) -> str:
        return self.header.model_dump_json(exclude={"epoch"} if self.header.epoch is None else None)

    def to_parts(self) -> list[bytes]:
        return [self.topic, self.to_json().encode()]

    @classmethod
    def from_parts(cls, parts: Sequence[Part]) -> TracksMessage:
        h = _parse(parts, "tracks", 2, TracksHeader)
        for o in h.objects:
            if o.mask.size != [h.height, h.width]:
                raise WireError(
                    "bad_field",
                    f"object {o.id} mask size {o.mask.size} differs from frame {h.height}x{h.width}",
                )
        return cls(h)

    @classmethod
    def from_json(cls, line: str | bytes) -> TracksMessage:
        """Parse one JSONL line written by ``promptcam track --tracks`` or ``subscribe``."""
        return cls(_header(line.encode() if isinstance(line, str) else line, TracksHeader))


# --------------------------------------------------------------------------- annotated


class AnnotatedHeader(FrameHeader):
    objects: Annotated[int, Field(ge=0)]


@dataclass(frozen=True)
class AnnotatedMessage:
    """A JPEG frame with overlays drawn."""

    camera: str
    seq: int
    t_capture_ns: int
    width: int
    height: int
    objects: int
    jpeg: bytes | memoryview = field(repr=False)

    @property
    def topic(self) -> bytes:
        return f"annotated.{self.camera}".encode()

    def to_parts(self) -> list[bytes | memoryview]:
        header = {
            "v": SCHEMA_VERSION,
            "camera": self.camera,
            "seq": self.seq,
            "t_capture_ns": self.t_capture_ns,
            "width": self.width,
            "height": self.height,
            "encoding": "jpeg",
            "objects": self.objects,
        }
        return [self.topic, _dump(header), self.jpeg]

    @classmethod
    def from_parts(
        cls, parts: Sequence[Part], max_payload: int = DEFAULT_MAX_PAYLOAD
    ) -> AnnotatedMessage:
        h = _parse(parts, "annotated", 3, AnnotatedHeader)
        if h.encoding != "jpeg":
            raise WireError("bad_field", "annotated frames must be jpeg")
        payload = _buf(parts[2])
        if payload.nbytes > max_payload:
            raise WireError(
                "bad_size", f"payload of {payload.nbytes} bytes exceeds limit {max_payload}"
            )
        _check_jpeg(payload, h.width, h.height, max_payload)
        return cls(h.camera, h.seq, h.t_capture_ns, h.width, h.height, h.objects, payload)

    def image(self) -> np.ndarray:
        return decode_jpeg(bytes(self.jpeg))


# --------------------------------------------------------------------------- detections


class Detection(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)
    label: Label
    score: Finite
    box: Annotated[list[Finite], Field(min_length=4, max_length=4)]


class DetectionsHeader(_Header):
    seq: Count
    detections: Annotated[list[Detection], Field(max_length=MAX_DETECTIONS)]


@dataclass(frozen=True)
class DetectionsMessage:
    """Boxes from an external detector, computed on frame ``seq``."""

    header: DetectionsHeader

    @classmethod
    def build(cls, camera: str, seq: int, detections: Sequence[Detection]) -> DetectionsMessage:
        return cls(
            DetectionsHeader.model_construct(
                v=SCHEMA_VERSION, camera=camera, seq=seq, detections=list(detections)
            )
        )

    @property
    def topic(self) -> bytes:
        return f"detections.{self.header.camera}".encode()

    def to_parts(self) -> list[bytes]:
        return [self.topic, self.header.model_dump_json().encode()]

    @classmethod
    def from_parts(cls, parts: Sequence[Part]) -> DetectionsMessage:
        h = _parse(parts, "detections", 2, DetectionsHeader)
        for d in h.detections:
            x1, y1, x2, y2 = d.box
            if not (x2 > x1 and y2 > y1):
                raise WireError("bad_field", f"detection box {d.box} has no area")
        return cls(h)


# --------------------------------------------------------------------------- control

Box = Annotated[list[Finite], Field(min_length=4, max_length=4)]


# One schema for camera names everywhere (config, control requests, the engine state file).
# Check names in Python with ``is_camera_name`` (``re.fullmatch``): ``re.match`` with ``$`` would
# let a trailing newline through, which pydantic (Rust regex) refuses.
CAMERA_NAME_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
CAMERA_NAME_RE = re.compile(CAMERA_NAME_PATTERN)
CameraName = Annotated[str, Field(pattern=CAMERA_NAME_PATTERN)]


def is_camera_name(name: object) -> bool:
    """Whether ``name`` is a valid camera name (what ``CameraName`` accepts)."""
    return isinstance(name, str) and CAMERA_NAME_RE.fullmatch(name) is not None


MAX_OBJECT_ID = 2**53  # object IDs stay exact in JSON numbers (JavaScript's safe integers)


class _Cmd(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)
    # v1.1: the camera a request addresses; required when the engine serves several.
    camera: CameraName | None = None


class SetPrompt(_Cmd):
    cmd: Literal["set_prompt"]
    prompt: Prompt


class AddObject(_Cmd):
    cmd: Literal["add_object"]
    box: Box
    label: Label = "object"


class RemoveObject(_Cmd):
    cmd: Literal["remove_object"]
    id: Count


class Reset(_Cmd):
    cmd: Literal["reset"]


class Stats(_Cmd):
    cmd: Literal["stats"]


class Cameras(_Cmd):
    cmd: Literal["cameras"]


ObjectId = Annotated[int, Field(ge=1, le=MAX_OBJECT_ID)]


class AddCamera(_Cmd):
    cmd: Literal["add_camera"]
    camera: CameraName  # required here
    frames: Endpoint
    prompt: Prompt | None = None
    # Additive (fleet): the camera's IDs start at first_id and stay below id_limit (a leased block).
    first_id: ObjectId | None = None
    id_limit: ObjectId | None = None

    @model_validator(mode="after")
    def _block(self) -> AddCamera:
        if self.id_limit is not None and self.id_limit <= (self.first_id or 1):
            raise ValueError("id_limit must be above first_id")
        return self


class LeaseIds(_Cmd):
    """Additive (fleet): a further block of IDs for a camera added with ``id_limit``, used when
    its current block runs out."""

    cmd: Literal["lease_ids"]
    camera: CameraName  # required here
    first_id: ObjectId
    id_limit: ObjectId

    @model_validator(mode="after")
    def _block(self) -> LeaseIds:
        if self.id_limit <= self.first_id:
            raise ValueError("id_limit must be above first_id")
        return self


class RemoveCamera(_Cmd):
    cmd: Literal["remove_camera"]
    camera: CameraName  # required here


ControlCommand = (
    SetPrompt
    | AddObject
    | RemoveObject
    | Reset
    | Stats
    | Cameras
    | AddCamera
    | RemoveCamera
    | LeaseIds
)
ControlRequest = Annotated[ControlCommand, Field(discriminator="cmd")]
_CONTROL: TypeAdapter[ControlCommand] = TypeAdapter(ControlRequest)
CONTROL_COMMANDS = (
    "set_prompt",
    "add_object",
    "remove_object",
    "reset",
    "stats",
    "cameras",
    "add_camera",
    "remove_camera",
    "lease_ids",
)
MAX_CONTROL_BYTES = 64 * 1024


def parse_control(raw: bytes) -> ControlCommand:
    """Parse one control request; raises ``WireError`` with the reply's error text."""
    if len(raw) > MAX_CONTROL_BYTES:
        raise WireError("bad_size", f"request of {len(raw)} bytes exceeds {MAX_CONTROL_BYTES}")
    obj = loads_json(raw, "request")
    if not isinstance(obj, dict) or "cmd" not in obj:
        raise WireError("bad_field", "request must be a JSON object with a 'cmd' field")
    cmd = obj["cmd"]
    if not isinstance(cmd, str) or cmd not in CONTROL_COMMANDS:
        raise WireError("unknown_cmd", f"unknown command {clip(repr(cmd), 64)}")
    try:
        return _CONTROL.validate_python(obj)
    except ValidationError as e:
        raise WireError("bad_field", _field_error(e, skip=1)) from None


def control_reply(ok: bool, **fields: object) -> bytes:
    return _dump({"ok": ok, **fields})
