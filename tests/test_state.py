"""The engine's runtime state file: round trip, privacy, and what is ignored."""

from __future__ import annotations

import json
import stat
from pathlib import Path

from engine.state import EngineState, ManualObject, StateFile, snapshot
from engine.track_manager import TrackInfo


def test_state_round_trips_privately(tmp_path: Path) -> None:
    f = StateFile(tmp_path / "engine-state.json")
    assert f.load() == {}
    states = {
        "cam0": EngineState("ball. box.", (ManualObject(3, "cup", (1.0, 2.0, 30.0, 40.0)),)),
        "door": EngineState("person.", ()),
    }
    f.save(states)
    assert f.load() == states
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
        assert f.load() == {}, bad[:60]
    path.write_bytes(doc())
    assert f.load() == {"cam0": EngineState("ball.", ())}


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
