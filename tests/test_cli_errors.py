"""Errors before work: a bad output path, prompt or source is one line on stderr and exit
status 2 before any model loads, any child starts or the page URL is printed; degenerate videos
and malformed ``promptcam eval`` input are one line too, never a traceback or a hang. Every check
runs the real CLI as a subprocess (with a timeout: what a hang would run into)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import av
import numpy as np
import pytest
from pycocotools import mask as mask_utils

from clients.bench.evaluate import rle_counts
from stream.preflight import OutputError, check_output_path, check_outputs

REPO = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}


def promptcam(*args: str, timeout: float = 120) -> tuple[subprocess.CompletedProcess[str], float]:
    t0 = time.monotonic()
    r = subprocess.run(
        [sys.executable, "-m", "clients.cli", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=ENV,
    )
    return r, time.monotonic() - t0


def assert_one_line(r: subprocess.CompletedProcess[str], command: str, needle: str) -> str:
    """Exit 2, exactly one line on stderr (so no model-loading log line, no traceback), naming
    ``needle``; nothing on stdout (no page URL, no status line)."""
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr[-3000:]
    assert lines[0].startswith(f"promptcam {command}: error: "), lines[0]
    assert needle in lines[0], lines[0]
    assert r.stdout == "", r.stdout[-1000:]
    return lines[0]


def write_video(path: Path, width: int, height: int, frames: int) -> Path:
    """A lossless (PNG in AVI) video of any size PyAV allows, even 1x1 and 0 frames."""
    rng = np.random.default_rng(0)
    with av.open(str(path), "w") as c:
        s = c.add_stream("png", rate=10)
        s.width, s.height, s.pix_fmt = width, height, "rgb24"
        c.start_encoding()
        for _ in range(frames):
            img = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_video(tmp_path_factory.mktemp("video") / "v.avi", 64, 48, 3)


# --------------------------------------------------------------------------- 1: outputs


@pytest.mark.parametrize(
    ("flags", "needle"),
    [
        (["--tracks", "/proc/nope/t.jsonl"], "--tracks /proc/nope/t.jsonl: directory /proc/nope"),
        (["--out", "/proc/nope/o.mp4"], "--out /proc/nope/o.mp4: directory /proc/nope does not"),
        (["--tracks", "{tmp}"], "is a directory"),
        (["--out", "{video}/o.mp4"], "is not a directory"),
        (["--tracks", "/sys/t.jsonl"], "cannot create it"),
        (["--out", "{video}"], "is an input of the job: it would be overwritten"),
        (["--tracks", "{tmp}/a", "--out", "{tmp}/a"], "are the same file"),
    ],
    ids=["tracks-missing-dir", "out-missing-dir", "dir", "parent-file", "sysfs", "input", "same"],
)
def test_track_outputs_are_checked_before_models_load(
    flags: list[str], needle: str, video: Path, tmp_path: Path
) -> None:
    args = [f.format(tmp=tmp_path, video=video) for f in flags]
    r, _ = promptcam("track", str(video), "--models", "tiny-random", "--prompt", "ball", *args)
    assert_one_line(r, "track", needle)
    assert video.stat().st_size > 0 and not (tmp_path / "a").exists()


def test_output_check_leaves_files_as_they_were(tmp_path: Path) -> None:
    kept = tmp_path / "kept.jsonl"
    kept.write_text("old\n")
    new = tmp_path / "new.jsonl"
    check_outputs([("--tracks", kept), ("--out", new)])
    assert kept.read_text() == "old\n"  # opened, not truncated
    assert not new.exists()  # created to try, removed again
    with pytest.raises(OutputError, match=r"--json .*: directory .* does not exist"):
        check_output_path(tmp_path / "no" / "r.json", "--json")


@pytest.mark.parametrize(
    "args",
    [
        ["scene", "--out", "{tmp}/s.mp4", "--gt", "/proc/nope/gt.jsonl", "--frames", "2"],
        ["bench", "--parts", "transport", "--quick", "--json", "/proc/nope/b.json"],
    ],
    ids=["scene", "bench"],
)
def test_other_output_files_are_checked_first(args: list[str], tmp_path: Path) -> None:
    r, _ = promptcam(*[a.format(tmp=tmp_path) for a in args])
    assert_one_line(r, args[0], "/proc/nope does not exist")
    assert not (tmp_path / "s.mp4").exists()


def test_scene_writes_its_video_and_ground_truth(tmp_path: Path) -> None:
    """``promptcam scene --gt`` names an output (not an input the job would overwrite)."""
    out, gt = tmp_path / "s.mp4", tmp_path / "gt.jsonl"
    r, _ = promptcam("scene", "--out", str(out), "--gt", str(gt), "--frames", "3")
    assert r.returncode == 0, r.stderr[-2000:]
    assert out.stat().st_size > 0 and len(gt.read_text().splitlines()) == 3


# --------------------------------------------------------------------------- 2: prompts


@pytest.mark.parametrize(
    "args",
    [
        ["run", "--models", "tiny-random", "--port", "0", "--prompt", "...."],
        ["engine", "--models", "tiny-random", "--prompt", " . , "],
        ["track", "{video}", "--models", "tiny-random", "--prompt", "....", "--tracks", "{t}"],
        ["prompt", "....", "--timeout", "60"],
    ],
    ids=["run", "engine", "track", "prompt"],
)
def test_prompt_without_phrase_is_refused_before_anything_starts(
    args: list[str], video: Path, tmp_path: Path
) -> None:
    argv = [a.format(video=video, t=tmp_path / "t.jsonl") for a in args]
    r, took = promptcam(*argv)
    assert_one_line(r, argv[0], "has no phrase to look for")
    # run: no child started, no URL; prompt: no 60 s wait for an engine that is not there
    assert took < 50, took
    assert not (tmp_path / "t.jsonl").exists()


# --------------------------------------------------------------------------- 3: sources


@pytest.mark.parametrize(
    ("source", "needle"),
    [
        ("/nope.mp4", "no such file or directory: /nope.mp4"),
        ("rtsp://", "malformed URL rtsp://: no host"),
        ("rtsp://cam:99999/x", "malformed URL"),
        ("{text}", "not a video or corrupt"),
        ("{empty_dir}", "holds no images"),
        ("/dev/video97", "no webcam /dev/video97"),
        ("-1", "bad webcam index -1"),
    ],
    ids=["missing", "no-host", "bad-port", "text-file", "empty-dir", "device", "index"],
)
def test_bad_source_is_one_line_before_the_url_and_models(
    source: str, needle: str, tmp_path: Path
) -> None:
    text = tmp_path / "notes.mp4"
    text.write_text("not a video\n" * 20)
    (tmp_path / "empty").mkdir()
    src = source.format(text=text, empty_dir=tmp_path / "empty")
    # no --models: the default preset is not cached here (HF_HUB_OFFLINE=1); the source's error
    # must come first, not hide behind the model error
    r, _ = promptcam("run", "--source", src, "--port", "0", "--duration", "30")
    assert_one_line(r, "run", needle)


def test_capture_and_track_check_the_source_too(tmp_path: Path) -> None:
    text = tmp_path / "notes.mp4"
    text.write_text("not a video\n")
    r, _ = promptcam("capture", "--source", "rtsp://", "--max-frames", "1")
    assert_one_line(r, "capture", "malformed URL rtsp://: no host")
    r, _ = promptcam("track", str(text), "--prompt", "ball", "--tracks", str(tmp_path / "t.jsonl"))
    assert_one_line(r, "track", "not a video or corrupt")


# --------------------------------------------------------------------------- 4: degenerate videos


@pytest.mark.parametrize(
    ("size", "frames", "needle"),
    [
        ((1, 1), 3, "frames are 1x1 pixels; a job needs at least 16x16"),
        ((1, 64), 3, "frames are 1x64 pixels"),
        ((64, 1), 3, "frames are 64x1 pixels"),
        ((64, 64), 0, "no frame could be decoded"),
    ],
    ids=["1x1", "1-wide", "1-high", "0-frames"],
)
def test_degenerate_video_is_one_line(
    size: tuple[int, int], frames: int, needle: str, tmp_path: Path
) -> None:
    path = write_video(tmp_path / "d.avi", *size, frames)
    out = ["--tracks", str(tmp_path / "t.jsonl"), "--out", str(tmp_path / "o.mp4")]
    r, _ = promptcam("track", str(path), "--models", "tiny-random", "--prompt", "ball", *out)
    assert_one_line(r, "track", needle)


def test_smallest_accepted_video_is_tracked(tmp_path: Path) -> None:
    path = write_video(tmp_path / "s.avi", 16, 17, 3)  # odd height: the MP4 writer crops a row
    out = ["--tracks", str(tmp_path / "t.jsonl"), "--out", str(tmp_path / "o.mp4")]
    r, _ = promptcam("track", str(path), "--models", "tiny-random", "--prompt", "ball", *out)
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(r.stdout.splitlines()[-1])["frames"] == 3
    assert len((tmp_path / "t.jsonl").read_text().splitlines()) == 3


# --------------------------------------------------------------------------- 5: eval


def _tracks_line(counts: str, size: tuple[int, int] = (48, 64)) -> str:
    obj = {
        "id": 1,
        "label": "ball",
        "score": 0.9,
        "box": [1.0, 1.0, 20.0, 20.0],
        "mask": {"size": list(size), "counts": counts},
        "age": 0,
        "state": "tracked",
    }
    header = {
        "v": 1,
        "camera": "cam0",
        "seq": 0,
        "t_capture_ns": 0,
        "t_publish_ns": 0,
        "width": size[1],
        "height": size[0],
        "prompt": "ball.",
        "objects": [obj],
    }
    return json.dumps(header) + "\n"


def _square_counts(h: int = 48, w: int = 64) -> str:
    m = np.zeros((h, w), np.uint8)
    m[5:20, 5:20] = 1
    return str(mask_utils.encode(np.asfortranarray(m))["counts"].decode())


# What pycocotools trusts: each of these spun for minutes (or read past the string) before.
BAD_COUNTS = {
    "negative": ("0O", "a negative run length"),  # 'O': -1, a 4-billion run as uint32
    "over": ("0ooooo7", "runs cover 268435455 pixels, a 48x64 mask has 3072"),
    "unterminated": ("0o", "counts end inside a run length"),
    "garbage": ("~~~~", "counts character '~' at 0 is not RLE"),
    "short": ("0", "runs cover 0 pixels"),
    "non-ascii": ("0é", "counts are not ASCII"),
    "too-long-run": ("oooooo0", "a run length of more than 6 characters"),
    "empty": ("", "counts are empty"),
}


@pytest.mark.parametrize("name", list(BAD_COUNTS))
def test_rle_counts_rejects_what_pycocotools_trusts(name: str) -> None:
    counts, needle = BAD_COUNTS[name]
    with pytest.raises(ValueError, match=needle):
        rle_counts(counts, 48, 64)


def test_rle_counts_decodes_as_pycocotools() -> None:
    rng = np.random.default_rng(1)
    for _ in range(300):
        h, w = (int(v) for v in rng.integers(1, 30, 2))
        m = (rng.random((h, w)) < rng.random()).astype(np.uint8)
        counts = mask_utils.encode(np.asfortranarray(m))["counts"].decode()
        runs = rle_counts(counts, h, w)
        decoded = np.repeat(np.arange(len(runs)) % 2, runs).reshape(w, h).T
        assert (decoded == m).all()


@pytest.fixture
def gt_file(tmp_path: Path) -> Path:
    path = tmp_path / "gt.jsonl"
    path.write_text(_tracks_line(_square_counts()))
    return path


@pytest.mark.parametrize("name", ["negative", "unterminated", "over"])
def test_eval_refuses_a_malformed_mask_at_once(name: str, gt_file: Path, tmp_path: Path) -> None:
    counts, needle = BAD_COUNTS[name]
    pred = tmp_path / "pred.jsonl"
    pred.write_text(_tracks_line(counts))
    assert pred.stat().st_size < 300  # the 277-byte file
    r, _ = promptcam("eval", str(pred), str(gt_file), timeout=60)  # was > 300 s at 100 % CPU
    line = assert_one_line(r, "eval", needle)
    assert f"{pred}:1: object 1 mask is not valid RLE" in line


def test_eval_bad_files_and_json_path_are_one_line(gt_file: Path, tmp_path: Path) -> None:
    latin = tmp_path / "latin.jsonl"
    latin.write_bytes(b'{"v":1,"camera":"caf\xe9"}\n')
    r, _ = promptcam("eval", str(latin), str(gt_file))
    assert_one_line(r, "eval", f"{latin}:1: not a tracks message (bad_json: header is not UTF-8")
    r, _ = promptcam("eval", str(gt_file), str(gt_file), "--json", "/proc/nope/r.json")
    assert_one_line(r, "eval", "--json /proc/nope/r.json: directory /proc/nope does not exist")
    r, _ = promptcam("eval", str(gt_file), str(gt_file), "--json", str(gt_file))
    assert_one_line(r, "eval", "is an input of the job")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    r, _ = promptcam("eval", str(fifo), str(gt_file), timeout=60)  # reading it blocked forever
    assert_one_line(r, "eval", "not a regular file")
    r, _ = promptcam("eval", str(gt_file), str(gt_file), "--json", str(tmp_path / "r.json"))
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads((tmp_path / "r.json").read_text())["IDF1"] == pytest.approx(1.0)
