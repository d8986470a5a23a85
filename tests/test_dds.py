"""``promptcam dds``: ROS 2 messages on DDS, checked on the wire against ``rosbags``' CDR.

ROS 2 itself cannot be installed here. What is checked instead: a real ``promptcam dds``
process, fed by a synthetic engine on the bus, publishes on Cyclone DDS over ``lo`` only; a
Cyclone DDS reader in this process (another participant, another process: the samples cross
the loopback network) takes the raw serialised samples, and each one's bytes equal ``rosbags``'
``serialize_cdr`` of the same message (built from the tracks message the test received on the
bus, with rosbags' own ROS 2 Humble types and vision_msgs registered from the ``.msg`` text),
plus Cyclone's zero padding to a multiple of 4. Topic names, type names and QoS are read from
DDS discovery (what a ROS 2 node's DDS layer sees), not from our code.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zmq
from cyclonedds._clayer import ddspy_take
from cyclonedds.core import InstanceState, Policy, SampleState, ViewState
from cyclonedds.domain import Domain, DomainParticipant
from cyclonedds.idl import IdlStruct
from cyclonedds.idl._type_normalize import get_extended_type_hints
from cyclonedds.idl.types import array, sequence
from cyclonedds.sub import DataReader
from cyclonedds.topic import Topic
from rosbags.interfaces import Nodetype

from clients import cli
from clients.robots import dds, dds_types, ros2
from clients.web.synthetic import SyntheticEngine
from stream import bus as zbus
from stream.config import ConfigError, load_config
from stream.wire import AnnotatedMessage, TracksMessage
from tests.conftest import tcp_endpoint, wait_for
from tests.test_robots import STORE, _scene_messages

ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "clients.cli"]
ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}
ANY = SampleState.Any | ViewState.Any | InstanceState.Any
DOMAIN = 100 + os.getpid() % 100  # apart from other runs on this host (and from domain 0)
ROS_OF = {cls: name for name, cls in dds_types.TYPES.items()}


def _desc(hint: Any) -> tuple[Nodetype, Any]:
    """A cyclonedds field type in rosbags' field description form."""
    if hint is str:
        return (Nodetype.BASE, ("string", 0))
    if isinstance(hint, type) and issubclass(hint, IdlStruct):
        return (Nodetype.NAME, ROS_OF[hint])
    if isinstance(hint, sequence):
        return (Nodetype.SEQUENCE, (_desc(hint.subtype), hint.max_length or 0))
    if isinstance(hint, array):
        return (Nodetype.ARRAY, (_desc(hint.subtype), hint.length))
    return (Nodetype.BASE, (hint.__metadata__[0], 0))  # Annotated[int, 'uint32'], ...


def test_dds_types_are_the_ros2_msg_definitions_field_for_field() -> None:
    for name, cls in dds_types.TYPES.items():
        assert (
            cls.__idl_typename__
            == name.replace("/", "::").replace("::msg::", "::msg::dds_::") + "_"
        )
        ours = [(k, _desc(v)) for k, v in get_extended_type_hints(cls).items()]
        assert ours == STORE.fielddefs[name][1], name
    assert set(dds_types.TYPES) == set(ros2.MSG_TEXT)


def _rosbags_msg(typename: str, value: Any) -> Any:
    """The rosbags message of ``typename`` from a dict of ``clients.robots.ros2``."""
    fields = {}
    for fname, (node, detail) in STORE.fielddefs[typename][1]:
        v = value[fname]
        if node == Nodetype.NAME:
            fields[fname] = _rosbags_msg(detail, v)
        elif node in (Nodetype.SEQUENCE, Nodetype.ARRAY) and detail[0][0] == Nodetype.NAME:
            fields[fname] = [_rosbags_msg(detail[0][1], x) for x in v]
        elif node in (Nodetype.SEQUENCE, Nodetype.ARRAY):  # uint8[] (bytes) or float64[36]
            base = detail[0][1][0]
            fields[fname] = np.frombuffer(v, np.uint8) if base == "uint8" else np.array(v, base)
        else:
            fields[fname] = v
    return STORE.types[typename](**fields)


def _expected(typename: str, value: Mapping[str, object]) -> bytes:
    return bytes(STORE.serialize_cdr(_rosbags_msg(typename, value), typename))


def _same_as_rosbags(wire: bytes, expected: bytes) -> bool:
    """Cyclone pads a serialised sample with zeros to a multiple of 4 bytes."""
    pad = -len(expected) % 4
    return wire == expected + b"\0" * pad


class _Readers:
    """One Cyclone DDS participant on ``lo`` with a reader per topic of ``cam0``."""

    def __init__(self, domain: int) -> None:
        self.domain = Domain(domain, dds.cyclone_config("lo"))
        self.dp = DomainParticipant(domain)
        qos = dds.sensor_data_qos()
        self.readers = {
            kind: DataReader(
                self.dp, Topic(self.dp, dds.dds_topic("cam0", kind), cls, qos=qos), qos=qos
            )
            for kind, (_, cls) in dds.KINDS.items()
        }
        self.raw: dict[str, list[bytes]] = {kind: [] for kind in dds.KINDS}

    def take(self) -> None:
        for kind, r in self.readers.items():
            ret = ddspy_take(r._ref, ANY, 64)
            assert not isinstance(ret, int), ret
            self.raw[kind] += [bytes(data) for data, info in ret if info.valid_data]


def test_promptcam_dds_samples_on_the_wire_equal_rosbags_cdr() -> None:
    ov = {
        "bus.annotated": tcp_endpoint(),
        "bus.tracks": tcp_endpoint(),
        "bus.control": tcp_endpoint(),
        "dds.domain_id": str(DOMAIN),
    }
    cfg = load_config(None, ov)
    cmd = [*CLI, "dds", "--log-level", "WARNING", "--duration", "60"]
    cmd += [a for k, v in ov.items() for a in ("--set", f"{k}={v}")]
    tracks: dict[int, TracksMessage] = {}
    frames: dict[int, AnnotatedMessage] = {}
    ctx: zmq.Context[Any] = zmq.Context.instance()
    side = _Readers(DOMAIN)
    with SyntheticEngine(cfg, fps=20) as engine:
        trk = zbus.connect(
            ctx, zmq.SUB, cfg.bus.tracks, cfg.bus, subscribe=[b"tracks."], curve=True
        )
        ann = zbus.connect(ctx, zmq.SUB, cfg.bus.annotated, cfg.bus, subscribe=[b"annotated."])
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True, env=ENV)
        try:

            def grab() -> bool:
                while trk.poll(0):
                    t = TracksMessage.from_parts(trk.recv_multipart())
                    tracks[t.header.t_capture_ns] = t
                while ann.poll(0):
                    a = AnnotatedMessage.from_parts(ann.recv_multipart())
                    frames[a.t_capture_ns] = a
                side.take()
                return all(len(v) >= 8 for v in side.raw.values())

            wait_for(grab, timeout=30, what="8 samples of every topic over DDS")
            assert engine.published
            endpoints = {}
            for kind, r in side.readers.items():
                handles = r.get_matched_publications()
                assert len(handles) == 1, kind
                ep = r.get_matched_publication_data(handles[0])
                assert ep is not None, kind
                endpoints[kind] = ep
            proc.send_signal(signal.SIGTERM)
            out, _ = proc.communicate(timeout=20)
            grab()  # the bus messages of the last samples
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            trk.close(0)
            ann.close(0)
    assert proc.returncode == 0, out
    assert dds.READY_LINE in out and "published" in out

    # What a ROS 2 node's DDS layer discovers: ROS 2's topic and type names, sensor-data QoS.
    for kind, ep in endpoints.items():
        assert ep.topic_name == f"rt/promptcam/cam0/{kind}"
        assert ep.type_name == dds_types.dds_type_name(dds.KINDS[kind][0])
        assert ep.qos[Policy.Reliability] == Policy.Reliability.BestEffort
        assert ep.qos[Policy.History] == Policy.History.KeepLast(5)
        assert ep.qos[Policy.Durability] == Policy.Durability.Volatile

    checked = {kind: 0 for kind in dds.KINDS}
    with_objects = 0
    for wire in side.raw["detections"]:
        assert wire[:4] == b"\x00\x01\x00\x00"  # CDR little-endian (XCDR1), as rmw_cyclonedds
        rb = STORE.deserialize_cdr(wire, ros2.DETECTIONS_TYPE)
        stamp_ns = rb.header.stamp.sec * ros2.NS + rb.header.stamp.nanosec
        if stamp_ns not in tracks:  # published before this test's bus socket joined
            continue
        msg = tracks[stamp_ns]
        assert _same_as_rosbags(wire, _expected(ros2.DETECTIONS_TYPE, ros2.detections(msg)))
        assert [d.id for d in rb.detections] == [str(o.id) for o in msg.header.objects]
        with_objects += bool(msg.header.objects)
        checked["detections"] += 1
    for wire in side.raw["masks"]:
        rb = STORE.deserialize_cdr(wire, ros2.IMAGE_TYPE)
        stamp_ns = rb.header.stamp.sec * ros2.NS + rb.header.stamp.nanosec
        if stamp_ns in tracks:
            assert _same_as_rosbags(wire, _expected(ros2.IMAGE_TYPE, ros2.masks(tracks[stamp_ns])))
            checked["masks"] += 1
    for wire in side.raw["image"]:
        rb = STORE.deserialize_cdr(wire, ros2.COMPRESSED_TYPE)
        stamp_ns = rb.header.stamp.sec * ros2.NS + rb.header.stamp.nanosec
        if stamp_ns in frames:
            a = frames[stamp_ns]
            m = ros2.compressed_image(a.camera, a.t_capture_ns, a.jpeg)
            assert _same_as_rosbags(wire, _expected(ros2.COMPRESSED_TYPE, m))
            checked["image"] += 1
    assert min(checked.values()) >= 5, checked
    assert with_objects >= 5


def test_bad_input_is_counted_not_published_and_a_bad_interface_is_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    cfg = load_config(None, {"dds.domain_id": DOMAIN + 1, "dds.max_cameras": 1})
    bridge = dds.DdsBridge(cfg, camera=None)
    pub = bridge.publisher
    msgs, _ = _scene_messages(2, objects=2)
    late = TracksMessage(msgs[0].header.model_copy(update={"t_capture_ns": 2**31 * ros2.NS}))
    bridge._handle(late.to_parts(), annotated=False)  # no builtin_interfaces/Time for it
    bridge._handle([b"tracks.cam7", b"{not json"], annotated=False)
    assert pub.published == {"detections": 0, "masks": 0, "image": 0}
    assert pub.stats.rejected_total == 2 and pub.stats.rejected.get("no_ros2_form") == 1
    bridge._handle(msgs[0].to_parts(), annotated=False)
    other = TracksMessage(msgs[1].header.model_copy(update={"camera": "cam9"}))
    bridge._handle(other.to_parts(), annotated=False)  # beyond dds.max_cameras
    assert pub.published == {"detections": 1, "masks": 1, "image": 0}
    assert pub.stats.rejected_total == 3 and pub.stats.rejected["too_many_cameras"] == 1
    pub.close()

    with pytest.raises(ConfigError, match=r"dds\.interface"):
        load_config(None, {"dds.interface": 'lo"/><Peer address="10.0.0.1'})
    with pytest.raises(SystemExit) as exit_:
        cli.main(["dds", "--set", f"dds.domain_id={DOMAIN + 2}", "--set", "dds.interface=nosuch0"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1, err
    assert "promptcam dds: error: dds.interface 'nosuch0' is neither an interface" in err
