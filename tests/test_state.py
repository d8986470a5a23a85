"""The engine's runtime state file: round trip, privacy, and what is ignored."""

from __future__ import annotations

import json
import logging
import os
import shutil
import stat
import subprocess
import sys
import threading
import time
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from engine.state import (
    MAX_STATE_BYTES,
    EngineState,
    KeptState,
    ManualObject,
    StateFile,
    StateInUseError,
    snapshot,
)
from engine.track_manager import TrackInfo
from stream.config import Config, ConfigError, load_config
from stream.wire import is_camera_name

REPO = Path(__file__).resolve().parent.parent


def test_state_round_trips_privately(tmp_path: Path) -> None:
    f = StateFile(tmp_path / "engine-state.json")
    assert f.load() == KeptState()
    states = {
        "cam0": EngineState("ball. box.", (ManualObject(3, "cup", (1.0, 2.0, 30.0, 40.0)),)),
        "door": EngineState("person.", ()),
    }
    assert f.save(states, {"cam0": 101, "gone": 7})
    assert f.load() == KeptState(states, {"cam0": 101, "gone": 7})
    assert stat.S_IMODE(f.path.stat().st_mode) == 0o600


def test_malformed_state_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "engine-state.json"
    f = StateFile(path)
    cam = {"prompt": "ball.", "objects": []}

    def doc(**c: object) -> bytes:
        return json.dumps({"v": 1, "cameras": {"cam0": {**cam, **c}}}).encode()

    for bad in (
        b"[" * 100_000,
        b"\xff\xfe",
        json.dumps({"v": 2, "cameras": {"cam0": cam}}).encode(),
        json.dumps({"v": 1, "cameras": {"bad name!": cam}}).encode(),
        doc(prompt="a" * 1001),
        doc(objects=[{"id": 1, "label": "\ud800", "box": [1, 2, 3, 4]}]),
        doc(objects=[{"id": 1, "label": "x", "box": [1, 2, 3]}]),
    ):
        path.write_bytes(bad)
        assert f.load().cameras == {}, bad[:60]
    path.write_bytes(doc())
    assert f.load() == KeptState({"cam0": EngineState("ball.", ())})


def test_snapshot_keeps_live_manual_tracks_with_their_boxes() -> None:
    before = EngineState("ball.", (ManualObject(2, "cup", (5.0, 5.0, 9.0, 9.0)),))
    tracks = [
        TrackInfo(1, "ball", "tracked", 4, 1.0, (0.0, 0.0, 10.0, 10.0), False),
        TrackInfo(2, "cup", "lost", 4, -1.0, None, True),  # lost: keeps its last written box
        TrackInfo(3, "mug", "tracked", 1, 1.0, (1.0, 2.0, 3.0, 4.0), True),
        TrackInfo(4, "pen", "lost", 1, -1.0, None, True),  # never written with a box: dropped
    ]
    assert snapshot("ball.", tracks, before) == EngineState(
        "ball.",
        (
            ManualObject(2, "cup", (5.0, 5.0, 9.0, 9.0)),
            ManualObject(3, "mug", (1.0, 2.0, 3.0, 4.0)),
        ),
    )


# ---------------------------------------------------------------------------- defects (issue 23)


def _doc(cameras: dict[str, Any], **extra: Any) -> bytes:
    return json.dumps({"v": 1, "cameras": cameras, **extra}).encode()


def test_one_bad_camera_entry_fails_alone(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A camera named "yard\\n" passed the config but not the state check, and one bad entry
    discarded every camera's state: one name schema, and a bad entry is left out alone."""
    with pytest.raises(ValidationError):
        Config(camera="yard\n")
    site = tmp_path / "site.yaml"
    site.write_text('cameras:\n  "yard\\n": {}\n')
    with pytest.raises(ConfigError, match="camera name 'yard"):
        load_config(site)
    assert not is_camera_name("yard\n") and is_camera_name("yard")
    path = tmp_path / "engine-state.json"
    good = {"prompt": "ball.", "objects": [{"id": 4, "label": "cup", "box": [1, 2, 3, 4]}]}
    path.write_bytes(
        _doc(
            {
                "yard\n": good,
                "cam0": good,
                "cam1": {**good, "prompt": "a" * 1001},
                "cam2": {**good, "objects": [{"id": 1, "label": "x", "box": [1, 2, 3]}]},
                "door": {"prompt": "person.", "objects": []},
            },
            ids={"cam0": 201, "yard\n": 5, "cam1": "x", "door": 0},
        )
    )
    with caplog.at_level(logging.WARNING, logger="engine.state"):
        kept = StateFile(path).load()
    assert kept.cameras == {
        "cam0": EngineState("ball.", (ManualObject(4, "cup", (1.0, 2.0, 3.0, 4.0)),)),
        "door": EngineState("person.", ()),
    }
    assert kept.ids == {"cam0": 201}
    for name in ("'yard\\n'", "'cam1'", "'cam2'"):
        assert f"camera {name} left out" in caplog.text, name


def test_state_file_is_read_only_up_to_its_limit(tmp_path: Path) -> None:
    """A 3 GiB state file was read whole before its 1 MiB limit was checked (3.37 GB RSS)."""
    path = tmp_path / "engine-state.json"
    with path.open("wb") as f:
        f.write(_doc({}))
        f.truncate(64 << 20)  # sparse: 64 MiB on no disk
    tracemalloc.start()
    try:
        kept = StateFile(path).load()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert kept == KeptState()
    assert peak < 3 * MAX_STATE_BYTES, f"{peak / 2**20:.1f} MiB allocated to read the state"


def test_state_file_that_is_a_fifo_is_refused_at_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A FIFO as state file: the engine never answered in 40 s (blocked opening it)."""
    path = tmp_path / "engine-state.json"
    os.mkfifo(path)
    got: list[KeptState] = []
    t = threading.Thread(target=lambda: got.append(StateFile(path).load()), daemon=True)
    with caplog.at_level(logging.WARNING, logger="engine.state"):
        t.start()
        t.join(10)
    if t.is_alive():  # the old reader blocks in open(): a writer lets it go
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
        t.join(10)
        pytest.fail("reading a FIFO state file blocked")
    assert got == [KeptState()] and "not a regular file" in caplog.text
    # the engine's next save replaces it with a regular file
    assert StateFile(path).save({"cam0": EngineState("ball.")})
    assert StateFile(path).load().cameras == {"cam0": EngineState("ball.")}


def test_writer_never_writes_what_the_reader_refuses(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """14 cameras x 256 manual objects made a state over 1 MiB that the next engine refused
    whole: the writer keeps what fits and says what it left out."""
    path = tmp_path / "engine-state.json"
    label = "a long label " * 15
    states = {
        f"cam{c}": EngineState(
            "ball. box.",
            tuple(
                ManualObject(i, label, (1.0 / 3, 2.0 / 3, 100.0 / 7, 200.0 / 7))
                for i in range(1, 257)
            ),
        )
        for c in range(14)
    }
    with caplog.at_level(logging.WARNING, logger="engine.state"):
        assert StateFile(path).save(states, {f"cam{c}": 300 for c in range(14)})
    assert path.stat().st_size <= MAX_STATE_BYTES
    kept = StateFile(path).load()
    assert set(kept.cameras) == set(states) and kept.ids == {f"cam{c}": 300 for c in range(14)}
    assert all(st.prompt == "ball. box." for st in kept.cameras.values())
    n = sum(len(st.objects) for st in kept.cameras.values())
    assert 14 * 200 < n < 14 * 256, n  # most of them fit
    for name, st in kept.cameras.items():  # the oldest objects of each camera are kept
        assert [o.id for o in st.objects] == list(range(1, len(st.objects) + 1)), name
    assert "left out" in caplog.text and "manual object(s) of camera cam" in caplog.text


def test_two_engines_cannot_share_a_state_file(tmp_path: Path) -> None:
    """Two engines sharing one state file overwrote each other: the second one is refused."""
    path = tmp_path / "engine-state.json"
    first, second = StateFile(path), StateFile(path)
    first.lock()
    t0 = time.monotonic()
    with pytest.raises(StateInUseError, match=f"in use by another engine \\(pid {os.getpid()}\\)"):
        second.lock(wait_s=0.2)
    assert time.monotonic() - t0 < 5
    first.unlock()
    second.lock(wait_s=0.2)  # free again once the first lets go (or dies)
    second.unlock()


# In a user + mount namespace (no root needed), a tmpfs of 64 KiB nearly filled by a filler file.
FULL_DISK_SCRIPT = (
    'mount -t tmpfs -o size=64k tmpfs "$1" && head -c 50000 /dev/zero > "$1/filler" || exit 9; '
    'disk=$1; shift; "$@"; rc=$?; ls -a "$disk"; exit $rc'
)
SAVE_BIG_STATE = """
import sys
from pathlib import Path
from engine.state import EngineState, ManualObject, StateFile
objs = tuple(ManualObject(i, "cup" * 20, (1.0, 2.0, 3.0, 4.0)) for i in range(1, 257))
ok = StateFile(Path(sys.argv[1]) / "engine-state.json").save({"cam0": EngineState("ball.", objs)})
print("saved" if ok else "not saved")
"""


def test_full_disk_leaves_no_temporary_file(tmp_path: Path) -> None:
    """A full disk left a 0-byte temporary file beside the state file."""
    if shutil.which("unshare") is None:
        pytest.skip("'unshare' is not installed")
    disk = tmp_path / "disk"
    disk.mkdir()
    r = subprocess.run(
        ["unshare", "-rm", "sh", "-c", FULL_DISK_SCRIPT, "sh", str(disk),
         sys.executable, "-c", SAVE_BIG_STATE, str(disk)],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    if r.returncode == 9:
        pytest.skip(f"no tmpfs in a user namespace: {r.stderr.strip()[:200]}")
    assert r.returncode == 0, r.stderr
    assert "not saved" in r.stdout and "cannot write engine state" in r.stderr, r.stdout
    listing = r.stdout.split()
    assert "filler" in listing and not [n for n in listing if n.endswith(".tmp")], listing
    assert "engine-state.json" not in listing
