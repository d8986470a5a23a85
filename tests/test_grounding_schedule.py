"""``engine.camera_grounding.GroundingSchedule``: re-grounding by processed frames and by the
frames' capture times (not the engine's clock), time going back, and at once after a prompt."""

from __future__ import annotations

from engine.camera_grounding import GroundingSchedule
from engine.camera_stats import EngineCounters
from stream.config import EngineConfig

SIZE = (640, 480)


def _due_frames(
    schedule: GroundingSchedule, times_ns: list[int], retire_at: int | None = None
) -> list[int]:
    """Feed frames captured at ``times_ns``; the indices where a grounding was due (then done).
    ``retire_at``: the frame after which a track retires with its object in view."""
    due = []
    for i, t in enumerate(times_ns):
        schedule.frame(t)
        if schedule.overdue(True, SIZE) > 0:
            due.append(i)
            schedule.mark_grounded()
        if i == retire_at:
            schedule.retired()
        schedule.frames_since += 1
    return due


def _schedule(**engine: object) -> GroundingSchedule:
    return GroundingSchedule("cam0", EngineConfig.model_validate(engine), EngineCounters())


def test_seconds_are_capture_time_so_a_camera_dropping_frames_is_grounded_as_often() -> None:
    """Every 1 s of capture time: a 15 frames/s camera every 15 frames, one that delivers every
    3rd frame every 5: the same seconds, whatever the engine's own clock did (these frames went
    through in microseconds: a wall-clock schedule would never be due)."""
    full = [round(i * 1e9 / 15) for i in range(61)]
    third = full[::3]
    assert _due_frames(_schedule(reground_every_frames=0, reground_every_s=1.0), full) == [
        15,
        30,
        45,
        60,
    ]
    assert _due_frames(_schedule(reground_every_frames=0, reground_every_s=1.0), third) == [
        5,
        10,
        15,
        20,
    ]


def test_frames_and_seconds_whichever_comes_first_and_time_going_back() -> None:
    times = [round(i * 1e9 / 15) for i in range(40)]
    assert _due_frames(_schedule(reground_every_frames=10), times) == [10, 20, 30]
    # every 10 frames or every 0.5 s (7.5 frames): the seconds come first
    both = _due_frames(_schedule(reground_every_frames=10, reground_every_s=0.5), times)
    assert both == [8, 16, 24, 32]
    # a file that loops: capture time back to 0 at frame 20 counts afresh from there
    looped = times[:20] + times[:20]
    s = _schedule(reground_every_frames=0, reground_every_s=1.0)
    assert _due_frames(s, looped) == [15, 35]


def test_at_once_when_due_and_nothing_when_not_ready() -> None:
    s = _schedule(reground_every_frames=0)
    s.frame(0)
    assert s.overdue(True, SIZE) == 0.0
    s.due = True  # a prompt change or a refused job
    assert s.overdue(False, SIZE) == 0.0 and s.overdue(True, SIZE) == float("inf")
    s.mark_grounded()
    assert s.overdue(True, SIZE) == 0.0


def test_a_retired_track_brings_the_next_grounding_forward_once() -> None:
    """A track retires on frame 3 (its mask slid off its object, which stays in view untracked):
    with ``reground_after_retire_frames`` 4 the next grounding comes 4 frames after the last one
    instead of 30; the one after that is on the schedule again. Off (0): the schedule alone."""
    times = [round(i * 1e9 / 15) for i in range(70)]

    def due(after: int) -> list[int]:
        s = _schedule(reground_every_frames=30, reground_after_retire_frames=after)
        return _due_frames(s, times, retire_at=3)

    assert due(0) == [30, 60]
    assert due(4) == [4, 34, 64]
    assert due(10) == [10, 40]
