"""Foxglove: tracks -> Foxglove messages (``foxglove.ImageAnnotations``, ``RawImage``,
``CompressedImage``) -> MCAP (profile ``foxglove``) read back with ``mcap`` and decoded with
Google's protobuf runtime from the schemas in the file, compared with the tracks JSONL; and
``promptcam foxglove`` as a real process, spoken to by WebSocket clients written here (aiohttp,
and raw sockets for the clients that drop mid-message)."""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import cv2
import foxglove
import numpy as np
import psutil
import pytest
import zmq
from foxglove.channels import (
    CompressedImageChannel,
    ImageAnnotationsChannel,
    RawImageChannel,
)
from foxglove.messages import ImageAnnotations
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from mcap.reader import make_reader

from clients.launcher import bound_ports, child_specs, prepare_config
from clients.robots import foxglove_map as fm
from clients.robots.foxglove_mcap import FoxgloveMcapFile
from clients.web.synthetic import SyntheticEngine
from stream import bus as zbus
from stream.config import load_config
from stream.demo import DemoScene
from stream.groundtruth import GroundTruthWriter
from stream.wire import TrackedObject, TracksMessage, confidence_of, encode_jpeg, encode_mask
from tests.conftest import tcp_endpoint, wait_for

ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "clients.cli"]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
T0 = 1_760_000_000_123_456_789  # a capture time with a nanosecond part
PROTOCOLS = ("foxglove.websocket.v1", "foxglove.sdk.v1")  # what the Foxglove app offers


# --------------------------------------------------------------------------- protobuf decoding

_CLASSES: dict[tuple[str, bytes], Any] = {}


def message_class(name: str, fds_bytes: bytes) -> Any:
    """The protobuf class of ``name`` from a schema's ``FileDescriptorSet`` (files added in
    dependency order, whatever order the set lists them in)."""
    key = (name, fds_bytes)
    if key not in _CLASSES:
        files = list(descriptor_pb2.FileDescriptorSet.FromString(fds_bytes).file)
        pool = descriptor_pool.DescriptorPool()
        added: set[str] = set()
        for _ in range(len(files)):
            for fd in files:
                if fd.name not in added and all(d in added for d in fd.dependency):
                    pool.Add(fd)
                    added.add(fd.name)
        assert len(added) == len(files), "a schema file's dependency is missing"
        _CLASSES[key] = message_factory.GetMessageClass(pool.FindMessageTypeByName(name))
    return _CLASSES[key]


def read_mcap(path: Path) -> dict[str, list[tuple[int, Any, Any, Any]]]:
    """topic -> [(log time, decoded message, schema, channel)] in file order."""
    out: dict[str, list[tuple[int, Any, Any, Any]]] = {}
    with path.open("rb") as f:
        reader = make_reader(f)
        assert reader.get_summary() is not None  # summary and footer written
        for schema, channel, message in reader.iter_messages():
            assert schema is not None and schema.encoding == "protobuf"
            assert channel.message_encoding == "protobuf"
            decoded = message_class(schema.name, schema.data).FromString(message.data)
            out.setdefault(channel.topic, []).append((message.log_time, decoded, schema, channel))
    return out


def _meta(m: Any) -> dict[str, str]:
    return {kv.key: kv.value for kv in m.metadata}


def assert_same(msgs: list[TracksMessage], topics: dict[str, list[Any]]) -> None:
    """The decoded Foxglove messages hold exactly ``msgs`` (one camera): stamps, ids, labels,
    confidences, boxes; masks pixel-equal; contours close to the masks and bounded."""
    cam = msgs[0].camera
    anns, masks = topics[fm.topic(cam, "detections")], topics[fm.topic(cam, "masks")]
    assert len(anns) == len(masks) == len(msgs)
    for m, (t_a, ann, *_), (t_m, img, *_) in zip(msgs, anns, masks, strict=True):
        h = m.header
        sec, nsec = divmod(h.t_capture_ns, 10**9)
        assert t_a == t_m == h.t_capture_ns
        assert (ann.timestamp.seconds, ann.timestamp.nanos) == (sec, nsec)
        assert (img.timestamp.seconds, img.timestamp.nanos, img.frame_id) == (sec, nsec, cam)
        objects = [o for o in h.objects if o.state != "lost"]  # lost tracks are left out
        ids = [str(o.id) for o in objects]
        assert _meta(ann) == {"camera": cam, "seq": str(h.seq), "ids": ",".join(ids)}
        boxes = [p for p in ann.points if _meta(p)["kind"] == "box"]
        assert [_meta(p)["id"] for p in boxes] == [_meta(t)["id"] for t in ann.texts] == ids
        labels = fm.decode_label_image(img)
        assert labels.shape == (h.height, h.width)
        covered = np.zeros((h.height, h.width), bool)
        for i, (o, box, text) in enumerate(zip(objects, boxes, ann.texts, strict=True)):
            conf = o.confidence if o.confidence is not None else confidence_of(o.score)
            assert _meta(text) == {"id": str(o.id), "label": o.label, "confidence": repr(conf)}
            assert text.text == f"#{o.id} {o.label} {conf:.2f}"
            x1, y1, x2, y2 = o.box
            assert [(p.x, p.y) for p in box.points] == [(x1, y1), (x2, y1), (x2, y2), (x1, y2)]
            assert box.type == 2  # LineLoop
            mask = o.decode_mask()
            np.testing.assert_array_equal(labels == i + 1, mask & ~covered)
            covered |= mask
            polys = [p for p in ann.points if _meta(p) == {**_meta(box), "kind": "mask"}]
            assert len(polys) <= fm.MAX_CONTOURS
            assert all(3 <= len(p.points) <= fm.MAX_CONTOUR_POINTS for p in polys)
            if mask.sum() >= 100:  # the filled polygons cover the mask
                drawn = np.zeros(mask.shape, np.uint8)
                for p in polys:
                    pts = np.array([(q.x - 0.5, q.y - 0.5) for q in p.points])
                    cv2.fillPoly(drawn, [np.round(pts).astype(np.int32)], 1)
                iou = (drawn.astype(bool) & mask).sum() / (drawn.astype(bool) | mask).sum()
                assert iou > 0.85, (o.id, iou)
        assert not labels[~covered].any()


def _scene_messages(n: int, camera: str = "cam7") -> tuple[list[TracksMessage], list[bytes]]:
    scene = DemoScene(160, 120, 4, seed=3, fps=15)
    truth = GroundTruthWriter(open(os.devnull, "w"), camera)  # noqa: SIM115 (never written)
    msgs, jpegs = [], []
    for i in range(n):
        frame = scene.render_frame(i)
        m = truth.message(frame, i)
        t = T0 + i * 66_666_667
        msgs.append(TracksMessage(m.header.model_copy(update={"t_capture_ns": t})))
        jpegs.append(encode_jpeg(frame.image))
    return msgs, jpegs


def _obj(i: int, mask: np.ndarray, confidence: float | None) -> TrackedObject:
    ys, xs = np.nonzero(mask)
    return TrackedObject(
        id=1000 + i,
        label=f"thing {i % 3}",
        score=0.3 * i - 2,
        confidence=confidence,
        box=[float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)],
        mask=encode_mask(mask),
        age=i,
        state="tracked",
    )


def _overlap_message() -> TracksMessage:
    a = np.zeros((60, 80), bool)
    b = np.zeros((60, 80), bool)
    a[5:40, 5:50] = True
    b[20:60, 30:80] = True  # overlaps a (b is listed first and wins), touches two edges
    b[2:6, 70:74] = True  # a second, small piece of b
    c = np.zeros((60, 80), bool)
    c[50:58, 2:10] = True
    lost = _obj(2, c, 0.05).model_copy(update={"state": "lost"})  # left out of every topic
    return TracksMessage.build(
        "cam7", 9, T0 + 10**9, 80, 60, "thing", [_obj(0, b, None), lost, _obj(1, a, 0.25)], T0
    )


# --------------------------------------------------------------------------- MCAP


def test_foxglove_mcap_round_trip_matches_the_tracks_jsonl(tmp_path: Path) -> None:
    msgs, jpegs = _scene_messages(8)
    msgs.append(_overlap_message())
    jpegs.append(jpegs[0])
    assert sum(len(m.header.objects) for m in msgs) >= 16
    jsonl = tmp_path / "t.jsonl"
    jsonl.write_text("".join(m.to_json() + "\n" for m in msgs))
    f = FoxgloveMcapFile(tmp_path / "t.mcap")
    for m, jpeg in zip(msgs, jpegs, strict=True):
        f.write_tracks(m)
        f.write_jpeg(m.camera, m.header.t_capture_ns, jpeg)
    f.close()
    back = [TracksMessage.from_json(line) for line in jsonl.read_text().splitlines()]
    topics = read_mcap(tmp_path / "t.mcap")
    assert_same(back, topics)
    images = topics["/promptcam/cam7/image"]
    assert [(t, i.data, i.format, i.frame_id) for t, i, *_ in images] == [
        (m.header.t_capture_ns, j, "jpeg", "cam7") for m, j in zip(msgs, jpegs, strict=True)
    ]
    labels = fm.decode_label_image(topics["/promptcam/cam7/masks"][-1][1])
    assert (labels[30, 40], labels[10, 10], labels[3, 71]) == (1, 2, 1)  # overlap: first listed


def test_our_files_carry_the_schemas_and_bytes_foxglove_sdk_writes(tmp_path: Path) -> None:
    """Foxglove opens what its own SDK writes: same schema records, same message bytes."""
    msgs, jpegs = _scene_messages(3)
    ours = FoxgloveMcapFile(tmp_path / "ours.mcap")
    ctx = foxglove.Context()
    with foxglove.open_mcap(tmp_path / "sdk.mcap", context=ctx):
        image = CompressedImageChannel("/promptcam/cam7/image", context=ctx)
        ann = ImageAnnotationsChannel("/promptcam/cam7/detections", context=ctx)
        mask = RawImageChannel("/promptcam/cam7/masks", context=ctx)
        for m, jpeg in zip(msgs, jpegs, strict=True):
            t = m.header.t_capture_ns
            mapped = fm.map_tracks(m)
            ann.log(mapped.annotations, log_time=t)
            mask.log(mapped.mask, log_time=t)
            image.log(fm.compressed_image("cam7", t, jpeg), log_time=t)
            ours.write_tracks(m)
            ours.write_jpeg("cam7", t, jpeg)
    ours.close()

    def records(path: Path) -> dict[str, list[tuple[Any, ...]]]:
        out: dict[str, list[tuple[Any, ...]]] = {}
        with path.open("rb") as fh:
            for s, c, msg in make_reader(fh).iter_messages():
                assert s is not None
                key = (s.name, s.encoding, s.data, c.message_encoding)
                out.setdefault(c.topic, []).append((key, msg.log_time, msg.data))
        return out

    sdk, mine = records(tmp_path / "sdk.mcap"), records(tmp_path / "ours.mcap")
    assert set(sdk) == set(mine) == {fm.topic("cam7", k) for k in fm.KINDS}
    assert sdk == mine


def test_a_stamp_beyond_foxglove_time_is_a_counted_rejection_and_writes_nothing(
    tmp_path: Path,
) -> None:
    msg = TracksMessage.build("c", 1, 2**32 * 10**9, 4, 4, "", [], 0)
    f = FoxgloveMcapFile(tmp_path / "x.mcap")
    with pytest.raises(fm.FoxgloveMappingError) as e:
        f.write_tracks(msg)
    assert e.value.reason == "no_foxglove_form"
    f.close()
    assert read_mcap(tmp_path / "x.mcap") == {}


def test_more_than_255_objects_give_a_mono16_label_image() -> None:
    objs = []
    for i in range(300):
        m = np.zeros((20, 300), bool)
        m[i % 20, i] = True
        objs.append(_obj(i, m, 0.5))
    img = fm.map_tracks(TracksMessage.build("c", 1, T0, 300, 20, "thing", objs, T0)).mask
    decoded = message_class("foxglove.RawImage", img.get_schema().data).FromString(img.encode())
    labels = fm.decode_label_image(decoded)
    assert decoded.encoding == "mono16" and decoded.step == 600
    assert [labels[i % 20, i] for i in range(300)] == list(range(1, 301))


def test_record_mcap_profile_foxglove_closes_a_readable_file_on_sigterm(tmp_path: Path) -> None:
    ov = {
        "bus.annotated": tcp_endpoint(),
        "bus.tracks": tcp_endpoint(),
        "bus.control": tcp_endpoint(),
    }
    cfg = load_config(None, ov)
    cmd = [*CLI, "record", "--format", "mcap", "--profile", "foxglove", "--dir", str(tmp_path)]
    cmd += ["--log-level", "WARNING"] + [a for k, v in ov.items() for a in ("--set", f"{k}={v}")]
    seen: dict[int, TracksMessage] = {}
    ctx: zmq.Context[Any] = zmq.Context.instance()
    with SyntheticEngine(cfg, fps=20) as engine:
        sub = zbus.connect(ctx, zmq.SUB, cfg.bus.tracks, cfg.bus, subscribe=[b"tracks.cam0"])
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True, env=ENV)
        try:

            def grab() -> bool:
                while sub.poll(0):
                    m = TracksMessage.from_parts(sub.recv_multipart())
                    seen[m.header.t_capture_ns] = m
                return bool(list(tmp_path.glob("*.mcap")))

            wait_for(grab, timeout=30, what="an MCAP file")
            start = engine.published
            wait_for(lambda: grab() and engine.published >= start + 12, timeout=30, what="frames")
            proc.send_signal(signal.SIGTERM)
            out, _ = proc.communicate(timeout=20)
            grab()
        finally:
            sub.close(0)
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == 0 and "tracks messages" in out
    [path] = sorted(tmp_path.glob("*.mcap"))
    topics = read_mcap(path)
    anns = topics["/promptcam/cam0/detections"]
    assert len(anns) >= 8 and len(topics["/promptcam/cam0/image"]) >= 5
    recorded = [seen[t] for t, *_ in anns]  # every recorded message is one the engine sent
    assert any(m.header.objects for m in recorded)
    assert_same(recorded, topics)


def test_track_profile_foxglove_writes_the_frames_of_its_tracks_jsonl(tmp_path: Path) -> None:
    from engine.offline import track_video
    from stream.media import Mp4Writer

    video = tmp_path / "demo.mp4"
    scene = DemoScene(160, 120, 3, seed=2, fps=15)
    with Mp4Writer(video, 15) as w:
        for i in range(4):
            w.write(scene.render(i)[0])
    cfg = load_config(None, {"models.preset": "tiny-random", "engine.prompt": ""})
    tracks, mcap = tmp_path / "t.jsonl", tmp_path / "t.mcap"
    res = track_video(
        cfg,
        video,
        boxes=[((10.0, 10.0, 70.0, 70.0), 0), ((80.0, 40.0, 150.0, 110.0), 1)],
        tracks_jsonl=tracks,
        mcap=mcap,
        mcap_profile="foxglove",
    )
    assert res.frames == 4
    msgs = [TracksMessage.from_json(line) for line in tracks.read_text().splitlines()]
    assert len(msgs) == 4 and any(m.header.objects for m in msgs)
    topics = read_mcap(mcap)
    assert_same(msgs, topics)
    assert len(topics[fm.topic(msgs[0].camera, "image")]) == 4


def test_foxglove_off_loopback_is_a_one_line_error() -> None:
    args = ["foxglove", "--host", "0.0.0.0", "--port", "0"]
    r = subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=60, env=ENV, cwd=ROOT)
    assert r.returncode == 2 and r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "no hook to check a token" in lines[0], r.stderr
    assert "--allow-unauthenticated" in lines[0]


def test_track_profile_without_mcap_is_refused_before_anything_runs(tmp_path: Path) -> None:
    import argparse

    from engine.offline import main as track_main
    from stream.errors import RequestError

    args = argparse.Namespace(video=str(tmp_path / "v.mp4"), box=[], out=str(tmp_path / "o.mp4"))
    args.__dict__.update(tracks=None, mcap=None, profile="foxglove", prompt="x", set=[])
    (tmp_path / "v.mp4").write_bytes(b"")
    with pytest.raises(RequestError, match="--profile applies to --mcap"):
        track_main(load_config(None, {}), args)
    assert not (tmp_path / "o.mp4").exists()


def test_run_starts_a_foxglove_child_when_enabled(tmp_path: Path) -> None:
    off = load_config(None, {})
    assert "foxglove" not in [s.name for s in child_specs(off, tmp_path / "c.yaml")]
    cfg = load_config(None, {"foxglove.enabled": True, "foxglove.port": 0})
    run_cfg = prepare_config(cfg, tmp_path)
    assert run_cfg.foxglove.port > 0  # a concrete port, kept across the child's restarts
    [spec] = [s for s in child_specs(run_cfg, tmp_path / "c.yaml") if s.name == "foxglove"]
    assert spec.argv[spec.argv.index("--child") + 1] == "foxglove" and not spec.essential
    assert ("foxglove.port", "127.0.0.1", run_cfg.foxglove.port) in bound_ports(run_cfg)


# --------------------------------------------------------------------------- live server


class Server:
    def __init__(self, proc: subprocess.Popen[str], port: int, engine: SyntheticEngine) -> None:
        self.proc, self.port, self.engine = proc, port, engine
        self.channels: dict[str, int] = {}  # topic -> channel id, from the first client
        self.lines: list[str] = []


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    ov = {
        "bus.annotated": tcp_endpoint(),
        "bus.tracks": tcp_endpoint(),
        "bus.control": tcp_endpoint(),
    }
    cfg = load_config(None, ov)  # one camera configured (cam0); cam1 is only on the bus
    cmd = [*CLI, "foxglove", "--port", "0", "--log-level", "WARNING"]
    cmd += [a for k, v in ov.items() for a in ("--set", f"{k}={v}")]
    with SyntheticEngine(cfg, fps=15, cameras=["cam0", "cam1"]) as engine:
        proc = subprocess.Popen(
            cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV
        )
        lines: list[str] = []
        stdout = proc.stdout
        assert stdout is not None
        reader = threading.Thread(target=lambda: lines.extend(iter(stdout.readline, "")))
        reader.start()
        try:
            url = wait_for(
                lambda: (
                    next((ln for ln in lines if "serving ws://" in ln), None)
                    or (proc.poll() is not None and pytest.fail("".join(lines)))
                ),
                timeout=60,
                what="the server's URL",
            )
            port = int(url.split("ws://127.0.0.1:")[1].split()[0])
            srv = Server(proc, port, engine)
            srv.lines = lines
            yield srv
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            reader.join(timeout=10)


async def _receive(port: int, want: set[str], window_s: float) -> dict[str, Any]:
    """A Foxglove WebSocket client: read serverInfo and advertisements, subscribe to the
    ``want`` topics as they are advertised, then count each topic's messages during
    ``window_s`` seconds that start once every topic has sent one; also keeps one decoded
    annotations message per topic and the advertised channels."""
    channels: dict[int, dict[str, Any]] = {}
    subs: dict[int, str] = {}
    counts = dict.fromkeys(want, 0)
    stamps: dict[str, list[int]] = {t: [] for t in want}
    samples: dict[str, Any] = {}
    info: dict[str, Any] = {}
    window_end: float | None = None
    seen: set[str] = set()
    async with aiohttp.ClientSession() as session:
        ws = await session.ws_connect(f"ws://127.0.0.1:{port}/", protocols=PROTOCOLS, compress=0)
        async with ws:
            protocol = ws.protocol
            deadline = time.monotonic() + 30
            while time.monotonic() < (window_end or deadline):
                msg = await ws.receive(timeout=10)
                if msg.type == aiohttp.WSMsgType.TEXT:
                    d = json.loads(msg.data)
                    if d["op"] == "serverInfo":
                        info = d
                    elif d["op"] == "advertise":
                        new = []
                        for c in d["channels"]:
                            channels[c["id"]] = c
                            if c["topic"] in want:
                                subs[len(subs) + 1] = c["topic"]
                                new.append({"id": len(subs), "channelId": c["id"]})
                        if new:
                            await ws.send_str(json.dumps({"op": "subscribe", "subscriptions": new}))
                elif msg.type == aiohttp.WSMsgType.BINARY:
                    op, sub_id = struct.unpack_from("<BI", msg.data)
                    assert op == 1  # messageData
                    topic = subs[sub_id]
                    payload = bytes(msg.data[13:])
                    ch = next(c for c in channels.values() if c["topic"] == topic)
                    cls = message_class(ch["schemaName"], base64.b64decode(ch["schema"]))
                    decoded = cls.FromString(payload)
                    seen.add(topic)
                    if window_end is None and seen == want:  # the window starts
                        window_end = time.monotonic() + window_s
                        counts = dict.fromkeys(want, 0)
                    counts[topic] += 1
                    stamps[topic].append(
                        decoded.timestamp.seconds * 10**9 + decoded.timestamp.nanos
                    )
                    samples.setdefault(topic, decoded)
                else:
                    raise AssertionError(f"connection ended: {msg}")
    return {
        "protocol": protocol,
        "info": info,
        "channels": channels,
        "counts": counts,
        "stamps": stamps,
        "samples": samples,
    }


ALL_TOPICS = {fm.topic(c, k) for c in ("cam0", "cam1") for k in fm.KINDS}


def test_a_foxglove_client_gets_every_channel_of_every_camera_at_the_engine_rate(
    server: Server,
) -> None:
    start = server.engine.published
    t0 = time.monotonic()
    got = asyncio.run(_receive(server.port, ALL_TOPICS, window_s=2.0))
    assert got["protocol"] == "foxglove.sdk.v1"  # what foxglove-sdk 0.30 selects
    assert got["info"]["op"] == "serverInfo" and got["info"]["name"] == "promptcam"
    topics = {c["topic"]: c for c in got["channels"].values()}
    assert set(topics) == ALL_TOPICS
    assert {c["encoding"] for c in topics.values()} == {"protobuf"}
    server.channels = {t: c["id"] for t, c in topics.items()}
    rate = (server.engine.published - start) / (time.monotonic() - t0)
    assert rate > 10  # the engine ran at about its 15 fps meanwhile
    for topic, n in got["counts"].items():  # at least 90% of the engine's frames in 2 s
        assert n >= 0.9 * 2.0 * 15 * min(1.0, rate / 15), (topic, n, got["counts"], rate)
    for cam in ("cam0", "cam1"):  # stamped with the capture time of the engine's frame
        ann = got["samples"][fm.topic(cam, "detections")]
        meta = {kv.key: kv.value for kv in ann.metadata}
        t = server.engine.t_capture_of(int(meta["seq"]), cam)
        assert t == ann.timestamp.seconds * 10**9 + ann.timestamp.nanos
        assert meta["camera"] == cam and meta["ids"]
        mask = got["samples"][fm.topic(cam, "masks")]
        assert (mask.width, mask.height, mask.frame_id) == (320, 240, cam)
        assert fm.decode_label_image(mask).max() == len(meta["ids"].split(","))
        image = got["samples"][fm.topic(cam, "image")]
        assert image.format == "jpeg" and image.data[:2] == b"\xff\xd8"
    for topic, stamps in got["stamps"].items():
        assert stamps == sorted(stamps), topic


def _handshake(port: int, protocols: str = ", ".join(PROTOCOLS)) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall(
        (
            f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"Sec-WebSocket-Protocol: {protocols}\r\n\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = s.recv(4096)
        assert chunk, head
        head += chunk
    assert head.startswith(b"HTTP/1.1 101"), head[:200]
    return s


def _client_frame(payload: bytes, opcode: int = 1) -> bytes:
    mask = os.urandom(4)
    n = len(payload)
    head = bytes([0x80 | opcode])
    head += bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + struct.pack(">H", n)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def _reset(s: socket.socket) -> None:
    """Close with a TCP reset (SO_LINGER 0): a client that vanished mid-stream."""
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()


def _misbehave(port: int, kind: int, subscribe: bytes) -> None:
    if kind == 0:  # connect, say nothing, leave
        socket.create_connection(("127.0.0.1", port), timeout=10).close()
    elif kind == 1:  # half an upgrade request
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: webso")
        _reset(s)
    elif kind == 2:  # a frame cut short: its header says 200 bytes, 20 come
        s = _handshake(port)
        s.sendall(bytes([0x81, 0x80 | 126]) + struct.pack(">H", 200) + os.urandom(24))
        _reset(s)
    else:  # subscribe to everything, leave mid-stream (kind 3: reset; 4: a close frame)
        s = _handshake(port)
        s.sendall(_client_frame(subscribe))
        got = 0
        while got < 50_000:  # well into the message data (images are ~20 KB)
            chunk = s.recv(65536)
            assert chunk
            got += len(chunk)
        if kind == 4:
            s.sendall(_client_frame(struct.pack(">H", 1000), opcode=8))
            s.close()
        else:
            _reset(s)


def test_fifty_clients_dropping_leave_the_server_healthy(server: Server) -> None:
    assert server.channels, "runs after the first client test"
    proc = psutil.Process(server.proc.pid)
    base_fds, base_threads = proc.num_fds(), proc.num_threads()
    subs = [{"id": i, "channelId": c} for i, c in enumerate(sorted(server.channels.values()))]
    subscribe = json.dumps({"op": "subscribe", "subscriptions": subs}).encode()
    with concurrent.futures.ThreadPoolExecutor(10) as pool:
        done = list(pool.map(lambda k: _misbehave(server.port, k % 5, subscribe), range(50)))
    assert len(done) == 50 and server.proc.poll() is None
    wait_for(
        lambda: proc.num_fds() <= base_fds and proc.num_threads() <= base_threads,
        timeout=20,
        interval=0.2,
        what=f"fds back to {base_fds} and threads to {base_threads} "
        f"(now {proc.num_fds()}, {proc.num_threads()})",
    )
    got = asyncio.run(_receive(server.port, ALL_TOPICS, window_s=1.0))
    assert all(n >= 10 for n in got["counts"].values()), got["counts"]


def test_the_old_subprotocol_alone_is_refused_and_sigterm_stops_the_server(
    server: Server,
) -> None:
    """foxglove-sdk 0.30 speaks ``foxglove.sdk.v1`` only: a client offering nothing else is
    refused at the handshake (documented); SIGTERM then ends the server cleanly."""
    s = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    s.sendall(
        b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        b"Sec-WebSocket-Protocol: foxglove.websocket.v1\r\n\r\n"
    )
    assert s.recv(4096).startswith(b"HTTP/1.1 400")
    s.close()
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(timeout=20) == 0
    out = "".join(server.lines)
    assert "Traceback" not in out
    summary = wait_for(
        lambda: next((ln for ln in server.lines if "tracks messages" in ln), None),
        timeout=10,
        what="the summary line",
    )
    assert "rejected" not in summary, summary


def test_the_bridge_counts_bad_messages_and_goes_on_publishing(tmp_path: Path) -> None:
    """In a running server, a message with no Foxglove form, a malformed one and one of a
    camera beyond ``foxglove.max_cameras`` are counted rejections; good ones still go out."""
    from clients.robots.foxglove_server import FoxgloveBridge

    ov = {
        "bus.annotated": tcp_endpoint(),
        "bus.tracks": tcp_endpoint(),
        "bus.control": tcp_endpoint(),
        "foxglove.port": 0,
        "foxglove.max_cameras": 1,
    }
    cfg = load_config(None, ov)
    ctx: zmq.Context[Any] = zmq.Context()
    pub = zbus.bind(ctx, zmq.PUB, cfg.bus.tracks, cfg.bus)
    bridge = FoxgloveBridge(cfg, ctx)
    port = bridge.start()
    runner = threading.Thread(target=bridge.run, daemon=True)
    runner.start()
    good, _ = _scene_messages(1, camera="cam0")
    bad_stamp = TracksMessage.build("cam0", 1, 2**32 * 10**9, 4, 4, "", [], 0)
    other = TracksMessage.build("cam9", 1, T0, 4, 4, "", [], T0)

    async def watch() -> Any:
        async with aiohttp.ClientSession() as session:
            ws = await session.ws_connect(f"ws://127.0.0.1:{port}/", protocols=PROTOCOLS)
            payload = None
            async with ws:
                deadline = time.monotonic() + 20
                while time.monotonic() < deadline:
                    for parts in (
                        bad_stamp.to_parts(),
                        [b"tracks.cam0", b"{nope"],
                        other.to_parts(),
                    ):
                        pub.send_multipart(parts)
                    pub.send_multipart(good[0].to_parts())
                    try:
                        msg = await ws.receive(timeout=0.2)
                    except asyncio.TimeoutError:
                        continue
                    if msg.type == aiohttp.WSMsgType.TEXT:
                        d = json.loads(msg.data)
                        if d["op"] == "advertise":
                            subs = [
                                {"id": c["id"], "channelId": c["id"]}
                                for c in d["channels"]
                                if c["topic"] == fm.topic("cam0", "detections")
                            ]
                            await ws.send_str(
                                json.dumps({"op": "subscribe", "subscriptions": subs})
                            )
                    elif msg.type == aiohttp.WSMsgType.BINARY:
                        payload = msg.data[13:]
                        rejected = bridge.stats.rejected  # counted while subscribed (mapped)
                        if rejected.get("no_foxglove_form") and rejected.get("too_many_cameras"):
                            return payload
        return payload

    try:
        payload = asyncio.run(watch())
        assert payload is not None, "no annotations message came"
        cls = message_class("foxglove.ImageAnnotations", ImageAnnotations.get_schema().data)
        ann = cls.FromString(payload)  # the good message
        assert _meta(ann)["ids"] == ",".join(str(o.id) for o in good[0].header.objects)
        rejected = bridge.stats.rejected
        assert rejected["no_foxglove_form"] >= 1 and rejected["too_many_cameras"] >= 1
        assert (
            sum(rejected.values()) - rejected["no_foxglove_form"] - rejected["too_many_cameras"]
            >= 1
        )
        assert runner.is_alive()
    finally:
        bridge.stop.set()
        runner.join(timeout=10)
        bridge.close()
        pub.close(0)
        ctx.term()
