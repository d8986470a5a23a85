from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stream.receiver import LatestFrameReceiver
from stream.wire import (
    MAX_IPC_PATH_BYTES,
    MAX_LABEL_CHARS,
    MAX_PROMPT_CHARS,
    AddObject,
    AnnotatedMessage,
    DetectionsMessage,
    FrameMessage,
    RleMask,
    SetPrompt,
    TrackedObject,
    TracksMessage,
    WireError,
    check_endpoint,
    control_reply,
    encode_jpeg,
    jpeg_size,
    parse_control,
)
from tests import hostile
from tests.conftest import wait_for


def _img(h: int = 48, w: int = 64, v: int = 7) -> np.ndarray:
    return np.full((h, w, 3), v, np.uint8)


def test_frame_roundtrip_bgr_and_jpeg() -> None:
    img = np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    msg = FrameMessage.from_image("cam0", 5, img)
    back = FrameMessage.from_parts(msg.to_parts())
    assert (back.seq, back.width, back.height, back.encoding) == (5, 64, 48, "bgr8")
    assert np.array_equal(back.image(), img)
    jm = FrameMessage.from_image("cam0", 6, img, encoding="jpeg")
    jb = FrameMessage.from_parts([jm.to_parts()[0], jm.to_parts()[1], bytes(jm.data)])
    assert jb.image().shape == img.shape


@pytest.mark.parametrize(
    "mutate,reason",
    [
        (lambda p: [b"frames.cam0", p[1], p[2]], "bad_topic"),
        (lambda p: [b"\xff\xfe", p[1], p[2]], "bad_topic"),
        (lambda p: [p[0], b"{not json", p[2]], "bad_json"),
        (lambda p: [p[0], b"[1,2]", p[2]], "bad_json"),
        (lambda p: [p[0], p[1].replace(b'"v":1', b'"v":2'), p[2]], "bad_version"),
        (lambda p: [p[0], p[1].replace(b'"seq":3', b'"seq":"3"'), p[2]], "bad_field"),
        (lambda p: [p[0], p[1].replace(b'"seq":3', b'"seq":3.5'), p[2]], "bad_field"),
        (lambda p: [p[0], p[1], bytes(p[2])[:-1]], "bad_size"),
        (lambda p: [p[0], p[1]], "bad_parts"),
        (lambda p: [b"frame.cam1", p[1], p[2]], "bad_field"),
    ],
)
def test_frame_rejects(mutate: Any, reason: str) -> None:
    parts = FrameMessage.from_image("cam0", 3, _img()).to_parts()
    parts[2] = bytes(parts[2])
    with pytest.raises(WireError) as ei:
        FrameMessage.from_parts(mutate(parts))
    assert ei.value.reason == reason


def test_tracks_roundtrip_and_mask_decode() -> None:
    from pycocotools import mask as mask_utils

    m = np.zeros((48, 64), np.uint8)
    m[10:20, 5:30] = 1
    rle = mask_utils.encode(np.asfortranarray(m))
    obj = TrackedObject(
        id=1,
        label="ball",
        score=0.9,
        box=[5.0, 10.0, 30.0, 20.0],
        mask=RleMask(size=[48, 64], counts=rle["counts"].decode()),
        age=3,
        state="tracked",
    )
    msg = TracksMessage.build("cam0", 9, 123, 64, 48, "ball.", [obj])
    back = TracksMessage.from_parts(msg.to_parts())
    assert back.header.objects[0].id == 1
    assert np.array_equal(back.header.objects[0].decode_mask(), m.astype(bool))
    assert TracksMessage.from_json(msg.to_json()).header.seq == 9
    bad = json.loads(msg.to_json())
    bad["objects"][0]["mask"]["size"] = [10, 10]
    with pytest.raises(WireError):
        TracksMessage.from_parts([b"tracks.cam0", json.dumps(bad).encode()])


def test_annotated_and_detections() -> None:
    from stream.wire import Detection, encode_jpeg

    a = AnnotatedMessage("cam0", 1, 2, 64, 48, 0, encode_jpeg(_img()))
    assert AnnotatedMessage.from_parts(a.to_parts()).image().shape == (48, 64, 3)
    d = DetectionsMessage.build(
        "cam0", 4, [Detection(label="ball", score=0.5, box=[1.0, 2.0, 3.0, 4.0])]
    )
    assert DetectionsMessage.from_parts(d.to_parts()).header.detections[0].label == "ball"
    bad = DetectionsMessage.build(
        "cam0", 4, [Detection(label="ball", score=0.5, box=[3.0, 2.0, 1.0, 4.0])]
    )
    with pytest.raises(WireError):
        DetectionsMessage.from_parts(bad.to_parts())


def test_control_parse() -> None:
    req = parse_control(b'{"cmd":"add_object","box":[1,2,3,4],"label":"cup"}')
    assert isinstance(req, AddObject) and req.box == [1.0, 2.0, 3.0, 4.0]
    for raw, reason in [
        (b"xx", "bad_json"),
        (b'{"cmd":"fly"}', "unknown_cmd"),
        (b'{"cmd":"remove_object","id":"3"}', "bad_field"),
        (b'{"cmd":"add_object","box":[1,2,3]}', "bad_field"),
        (b"[]", "bad_field"),
    ]:
        with pytest.raises(WireError) as ei:
            parse_control(raw)
        assert ei.value.reason == reason


def test_receiver_rejects_garbage_and_keeps_working(ctx: zmq.Context[Any], endpoint: str) -> None:
    pub = ctx.socket(zmq.PUB)
    pub.linger = 0
    pub.bind(endpoint)
    with LatestFrameReceiver(endpoint, "cam0", staleness_ms=None, ctx=ctx) as rx:
        rng = np.random.default_rng(1)

        def send_good(seq: int) -> None:
            pub.send_multipart(FrameMessage.from_image("cam0", seq, _img()).to_parts(), copy=False)

        wait_for(lambda: rx.get(timeout=0.05), what="subscription", step=lambda: send_good(0))
        for _i in range(50):
            pub.send_multipart([b"frame.cam0", rng.bytes(int(rng.integers(1, 100))), rng.bytes(10)])
            pub.send_multipart([b"frame.cam0", b'{"v":1}'])
        send_good(1)
        got = wait_for(lambda: rx.get(timeout=0.1), what="good frame after garbage")
        assert got.seq == 1
        assert rx.stats.rejected_total == 100
    pub.close(0)


def test_slow_consumer_gets_newest_frame(ctx: zmq.Context[Any], endpoint: str) -> None:
    pub = ctx.socket(zmq.PUB)
    pub.linger = 0
    pub.bind(endpoint)
    interval = 1 / 30
    with LatestFrameReceiver(endpoint, "cam0", staleness_ms=None, ctx=ctx) as rx:
        seq = 0
        ages: list[float] = []
        next_t = time.monotonic()
        last_get = time.monotonic()
        img = np.zeros((360, 640, 3), np.uint8)
        while seq < 90:
            pub.send_multipart(FrameMessage.from_image("cam0", seq, img).to_parts(), copy=False)
            seq += 1
            next_t += interval
            if time.monotonic() - last_get > 0.1:  # the consumer takes 100 ms per frame
                f = rx.get(timeout=0.0)
                if f is not None:
                    ages.append(seq - 1 - f.seq)
                last_get = time.monotonic()
            time.sleep(max(0.0, next_t - time.monotonic()))
        assert len(ages) >= 10
        # the consumer always gets the newest (or the one before it, in flight), never a backlog
        assert max(ages) <= 1, ages
        assert rx.stats.skipped > 50
    pub.close(0)


# --------------------------------------------------------------------------- hostile input

FUZZ = settings(
    max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)


@pytest.mark.parametrize("parts", hostile.known_hostile_frames())
def test_known_hostile_frames_are_rejected_as_wire_errors(parts: list[bytes]) -> None:
    with pytest.raises(WireError):
        FrameMessage.from_parts(parts)


@pytest.mark.parametrize("raw", hostile.known_hostile_requests())
def test_known_hostile_requests_are_rejected_as_wire_errors(raw: bytes) -> None:
    with pytest.raises(WireError) as e:
        parse_control(raw)
    assert len(str(e.value)) < 300  # the reply quotes no megabyte of what was sent


@pytest.mark.parametrize("parts", hostile.known_hostile_detections())
def test_known_hostile_detections_are_rejected_as_wire_errors(parts: list[bytes]) -> None:
    with pytest.raises(WireError):
        DetectionsMessage.from_parts(parts)


@pytest.mark.parametrize("frames", hostile.BAD_ENDPOINTS)
def test_bad_endpoints_are_refused_by_control_and_config(frames: str) -> None:
    """One check (``check_endpoint``) for add_camera requests and config files: a port outside
    1-65535, an ipc path over 107 bytes, an unknown scheme: one line, never a bind."""
    from stream.config import ConfigError, load_config

    with pytest.raises(WireError, match="field 'frames'") as e:
        parse_control(hostile.add_camera(frames))
    assert "\n" not in str(e.value) and "Value error" not in str(e.value)
    for key in ("bus.frames", "bus.control", "bus.tracks", "bus.detections"):
        with pytest.raises(ConfigError, match=key) as c:
            load_config(None, {key: frames})
        assert "\n" not in str(c.value)


def test_good_endpoints_pass_and_the_ipc_limit_is_the_sockets(
    ctx: zmq.Context[Any], tmp_path: Path
) -> None:
    from stream.config import ConfigError, load_config

    longest = "ipc:///tmp/" + "q" * (MAX_IPC_PATH_BYTES - 5)
    for frames in ("tcp://127.0.0.1:1", "tcp://127.0.0.1:65535", "tcp://[::1]:5550", longest):
        assert check_endpoint(frames) == frames
        assert parse_control(hostile.add_camera(frames)).frames == frames  # type: ignore[union-attr]
    sock = ctx.socket(zmq.PUB)  # the longest accepted path binds; one byte more does not
    try:
        sock.bind(longest)
        with pytest.raises(zmq.ZMQError):
            sock.bind(longest + "q")
    finally:
        sock.close(0)
        Path(longest[6:]).unlink(missing_ok=True)
    # a camera's derived endpoint (the base ipc path + "-NAME") is checked too
    base = "ipc:///tmp/" + "b" * 90
    with pytest.raises(ConfigError, match=r"cameras\.yard_camera_2\.frames.*ipc path of 109 bytes"):
        load_config(
            None,
            {"bus.frames": base, "cameras": {"a": {"source": "demo"}, "yard_camera_2": {}}},
        )


def test_prompts_and_labels_are_bounded_like_the_web_form() -> None:
    ok = parse_control(json.dumps({"cmd": "set_prompt", "prompt": "a" * MAX_PROMPT_CHARS}).encode())
    assert isinstance(ok, SetPrompt)
    with pytest.raises(WireError, match=f"at most {MAX_PROMPT_CHARS} characters"):
        parse_control(json.dumps({"cmd": "set_prompt", "prompt": "a" * 1001}).encode())
    with pytest.raises(WireError, match=f"field 'label': .*at most {MAX_LABEL_CHARS}"):
        parse_control(
            json.dumps({"cmd": "add_object", "box": [1, 2, 3, 4], "label": "x" * 201}).encode()
        )
    with pytest.raises(WireError, match=r"(?i)unicode"):
        parse_control(b'{"cmd": "add_object", "box": [1, 2, 3, 4], "label": "\\ud800"}')


def test_jpeg_declared_size_is_read_without_decoding() -> None:
    assert jpeg_size(encode_jpeg(_img(48, 64))) == (64, 48)
    assert jpeg_size(hostile.patched_jpeg(16000, 16000)) == (16000, 16000)
    h = json.loads(hostile.frame_header(width=64, height=64, encoding="jpeg"))
    parts = [b"frame.cam0", json.dumps(h).encode(), hostile.patched_jpeg(16000, 16000)]
    with pytest.raises(WireError, match="jpeg is 16000x16000, header says 64x64"):
        FrameMessage.from_parts(parts)
    big = [b"frame.cam0", hostile.frame_header(width=8000, height=8000, encoding="jpeg")]
    with pytest.raises(WireError, match="over limit") as e:
        FrameMessage.from_parts([*big, hostile.patched_jpeg(8000, 8000)])
    assert e.value.reason == "bad_size"
    for bad in (
        b"\xff\xd8\xff\xda\x00\x02",
        b"\xff\xd8" + b"\x00" * 30,
        b"\xff\xd8\xff\xe0\x00\x00",
    ):
        with pytest.raises(WireError):
            jpeg_size(bad)


def _sendable(obj: Any) -> None:
    """What a parser accepted can be sent on: JSON of valid UTF-8."""
    obj.model_dump_json().encode("utf-8")


@FUZZ
@given(raw=hostile.control_requests())
def test_fuzz_control_parse_raises_only_wire_errors(raw: bytes) -> None:
    try:
        req = parse_control(raw)
    except WireError as e:
        control_reply(False, error=str(e)).decode("utf-8")  # the error reply itself is sendable
        return
    _sendable(req)
    if isinstance(req, SetPrompt):
        assert len(req.prompt) <= MAX_PROMPT_CHARS
    if isinstance(req, AddObject):
        assert len(req.label) <= MAX_LABEL_CHARS and all(np.isfinite(req.box))


@FUZZ
@given(parts=hostile.frame_messages())
def test_fuzz_frame_parse_raises_only_wire_errors(parts: list[bytes]) -> None:
    try:
        msg = FrameMessage.from_parts(parts)
    except WireError:
        return
    json.dumps(msg.header()).encode("utf-8")


@FUZZ
@given(parts=hostile.detections_messages())
def test_fuzz_detections_parse_raises_only_wire_errors(parts: list[bytes]) -> None:
    try:
        msg = DetectionsMessage.from_parts(parts)
    except WireError:
        return
    _sendable(msg.header)
    assert all(np.isfinite(d.box).all() and np.isfinite(d.score) for d in msg.header.detections)


@FUZZ
@given(data=st.binary(max_size=200))
def test_fuzz_jpeg_size_raises_only_wire_errors(data: bytes) -> None:
    try:
        w, h = jpeg_size(b"\xff\xd8" + data)
    except WireError:
        return
    assert w > 0 and h > 0


def test_receiver_reconnects_after_a_part_over_the_zeromq_limit(
    ctx: zmq.Context[Any], endpoint: str
) -> None:
    """A part over the receiver's limit makes ZeroMQ drop the connection and never come back by
    itself; the receiver counts that and connects again, so frames flow on."""
    pub = ctx.socket(zmq.PUB)
    pub.linger = 0
    pub.bind(endpoint)
    limit = 1 << 20
    with LatestFrameReceiver(endpoint, "cam0", None, max_payload=limit, ctx=ctx) as rx:

        def good(seq: int) -> FrameMessage | None:
            pub.send_multipart(FrameMessage.from_image("cam0", seq, _img()).to_parts(), copy=False)
            return rx.get(timeout=0.05)

        wait_for(lambda: good(0), what="subscription")
        pub.send_multipart([b"frame.cam0", b"{}", b"x" * (3 * limit)])
        wait_for(lambda: rx.stats.connection_drops == 1, timeout=10, what="drop counted")
        got = wait_for(lambda: good(1000), timeout=10, what="frames after the drop")
        assert got.seq == 1000 and rx.stats.connection_drops == 1
    pub.close(0)
