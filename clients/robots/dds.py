"""``promptcam dds``: the ROS 2 mapping published on DDS, for ROS 2 nodes, without ROS 2.

Reads ``tracks.<camera>`` and ``annotated.<camera>`` (every camera, or ``--camera``) and
publishes, with Cyclone DDS (``cyclonedds``), what a ROS 2 node would:

- DDS topic ``rt/promptcam/<camera>/detections`` (ROS 2 topic ``/promptcam/<camera>/detections``),
  type ``vision_msgs::msg::dds_::Detection2DArray_``; ``rt/.../masks``,
  ``sensor_msgs::msg::dds_::Image_`` (the label image); ``rt/.../image``,
  ``sensor_msgs::msg::dds_::CompressedImage_`` (the annotated JPEG). The messages are those of
  ``clients.robots.ros2`` (CONTRACT v1.2, "Robots"), the types those of
  ``clients.robots.dds_types``, serialised as plain CDR like ``rmw_cyclonedds_cpp``.
- QoS: ROS 2's sensor-data profile (``rmw_qos_profile_sensor_data``): best effort, keep last 5,
  volatile.
- Network: only ``dds.interface`` (default ``lo``), domain ``dds.domain_id`` (ROS_DOMAIN_ID).

A tracks message with no ROS 2 form, a malformed message, or a camera beyond
``dds.max_cameras`` is rejected and counted, never published. SIGINT/SIGTERM and ``--duration``
stop it; it prints its counts.
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
import time
from types import FrameType

import zmq
from cyclonedds.core import Policy, Qos
from cyclonedds.domain import Domain, DomainParticipant
from cyclonedds.idl import IdlStruct
from cyclonedds.pub import DataWriter
from cyclonedds.topic import Topic

from clients.jsontypes import ZmqContext
from clients.robots import dds_types, ros2
from stream import bus as zbus
from stream.config import Config, DdsConfig
from stream.counters import MessageCounters
from stream.errors import PromptcamError
from stream.wire import AnnotatedMessage, TracksMessage, WireError

log = logging.getLogger(__name__)

READY_LINE = "promptcam dds: publishing"  # the launcher's readiness mark (clients/launcher.py)
SENSOR_DATA_DEPTH = 5

# ROS 2 topic kind -> (ROS 2 type, DDS struct)
KINDS: dict[str, tuple[str, type[IdlStruct]]] = {
    "detections": (ros2.DETECTIONS_TYPE, dds_types.Detection2DArray),
    "masks": (ros2.IMAGE_TYPE, dds_types.Image),
    "image": (ros2.COMPRESSED_TYPE, dds_types.CompressedImage),
}


class DdsError(PromptcamError):
    """DDS cannot start (a bad interface, a domain already configured otherwise); one line."""


def dds_topic(camera: str, kind: str) -> str:
    """The DDS topic of ROS 2 topic ``/promptcam/<camera>/<kind>``: ROS 2 prefixes ``rt``."""
    return "rt" + ros2.topic(camera, kind)


def cyclone_config(interface: str) -> str:
    """Cyclone DDS configuration XML that uses ``interface`` only (the form of
    ``CYCLONEDDS_URI``; the interface was checked against ``DdsConfig``'s pattern)."""
    return (
        "<CycloneDDS><Domain><General><Interfaces>"
        f'<NetworkInterface name="{interface}"/>'
        "</Interfaces></General></Domain></CycloneDDS>"
    )


def check_interface(interface: str) -> None:
    """``DdsError`` unless ``interface`` names an interface of this host or one of its
    addresses (Cyclone would say so on stderr and fail with a bare error code)."""
    import psutil

    addrs = psutil.net_if_addrs()
    known = {a.address.split("%")[0] for nic in addrs.values() for a in nic}
    if interface not in addrs and interface.split("%")[0] not in known:
        raise DdsError(
            f"dds.interface {interface!r} is neither an interface nor an address of this host "
            f"(interfaces: {', '.join(sorted(addrs))})"
        )


def sensor_data_qos() -> Qos:
    """ROS 2's ``rmw_qos_profile_sensor_data``: best effort, keep last 5, volatile."""
    return Qos(
        Policy.Reliability.BestEffort,
        Policy.History.KeepLast(SENSOR_DATA_DEPTH),
        Policy.Durability.Volatile,
    )


class DdsPublisher:
    """One DDS participant; a writer per (camera, kind), made on the first message."""

    def __init__(self, dds: DdsConfig) -> None:
        self.cfg = dds
        self.stats = MessageCounters()
        self.published: dict[str, int] = {kind: 0 for kind in KINDS}
        if dds.interface is not None:
            check_interface(dds.interface)
        try:
            # A Domain made with a config must exist before the participant that uses it.
            self._domain = (
                Domain(dds.domain_id, cyclone_config(dds.interface))
                if dds.interface is not None
                else None
            )
            self._participant = DomainParticipant(dds.domain_id)
        except Exception as e:  # cyclonedds raises DDSException (a bad interface name, ...)
            raise DdsError(
                f"cannot start DDS on domain {dds.domain_id} (interface {dds.interface}): {e}"
            ) from None
        self._qos = sensor_data_qos()
        self._writers: dict[tuple[str, str], DataWriter[IdlStruct]] = {}
        self._cameras: set[str] = set()

    def _admit(self, camera: str) -> bool:
        """False (counted) for a camera beyond ``dds.max_cameras``."""
        if camera in self._cameras:
            return True
        if len(self._cameras) >= self.cfg.max_cameras:
            self.stats.reject(
                "too_many_cameras",
                f"camera {camera!r} is beyond dds.max_cameras={self.cfg.max_cameras}",
                log,
            )
            return False
        self._cameras.add(camera)
        return True

    def _write(self, camera: str, kind: str, sample: IdlStruct, t_ns: int) -> None:
        w = self._writers.get((camera, kind))
        if w is None:
            topic = Topic(self._participant, dds_topic(camera, kind), KINDS[kind][1], qos=self._qos)
            w = self._writers[(camera, kind)] = DataWriter(self._participant, topic, qos=self._qos)
        w.write(sample, timestamp=t_ns)  # source timestamp = the capture time
        self.published[kind] += 1

    def publish_tracks(self, msg: TracksMessage) -> None:
        """The message's ``Detection2DArray`` (and label ``Image`` with ``dds.masks``); raises
        ``ros2.Ros2MappingError`` (nothing published) for a message with no ROS 2 form."""
        h = msg.header
        det = dds_types.detection_array(ros2.detections(msg))
        if not self._admit(h.camera):
            return
        masks = dds_types.image(ros2.masks(msg)) if self.cfg.masks else None
        self._write(h.camera, "detections", det, h.t_capture_ns)
        if masks is not None:
            self._write(h.camera, "masks", masks, h.t_capture_ns)

    def publish_jpeg(self, camera: str, t_capture_ns: int, jpeg: bytes | memoryview) -> None:
        """An annotated (or raw) JPEG frame as a ``CompressedImage``."""
        m = dds_types.compressed_image(ros2.compressed_image(camera, t_capture_ns, jpeg))
        if not self._admit(camera):
            return
        self._write(camera, "image", m, t_capture_ns)

    def close(self) -> None:
        self._writers.clear()
        self._participant = None  # type: ignore[assignment]  # entities go with their refs
        self._domain = None


class DdsBridge:
    """Bus to DDS until ``stop`` is set or ``duration`` seconds have passed."""

    def __init__(self, cfg: Config, camera: str | None, ctx: ZmqContext | None = None):
        self.cfg = cfg
        self.camera = camera
        self.stop = threading.Event()
        self.publisher = DdsPublisher(cfg.dds)
        self._ctx = ctx or zmq.Context.instance()
        self._max_payload = int(cfg.bus.max_payload_mb * 2**20)

    def _handle(self, parts: list[bytes], annotated: bool) -> None:
        stats = self.publisher.stats
        stats.received += 1
        try:
            if annotated:
                a = AnnotatedMessage.from_parts(parts, self._max_payload)
                if self.camera is None or a.camera == self.camera:
                    self.publisher.publish_jpeg(a.camera, a.t_capture_ns, a.jpeg)
                    stats.delivered += 1
                return
            t = TracksMessage.from_parts(parts)
            if self.camera is None or t.camera == self.camera:
                stats.account_seq(t.camera, t.header.seq)
                self.publisher.publish_tracks(t)
                stats.delivered += 1
        except WireError as e:  # Ros2MappingError included
            stats.reject(e.reason, str(e), log)

    def run(self, duration: float | None = None) -> MessageCounters:
        deadline = None if duration is None else time.monotonic() + duration
        prefix = self.camera or ""
        trk = zbus.connect(
            self._ctx,
            zmq.SUB,
            self.cfg.bus.tracks,
            self.cfg.bus,
            subscribe=[f"tracks.{prefix}".encode()],
            rcvhwm=100,
            curve=True,
        )
        socks = [trk]
        if self.cfg.dds.image:
            socks.append(
                zbus.connect(
                    self._ctx,
                    zmq.SUB,
                    self.cfg.bus.annotated,
                    self.cfg.bus,
                    subscribe=[f"annotated.{prefix}".encode()],
                    rcvhwm=10,
                    curve=True,
                )
            )
        poller = zmq.Poller()
        for s in socks:
            poller.register(s, zmq.POLLIN)
        d = self.cfg.dds
        print(
            f"{READY_LINE} ROS 2 topics rt/promptcam/{self.camera or '<camera>'}/"
            f"{{detections{',masks' if d.masks else ''}{',image' if d.image else ''}}} on DDS "
            f"domain {d.domain_id} (interface {d.interface or 'default'})",
            flush=True,
        )
        try:
            while not self.stop.is_set() and (deadline is None or time.monotonic() < deadline):
                for sock, _ in poller.poll(100):
                    self._handle(sock.recv_multipart(copy=True), sock is not trk)
        finally:
            for s in socks:
                s.close(0)
            self.publisher.close()
        return self.publisher.stats


def main(cfg: Config, args: argparse.Namespace) -> int:
    """``promptcam dds [--camera NAME] [--duration S]``."""
    from setproctitle import setproctitle

    setproctitle("promptcam: dds")
    camera = cfg.camera if getattr(args, "camera", None) else None
    bridge = DdsBridge(cfg, camera)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("signal %d: stopping", signum)
        bridge.stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    stats = bridge.run(getattr(args, "duration", None))
    pub = bridge.publisher.published
    rejected = ", ".join(f"{k} {v}" for k, v in sorted(stats.rejected.items())) or "none"
    print(
        f"promptcam dds: published {pub['detections']} detections, {pub['masks']} masks, "
        f"{pub['image']} images; rejected {stats.rejected_total} ({rejected})",
        flush=True,
    )
    return 0
