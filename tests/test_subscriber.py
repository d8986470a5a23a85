"""Subscriber library against a real PUB socket on a random loopback port."""

from __future__ import annotations

import argparse
import json
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import zmq
from pycocotools import mask as mask_utils

from clients import subscriber
from clients.subscriber import TracksSubscriber
from stream.bus import bind
from stream.config import load_config
from stream.wire import RleMask, TrackedObject, TracksMessage

H, W = 48, 64


def rle_object(obj_id: int, mask: np.ndarray, label: str = "ball") -> TrackedObject:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    ys, xs = mask.nonzero()
    box = [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]
    return TrackedObject(
        id=obj_id,
        label=label,
        score=0.9,
        box=box,
        mask=RleMask(
            size=[int(rle["size"][0]), int(rle["size"][1])], counts=rle["counts"].decode()
        ),
        age=obj_id,
        state="tracked",
    )


def random_masks(rng: np.random.Generator, n: int) -> np.ndarray:
    masks = rng.random((n, H, W)) > 0.6
    masks[:, 0, 0] = True  # never empty
    return masks


class Publisher:
    """Publishes a list of multipart messages again and again until stopped (so slow joiners
    still receive them), on a real PUB socket."""

    def __init__(self, ctx: zmq.Context[Any], endpoint: str, messages: list[list[bytes]]) -> None:
        self.sock = bind(ctx, zmq.PUB, endpoint)
        self.messages = messages
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set():
            for m in self.messages:
                self.sock.send_multipart(m)
            self.stop.wait(0.01)

    def __enter__(self) -> Publisher:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(5)
        self.sock.close(0)


@pytest.fixture
def good_and_bad() -> Iterator[tuple[list[list[bytes]], dict[int, np.ndarray]]]:
    rng = np.random.default_rng(1)
    masks = random_masks(rng, 3)
    objs = [rle_object(i + 1, masks[i]) for i in range(3)]
    good = TracksMessage.build("cam0", 7, 1_000, W, H, "ball.", objs).to_parts()
    empty = TracksMessage.build("cam0", 8, 2_000, W, H, "ball.", []).to_parts()
    bad_json = [b"tracks.cam0", b"{not json"]
    bad_version = [b"tracks.cam0", json.dumps({**json.loads(good[1]), "v": 99}).encode()]
    bad_parts = [b"tracks.cam0", good[1], b"extra"]
    bad_camera = [b"tracks.cam0", TracksMessage.build("cam9", 1, 1, W, H, "", []).to_parts()[1]]
    yield (
        [bad_json, good, bad_version, empty, bad_parts, bad_camera],
        {i + 1: masks[i] for i in range(3)},
    )


def test_yields_good_messages_counts_bad_and_masks_roundtrip(
    ctx: zmq.Context[Any],
    endpoint: str,
    good_and_bad: tuple[list[list[bytes]], dict[int, np.ndarray]],
) -> None:
    messages, masks = good_and_bad
    with Publisher(ctx, endpoint, messages), TracksSubscriber(endpoint, "cam0", ctx=ctx) as sub:
        got: list[TracksMessage] = []
        while len(got) < 6 or sub.stats.rejected_total < 8:
            msg = sub.recv(timeout=5.0)
            assert msg is not None, "no message within 5 s"
            got.append(msg)
    assert {m.header.seq for m in got} == {7, 8}
    assert set(sub.stats.rejected) == {"bad_json", "bad_version", "bad_parts", "bad_field"}
    full = next(m for m in got if m.header.seq == 7)
    assert [o.id for o in full.header.objects] == [1, 2, 3]
    for o in full.header.objects:
        decoded = o.decode_mask()
        assert decoded.dtype == bool and decoded.shape == (H, W)
        assert np.array_equal(decoded, masks[o.id])
        # and independently with pycocotools, as a robot would
        rle = {"size": o.mask.size, "counts": o.mask.counts.encode()}
        assert np.array_equal(mask_utils.decode(rle).astype(bool), masks[o.id])


def test_camera_filter_ignores_prefix_matches(ctx: zmq.Context[Any], endpoint: str) -> None:
    m1 = TracksMessage.build("cam1", 1, 1, W, H, "", []).to_parts()
    m10 = TracksMessage.build("cam10", 1, 1, W, H, "", []).to_parts()
    with Publisher(ctx, endpoint, [m10, m1]), TracksSubscriber(endpoint, "cam1", ctx=ctx) as sub:
        for _ in range(5):
            msg = sub.recv(timeout=5.0)
            assert msg is not None and msg.camera == "cam1"


def test_recv_times_out_with_none(ctx: zmq.Context[Any], endpoint: str) -> None:
    with TracksSubscriber(endpoint, "cam0", ctx=ctx) as sub:
        assert sub.recv(timeout=0.05) is None


def test_cli_prints_json_lines(
    ctx: zmq.Context[Any], endpoint: str, capsys: pytest.CaptureFixture[str], good_and_bad: Any
) -> None:
    messages, _ = good_and_bad
    cfg = load_config(None, {"bus.tracks": endpoint})
    args = argparse.Namespace(endpoint=None, count=3, timeout=5.0, camera=None)
    with Publisher(ctx, endpoint, messages):
        assert subscriber.main(cfg, args) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3
    for line in lines:
        obj = json.loads(line)
        assert obj["v"] == 1 and obj["camera"] == "cam0" and obj["seq"] in (7, 8)
        TracksMessage.from_json(line)


def test_cli_times_out_with_one_line_error(
    endpoint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = load_config(None, {"bus.tracks": endpoint})
    args = argparse.Namespace(endpoint=None, count=1, timeout=0.1, camera=None)
    assert subscriber.main(cfg, args) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no tracks message" in err[0]
