"""Shared-memory frame payloads (``bus.frames_shm``): the ring, the references on the wire, the
receiver's overrun check, malformed references, and the capture process end to end."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zmq

from stream import bus as zbus
from stream import shm
from stream.capture import Capture
from stream.config import load_config
from stream.errors import PromptcamError
from stream.receiver import LatestFrameReceiver
from stream.shm import ShmOverrun, ShmReader, ShmRing
from stream.wire import FrameMessage, WireError
from tests.conftest import wait_for

REPO = Path(__file__).resolve().parents[1]


def _img(seq: int, h: int = 48, w: int = 64) -> np.ndarray:
    rng = np.random.default_rng(seq)
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.fixture
def ring() -> Any:
    r = ShmRing("cam0", 48 * 64 * 3, 4)
    yield r
    r.close()


def test_ring_round_trip_and_unlink(ring: ShmRing) -> None:
    reader = ShmReader()
    assert ring.path.exists() and ring.path.parent == shm.SHM_DIR
    sent = [FrameMessage.from_image("cam0", s, _img(s)).to_shm(ring) for s in range(3)]
    for s, msg in enumerate(sent):
        parts = msg.to_parts()
        assert len(parts) == 2  # no payload part: the header names the slot
        assert json.loads(parts[1])["shm"] == {"name": ring.name, "slot": s, "gen": 2}
        got = FrameMessage.from_parts(parts, shm_reader=reader)
        assert got.seq == s and got.intact()
        assert np.array_equal(got.image(), _img(s))  # read in place
        assert not got.image().flags.writeable  # the receiver maps the ring read-only
        own = got.owned()
        assert own.shm is None and np.array_equal(own.image(), _img(s))
    path = ring.path
    ring.close()
    assert not path.exists()
    reader.close()


def test_reused_slot_is_an_overrun_never_a_torn_frame(ring: ShmRing) -> None:
    reader = ShmReader()
    first = FrameMessage.from_image("cam0", 0, _img(0)).to_shm(ring)
    got = FrameMessage.from_parts(first.to_parts(), shm_reader=reader)
    for s in range(1, ring.slots + 1):  # the writer laps the ring: slot 0 now holds frame 4
        ring.write(s, _img(s))
    assert not got.intact()
    with pytest.raises(ShmOverrun):
        got.owned()
    with pytest.raises(ShmOverrun):  # a late reference is refused before it is read
        FrameMessage.from_parts(first.to_parts(), shm_reader=reader)
    reader.close()


def _shm_parts(ring: ShmRing, **header: Any) -> list[bytes]:
    msg = FrameMessage.from_image("cam0", 0, _img(0)).to_shm(ring)
    h = json.loads(msg.to_parts()[1])
    h.update(header)
    return [b"frame.cam0", json.dumps(h).encode()]


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"shm": {"name": "../../etc/passwd", "slot": 0, "gen": 2}}, "bad_field"),
        ({"shm": {"name": "promptcam-gone-1-00", "slot": 0, "gen": 2}}, "bad_shm"),
        ({"shm": {"slot": 0, "gen": 2}}, "bad_field"),
        ({"shm": {"name": None, "slot": 0, "gen": 2}}, "bad_field"),
        ({"encoding": "jpeg"}, "bad_field"),
        ({"width": 32}, "bad_shm"),  # the ring holds frames of another size
        ({"height": 4800}, "bad_shm"),
    ],
)
def test_bad_references_are_rejected(ring: ShmRing, change: dict[str, Any], reason: str) -> None:
    parts = _shm_parts(ring, **change)
    with pytest.raises(WireError) as e:
        FrameMessage.from_parts(parts, shm_reader=ShmReader())
    assert e.value.reason == reason


@pytest.mark.parametrize("content", [b"", b"x" * 10, b"\0" * 8192])
def test_a_file_that_is_not_a_ring_is_rejected(ring: ShmRing, content: bytes) -> None:
    junk = shm.SHM_DIR / f"promptcam-junk-{os.getpid()}-00"
    junk.write_bytes(content)
    try:
        parts = _shm_parts(ring, shm={"name": junk.name, "slot": 0, "gen": 2})
        with pytest.raises(WireError, match="not a frame ring") as e:
            FrameMessage.from_parts(parts, shm_reader=ShmReader())
        assert e.value.reason == "bad_shm"
    finally:
        junk.unlink()


def test_slot_index_outside_segment_and_part_count(ring: ShmRing) -> None:
    parts = _shm_parts(ring)
    h = json.loads(parts[1])
    h["shm"]["slot"] = ring.slots
    with pytest.raises(WireError, match="outside segment") as e:
        FrameMessage.from_parts([parts[0], json.dumps(h).encode()], shm_reader=ShmReader())
    assert e.value.reason == "bad_shm"
    with pytest.raises(WireError) as e:
        FrameMessage.from_parts([*parts, b"x"], shm_reader=ShmReader())
    assert e.value.reason == "bad_parts"
    with pytest.raises(WireError) as e:  # a receiver without a reader says why
        FrameMessage.from_parts(parts)
    assert e.value.reason == "shm_unsupported"


def test_receiver_copies_out_counts_overrun_and_rejects(
    ctx: zmq.Context[Any], ipc_endpoint: str, ring: ShmRing
) -> None:
    bus = load_config(None, {"bus.frames": ipc_endpoint}).bus
    pub = zbus.bind(ctx, zmq.PUB, ipc_endpoint, bus)
    with LatestFrameReceiver(ipc_endpoint, "cam0", bus=bus, ctx=ctx) as rx:

        def send(seq: int) -> None:
            msg = FrameMessage.from_image("cam0", seq, _img(seq)).to_shm(ring)
            pub.send_multipart(msg.to_parts(), copy=False)

        def first() -> FrameMessage | None:
            send(0)
            return rx.get(timeout=0.1)

        got = wait_for(first, what="first shm frame")
        assert got.shm is None and np.array_equal(got.image(), _img(0))  # its own copy
        send(1)
        # the drain thread holds frame 1, read and checked (a private look: no public hook)
        wait_for(lambda: rx._slot is not None and rx._slot.seq == 1, what="frame 1 held")
        for s in range(2, 2 + ring.slots):  # frame 1's slot is reused before get() copies it
            ring.write(s, _img(s))
        assert rx.get(timeout=0.3) is None
        assert rx.stats.overrun == 1
        # malformed references: rejected and counted, the receiver keeps working
        pub.send_multipart(
            _shm_parts(ring, shm={"name": "promptcam-nope-1-00", "slot": 0, "gen": 2})
        )
        pub.send_multipart(_shm_parts(ring, shm={"name": "/dev/zero", "slot": 0, "gen": 2}))
        wait_for(lambda: rx.stats.rejected_total >= 2, what="rejections")
        assert set(rx.stats.rejected) == {"bad_shm", "bad_field"}
        send(7)
        later = wait_for(lambda: rx.get(timeout=0.1), what="frame after rejections")
        assert later.seq == 7 and np.array_equal(later.image(), _img(7))
        # a restarted capture makes a new ring (new name, seq from 0): read without a hitch
        restarted = ShmRing("cam0", 48 * 64 * 3, 4)
        try:
            msg = FrameMessage.from_image("cam0", 0, _img(100)).to_shm(restarted)
            pub.send_multipart(msg.to_parts(), copy=False)
            again = wait_for(lambda: rx.get(timeout=0.1), what="frame from the new ring")
            assert again.seq == 0 and np.array_equal(again.image(), _img(100))
            assert rx.stats.seq_resets == 1
        finally:
            restarted.close()
    pub.close(0)


def test_sweep_removes_segments_of_dead_processes_only(tmp_path: Path) -> None:
    dead = shm.SHM_DIR / "promptcam-cam9-4194999-deadbeef"  # above any pid_max
    alive = shm.SHM_DIR / f"promptcam-cam9-{os.getpid()}-cafe0000"
    for p in (dead, alive):
        p.write_bytes(b"\0" * 64)
    try:
        removed = shm.sweep_stale()
        assert dead.name in removed and not dead.exists()
        assert alive.exists()
    finally:
        dead.unlink(missing_ok=True)
        alive.unlink(missing_ok=True)


def test_config_refuses_shm_across_hosts() -> None:
    with pytest.raises(PromptcamError, match="frames_shm"):
        load_config(None, {"bus.frames": "tcp://10.1.2.3:5550", "bus.frames_shm": "true"})
    cfg = load_config(None, {"bus.frames": "tcp://127.0.0.1:5550", "bus.frames_shm": "true"})
    assert cfg.bus.frames_shm


def test_capture_falls_back_inline_when_ring_cannot_be_made(
    ctx: zmq.Context[Any], ipc_endpoint: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(shm, "SHM_DIR", tmp_path / "no-such-dir")
    cfg = load_config(
        None,
        {
            "bus.frames": ipc_endpoint,
            "bus.frames_shm": "true",
            "source.uri": "demo",
            "source.width": "64",
            "source.height": "48",
        },
    )
    stop = threading.Event()
    cap = Capture(cfg, stop, ctx)
    with LatestFrameReceiver(ipc_endpoint, "cam0", bus=cfg.bus, ctx=ctx) as rx:
        t = threading.Thread(target=cap.run, daemon=True)
        t.start()
        try:
            got = wait_for(lambda: rx.get(timeout=0.1), what="inline frame")
        finally:
            stop.set()
            t.join(10)
    assert got.image().shape == (48, 64, 3)
    assert cap.stats.payload.startswith("inline (shm failed: cannot create")


def test_capture_process_publishes_through_shm_and_unlinks_on_sigterm(
    ctx: zmq.Context[Any], ipc_endpoint: str, tmp_path: Path
) -> None:
    cmd = [
        sys.executable,
        "-m",
        "clients.cli",
        "capture",
        "--source",
        "demo",
        "--set",
        f"bus.frames={ipc_endpoint}",
        "--set",
        "bus.frames_shm=true",
        "--set",
        "source.fps=60",
    ]
    log = tmp_path / "capture.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
    try:
        with LatestFrameReceiver(ipc_endpoint, "cam0", ctx=ctx) as rx:
            frames: list[FrameMessage] = []
            while len(frames) < 10:
                msg = wait_for(lambda: rx.get(timeout=0.1), timeout=30, what="shm frames")
                frames.append(msg)
            assert [m.seq for m in frames] == sorted({m.seq for m in frames})
            assert all(m.shm is None and m.image().std() > 0 for m in frames)
            assert rx.stats.rejected_total == 0 and rx.stats.overrun == 0
        segments = list(shm.SHM_DIR.glob(f"promptcam-cam0-{proc.pid}-*"))
        assert len(segments) == 1
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
        assert not segments[0].exists()  # unlinked on a clean stop
        assert "frame payloads in shared memory" in log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
