"""The engine's runtime state file: round trip, privacy, and what is ignored."""

from __future__ import annotations

import json
import stat
from pathlib import Path

from engine.state import EngineState, ManualObject, StateFile, snapshot
from engine.track_manager import TrackInfo


def test_state_round_trips_privately(tmp_path: Path) -> None:
    f = StateFile(tmp_path / "engine-state.json", "cam0")
    assert f.load() is None
    state = EngineState("ball. box.", (ManualObject(3, "cup", (1.0, 2.0, 30.0, 40.0)),))
    f.save(state)
    assert f.load() == state
    assert stat.S_IMODE(f.path.stat().st_mode) == 0o600
    assert StateFile(f.path, "cam1").load() is None  # another camera's


def test_malformed_state_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "engine-state.json"
    f = StateFile(path, "cam0")
    good = {"v": 1, "camera": "cam0", "prompt": "ball.", "objects": []}
    for bad in (
        b"[" * 100_000,
        b"\xff\xfe",
        json.dumps({**good, "v": 2}).encode(),
        json.dumps({**good, "prompt": "a" * 1001}).encode(),
        json.dumps(
            {**good, "objects": [{"id": 1, "label": "\ud800", "box": [1, 2, 3, 4]}]}
        ).encode(),
        json.dumps({**good, "objects": [{"id": 1, "label": "x", "box": [1, 2, 3]}]}).encode(),
    ):
        path.write_bytes(bad)
        assert f.load() is None, bad[:60]


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
