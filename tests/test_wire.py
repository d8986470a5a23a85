from __future__ import annotations

import json
import time
from typing import Any

import numpy as np
import pytest
import zmq

from stream.receiver import LatestFrameReceiver
from stream.wire import (
    AddObject,
    AnnotatedMessage,
    DetectionsMessage,
    FrameMessage,
    TrackedObject,
    TracksMessage,
    WireError,
    parse_control,
)
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
        mask={"size": [48, 64], "counts": rle["counts"].decode()},
        age=3,
        state="tracked",  # type: ignore[arg-type]
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

        wait_for(lambda: (send_good(0), rx.get(timeout=0.05))[1], what="subscription")
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
