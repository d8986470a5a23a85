"""``promptcam track`` and ``promptcam engine`` end to end as real processes, with tiny-random
SAM 2 and tiny-random Grounding DINO (the real model code paths, random weights)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import pytest
import zmq

from stream import bus as zbus
from stream.demo import DemoScene
from stream.media import Mp4Writer
from stream.wire import TracksMessage
from tests.conftest import tcp_endpoint, wait_for

CLI = [sys.executable, "-m", "clients.cli"]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}


def run_cli(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout, env=ENV)


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("video") / "demo.mp4"
    scene = DemoScene(320, 240, 3, seed=2, fps=15)
    with Mp4Writer(path, 15) as w:
        for i in range(12):
            w.write(scene.render(i)[0])
    return path


def read_jsonl(path: Path) -> list[TracksMessage]:
    return [TracksMessage.from_json(line) for line in path.read_text().splitlines()]


def test_track_boxes_every_frame_no_detector(video: Path, tmp_path: Path) -> None:
    tracks, out = tmp_path / "t.jsonl", tmp_path / "o.mp4"
    r = run_cli(
        "track",
        str(video),
        "--models",
        "tiny-random",
        "--box",
        "10,10,80,80",
        "--box",
        "150,100,220,170@4",
        "--tracks",
        str(tracks),
        "--out",
        str(out),
    )
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.splitlines()[-1])["frames"] == 12
    msgs = read_jsonl(tracks)
    assert [m.header.seq for m in msgs] == list(range(12))  # every frame, none dropped
    ids = [{o.id for o in m.header.objects} for m in msgs]
    assert len(ids[0]) == 1 and len(ids[4]) == 2 and ids[3] == ids[0]
    second = (ids[4] - ids[0]).pop()
    born = next(o for o in msgs[4].header.objects if o.id == second)
    assert born.state == "new" and born.age == 0
    assert all(o.mask.size == [240, 320] for m in msgs for o in m.header.objects)
    assert "Grounding" not in r.stderr  # a run with only boxes loads no detector
    with av.open(str(out)) as c:
        assert sum(1 for _ in c.decode(video=0)) == 12


def test_track_text_prompt_runs_real_grounding_dino(video: Path, tmp_path: Path) -> None:
    tracks = tmp_path / "t.jsonl"
    r = run_cli(
        "track",
        str(video),
        "--models",
        "tiny-random",
        "--prompt",
        "Ball. BOX. ball.",
        "--tracks",
        str(tracks),
        "--set",
        "engine.box_threshold=0.0",
        "--set",
        "engine.text_threshold=0.0",
        "--set",
        "engine.reground_every_frames=4",
    )
    assert r.returncode == 0, r.stderr
    msgs = read_jsonl(tracks)
    assert len(msgs) == 12 and msgs[0].header.prompt == "ball. box."
    labels = {o.label for m in msgs for o in m.header.objects}
    assert labels and labels <= {"ball", "box"}


@pytest.mark.parametrize(
    "args,needle",
    [
        (["track", "/nonexistent.mp4", "--box", "1,1,5,5", "--tracks", "x.jsonl"], "no such file"),
        (["track", "VIDEO", "--box", "10,10,10,50", "--tracks", "x.jsonl"], "area"),
        (["track", "VIDEO", "--box", "1,2,3", "--tracks", "x.jsonl"], "4 coordinates"),
        (
            ["track", "VIDEO", "--box", "400,300,500,400", "--tracks", "x.jsonl"],
            "box [400.0, 300.0, 500.0, 400.0] lies wholly outside the 320x240 frame",
        ),
        (["track", "VIDEO", "--box", "10,10,50,50@99", "--tracks", "x.jsonl"], "beyond"),
        (["track", "VIDEO", "--prompt", " . ,, . ", "--tracks", "x.jsonl"], "prompt"),
        (["track", "VIDEO", "--box", "1,1,5,5"], "nothing to write"),
        (
            [
                "track",
                "VIDEO",
                "--models",
                "no-such-preset",
                "--box",
                "1,1,5,5",
                "--tracks",
                "x.jsonl",
            ],
            "unknown model preset",
        ),
    ],
)
def test_track_bad_input_one_line_error(
    video: Path, tmp_path: Path, args: list[str], needle: str
) -> None:
    args = [
        str(video) if a == "VIDEO" else str(tmp_path / a) if a.endswith(".jsonl") else a
        for a in args
    ]
    if "--models" not in args:
        args += ["--models", "tiny-random"]
    r = run_cli(*args)
    assert r.returncode == 2, r.stderr
    err = r.stderr.strip().splitlines()
    assert "Traceback" not in r.stderr
    assert needle in err[-1], err


def test_track_box_beyond_the_frame_is_clipped_with_a_warning(video: Path, tmp_path: Path) -> None:
    tracks = tmp_path / "t.jsonl"
    r = run_cli(
        "track", str(video), "--models", "tiny-random", "--box", "250,180,400,300",
        "--tracks", str(tracks), "--max-frames", "2",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    warning = [ln for ln in r.stderr.splitlines() if "clipped" in ln]
    assert len(warning) == 1, r.stderr
    assert (
        "--box 250,180,400,300@0 extends beyond the 320x240 frame: clipped to 250,180,320,240"
        in warning[0]
    )
    boxes = [o.box for m in read_jsonl(tracks) for o in m.header.objects]
    assert boxes and all(b[0] >= 0 and b[2] <= 320 and b[3] <= 240 for b in boxes)


def test_track_box_wholly_outside_fails_before_models_load(video: Path, tmp_path: Path) -> None:
    r = run_cli("track", str(video), "--models", "tiny-random", "--box", "10,250,50,300@3",
                "--tracks", str(tmp_path / "t.jsonl"))  # fmt: skip
    assert r.returncode == 2
    assert r.stderr.splitlines()[-1].startswith("promptcam track: error: box [10.0, 250.0"), (
        r.stderr
    )
    assert "SAM 2" not in r.stderr and not (tmp_path / "t.jsonl").exists()


@pytest.fixture(scope="module")
def long_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("long") / "long.mp4"
    scene = DemoScene(128, 96, 2, seed=3, fps=15)
    with Mp4Writer(path, 15) as w:
        for i in range(300):
            w.write(scene.render(i)[0])
    return path


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_track_stopped_by_a_signal_finalises_and_names_its_outputs(
    sig: signal.Signals, long_video: Path, tmp_path: Path
) -> None:
    tracks, out = tmp_path / "t.jsonl", tmp_path / "o.mp4"
    proc = subprocess.Popen(
        [*CLI, "track", str(long_video), "--models", "tiny-random", "--box", "10,10,60,60",
         "--tracks", str(tracks), "--out", str(out)],
        env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        wait_for(lambda: tracks.exists() and tracks.stat().st_size > 0, timeout=240, what="tracks")
        proc.send_signal(sig)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 128 + sig, stderr[-2000:]
    summary = json.loads(stdout.splitlines()[-1])
    assert summary["stopped"] == sig.name and 0 < summary["frames"] < 300
    last = stderr.strip().splitlines()[-1]
    assert last == (
        f"promptcam track: stopped by {sig.name} after {summary['frames']} frames; partial "
        f"outputs (finalised): {out.resolve()}, {tracks.resolve()}"
    ), last
    assert len(read_jsonl(tracks)) == summary["frames"]  # whole lines, one per frame
    with av.open(str(out)) as c:  # playable: its index was written ("moov atom" present)
        assert sum(1 for _ in c.decode(video=0)) == summary["frames"]


# ---------------------------------------------------------------------------- engine process


@pytest.fixture
def live(tmp_path: Path) -> Iterator[dict[str, str]]:
    eps = {k: tcp_endpoint() for k in ("frames", "tracks", "annotated", "control")}
    sets = [f"bus.{k}={v}" for k, v in eps.items()]
    common = [a for s in sets for a in ("--set", s)]
    procs = [
        subprocess.Popen(
            [
                *CLI,
                "capture",
                "--source",
                "demo",
                "--fps",
                "15",
                *common,
                "--set",
                "source.width=320",
                "--set",
                "source.height=240",
            ],
            env=ENV,
            stderr=subprocess.PIPE,
            text=True,
        ),
        subprocess.Popen(
            [
                *CLI,
                "engine",
                "--models",
                "tiny-random",
                "--prompt",
                "ball. box.",
                *common,
                "--set",
                "engine.box_threshold=0.0",
                "--set",
                "engine.text_threshold=0.0",
                "--set",
                "engine.reground_every_frames=5",
            ],
            env=ENV,
            stderr=subprocess.PIPE,
            text=True,
        ),
    ]
    try:
        yield eps
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                pytest.fail("process did not stop within 15 s of SIGTERM")
        assert procs[1].returncode == 0, procs[1].stderr.read() if procs[1].stderr else ""


def test_engine_process_text_prompt_and_prompt_command(
    live: dict[str, str], ctx: zmq.Context[Any]
) -> None:
    sub = zbus.connect(ctx, zmq.SUB, live["tracks"], subscribe=[b"tracks.cam0"])

    def next_msg() -> TracksMessage | None:
        parts = zbus.recv_multipart_timeout(sub, 500, copy=True)
        return TracksMessage.from_parts(parts) if parts else None

    first = wait_for(next_msg, timeout=90, what="tracks from the engine process")
    assert first.header.prompt == "ball. box." and first.header.width == 320
    wait_for(
        lambda: (m := next_msg()) is not None and m.header.objects,
        timeout=30,
        what="objects from grounding",
    )
    r = run_cli("prompt", "Cup.", "--set", f"bus.control={live['control']}", timeout=30)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"ok": True, "labels": ["cup"]}
    msg = wait_for(
        lambda: (m := next_msg()) is not None and m.header.prompt == "cup." and m,
        timeout=30,
        what="new prompt in tracks",
    )
    assert all(o.label == "cup" for o in msg.header.objects)
    bad = run_cli("prompt", "...", "--set", f"bus.control={live['control']}", timeout=30)
    assert bad.returncode == 2 and "prompt" in bad.stderr and "Traceback" not in bad.stderr
    cleared = run_cli("prompt", "", "--set", f"bus.control={live['control']}", timeout=30)
    assert cleared.returncode == 0, cleared.stderr  # "" clears it, as set_prompt "" does
    assert json.loads(cleared.stdout) == {"ok": True, "labels": []}
    wait_for(
        lambda: (m := next_msg()) is not None and m.header.prompt == "" and not m.header.objects,
        timeout=30,
        what="the prompt cleared in tracks",
    )
    stats = zbus.request(live["control"], {"cmd": "stats"})["stats"]
    assert stats["fps_out"] > 0 and stats["groundings"] >= 1
    sub.close(0)
