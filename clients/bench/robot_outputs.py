"""Bench rows of part ``output`` for the robot outputs: per-frame cost and recording rate.

- Per-frame cost (ms of process CPU time, all threads: wall time on a shared host measures the
  neighbours) of each output in ``OUTPUTS`` at 1/4/16 objects: a tracks message of
  that many ellipse masks on a grid (RLE, as the bus carries them) and its JPEG, fed to the
  output as the bus would; median over the frames. An output is a ``(name, factory)`` pair: the factory
  gets a scratch directory and returns ``(write(tracks, jpeg), close())``, so another output
  is one more entry in ``OUTPUTS``. Foxglove publish: mapping + logging to a real WebSocket
  server with a subscribed client (a child process).
- Recorder MB per minute of the MP4 recording (MP4 + tracks JSONL) and of the MCAP recording
  (ros2 profile: detections, label images and JPEGs), at ``record.fps`` frames a second
  and 4 objects of the demo scene: bytes of N frames scaled to a minute.
"""

from __future__ import annotations

import io
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from clients.bench import BenchRow, row
from clients.robots import ros2
from stream.config import DdsConfig
from stream.demo import DemoScene
from stream.groundtruth import GroundTruthWriter
from stream.wire import TracksMessage, encode_jpeg

PART = "output"
T0 = 1_760_000_000_000_000_000

Frame = tuple[TracksMessage, bytes, np.ndarray]  # tracks message, its JPEG, its BGR image
WriteFn = Callable[[TracksMessage, bytes], None]
Output = tuple[WriteFn, Callable[[], None]]


def _ros2_mapping(_: Path) -> Output:
    def write(msg: TracksMessage, jpeg: bytes) -> None:
        ros2.detections(msg)
        ros2.masks(msg)
        ros2.compressed_image(msg.camera, msg.header.t_capture_ns, jpeg)

    return write, lambda: None


def _mcap_write(tmp: Path) -> Output:
    from clients.robots.mcap_out import McapFile

    f = McapFile(tmp / "bench.mcap")

    def write(msg: TracksMessage, jpeg: bytes) -> None:
        f.write_tracks(msg)
        f.write_jpeg(msg.camera, msg.header.t_capture_ns, jpeg)

    return write, f.close


def _dds_publish(_: Path) -> Output:
    from clients.robots.dds import DdsPublisher

    pub = DdsPublisher(DdsConfig(domain_id=231))  # on lo, no reader: mapping + CDR + write

    def write(msg: TracksMessage, jpeg: bytes) -> None:
        pub.publish_tracks(msg)
        pub.publish_jpeg(msg.camera, msg.header.t_capture_ns, jpeg)

    return write, pub.close


# A Foxglove client in a child process (its CPU is not the bench's): subscribes to every
# advertised channel, prints "subscribed", then reads and drops what comes until closed.
_FOXGLOVE_CLIENT = """
import asyncio, json, sys
import aiohttp

async def main(port):
    received = 0
    async with aiohttp.ClientSession() as s:
        ws = await s.ws_connect(f"ws://127.0.0.1:{port}/", protocols=("foxglove.sdk.v1",))
        async for m in ws:
            if m.type == aiohttp.WSMsgType.TEXT:
                d = json.loads(m.data)
                if d.get("op") == "advertise":
                    subs = [{"id": c["id"], "channelId": c["id"]} for c in d["channels"]]
                    await ws.send_str(json.dumps({"op": "subscribe", "subscriptions": subs}))
                    print("subscribed", flush=True)
            elif m.type == aiohttp.WSMsgType.BINARY:
                received += 1
            else:
                break
    print("received", received, flush=True)

asyncio.run(main(int(sys.argv[1])))
"""


def _foxglove_publish(_: Path) -> Output:
    """Mapping and logging on the channels of a real foxglove-sdk WebSocket server with one
    client (a child process) subscribed to every channel, so every message is encoded and sent
    (the server's sending threads are in this process's CPU time)."""
    import subprocess
    import sys

    import foxglove
    from foxglove.channels import CompressedImageChannel, ImageAnnotationsChannel, RawImageChannel

    from clients.robots import foxglove_map as fm

    ctx = foxglove.Context()
    held = [ctx]
    server = foxglove.start_server(name="promptcam-bench", host="127.0.0.1", port=0, context=ctx)
    image = CompressedImageChannel(fm.topic("cam0", fm.IMAGE), context=ctx)
    annotations = ImageAnnotationsChannel(fm.topic("cam0", fm.DETECTIONS), context=ctx)
    mask = RawImageChannel(fm.topic("cam0", fm.MASKS), context=ctx)
    client = subprocess.Popen(
        [sys.executable, "-c", _FOXGLOVE_CLIENT, str(server.port)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert client.stdout is not None
    deadline = time.monotonic() + 30
    while not all(c.has_sinks() for c in (image, annotations, mask)):
        if client.poll() is not None or time.monotonic() > deadline:
            client.kill()
            server.stop()
            raise RuntimeError("the Foxglove bench client did not subscribe")
        time.sleep(0.05)

    written = [0]

    def write(msg: TracksMessage, jpeg: bytes) -> None:
        written[0] += 1
        t = msg.header.t_capture_ns
        mapped = fm.map_tracks(msg)
        annotations.log(mapped.annotations, log_time=t)
        mask.log(mapped.mask, log_time=t)
        image.log(fm.compressed_image(msg.camera, t, jpeg), log_time=t)

    def close() -> None:
        for channel in (image, annotations, mask):
            channel.close()
        server.stop()
        held.clear()  # the context lives until here: a collected one closes its channels
        try:
            out, _ = client.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            client.kill()
            out, _ = client.communicate()
        got = [int(w[1]) for w in (ln.split() for ln in out.splitlines()) if w[:1] == ["received"]]
        if not got or got[0] < written[0]:  # 3 messages a frame; a slow client may lose some
            raise RuntimeError(
                f"the Foxglove client received {got} messages of {written[0]} frames"
            )

    return write, close


OUTPUTS: list[tuple[str, Callable[[Path], Output]]] = [
    ("ROS 2 mapping", _ros2_mapping),
    ("MCAP write", _mcap_write),
    ("DDS publish", _dds_publish),
    ("Foxglove publish", _foxglove_publish),
]


def grid_frames(objects: int, frames: int, width: int = 640, height: int = 480) -> list[Frame]:
    """``frames`` tracks messages with exactly ``objects`` objects: filled ellipses on a grid
    (4 x 4 cells at most, each ellipse 70% of its cell), drifting a pixel a frame, apart (no
    occlusion), on a smooth background; their RLE masks, JPEGs and images."""
    import cv2

    from stream.wire import TrackedObject, encode_mask

    cols = min(4, objects)
    rows_ = -(-objects // cols)
    cw, ch = width // cols, height // rows_
    yy, xx = np.mgrid[0:height, 0:width]
    background = (60 + 80 * xx / width + 40 * yy / height).astype(np.uint8)
    out: list[Frame] = []
    for i in range(frames):
        image = np.dstack([background, background[::-1], background[:, ::-1]])
        objs = []
        for k in range(objects):
            cx = (k % cols) * cw + cw // 2 + (i % 8) - 4
            cy = (k // cols) * ch + ch // 2
            axes = (int(cw * 0.35), int(ch * 0.35))
            mask = np.zeros((height, width), np.uint8)
            cv2.ellipse(mask, (cx, cy), axes, 0, 0, 360, 1, -1)
            image[mask.view(bool)] = (40 + 13 * k, 200 - 9 * k, 90 + 7 * k)
            box = [cx - axes[0], cy - axes[1], cx + axes[0] + 1, cy + axes[1] + 1]
            objs.append(
                TrackedObject.model_construct(
                    id=k + 1,
                    label="object",
                    score=2.0,
                    confidence=0.88,
                    box=[float(v) for v in box],
                    mask=encode_mask(mask.view(bool)),
                    age=i,
                    state="tracked",
                )
            )
        msg = TracksMessage.build("cam0", i, T0 + i * 66_666_667, width, height, "object.", objs)
        out.append((msg, encode_jpeg(image, 85), image))
    return out


def demo_frames(objects: int, frames: int, width: int = 640, height: int = 480) -> list[Frame]:
    """``frames`` consecutive frames of the demo scene: ground-truth tracks, JPEGs, images."""
    scene = DemoScene(width, height, objects, seed=5, fps=15)
    truth = GroundTruthWriter(io.StringIO(), "cam0")  # message() only: nothing is written
    out: list[Frame] = []
    for i in range(frames):
        frame = scene.render_frame(i)
        m = truth.message(frame, i)
        msg = TracksMessage(m.header.model_copy(update={"t_capture_ns": T0 + i * 66_666_667}))
        out.append((msg, encode_jpeg(frame.image, 85), frame.image))
    return out


def per_frame_ms(factory: Callable[[Path], Output], data: list[Frame]) -> float:
    with tempfile.TemporaryDirectory(prefix="promptcam-bench-") as tmp:
        write, close = factory(Path(tmp))
        times = []
        try:
            for msg, jpeg, _ in data:
                t = time.process_time()  # CPU of every thread (DDS sends on its own)
                write(msg, jpeg)
                times.append((time.process_time() - t) * 1e3)
        finally:
            close()
    return statistics.median(times)


def mb_per_minute(data: list[Frame], fps: float) -> dict[str, float]:
    """MB a minute of each recording format, from the bytes of ``data`` at ``fps``."""
    from clients.robots.mcap_out import McapFile
    from stream.media import Mp4Writer

    scale = fps * 60 / len(data) / 2**20
    with tempfile.TemporaryDirectory(prefix="promptcam-bench-") as tmp:
        mp4 = Mp4Writer(Path(tmp) / "r.mp4", fps, fragmented=True)
        jsonl = 0
        mcap = McapFile(Path(tmp) / "r.mcap")
        for msg, jpeg, image in data:
            mp4.write(image)
            jsonl += len(msg.to_json()) + 1
            mcap.write_tracks(msg)
            mcap.write_jpeg(msg.camera, msg.header.t_capture_ns, jpeg)
        mp4.close()
        mcap.close()
        return {
            "mp4": (mp4.bytes_written + jsonl) * scale,
            "mcap": (Path(tmp) / "r.mcap").stat().st_size * scale,
        }


def rows(
    quick: bool,
    objects: tuple[int, ...] = (1, 4, 16),
    size: tuple[int, int] = (640, 480),
    fps: float = 15.0,
) -> list[BenchRow]:
    frames = 10 if quick else 60
    out: list[BenchRow] = []
    w, h = size
    for n in objects:
        data = grid_frames(n, frames, w, h)
        for name, factory in OUTPUTS:
            out.append(
                row(
                    PART,
                    f"{name}, {n} object(s)",
                    round(per_frame_ms(factory, data), 2),
                    "ms CPU/frame",
                    f"{w}x{h}, tracks message (ellipse masks) + JPEG; process CPU time, median of {frames}",
                )
            )
    n = 4 if 4 in objects else objects[0]
    rates = mb_per_minute(demo_frames(n, max(frames, 30), w, h), fps)
    for fmt, what in (("mp4", "MP4 + tracks JSONL"), ("mcap", "MCAP, ros2 profile")):
        out.append(
            row(
                PART,
                f"recorder {fmt}",
                round(rates[fmt], 2),
                "MB/minute",
                f"{what}, {w}x{h} demo scene, {n} objects, {fps:g} frames/s",
            )
        )
    return out
