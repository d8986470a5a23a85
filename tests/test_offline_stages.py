"""The offline job's stages around the model: frames read ahead and outputs written on their own
threads, through bounded queues, every frame in order; errors of either stage reach the job;
the per-stage clock. And the whole job (``track_video``, tiny-random models) writes one tracks
line per frame, in order, with its per-stage means."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest

from engine.core.types import FrameResult, ObjectResult
from engine.offline_stages import DEPTH, FramePrefetch, OutputWriter, StageClock
from engine.render import Renderer
from stream.errors import EndOfStreamError, SourceError
from stream.sources import FrameSource


class _Numbered(FrameSource):
    """Frames whose first pixel is their index; raises ``fail_at`` at that index."""

    def __init__(self, n: int, fail_at: int | None = None) -> None:
        self.n, self.fail_at, self.i = n, fail_at, 0
        self.reads = 0

    def read(self) -> np.ndarray:
        self.reads += 1
        if self.i == self.fail_at:
            raise SourceError("corrupt frame")
        if self.i >= self.n:
            raise EndOfStreamError("end")
        img = np.zeros((8, 8, 3), np.uint8)
        img[0, 0, 0] = self.i
        self.i += 1
        return img

    def describe(self) -> str:
        return "numbered"

    def close(self) -> None:
        pass


def _result(seq: int) -> FrameResult:
    mask = np.zeros((8, 8), bool)
    mask[2:5, 2:5] = True
    obj = ObjectResult(1, "ball", 2.0, (2.0, 2.0, 5.0, 5.0), mask, seq, "tracked")
    return FrameResult(seq, seq, 8, 8, "ball.", [obj], {"process_ms": 1.0})


def test_prefetch_gives_every_frame_in_order_then_none() -> None:
    clock = StageClock()
    pre = FramePrefetch(_Numbered(7), clock)
    got = []
    while (item := pre.next()) is not None:
        img, prepared = item
        assert prepared is None  # no prepare given
        got.append(int(img[0, 0, 0]))
    assert got == list(range(7))
    assert pre.next() is None
    pre.close()
    clock.frames = 7
    assert clock.means()["decode"] >= 0.0


def test_prefetch_reads_at_most_depth_ahead_and_stops_on_close() -> None:
    src = _Numbered(100)
    pre = FramePrefetch(src, StageClock())
    assert pre.next() is not None
    # one frame taken: the thread holds DEPTH in the queue and at most one more in hand
    deadline = 50
    while src.reads < DEPTH + 1 and deadline:
        threading.Event().wait(0.02)
        deadline -= 1
    threading.Event().wait(0.2)
    assert src.reads <= DEPTH + 2
    pre.close()
    assert src.reads <= DEPTH + 2


def test_prefetch_prepares_each_frame_on_its_thread() -> None:
    threads: list[str] = []

    def prepare(img: np.ndarray) -> object:
        threads.append(threading.current_thread().name)
        return ("prepared", int(img[0, 0, 0]))

    clock = StageClock()
    pre = FramePrefetch(_Numbered(5), clock, prepare)  # type: ignore[arg-type]
    got: list[object] = []
    while (item := pre.next()) is not None:
        got.append(item[1])
    pre.close()
    assert got == [("prepared", i) for i in range(5)]
    assert set(threads) == {"offline-decode"}
    clock.frames = 5
    assert "prepare" in clock.means()


def test_prefetch_raises_a_read_error_to_the_job() -> None:
    pre = FramePrefetch(_Numbered(10, fail_at=3), StageClock())
    assert [int(pre.next()[0][0, 0, 0]) for _ in range(3)] == [0, 1, 2]  # type: ignore[index]
    with pytest.raises(SourceError, match="corrupt"):
        pre.next()
    pre.close()


def test_output_writer_writes_every_frame_in_order(tmp_path: Path) -> None:
    clock = StageClock()
    path = tmp_path / "t.jsonl"
    with path.open("w") as f:
        out = OutputWriter("cam0", Renderer(), None, f, clock)
        for seq in range(25):
            out.put(np.zeros((8, 8, 3), np.uint8), _result(seq))
        out.close()
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert [h["seq"] for h in lines] == list(range(25))
    assert all(h["objects"][0]["id"] == 1 for h in lines)
    clock.frames = 25
    assert {"rle", "json"} <= set(clock.means())


def test_output_writer_raises_a_write_error(tmp_path: Path) -> None:
    class Full:
        def write(self, _: str) -> int:
            raise OSError(28, "No space left on device")

    out = OutputWriter("cam0", Renderer(), None, Full(), StageClock())  # type: ignore[arg-type]
    out.put(np.zeros((8, 8, 3), np.uint8), _result(0))
    with pytest.raises(OSError, match="No space"):
        out.close()


def test_track_video_writes_every_frame_in_order_with_stage_times(tmp_path: Path) -> None:
    from engine.offline import track_video
    from stream.config import load_config
    from stream.demo import DemoScene
    from stream.media import Mp4Writer

    video = tmp_path / "clip.mp4"
    with Mp4Writer(video, 10) as w:
        scene = DemoScene(96, 64, 2, seed=0, fps=10)
        for i in range(12):
            w.write(scene.render(i)[0])
    cfg = load_config(None, {"models.preset": "tiny-random", "engine.prompt": ""})
    tracks, out = tmp_path / "t.jsonl", tmp_path / "o.mp4"
    res = track_video(
        cfg, video, boxes=[((10.0, 10.0, 40.0, 40.0), 0)], out_mp4=out, tracks_jsonl=tracks
    )
    lines = [json.loads(x) for x in tracks.read_text().splitlines()]
    assert res.frames == 12 and [h["seq"] for h in lines] == list(range(12))
    assert all(len(h["objects"]) == 1 for h in lines)
    assert out.stat().st_size > 0
    for stage in ("decode", "prepare", "encode", "propagate", "lifecycle", "rle", "json", "render"):
        assert stage in res.stage_ms, stage
