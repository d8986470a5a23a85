"""``bench --parts output``: the robot outputs' rows (tiny sizes; the bench reports, tests only
check that every output is measured and the figures are sane)."""

from __future__ import annotations

from pathlib import Path

import pytest

from clients.bench import robot_outputs
from stream.wire import TracksMessage


def _number(value: object) -> float:
    """A bench row's numeric ``value`` (rows are JSON-like ``dict[str, object]``)."""
    assert isinstance(value, (int, float)), value
    return value


def _text(value: object) -> str:
    assert isinstance(value, str), value
    return value


def test_every_output_is_measured_at_each_object_count_and_the_recorder_rates(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[tuple[int, int]] = []

    def counting(_: Path) -> robot_outputs.Output:  # one more output: one more entry
        def write(msg: TracksMessage, jpeg: bytes) -> None:
            seen.append((len(msg.header.objects), len(jpeg)))

        return write, lambda: None

    monkeypatch.setattr(robot_outputs, "OUTPUTS", [*robot_outputs.OUTPUTS, ("counting", counting)])
    rows = robot_outputs.rows(quick=True, objects=(1, 3), size=(160, 120), fps=15.0)
    names = [r["name"] for r in rows]
    for n in (1, 3):
        for out in ("ROS 2 mapping", "MCAP write", "DDS publish", "Foxglove publish", "counting"):
            assert f"{out}, {n} object(s)" in names
    assert len(seen) == 20 and all(jpeg > 0 for _, jpeg in seen)  # 10 frames per count
    assert [n for n, _ in seen] == [1] * 10 + [3] * 10  # every frame shows all its objects
    timed = [(_text(r["name"]), _number(r["value"])) for r in rows if r["unit"] == "ms CPU/frame"]
    assert len(timed) == 10 and all(0 <= value < 5000 for _, value in timed)
    assert all(value > 0 for name, value in timed if not name.startswith("counting"))
    rates = {_text(r["name"]): _number(r["value"]) for r in rows if r["unit"] == "MB/minute"}
    assert set(rates) == {"recorder mp4", "recorder mcap"}
    # 30 frames of 160x120 at 15 frames/s: label images + JPEGs in MCAP outweigh H.264
    assert 0 < rates["recorder mp4"] < rates["recorder mcap"] < 100
