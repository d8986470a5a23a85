"""Robots: tracks -> ROS 2 messages -> MCAP, read back with ``mcap`` + ``mcap_ros2`` and,
independently, with ``rosbags``' CDR deserialiser (its own ROS 2 Humble definitions of
``std_msgs``/``sensor_msgs``/``geometry_msgs``; ``vision_msgs`` registered from our .msg text),
compared with the tracks JSONL of the same run."""

from __future__ import annotations

import ast
import json
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pytest
import zmq
import zmq.auth
from mcap.exceptions import EndOfFile
from mcap.reader import NonSeekingReader, make_reader
from mcap_ros2.decoder import DecoderFactory
from rosbags.typesys import Stores, get_types_from_msg, get_typestore

from clients.robots import ros2
from clients.robots.mcap_out import McapFile
from clients.web.synthetic import SyntheticEngine
from stream import bus as zbus
from stream.config import load_config
from stream.demo import DemoScene
from stream.groundtruth import GroundTruthWriter
from stream.media import Mp4Writer
from stream.wire import (
    TrackedObject,
    TracksMessage,
    confidence_of,
    encode_jpeg,
    encode_mask,
)
from tests.conftest import tcp_endpoint, wait_for

ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "clients.cli"]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
T0 = 1_760_000_000_123_456_789  # a capture time with a nanosecond part


def _typestore() -> Any:
    store = get_typestore(Stores.ROS2_HUMBLE)
    types: dict[str, Any] = {}
    for name, text in ros2.MSG_TEXT.items():
        if name.startswith("vision_msgs/"):
            types.update(get_types_from_msg(text, name))
    store.register(types)
    return store


STORE = _typestore()


def test_our_msg_text_of_ros_packages_equals_rosbags_humble_definitions() -> None:
    """The schemas in our MCAP files carry our .msg text: for every type rosbags ships (all but
    vision_msgs), the fields it parses to are those of ROS 2 Humble, name and type."""
    humble = get_typestore(Stores.ROS2_HUMBLE)
    compared = 0
    for name, text in ros2.MSG_TEXT.items():
        if name.startswith("vision_msgs/"):
            continue
        assert get_types_from_msg(text, name)[name] == humble.fielddefs[name], name
        compared += 1
    assert compared == 8


def read_mcap(path: Path) -> dict[str, list[tuple[int, Any, Any]]]:
    """topic -> [(log time, mcap_ros2 decoded, rosbags decoded)], in file order; also checks
    that rosbags serialises each message back to the very bytes in the file."""
    out: dict[str, list[tuple[int, Any, Any]]] = {}
    with path.open("rb") as f:
        reader = make_reader(f, decoder_factories=[DecoderFactory()])
        assert reader.get_header().profile == "ros2"
        assert reader.get_summary() is not None  # the footer and summary were written
        for schema, channel, message, decoded in reader.iter_decoded_messages():
            assert schema is not None and channel.message_encoding == "cdr"
            rb = STORE.deserialize_cdr(message.data, schema.name)
            assert bytes(STORE.serialize_cdr(rb, schema.name)) == message.data
            out.setdefault(channel.topic, []).append((message.log_time, decoded, rb))
    return out


def assert_same(msgs: list[TracksMessage], path: Path, images: int | None = None) -> None:
    """The MCAP at ``path`` holds exactly ``msgs`` (one camera) as ROS 2 detections and masks."""
    topics = read_mcap(path)
    cam = msgs[0].camera
    dets, masks = topics[ros2.topic(cam, "detections")], topics[ros2.topic(cam, "masks")]
    assert len(dets) == len(masks) == len(msgs)
    if images is not None:
        assert len(topics[ros2.topic(cam, "image")]) == images
    for m, (t_det, *det), (t_mask, *mask) in zip(msgs, dets, masks, strict=True):
        h = m.header
        assert t_det == t_mask == h.t_capture_ns
        for d, img in zip(det, mask, strict=True):  # mcap_ros2's, then rosbags' decoding
            sec, nanosec = divmod(h.t_capture_ns, 10**9)
            for hdr in (d.header, img.header):
                assert (hdr.stamp.sec, hdr.stamp.nanosec, hdr.frame_id) == (sec, nanosec, cam)
            objects = [o for o in h.objects if o.state != "lost"]  # lost tracks left out
            assert len(d.detections) == len(objects)
            for det_i, o in zip(d.detections, objects, strict=True):
                assert det_i.id == str(o.id)
                hyp = det_i.results[0].hypothesis
                assert hyp.class_id == o.label
                conf = o.confidence if o.confidence is not None else confidence_of(o.score)
                assert hyp.score == pytest.approx(conf, abs=1e-12)
                x1, y1, x2, y2 = o.box
                bb = det_i.bbox
                got = (bb.center.position.x, bb.center.position.y, bb.size_x, bb.size_y)
                assert got == pytest.approx(((x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1))
                assert bb.center.theta == 0.0
            labels = ros2.decode_label_image(img)
            assert labels.shape == (h.height, h.width)
            covered = np.zeros((h.height, h.width), bool)
            for i, o in enumerate(objects):  # pycocotools decode of the JSONL's RLE
                obj_mask = o.decode_mask()
                np.testing.assert_array_equal(labels == i + 1, obj_mask & ~covered)
                covered |= obj_mask
            assert not (labels[~covered]).any()
            assert labels.max(initial=0) <= len(objects)


def _scene_messages(n: int, objects: int = 4) -> tuple[list[TracksMessage], list[np.ndarray]]:
    scene = DemoScene(160, 120, objects, seed=3, fps=15)
    truth = GroundTruthWriter(open(os.devnull, "w"), "cam7")  # noqa: SIM115 (never written)
    msgs, images = [], []
    for i in range(n):
        frame = scene.render_frame(i)
        m = truth.message(frame, i)
        t = T0 + i * 66_666_667
        msgs.append(TracksMessage(m.header.model_copy(update={"t_capture_ns": t})))
        images.append(frame.image)
    return msgs, images


def test_ground_truth_round_trip_through_mcap(tmp_path: Path) -> None:
    msgs, images = _scene_messages(8)
    assert sum(len(m.header.objects) for m in msgs) >= 16  # objects in view to compare
    jsonl = tmp_path / "gt.jsonl"
    jsonl.write_text("".join(m.to_json() + "\n" for m in msgs))
    f = McapFile(tmp_path / "gt.mcap")
    for m, img in zip(msgs, images, strict=True):
        f.write_tracks(m)
        f.write_jpeg(m.camera, m.header.t_capture_ns, encode_jpeg(img))
    f.close()
    back = [TracksMessage.from_json(line) for line in jsonl.read_text().splitlines()]
    assert_same(back, tmp_path / "gt.mcap", images=len(msgs))
    topics = read_mcap(tmp_path / "gt.mcap")
    first = topics["/promptcam/cam7/image"][0]
    assert first[1].format == "jpeg" and bytes(first[2].data) == encode_jpeg(images[0])


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


def test_overlaps_go_to_the_first_listed_and_old_messages_use_the_sigmoid(tmp_path: Path) -> None:
    a = np.zeros((30, 40), bool)
    b = np.zeros((30, 40), bool)
    a[5:20, 5:25] = True
    b[10:28, 15:38] = True  # overlaps a on [10:20, 15:25]
    objs = [_obj(0, b, None), _obj(1, a, 0.25)]  # b first: b wins the overlap
    msg = TracksMessage.build("c", 1, T0, 40, 30, "thing", objs, T0 + 5)
    f = McapFile(tmp_path / "o.mcap")
    f.write_tracks(msg)
    f.close()
    assert_same([msg], tmp_path / "o.mcap")
    img = read_mcap(tmp_path / "o.mcap")["/promptcam/c/masks"][0][2]
    labels = ros2.decode_label_image(img)
    assert img.encoding == "mono8" and (labels[12, 18], labels[6, 6], labels[25, 36]) == (1, 2, 1)
    det = read_mcap(tmp_path / "o.mcap")["/promptcam/c/detections"][0][1]
    assert det.detections[0].results[0].hypothesis.score == pytest.approx(confidence_of(-2.0))


def test_lost_tracks_are_left_out_of_the_ros2_topics(tmp_path: Path) -> None:
    """A lost track (its last box kept, nothing seen) is no detection for a robot: the array
    and the label image's indices hold the others only (Foxglove: tests/test_foxglove.py)."""
    a, b, c = (np.zeros((30, 40), bool) for _ in range(3))
    a[2:8, 2:8] = True
    b[10:16, 10:16] = True
    c[20:26, 20:26] = True
    lost = _obj(1, b, 0.05).model_copy(update={"state": "lost"})
    msg = TracksMessage.build("c", 1, T0, 40, 30, "thing", [_obj(0, a, 0.9), lost, _obj(2, c, 0.8)])
    f = McapFile(tmp_path / "o.mcap")
    f.write_tracks(msg)
    f.close()
    assert_same([msg], tmp_path / "o.mcap")
    topics = read_mcap(tmp_path / "o.mcap")
    det = topics["/promptcam/c/detections"][0][1]
    assert [d.id for d in det.detections] == ["1000", "1002"]
    labels = ros2.decode_label_image(topics["/promptcam/c/masks"][0][2])
    assert (labels[4, 4], labels[12, 12], labels[22, 22]) == (1, 0, 2)


def test_more_than_255_objects_give_a_mono16_label_image(tmp_path: Path) -> None:
    objs = []
    for i in range(300):
        m = np.zeros((20, 300), bool)
        m[i % 20, i] = True
        objs.append(_obj(i, m, 0.5))
    msg = TracksMessage.build("c", 1, T0, 300, 20, "thing", objs, T0)
    f = McapFile(tmp_path / "m.mcap")
    f.write_tracks(msg)
    f.close()
    assert_same([msg], tmp_path / "m.mcap")
    img = read_mcap(tmp_path / "m.mcap")["/promptcam/c/masks"][0][2]
    assert (
        img.encoding == "mono16"
        and img.step == 600
        and ros2.decode_label_image(img)[19, 299] == 300
    )


def test_a_stamp_beyond_ros_time_is_a_counted_rejection_not_a_crash() -> None:
    msg = TracksMessage.build("c", 1, 2**31 * 10**9, 4, 4, "", [], 0)
    with pytest.raises(ros2.Ros2MappingError) as e:
        ros2.detections(msg)
    assert e.value.reason == "no_ros2_form"


@pytest.mark.parametrize("curve", [False, True], ids=["plain", "curve"])
def test_record_mcap_closes_a_readable_file_on_sigterm(tmp_path: Path, curve: bool) -> None:
    """Also with the bus encrypted (CURVE keys in the config): tracks and images both come."""
    ov = {
        "bus.annotated": tcp_endpoint(),
        "bus.tracks": tcp_endpoint(),
        "bus.control": tcp_endpoint(),
    }
    if curve:
        keys = tmp_path / "keys"
        keys.mkdir()
        server_pub, server_sec = zmq.auth.create_certificates(keys, "server")
        client_pub, client_sec = zmq.auth.create_certificates(keys, "client")
        ov |= {
            "bus.curve.server_secret_key_file": server_sec,
            "bus.curve.server_public_key_file": server_pub,
            "bus.curve.client_secret_key_file": client_sec,
            "bus.curve.client_public_key_file": client_pub,
        }
    cfg = load_config(None, ov)
    cmd = [*CLI, "record", "--format", "mcap", "--profile", "ros2", "--dir", str(tmp_path)]
    cmd += ["--log-level", "WARNING"] + [a for k, v in ov.items() for a in ("--set", f"{k}={v}")]
    seen: dict[int, TracksMessage] = {}
    ctx: zmq.Context[Any] = zmq.Context.instance()
    with SyntheticEngine(cfg, fps=20) as engine:
        sub = zbus.connect(
            ctx, zmq.SUB, cfg.bus.tracks, cfg.bus, subscribe=[b"tracks.cam0"], curve=True
        )
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True, env=ENV)
        try:

            def grab() -> bool:
                while sub.poll(0):
                    m = TracksMessage.from_parts(sub.recv_multipart())
                    seen[m.header.t_capture_ns] = m
                return bool(list(tmp_path.glob("*.mcap")))

            wait_for(grab, timeout=30, what="an MCAP file")
            start = engine.published
            wait_for(lambda: grab() and engine.published >= start + 15, timeout=30, what="frames")
            proc.send_signal(signal.SIGTERM)
            out, _ = proc.communicate(timeout=20)
            grab()
        finally:
            sub.close(0)
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == 0 and "tracks messages" in out
    files = sorted(tmp_path.glob("*.mcap"))
    assert len(files) == 1 and not list(tmp_path.glob("*.mp4"))
    topics = read_mcap(files[0])
    dets = topics["/promptcam/cam0/detections"]
    assert len(dets) >= 10 and len(topics.get("/promptcam/cam0/image", [])) >= 5
    recorded = [seen[t] for t, _, _ in dets]  # every recorded message is one the engine sent
    assert any(m.header.objects for m in recorded)
    assert_same(recorded, files[0])


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("video") / "demo.mp4"
    scene = DemoScene(160, 120, 3, seed=2, fps=15)
    with Mp4Writer(path, 15) as w:
        for i in range(6):
            w.write(scene.render(i)[0])
    return path


def test_track_mcap_matches_its_tracks_jsonl(video: Path, tmp_path: Path) -> None:
    tracks, mcap = tmp_path / "t.jsonl", tmp_path / "t.mcap"
    r = subprocess.run(
        [
            *CLI,
            "track",
            str(video),
            "--models",
            "tiny-random",
            "--box",
            "10,10,70,70",
            "--box",
            "80,40,150,110@2",
            "--tracks",
            str(tracks),
            "--mcap",
            str(mcap),
        ],
        capture_output=True,
        text=True,
        timeout=240,
        env=ENV,
        cwd=ROOT,
    )
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.splitlines()[-1])["mcap"] == str(mcap)
    msgs = [TracksMessage.from_json(line) for line in tracks.read_text().splitlines()]
    assert len(msgs) == 6 and any(m.header.objects for m in msgs)
    assert_same(msgs, mcap, images=6)


def test_the_python_example_of_docs_robots_md_reads_a_recording(tmp_path: Path) -> None:
    text = (ROOT / "docs" / "robots.md").read_text()
    code = re.search(r"```python\n(.*?)```", text, flags=re.S)
    assert code is not None
    (tmp_path / "example.py").write_text(code.group(1))
    msgs, _ = _scene_messages(3)
    f = McapFile(tmp_path / "x.mcap")
    for m in msgs:
        f.write_tracks(TracksMessage(m.header.model_copy(update={"camera": "cam0"})))
    f.close()
    r = subprocess.run(
        [sys.executable, str(tmp_path / "example.py"), str(tmp_path / "x.mcap")],
        capture_output=True,
        text=True,
        timeout=60,
        env=ENV,
        cwd=ROOT,
    )
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == 6
    for i, m in enumerate(msgs):  # detections, then the pixels of each id in the label image
        objs = m.header.objects
        assert ast.literal_eval(lines[2 * i].split(" ", 1)[1]) == [
            (str(o.id), o.label) for o in objs
        ]
        areas = {str(o.id): int(o.decode_mask().sum()) for o in objs}
        assert ast.literal_eval(lines[2 * i + 1]) == areas


def test_record_mcap_rotates_by_time_every_file_complete(tmp_path: Path) -> None:
    ov = {
        "bus.annotated": tcp_endpoint(),
        "bus.tracks": tcp_endpoint(),
        "bus.control": tcp_endpoint(),
    }
    cmd = [*CLI, "record", "--format", "mcap", "--dir", str(tmp_path), "--duration", "2.2"]
    for k, v in {**ov, "record.rotate_s": 0.5}.items():
        cmd += ["--set", f"{k}={v}"]
    with SyntheticEngine(load_config(None, ov), fps=20):
        r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=60, env=ENV)
    assert r.returncode == 0, r.stderr
    files = sorted(tmp_path.glob("cam0-*.mcap"))
    assert len(files) >= 3, [p.name for p in files]
    for path in files:
        assert read_mcap(path)["/promptcam/cam0/detections"]  # each has its footer and messages


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["record", "--profile", "ros2", "--duration", "1"], "--profile applies to --format mcap"),
        (["track", "{video}", "--box", "1,1,9,9", "--mcap", "{tmp}/no/x.mcap"], "x.mcap"),
        (["track", "{video}", "--box", "1,1,9,9"], "--mcap OUT.mcap"),
    ],
    ids=["profile-without-mcap", "mcap-missing-dir", "nothing-to-write"],
)
def test_bad_mcap_flags_are_one_line_errors(
    args: list[str], needle: str, video: Path, tmp_path: Path
) -> None:
    argv = [a.format(video=video, tmp=tmp_path) for a in args]
    r = subprocess.run(
        [*CLI, *argv, "--set", f"record.directory={tmp_path / 'rec'}"],
        capture_output=True,
        text=True,
        timeout=60,
        env=ENV,
        cwd=ROOT,
    )
    assert r.returncode == 2 and r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], r.stderr
    assert not (tmp_path / "rec").exists() and not (tmp_path / "no").exists()


def test_record_mcap_full_disk_says_so_once_and_resumes_in_a_complete_file(tmp_path: Path) -> None:
    from tests.test_recorder import FULL_DISK_SCRIPT, _recorder_in, _tmpfs_namespace_unavailable

    reason = _tmpfs_namespace_unavailable(tmp_path)
    if reason:
        pytest.skip(reason)
    disk, out = tmp_path / "disk", tmp_path / "out"
    disk.mkdir()
    ov = {
        "bus.annotated": tcp_endpoint(),
        "bus.tracks": tcp_endpoint(),
        "bus.control": tcp_endpoint(),
        "record.retry_s": 0.3,
        "record.min_free_mb": 0.5,
    }
    cmd = [*CLI, "record", "--format", "mcap", "--dir", str(disk / "rec"), "--log-level", "WARNING"]
    cmd += [a for k, v in ov.items() for a in ("--set", f"{k}={v}")]
    with SyntheticEngine(load_config(None, ov), fps=30, width=640, height=480):
        proc = subprocess.Popen(
            ["unshare", "-rm", "sh", "-c", FULL_DISK_SCRIPT, "sh", str(disk), str(out), *cmd],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        err: list[str] = []
        err_pipe = proc.stderr
        assert err_pipe is not None
        reader = threading.Thread(target=lambda: err.extend(iter(err_pipe.readline, "")))
        reader.start()
        try:
            recorder = wait_for(lambda: _recorder_in(proc.pid), timeout=30, what="recorder")
            inside = Path(f"/proc/{recorder.pid}/root") / disk.relative_to("/")
            # the disk can be nearly full before a write fails: wait for the failure itself
            wait_for(lambda: any("recording stopped" in ln for ln in err), 60, what="a failure")
            full = set((inside / "rec").glob("*.mcap"))
            (inside / "filler").unlink()  # space comes back
            wait_for(
                lambda: any(
                    p.stat().st_size > 1_100_000
                    for p in set((inside / "rec").glob("*.mcap")) - full
                ),
                timeout=30,
                what="a new file with a chunk written after space came back",
            )
            recorder.send_signal(signal.SIGTERM)
            stdout, _ = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:  # the recorder holds the pipes too: kill it before the shell
                for child in psutil.Process(proc.pid).children(recursive=True):
                    child.kill()
                proc.kill()
                proc.communicate()
            reader.join(timeout=10)
    stderr = "".join(err)
    assert proc.returncode == 0, stderr[-2000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    stopped = [ln for ln in stderr.splitlines() if "recording stopped" in ln]
    resumed = [ln for ln in stderr.splitlines() if "recording resumes" in ln]
    assert len(stopped) == 1 and "No space left on device" in stopped[0], stderr[-2000:]
    assert len(resumed) == 1, stderr[-2000:]
    assert "write failures" in stdout and "dropped" in stdout, stdout
    *cut, complete = sorted(out.glob("*.mcap"))
    topics = read_mcap(complete)  # the file after space came back: complete, with its footer
    assert len(topics["/promptcam/cam0/image"]) >= 10 and topics["/promptcam/cam0/detections"]
    # the file that failed: cut after its last complete chunk (it reads to its end), or removed
    assert len(cut) == ("complete chunks, no footer" in stopped[0]) and len(cut) <= 1
    for path in cut:
        assert f"kept {path.name}" in stopped[0]
        assert _stream_read(path) > 0


def _stream_read(path: Path) -> int:
    """Messages a streaming reader decodes in a file with no footer (it ends with EndOfFile)."""
    n = 0
    with path.open("rb") as fh, pytest.raises(EndOfFile):
        reader = NonSeekingReader(fh, decoder_factories=[DecoderFactory()])
        for _, _, _, decoded in reader.iter_decoded_messages(log_time_order=False):
            assert decoded.header.frame_id
            n += 1
    return n


def test_a_file_cut_short_is_cut_back_to_its_last_complete_chunk(tmp_path: Path) -> None:
    from clients.robots.mcap_out import keep_complete_records

    rng = np.random.default_rng(0)
    jpegs = [encode_jpeg(rng.integers(0, 255, (240, 320, 3), dtype=np.uint8)) for _ in range(40)]
    f = McapFile(tmp_path / "whole.mcap")
    for i, jpeg in enumerate(jpegs):  # ~55 KB each: chunks of 1 MiB hold about 19
        f.write_jpeg("c", T0 + i, jpeg)
    f.close()
    data = (tmp_path / "whole.mcap").read_bytes()
    torn = tmp_path / "torn.mcap"
    torn.write_bytes(data[: int(len(data) * 0.7)])  # within the second chunk
    assert keep_complete_records(torn) == 1
    got = []
    with torn.open("rb") as fh, pytest.raises(EndOfFile):  # no footer: the stream just ends
        reader = NonSeekingReader(fh, decoder_factories=[DecoderFactory()])
        for _, _, message, decoded in reader.iter_decoded_messages(log_time_order=False):
            got.append((message.log_time, bytes(decoded.data)))
    assert 5 <= len(got) < 40 and got == [(T0 + i, jpegs[i]) for i in range(len(got))]
    head = tmp_path / "head.mcap"
    head.write_bytes(data[:5000])  # the header and part of the first chunk
    assert keep_complete_records(head) == 0 and head.stat().st_size < 5000


def test_record_mcap_keeps_frames_too_small_for_h264(tmp_path: Path) -> None:
    """The MP4 recording refuses frames under 2 pixels a side (H.264); MCAP keeps the JPEGs."""
    import cv2

    from stream.wire import AnnotatedMessage

    ov = {
        "bus.annotated": tcp_endpoint(),
        "bus.tracks": tcp_endpoint(),
        "bus.control": tcp_endpoint(),
    }
    ctx: zmq.Context[Any] = zmq.Context()
    pub = zbus.bind(ctx, zmq.PUB, ov["bus.annotated"])
    cmd = [*CLI, "record", "--format", "mcap", "--dir", str(tmp_path), "--log-level", "WARNING"]
    cmd += [a for k, v in ov.items() for a in ("--set", f"{k}={v}")]
    proc = subprocess.Popen(
        cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    jpeg = encode_jpeg(np.full((64, 1, 3), 120, np.uint8))
    try:
        seq = 0

        def send() -> bool:  # until the file exists (a subscriber misses the first messages)
            nonlocal seq
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            pub.send_multipart(AnnotatedMessage("cam0", seq, T0 + seq, 1, 64, 0, jpeg).to_parts())
            seq += 1
            return any(tmp_path.glob("*.mcap")) and seq > 40

        wait_for(send, timeout=30, interval=0.05, what="a recording of 1-pixel-wide frames")
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        pub.close(0)
        ctx.term()
    assert proc.returncode == 0, err[-3000:]
    assert "rejected" not in out, out
    [path] = sorted(tmp_path.glob("*.mcap"))
    images = read_mcap(path)["/promptcam/cam0/image"]
    assert images and all(bytes(rb.data) == jpeg for _, _, rb in images)
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None and image.shape == (64, 1, 3)
