"""``promptcam bench`` part ``transport``: the frame bus on this machine.

- Throughput: 1080p ``bgr8`` frames from a PUB in a publisher process (zero-copy sends) to a
  SUB that validates each message (``FrameMessage.from_parts``) without copying, over ``ipc://``
  and ``tcp://127.0.0.1``. The publisher sends as fast as it can with high-water marks raised so
  nothing is dropped (zero-copy: every queued message points at the same buffer); the rate is
  frames received per second. Over ``ipc://`` also with ``bus.frames_shm``: each frame written
  once into the shared-memory ring (``stream.shm``), the message only naming its slot, the
  receiver reading it in place. The ring's write and ``LatestFrameReceiver``'s copy-out are
  timed on their own.
- Freshness: a 30 fps publisher thread (``bus.sndhwm``) and a consumer that takes 100 ms per
  frame through ``LatestFrameReceiver``: the age of each frame it gets (target: under one capture
  interval) and how many frames behind the newest published one it is; inline and shm payloads.
Each throughput figure is the median of 3 bursts after a warm-up burst, alternated with the same
burst into a receiver that skips validation (plain pyzmq, inline payload): the ceiling of this
machine's sockets.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import tempfile
import threading
import time
import uuid
from multiprocessing.synchronize import Event as MpEvent

import numpy as np
import zmq

from clients.bench import BenchRow, row
from stream import bus as zbus
from stream.bus import free_loopback_endpoint
from stream.config import BusConfig, Config
from stream.receiver import LatestFrameReceiver
from stream.shm import ShmOverrun, ShmReader, ShmRing
from stream.wire import FrameMessage, now_ns

CAMERA = "bench"
WIDTH, HEIGHT = 1920, 1080


def _ipc_endpoint() -> str:
    return f"ipc://{tempfile.gettempdir()}/promptcam-bench-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def _frame() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)


def _send(pub: zmq.Socket[bytes], seq: int, image: np.ndarray, ring: ShmRing | None) -> None:
    """Publish one frame, zero-copy, its payload inline or (``ring``) in shared memory."""
    msg = FrameMessage.from_image(CAMERA, seq, image)
    pub.send_multipart((msg if ring is None else msg.to_shm(ring)).to_parts(), copy=False)


def _publish_burst(
    endpoint: str, n: int, go: MpEvent, done: MpEvent, bus: BusConfig, shm: bool
) -> None:
    """Publisher process: probe until the receiver says go, then send ``n`` frames at once
    (with ``shm``, each written into the shared-memory ring first, as the capture does)."""
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    pub = zbus.bind(ctx, zmq.PUB, endpoint, bus, sndhwm=n + 100)
    image = _frame()
    ring = ShmRing(CAMERA, image.nbytes, bus.shm_slots) if shm else None
    try:
        deadline = time.monotonic() + 20
        while not go.wait(0.02):  # a PUB drops what it sends before the SUB is connected
            pub.send_multipart([f"probe.{CAMERA}".encode(), b"{}"])
            if time.monotonic() > deadline:
                return
        for seq in range(n):
            _send(pub, seq, image, ring)
        done.wait(60)  # keep the socket open until the receiver has everything
    finally:
        pub.close(0)
        ctx.term()
        if ring is not None:
            ring.close()


def throughput(
    endpoint: str, n: int, bus: BusConfig, validate: bool = True, payload: str = "inline"
) -> dict[str, float]:
    """Frames/s a SUB receives (and validates) of ``n`` 1080p frames sent as fast as possible
    by a publisher process; high-water marks are raised so that none is dropped. With
    ``validate=False`` the receiver only takes the parts (plain pyzmq: this machine's ceiling).

    ``payload``: ``inline`` (the frame is a message part) or ``shm`` (in the shared-memory ring;
    the receiver reads it in place and then checks its slot was not reused). Frames whose slot
    was reused before they were read count as overrun, not received."""
    mp = multiprocessing.get_context("spawn")
    go, done = mp.Event(), mp.Event()
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    sub = zbus.connect(
        ctx,
        zmq.SUB,
        endpoint,
        bus,
        subscribe=[f"frame.{CAMERA}".encode(), b"probe."],
        rcvhwm=n + 100,
    )
    shm = payload != "inline"
    proc = mp.Process(
        target=_publish_burst, args=(endpoint, n, go, done, bus, shm), name="bench-publisher"
    )
    proc.start()
    reader = ShmReader()
    try:
        if not sub.poll(30_000):
            raise RuntimeError("bench publisher sent nothing within 30s")
        sub.setsockopt(zmq.UNSUBSCRIBE, b"probe.")
        go.set()
        received, overrun = _receive(sub, n, reader if validate else None)
    finally:
        go.set()
        done.set()
        proc.join(10)
        if proc.is_alive():
            proc.terminate()
            proc.join(5)
        sub.close(0)
        ctx.term()
        reader.close()
    got = len(received)
    span = received[-1] - received[0] if got > 1 else float("nan")
    return {
        "fps": (got - 1) / span if got > 1 else 0.0,
        "received": got,
        "sent": n,
        "overrun": overrun,
    }


def _receive(sub: zmq.Socket[bytes], n: int, reader: ShmReader | None) -> tuple[list[float], int]:
    """Receive until ``n`` frames came (or 5 s of silence): the arrival time of each, and how
    many were overrun. With a ``reader`` each frame is validated (read in place, its
    shared-memory slot checked), else only its parts are taken."""
    received: list[float] = []
    overrun = 0
    while len(received) + overrun < n and sub.poll(5000):
        parts = sub.recv_multipart(copy=False)
        if bytes(parts[0].buffer).startswith(b"probe."):
            continue
        if reader is not None:
            try:
                msg = FrameMessage.from_parts(parts, shm_reader=reader)
                msg.image()[0, 0, 0]  # a zero-copy view of the received buffer
                if not msg.intact():
                    raise ShmOverrun(f"frame {msg.seq}")
            except ShmOverrun:
                overrun += 1
                continue
        received.append(time.perf_counter())
    return received, overrun


def freshness(
    endpoint: str,
    duration_s: float,
    bus: BusConfig,
    fps: float = 30.0,
    work_s: float = 0.1,
    shm: bool = False,
) -> dict[str, float]:
    """Ages (ms) of the frames a consumer taking ``work_s`` per frame gets from a ``fps`` publisher
    (with ``shm``, payloads in the shared-memory ring, copied out by the receiver)."""
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    pub = zbus.bind(ctx, zmq.PUB, endpoint, bus, sndhwm=bus.sndhwm)
    stop = threading.Event()
    image = _frame()
    ring = ShmRing(CAMERA, image.nbytes, bus.shm_slots) if shm else None

    published = [-1]  # newest seq sent

    def publish() -> None:
        seq, t_next = 0, time.monotonic()
        while not stop.is_set():
            _send(pub, seq, image, ring)
            published[0] = seq
            seq += 1
            t_next += 1.0 / fps
            stop.wait(max(0.0, t_next - time.monotonic()))

    ages: list[float] = []
    lags: list[int] = []
    thread = threading.Thread(target=publish, name="bench-publisher", daemon=True)
    rx = LatestFrameReceiver(endpoint, CAMERA, staleness_ms=None, bus=bus, ctx=ctx)
    try:
        rx.start()
        thread.start()
        if rx.get(timeout=10) is None:
            raise RuntimeError("bench receiver got no frame within 10s")
        end = time.monotonic() + duration_s
        while time.monotonic() < end:
            msg = rx.get(timeout=1)
            if msg is None:
                continue
            ages.append((now_ns() - msg.t_capture_ns) / 1e6)
            lags.append(published[0] - msg.seq)
            time.sleep(work_s)  # the consumer's per-frame work
        skipped, overrun = rx.stats.skipped, rx.stats.overrun
    finally:
        stop.set()
        thread.join(5)
        rx.close()
        pub.close(0)
        ctx.term()
        if ring is not None:
            ring.close()
    return _ages(ages, lags, skipped, overrun, fps)


def _ages(
    ages: list[float], lags: list[int], skipped: int, overrun: int, fps: float
) -> dict[str, float]:
    """The freshness figures of the frames' ages (ms) and lags (seqs behind the newest)."""
    ages.sort()
    return {
        "p50": statistics.median(ages),
        "p95": ages[min(len(ages) - 1, int(0.95 * len(ages)))],
        "max": ages[-1],
        "frames": len(ages),
        "newest_share": sum(1 for lag in lags if lag == 0) / len(lags),
        "max_lag": max(lags),
        "skipped": skipped,
        "overrun": overrun,
        "interval_ms": 1000.0 / fps,
    }


_PAYLOAD_NAME = {"inline": "", "shm": ", shm payload"}
_PAYLOAD_NOTE = {
    "inline": "zero-copy send",
    "shm": "bus.frames_shm: written once into the shared-memory ring, read in place, slot checked after",
}


def copy_out_ms(bus: BusConfig, n: int = 200) -> tuple[float, float]:
    """Median ms to write one 1080p frame into the ring (the capture's cost) and to copy it out
    (``FrameMessage.owned``, what ``LatestFrameReceiver.get`` does with a shm payload)."""
    image = _frame()
    ring = ShmRing(CAMERA, image.nbytes, bus.shm_slots)
    reader = ShmReader()
    writes, copies = [], []
    try:
        for seq in range(n):
            t0 = time.perf_counter()
            msg = FrameMessage.from_image(CAMERA, seq, image).to_shm(ring)
            t1 = time.perf_counter()
            FrameMessage.from_parts(msg.to_parts(), shm_reader=reader).owned()
            t2 = time.perf_counter()
            writes.append(t1 - t0)
            copies.append(t2 - t1)
    finally:
        reader.close()
        ring.close()
    return 1e3 * statistics.median(writes), 1e3 * statistics.median(copies)


def _rate_row(kind: str, payload: str, results: list[dict[str, float]], n: int) -> BenchRow:
    fps = sorted(r["fps"] for r in results)
    got = min(r["received"] for r in results)
    note = f"median of {len(results)} x {n} frames (range {fps[0]:.0f}-{fps[-1]:.0f}), min received {got}/{n}"
    if payload != "inline":
        note += f", {max(r['overrun'] for r in results):.0f} overrun"
    note += f", {_PAYLOAD_NOTE[payload]}, publisher process"
    if kind == "ipc":
        note += "; target >= 500"
    name = f"1080p bgr8 {kind}{_PAYLOAD_NAME[payload]}"
    return row("transport", name, round(fps[len(fps) // 2], 1), "frames/s", note)


def run(cfg: Config, args: argparse.Namespace) -> list[BenchRow]:
    quick = bool(getattr(args, "quick", False))
    n = 300 if quick else 2000
    rows: list[BenchRow] = []
    runs = 1 if quick else 3
    for kind, new_endpoint in (("ipc", _ipc_endpoint), ("tcp", free_loopback_endpoint)):
        payloads = ("inline", "shm") if kind == "ipc" else ("inline",)
        # The first burst of a process pays for growing its heap and socket buffers: one short
        # burst warms up, then the median of ``runs`` bursts is the steady-state rate.
        for payload in payloads:
            throughput(new_endpoint(), min(n, 200), cfg.bus, payload=payload)
        results: dict[str, list[dict[str, float]]] = {p: [] for p in payloads}
        bare = []
        for _ in range(runs):  # alternated with plain pyzmq, which shows the machine's ceiling
            for payload in payloads:
                results[payload].append(throughput(new_endpoint(), n, cfg.bus, payload=payload))
            bare.append(throughput(new_endpoint(), n, cfg.bus, validate=False)["fps"])
        rows.extend(_rate_row(kind, p, results[p], n) for p in payloads)
        bare.sort()
        rows.append(
            row(
                "transport",
                f"1080p bgr8 {kind}, plain pyzmq",
                round(bare[len(bare) // 2], 1),
                "frames/s",
                f"inline payload, receiver without validation (range {bare[0]:.0f}-{bare[-1]:.0f})",
            )
        )
    write_ms, copy_ms = copy_out_ms(cfg.bus)
    rows.append(
        row(
            "transport",
            "shm payload write / copy-out",
            f"{write_ms:.2f} / {copy_ms:.2f}",
            "ms/frame",
            "1080p: the capture's write into the ring / LatestFrameReceiver's copy out of it (median of 200)",
        )
    )
    for shm in (False, True):
        f = freshness(_ipc_endpoint(), 2.0 if quick else 6.0, cfg.bus, shm=shm)
        what = ", shm payload" if shm else ""
        note = f"30 fps publisher, 100 ms/frame consumer, {f['frames']} frames, target < {f['interval_ms']:.1f} ms"
        rows.append(row("transport", f"latest-frame age p50{what}", round(f["p50"], 2), "ms", note))
        rows.append(row("transport", f"latest-frame age p95{what}", round(f["p95"], 2), "ms", ""))
        rows.append(row("transport", f"latest-frame age max{what}", round(f["max"], 2), "ms", ""))
        behind = (
            f"max {f['max_lag']} frame(s) behind the newest sent; {f['skipped']} skipped by design"
        )
        if shm:
            behind += f", {f['overrun']} overrun"
        rows.append(
            row(
                "transport",
                f"got the newest frame{what}",
                round(100 * f["newest_share"], 1),
                "%",
                behind,
            )
        )
    return rows
