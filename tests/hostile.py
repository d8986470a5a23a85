"""Hostile inputs shared by the wire tests and the fault suite: the exact cases that once killed
a thread or cost memory, and hypothesis strategies for control requests, frame and detections
messages (JSON-shaped values with lone surrogates, huge integers, deep nesting, NaN; valid
messages with one field made wrong; raw bytes)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import zlib
from pathlib import Path
from typing import Any

import numpy as np
from hypothesis import strategies as st

from stream.wire import CONTROL_COMMANDS, encode_jpeg

CAMERA = "cam0"
FRAME_TOPIC = f"frame.{CAMERA}".encode()
DETECTIONS_TOPIC = f"detections.{CAMERA}".encode()

DEEP = b"[" * 100_000
LONG_INT = b"9" * 5000


def patched_jpeg(width: int, height: int) -> bytes:
    """A 64x64 JPEG whose frame header (SOF0) declares ``width`` x ``height``: decoding it would
    allocate for the declared size."""
    data = bytearray(encode_jpeg(np.full((64, 64, 3), 90, np.uint8)))
    i = data.index(b"\xff\xc0")
    data[i + 5 : i + 9] = bytes([height >> 8, height & 255, width >> 8, width & 255])
    return bytes(data)


def patched_png(width: int, height: int) -> bytes:
    """A 64x64 PNG whose header (IHDR, CRC fixed) declares ``width`` x ``height``."""
    import cv2

    ok, buf = cv2.imencode(".png", np.full((64, 64, 3), 90, np.uint8))
    assert ok
    data = bytearray(buf.tobytes())
    i = data.index(b"IHDR")
    data[i + 4 : i + 12] = width.to_bytes(4, "big") + height.to_bytes(4, "big")
    data[i + 17 : i + 21] = zlib.crc32(bytes(data[i : i + 17])).to_bytes(4, "big")
    return bytes(data)


BOMB_SIDE = 8192
_BOMB_WRITER = """
import sys, av
path, side, frames = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
with av.open(path, "w") as c:
    s = c.add_stream("libx264", rate=10)
    s.width = s.height = side
    s.pix_fmt = "yuv420p"
    s.options = {"preset": "ultrafast", "crf": "51"}
    s.codec_context.thread_count = 1
    f = av.VideoFrame(side, side, "yuv420p")
    for p in f.planes:
        p.update(bytes(p.buffer_size))
    for i in range(frames):
        f.pts = i
        for pkt in s.encode(f):
            c.mux(pkt)
    for pkt in s.encode():
        c.mux(pkt)
"""


def write_bomb_video(path: Path, side: int = BOMB_SIDE, frames: int = 2) -> Path:
    """A decompression bomb: an H.264 MP4 of ``frames`` black ``side`` x ``side`` frames (about
    100 KB a frame at 8192x8192, ~200 MB each decoded to BGR). Written by a child process, as
    encoding it takes ~0.7 GB for a moment (2 s)."""
    subprocess.run(
        [sys.executable, "-c", _BOMB_WRITER, str(path), str(side), str(frames)],
        check=True,
        timeout=120,
    )
    return path


def frame_header(**kw: Any) -> bytes:
    h = {
        "v": 1,
        "camera": CAMERA,
        "seq": 1,
        "t_capture_ns": time.time_ns(),
        "width": 4,
        "height": 2,
        "encoding": "bgr8",
        **kw,
    }
    return json.dumps(h).encode()


def known_hostile_frames() -> list[list[bytes]]:
    """Frame messages that once ended the receiver thread or blew up memory."""
    return [
        [FRAME_TOPIC, DEEP, b"x" * 24],
        [FRAME_TOPIC, frame_header().replace(b'"seq": 1', b'"seq": ' + LONG_INT), b"x" * 24],
        [FRAME_TOPIC, b'{"v": 1, "camera": "cam0", "seq": NaN}', b"x" * 24],
        # a 16000x16000 JPEG labelled 64x64, and an 8000x8000 one labelled as such
        [
            FRAME_TOPIC,
            frame_header(width=64, height=64, encoding="jpeg"),
            patched_jpeg(16000, 16000),
        ],
        [
            FRAME_TOPIC,
            frame_header(width=8000, height=8000, encoding="jpeg"),
            patched_jpeg(8000, 8000),
        ],
    ]


TINY_SIZES = [(1, 64), (64, 1), (1, 1), (2, 2), (3, 64), (4, 4)]  # (height, width)


def tiny_frames(first_seq: int, camera: str = CAMERA) -> list[list[Any]]:
    """Valid frames too small to detect in (a side of 1-4 pixels): the engine tracks on and
    skips their grounding (counted), where it once logged a 45-line traceback per pass."""
    from stream.wire import FrameMessage

    return [
        FrameMessage.from_image(camera, first_seq + i, np.full((h, w, 3), 90, np.uint8)).to_parts()
        for i, (h, w) in enumerate(TINY_SIZES)
    ]


def known_hostile_requests() -> list[bytes]:
    """Control requests that once ended the control thread or the tracks publisher."""
    return [
        b"[" * 50_000,
        b'{"cmd": "remove_object", "id": ' + LONG_INT + b"}",
        b'{"cmd": "add_object", "box": [1, 2, 30, 40], "label": "\\ud800"}',
        b'{"cmd": "set_prompt", "prompt": "ball\\udfff."}',
        b'{"cmd": "set_prompt", "prompt": "' + b"a " * 30_000 + b'"}',  # 60 KB
        b'{"cmd": "set_prompt", "prompt": "' + b"b" * 1001 + b'"}',
        b'{"cmd": "add_object", "box": [1, 2, 30, 40], "label": "' + b"c" * 201 + b'"}',
        b'{"cmd": "add_object", "box": [1, 2, 1e999, 40]}',
        b'{"cmd": "add_object", "box": [1, 2, NaN, 40]}',
        *(add_camera(frames) for frames in BAD_ENDPOINTS),
    ]


# Endpoints an engine once took: 99999 connected to 34463, 2**31 and 0 were accepted, an ipc
# path over the 107 bytes of a Unix socket address killed the launcher's status thread.
BAD_ENDPOINTS = [
    "tcp://127.0.0.1:99999",
    "tcp://127.0.0.1:0",
    f"tcp://127.0.0.1:{2**31}",
    "tcp://127.0.0.1:-5",
    "tcp://127.0.0.1:",
    "tcp://:5550",
    "ipc:///tmp/" + "p" * 103,  # 108 bytes
    "ipc:///tmp/" + "\u00e9" * 60,  # 65 characters, 125 bytes: over the limit in bytes
    "udp://127.0.0.1:5550",
    "ipc://",
    "inproc://a b",
    "tcp://127.0.0.1:5550\u0000",
]


def add_camera(frames: str) -> bytes:
    """An ``add_camera`` request for camera ``hostile`` from ``frames``."""
    return json.dumps({"cmd": "add_camera", "camera": "hostile", "frames": frames}).encode()


def known_hostile_detections() -> list[list[bytes]]:
    good = {"v": 1, "camera": CAMERA, "seq": 1}

    def h(dets: Any) -> bytes:
        return json.dumps({**good, "detections": dets}).encode()

    return [
        [DETECTIONS_TOPIC, DEEP],
        [DETECTIONS_TOPIC, h([]).replace(b'"seq": 1', b'"seq": ' + LONG_INT)],
        [DETECTIONS_TOPIC, h([{"label": "\ud800", "score": 0.9, "box": [1, 2, 3, 4]}])],
        [DETECTIONS_TOPIC, h([{"label": "ball", "score": 0.9, "box": [1, 2, 1e999, 4]}])],
        [DETECTIONS_TOPIC, h([{"label": "ball", "score": 0.5, "box": [1, 2, 3, 4]}] * 2000)],
    ]


# ------------------------------------------------------------------------- strategies

_chars = st.characters() | st.characters(categories=["Cs"]) | st.sampled_from('\x00\n"\\.')
texts = st.text(_chars, max_size=40) | st.sampled_from(["\ud800", "a" * 1001, "ball.", ""])
numbers = (
    st.integers()
    | st.integers(min_value=2**62, max_value=2**80)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.sampled_from([0, -1, 1.5, 10**30])
)
scalars = st.none() | st.booleans() | numbers | texts
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=12,
)


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, allow_nan=True).encode()  # surrogates go out as \\udXXX escapes


@st.composite
def control_requests(draw: st.DrawFn) -> bytes:
    """One control request: mostly a known command with fields of any JSON shape."""
    kind = draw(st.sampled_from(["command", "command", "command", "json", "bytes"]))
    if kind == "bytes":
        return draw(st.binary(max_size=64))
    if kind == "json":
        return _dumps(draw(json_values))
    obj: dict[str, Any] = {"cmd": draw(st.sampled_from([*CONTROL_COMMANDS, "fly"]) | json_values)}
    fields = {
        "prompt": texts,
        "label": texts,
        "id": numbers,
        "box": st.lists(numbers, min_size=3, max_size=5) | json_values,
        "extra": json_values,
    }
    for name, strategy in fields.items():
        if draw(st.booleans()):
            obj[name] = draw(strategy)
    return _dumps(obj)


@st.composite
def frame_messages(draw: st.DrawFn) -> list[bytes]:
    """A frame message with the subscribed topic: a valid header with fields replaced by any
    JSON, or any JSON, with a payload of any size up to a few frames."""
    if draw(st.booleans()):
        header = json.loads(frame_header())
        for key in draw(st.sets(st.sampled_from([*header, "shm", "x"]), max_size=3)):
            header[key] = draw(json_values)
        raw = _dumps(header)
    else:
        raw = _dumps(draw(json_values))
    payload = draw(
        st.sampled_from([b"x" * 24, b"\xff\xd8" + b"\x00" * 40, b""]) | st.binary(max_size=64)
    )
    parts = [FRAME_TOPIC, raw, payload]
    return parts[: draw(st.sampled_from([3, 3, 3, 2, 1]))]


@st.composite
def detections_messages(draw: st.DrawFn) -> list[bytes]:
    det = {"label": draw(texts), "score": draw(numbers), "box": draw(st.lists(numbers, max_size=5))}
    header: dict[str, Any] = {"v": 1, "camera": CAMERA, "seq": draw(numbers), "detections": [det]}
    for key in draw(st.sets(st.sampled_from(["v", "camera", "detections", "x"]), max_size=2)):
        header[key] = draw(json_values)
    return [DETECTIONS_TOPIC, _dumps(header)]
