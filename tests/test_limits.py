"""Limits that refuse instead of crashing: decompression bombs (a few hundred kilobytes that
declare 8192x8192 frames) are refused before decoding by ``source.max_pixels``, in
``open_source``, ``promptcam track``, ``promptcam capture`` and the web upload's probe."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from stream.config import ConfigError, SourceConfig, load_config
from stream.sources import SourceTooLargeError, open_source
from tests import hostile
from tests.conftest import free_port

REPO = Path(__file__).resolve().parent.parent
# Run a command as this wrapper's only child and print the child's peak RSS (KiB) last on
# stderr; the child's address space is capped so that a regression fails, not the machine.
_PEAK_RSS = """
import resource, subprocess, sys
def cap():
    resource.setrlimit(resource.RLIMIT_AS, (6 << 30, 6 << 30))
r = subprocess.run(sys.argv[1:], preexec_fn=cap, stdout=subprocess.DEVNULL)
print("PEAK_RSS_KB", resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr)
sys.exit(r.returncode)
"""


@pytest.fixture(scope="module")
def bomb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = hostile.write_bomb_video(tmp_path_factory.mktemp("bomb") / "bomb.mp4")
    assert path.stat().st_size < 400_000  # small on disk, 2 x 192 MiB decoded
    yield path


def _cfg(**kw: object) -> SourceConfig:
    return SourceConfig.model_validate({"realtime": False, **kw})


def _rss_mb() -> float:
    return float(psutil.Process().memory_info().rss) / 2**20


def test_bomb_video_is_refused_before_decoding(bomb: Path) -> None:
    before = _rss_mb()
    with pytest.raises(SourceTooLargeError) as e:
        open_source(str(bomb), _cfg())
    msg = str(e.value)
    assert "8192x8192" in msg and "source.max_pixels=8847360" in msg and "\n" not in msg
    assert not e.value.live
    assert _rss_mb() - before < 150, "a 8192x8192 frame was decoded"  # one BGR frame: 192 MiB
    # the limit is the config's: raised to 8K it still refuses 8192x8192; a 64x48 clip passes
    with pytest.raises(SourceTooLargeError, match="max_pixels=33177600"):
        open_source(str(bomb), _cfg(max_pixels=7680 * 4320))


def test_image_directory_refuses_images_that_declare_huge_sizes(tmp_path: Path) -> None:
    for side in (12000, 20000):  # 20000^2 is over Pillow's own limit: refused all the same
        d = tmp_path / f"dir{side}"
        d.mkdir()
        (d / "a.png").write_bytes(hostile.patched_png(side, side))
        src = open_source(str(d), _cfg())
        with pytest.raises(SourceTooLargeError, match="refused before decoding") as e:
            src.read()
        assert str(d / "a.png") in str(e.value) and "\n" not in str(e.value)
        src.close()
    ok = tmp_path / "ok"
    ok.mkdir()
    (ok / "a.png").write_bytes(hostile.patched_png(64, 64))
    assert open_source(str(ok), _cfg()).read().shape == (64, 64, 3)


@pytest.mark.parametrize("value", ["4095", "33177601", "-1"])
def test_max_pixels_is_bounded(value: str) -> None:
    with pytest.raises(ConfigError, match=r"source\.max_pixels") as e:
        load_config(None, {"source.max_pixels": int(value)})
    assert "\n" not in str(e.value)


def _cli(*args: str) -> tuple[int, str, int]:
    """``promptcam ARGS`` under the peak-RSS wrapper: exit code, stderr without the RSS line,
    and the peak RSS in MiB."""
    proc = subprocess.run(
        [sys.executable, "-c", _PEAK_RSS, sys.executable, "-m", "clients.cli", *args],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    lines = proc.stderr.strip().splitlines()
    assert lines and lines[-1].startswith("PEAK_RSS_KB"), proc.stderr
    return proc.returncode, "\n".join(lines[:-1]), int(lines[-1].split()[1]) // 1024


def test_track_refuses_a_bomb_with_one_line_and_bounded_memory(bomb: Path, tmp_path: Path) -> None:
    """The 15 KB file that once took ``promptcam track`` to 7.6 GB: one line, exit 2, before
    any model loads, peak RSS of the whole process (Python, torch imported) under 1 GiB."""
    code, err, peak_mb = _cli(
        "track",
        str(bomb),
        "--prompt",
        "ball",
        "--tracks",
        str(tmp_path / "t.jsonl"),
        "--models",
        "tiny-random",
        "--device",
        "cpu",
    )
    assert code == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith("promptcam track: error: ") and "8192x8192" in err
    assert "source.max_pixels" in err
    assert peak_mb < 1024, f"peak RSS {peak_mb} MiB"


def test_capture_refuses_a_bomb_file_with_one_line(bomb: Path) -> None:
    code, err, peak_mb = _cli(
        "capture", "--source", str(bomb), "--set", f"bus.frames=tcp://127.0.0.1:{free_port()}"
    )
    assert code == 2 and len(err.splitlines()) == 1, err
    assert err.startswith("promptcam capture: error: ") and "8192x8192" in err
    assert peak_mb < 1024, f"peak RSS {peak_mb} MiB"


def test_web_upload_probe_refuses_a_bomb(bomb: Path, tmp_path: Path) -> None:
    """The web upload's probe (which decoded the first frame in the server) refuses it: the
    upload gets a 400 with this line, no job is queued."""
    from clients.web.jobs import UploadError, probe_video
    from tests.test_sources import write_video

    before = _rss_mb()
    with pytest.raises(UploadError, match=r"8192x8192.*refused before decoding"):
        probe_video(bomb)
    assert _rss_mb() - before < 150
    with pytest.raises(UploadError, match="max_pixels=4096"):
        probe_video(bomb, 4096)
    write_video(tmp_path / "ok.mp4", 2)
    assert probe_video(tmp_path / "ok.mp4").width == 64


@pytest.mark.parametrize("key", ["bus.control", "bus.frames"])
def test_run_refuses_an_ipc_path_over_the_socket_limit_at_load(key: str) -> None:
    """An ipc path of 108 bytes once killed the launcher's status thread (``run`` went on
    without status); now the config refuses it: one line, exit 2, before anything starts."""
    path = "ipc:///tmp/" + "p" * 103
    argv = ["run", "--models", "tiny-random", "--device", "cpu", "--set", f"{key}={path}"]
    proc = subprocess.run(
        [sys.executable, "-m", "clients.cli", *argv],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("promptcam run: error: "), proc.stderr
    assert f"'{key}': ipc path of 108 bytes is longer than the 107" in lines[0]
