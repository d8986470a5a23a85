"""Object IDs are never reused: not within an engine run, not across engine restarts (issue 23),
and every tracks header names the engine start (``epoch``)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from engine.ids import IdAllocator, IdBlock, IdReservations
from engine.models.sam2 import LoadedSam2, load_sam2
from engine.pipeline import MultiCameraEngine
from engine.segmenters.sam2 import Sam2Kernel
from engine.service import EngineProcess
from engine.state import EngineState, ManualObject, StateFile
from engine.track_manager import TrackManager
from stream import bus as zbus
from stream.config import EngineConfig, ModelsConfig, load_config
from stream.errors import RequestError
from stream.wire import TracksMessage, WireError
from tests.conftest import tcp_endpoint, wait_for

REPO = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "clients.cli"]
ENV = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


class Crash(BaseException):
    """The process dies here (nothing after it runs)."""


def test_a_crash_between_allocation_and_persistence_cannot_reuse_an_id(tmp_path: Path) -> None:
    """A block is persisted before any of its IDs is handed out: an engine killed at any point
    (here: while persisting, and after handing out IDs but before its next state save)
    restarts above every ID it gave."""
    f = StateFile(tmp_path / "engine-state.json")
    crash_when_persisting = [False]

    def persist(res: IdReservations) -> bool:
        if crash_when_persisting[0]:
            raise Crash
        return f.save({}, res.as_dict())

    res = IdReservations(block=10)
    res.attach({}, lambda: persist(res))
    ids = res.allocator("cam0")
    assert f.load().ids == {}  # nothing reserved before the first ID is wanted
    given = [ids.take() for _ in range(10)]
    assert given == list(range(1, 11)) and f.load().ids == {"cam0": 11}
    crash_when_persisting[0] = True
    with pytest.raises(Crash):
        ids.take()  # the 11th ID needs a new block: the engine dies writing it
    # the engine died: a new one starts from what the file says
    for _ in range(2):
        res = IdReservations(block=10)
        res.attach(f.load().ids, lambda r=res: f.save({}, r.as_dict()))  # type: ignore[misc]
        ids = res.allocator("cam0")
        fresh = [ids.take() for _ in range(3)]
        assert min(i for i in fresh if i is not None) > max(i for i in given if i is not None)
        given += fresh  # killed after handing these out, before any other save
    assert given[-6:] == [11, 12, 13, 21, 22, 23]  # each restart skips the rest of a block


def test_reservations_continue_a_re_added_camera_and_leases_stay_in_their_blocks() -> None:
    res = IdReservations(block=100)
    a = res.allocator("cam0")
    assert [a.take(), a.take()] == [1, 2] and a.next_id == 3 and a.ids_left is None
    res.release("cam0", a.next_id)  # camera removed
    b = res.allocator("cam0")  # and added again: its numbering goes on, nothing is reused
    assert b.next_id == 3 and b.take() == 3
    assert res.allocator("other").take() == 1  # IDs are per camera
    leased = IdAllocator(10, 12)
    assert [leased.take(), leased.take(), leased.take()] == [10, 11, None]
    leased.add_block(20, 22)
    assert leased.take() == 20 and leased.ids_left == 1
    with pytest.raises(RequestError, match="not leased"):
        b.add_block(500, 600)
    with pytest.raises(ValueError):
        IdBlock(5, 5)
    # the track manager takes its IDs from the allocator it is given
    m = TrackManager(EngineConfig(prompt=""), ids=res.allocator("cam1", first=7))
    assert m.add_manual("cup", (0, 0, 10, 10)) == 7 and m.next_id == 8


def test_tracks_header_carries_the_epoch_and_older_messages_parse() -> None:
    msg = TracksMessage.build("cam0", 1, 2, 64, 48, "ball.", [], epoch="20261206T043000Z-0a1b2c3d")
    parsed = TracksMessage.from_parts(msg.to_parts())
    assert parsed.header.epoch == "20261206T043000Z-0a1b2c3d"
    old = TracksMessage.build("cam0", 1, 2, 64, 48, "ball.", [])  # no epoch: left out
    assert "epoch" not in json.loads(old.to_parts()[1])
    assert TracksMessage.from_parts(old.to_parts()).header.epoch is None
    bad = json.loads(msg.to_parts()[1])
    for epoch in ("", "x" * 65, "a b", 7):
        with pytest.raises(WireError, match="epoch"):
            TracksMessage.from_parts([b"tracks.cam0", json.dumps({**bad, "epoch": epoch}).encode()])


# ---------------------------------------------------------------------------- engine process


@pytest.fixture(scope="module")
def loaded() -> LoadedSam2:
    return load_sam2(ModelsConfig(preset="tiny-random", device="cpu"))


def _proc(tmp_path: Path, loaded: LoadedSam2, ctx: zmq.Context[Any]) -> EngineProcess:
    site = tmp_path / "site.yaml"
    site.write_text(
        f"bus: {{frames: '{tcp_endpoint()}', tracks: '{tcp_endpoint()}', "
        f"annotated: '{tcp_endpoint()}', control: '{tcp_endpoint()}'}}\n"
        "models: {preset: tiny-random, device: cpu}\n"
        f"engine: {{prompt: '', state_file: '{tmp_path / 'engine-state.json'}'}}\n"
        "cameras:\n  left: {}\n  right: {}\n"
    )
    multi = MultiCameraEngine(Sam2Kernel(loaded), None, background_grounding=True)
    return EngineProcess(load_config(site), multi, ctx=ctx)


def test_kept_objects_stay_in_the_state_file_until_restored(
    tmp_path: Path, loaded: LoadedSam2, ctx: zmq.Context[Any]
) -> None:
    """After a restart, a camera with no frame yet had its kept manual objects wiped from the
    state file by the next save; and the restarted engine's IDs start above the kept ones."""
    f = StateFile(tmp_path / "engine-state.json")
    kept = {
        "left": EngineState("", (ManualObject(14, "wrench", (10.0, 10.0, 40.0, 40.0)),)),
        "right": EngineState("", (ManualObject(3, "cup", (5.0, 5.0, 20.0, 20.0)),)),
    }
    f.save(kept, {"left": 101, "right": 101})
    proc = _proc(tmp_path, loaded, ctx)
    try:
        proc._save_state()  # no camera has had a frame
        assert f.load().cameras == kept
        assert proc.engine.camera("left").manager.next_id == 101
        with pytest.raises(Exception, match="in use by another engine"):
            _proc(tmp_path, loaded, ctx)  # a second engine on the same state file
    finally:
        proc.close()
    assert f.load().cameras == kept


# ---------------------------------------------------------------------------- real processes


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for p in started:
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
            p.wait(10)


@pytest.mark.slow
def test_ids_are_never_reused_across_an_engine_killed_with_sigkill(
    tmp_path: Path, procs: list[subprocess.Popen[str]], ctx: zmq.Context[Any]
) -> None:
    """IDs given (by the detector and by control ``add_object``) before ``kill -9`` of the
    engine are never given again by the engine that replaces it: its IDs are all greater, the
    kept manual object is back under a new ID, and the tracks headers' epoch changed. A second
    engine on the same state file is refused with one line, exit 2, before it loads models."""
    eps = {k: tcp_endpoint() for k in ("frames", "tracks", "annotated", "control")}
    sets = [a for k, v in eps.items() for a in ("--set", f"bus.{k}={v}")]
    sets += ["--set", f"engine.state_file={tmp_path / 'engine-state.json'}"]
    capture = [*CLI, "capture", "--source", "demo", "--fps", "10", *sets]
    capture += ["--set", "source.width=160", "--set", "source.height=120"]
    procs.append(subprocess.Popen(capture, env=ENV, stderr=subprocess.DEVNULL, text=True))
    engine_argv = [
        *CLI, "engine", "--models", "tiny-random", "--prompt", "ball. box.", *sets,
        "--set", "engine.box_threshold=0.0", "--set", "engine.text_threshold=0.0",
        "--set", "engine.reground_every_frames=3", "--set", "engine.max_objects=6",
    ]  # fmt: skip
    sub = zbus.connect(ctx, zmq.SUB, eps["tracks"], subscribe=[b"tracks.cam0"])

    def next_msg() -> TracksMessage | None:
        parts = zbus.recv_multipart_timeout(sub, 500, copy=True)
        return TracksMessage.from_parts(parts) if parts else None

    def start_engine() -> tuple[subprocess.Popen[str], Path]:
        log = tmp_path / f"engine{len(procs)}.log"  # a file: a full pipe would stall it
        with log.open("w") as err:
            p = subprocess.Popen(engine_argv, env=ENV, stderr=err, text=True)
        procs.append(p)
        return p, log

    first, _ = start_engine()
    msg = wait_for(next_msg, timeout=90, what="tracks from the first engine")
    epoch = msg.header.epoch
    assert epoch
    added = zbus.request(
        eps["control"], {"cmd": "add_object", "box": [20, 20, 60, 60], "label": "wrench"}
    )
    assert added["ok"], added
    seen: set[int] = set()

    def three_seen() -> bool:
        m = next_msg()
        if m is None:
            return False
        seen.update(o.id for o in m.header.objects)
        return len(seen) >= 3

    wait_for(
        three_seen,
        timeout=60,
        what="detector objects and the manual one",
    )
    assert added["id"] in seen
    wait_for(
        lambda: json.loads((tmp_path / "engine-state.json").read_text())["cameras"]["cam0"][
            "objects"
        ],
        timeout=20,
        what="the manual object in the state file",
    )

    second, second_log = start_engine()  # the same state file while the first engine runs
    second.wait(60)
    err = second_log.read_text()
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert second.returncode == 2 and "in use by another engine" in lines[-1], err[-2000:]
    assert "Traceback" not in err and first.poll() is None

    stats = zbus.request(eps["control"], {"cmd": "stats"})["stats"]
    given_before = stats["cameras"]["cam0"]["next_id"] - 1  # every ID given so far
    assert given_before >= max(seen)
    first.send_signal(signal.SIGKILL)
    first.wait(10)

    start_engine()
    msg = wait_for(
        lambda: (m := next_msg()) is not None and m.header.epoch != epoch and m,
        timeout=90,
        what="tracks from the restarted engine",
    )
    after: dict[int, str] = {}
    wait_for(
        lambda: (
            (m := next_msg()) is not None
            and (
                after.update({o.id: o.label for o in m.header.objects})
                or "wrench" in after.values()
            )
        ),
        timeout=60,
        what="the kept manual object, restored",
    )
    assert msg.header.epoch and msg.header.epoch != epoch
    assert min(after) > given_before, (sorted(after), given_before)
