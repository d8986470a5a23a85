"""Hostile configuration and command-line input: one bounded line and exit status 2, at once;
``--version``, ``bench --help``, ``web --models``, ``--prompt ''``; box parsing and clipping."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from clients.bench import PARTS
from clients.cli import MAX_ERROR_CHARS, build_parser, config_from_args
from stream.boxes import clip_box, parse_box
from stream.config import (
    MAX_CONFIG_BYTES,
    MAX_CONFIG_VALUES,
    ConfigError,
    load_config,
    parse_override,
)
from stream.errors import PromptError
from tests.conftest import tcp_endpoint

REPO = Path(__file__).resolve().parent.parent
ENGINE = (sys.executable, "-m", "clients.cli", "engine", "--models", "tiny-random")


def promptcam(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """A real ``promptcam`` process; the timeout is what a hang would run into."""
    return subprocess.run(
        [sys.executable, "-m", "clients.cli", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )


def alias_bomb(levels: int = 9) -> str:
    """A billion-laughs YAML: 9**levels strings from a few hundred bytes."""
    lines = ['l0: &l0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, levels):
        lines.append(f"l{i}: &l{i} [{','.join([f'*l{i - 1}'] * 9)}]")
    return "\n".join([*lines, f"engine:\n  prompt: *l{levels - 1}\n"])


BAD_CONFIGS: dict[str, tuple[bytes, str]] = {
    "latin1": (b"camera: caf\xe9\n", "is not UTF-8 text (byte 0xe9 at offset 11)"),
    "bomb": (alias_bomb().encode(), f"expands to more than {MAX_CONFIG_VALUES:,} values"),
    "cycle": (b"engine: &a\n  prompt: [*a]\n", "expands to more than"),
    "deep": (b"[" * 50_000, "nested too deeply"),
    "huge": (b"# padding\n" * (MAX_CONFIG_BYTES // 10 + 1), "is larger than 1024 KiB"),
    "long value": (
        b"engine:\n  max_missed: '" + b"9x" * 300_000 + b"'\n",
        "bad config value for 'engine.max_missed'",
    ),
}


@pytest.mark.parametrize("name", list(BAD_CONFIGS))
def test_bad_config_file_is_one_bounded_line(name: str, tmp_path: Path) -> None:
    content, needle = BAD_CONFIGS[name]
    path = tmp_path / "bad.yaml"
    path.write_bytes(content)
    r = promptcam("capture", "--source", "demo", "--config", str(path))
    assert r.returncode == 2, r.stderr[-500:]
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr[:2000]
    assert lines[0].startswith("promptcam capture: error:") and needle in lines[0], lines[0]
    assert len(lines[0]) <= MAX_ERROR_CHARS


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--set", "bus.frames=tcp://127.0.0.1:99999"], "TCP port 99999 is out of range"),
        (["--set", "bus.control=tcp://127.0.0.1:0"], "TCP port 0 is out of range"),
        (["--set", f"engine.prompt={alias_bomb(7)}"], "--set engine.prompt expands to more"),
        (["--port", "9" * 100_000], "invalid int value"),
    ],
)
def test_bad_run_arguments_are_one_bounded_line(args: list[str], needle: str) -> None:
    r = promptcam("run", "--models", "tiny-random", *args)
    assert r.returncode == 2, r.stderr[-500:]
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr[:2000]
    assert needle in lines[0] and len(lines[0]) <= MAX_ERROR_CHARS, lines[0][:300]


def test_config_bounds_in_process(tmp_path: Path) -> None:
    ok = tmp_path / "ok.yaml"
    ok.write_text("anchors: &p 'cup. ball.'\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="unknown config key 'anchors'"):
        load_config(ok)  # a small alias is still YAML; the key itself is unknown
    shared = tmp_path / "shared.yaml"
    shared.write_text("engine: {prompt: &p 'cup. ball.'}\nweb: {camera: cam0}\n", encoding="utf-8")
    assert load_config(shared).engine.prompt == "cup. ball."
    assert load_config(None, {"bus.frames": "tcp://[::1]:65535"}).bus.frames.endswith(":65535")
    assert parse_override("engine.prompt=a: b: c") == ("engine.prompt", "a: b: c")  # not YAML
    with pytest.raises(ConfigError, match="expands to more than"):
        parse_override(f"engine.prompt={alias_bomb(6)}")


def test_version_and_bench_help_list_what_there_is() -> None:
    r = promptcam("--version")
    assert r.returncode == 0 and r.stdout.startswith("promptcam 0."), r
    r = promptcam("bench", "--help")
    assert r.returncode == 0
    for part, what in PARTS.items():
        assert f"  {part}" in r.stdout and what in r.stdout, part


def test_web_takes_models_for_its_offline_jobs() -> None:
    args = build_parser().parse_args(["web", "--models", "tiny-random", "--device", "cpu"])
    cfg = config_from_args(args)
    assert cfg.models.preset == "tiny-random" and cfg.models.device == "cpu"


def test_empty_prompt_means_no_prompt_and_says_so() -> None:
    """``--prompt ''``: no text prompt (no detector), said in one line before the engine starts."""
    eps = [f"bus.{k}={tcp_endpoint()}" for k in ("frames", "tracks", "annotated", "control")]
    sets = [x for s in eps for x in ("--set", s)]
    proc = subprocess.Popen(
        [*ENGINE, "--prompt", " ", *sets],
        cwd=REPO,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    try:
        assert proc.stderr is not None
        first = proc.stderr.readline()
        assert first.startswith("promptcam engine: --prompt '' means no text prompt"), first
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)


# --------------------------------------------------------------------------- boxes


def test_parse_box() -> None:
    assert parse_box("1,2,30.5,40") == ((1.0, 2.0, 30.5, 40.0), 0)
    assert parse_box("1,2,3,4@7") == ((1.0, 2.0, 3.0, 4.0), 7)
    for bad, needle in [
        ("1,2,3", "4 coordinates"),
        ("a,b,c,d", "with numbers"),
        ("0,0,inf,9", "finite"),
        ("0,0,nan,9", "finite"),
        ("5,5,1,9", "zero or negative area"),
        ("1,2,3,4@-1", "frame must be >= 0"),
        ("1,2,3,4@x", "with numbers"),
    ]:
        with pytest.raises(PromptError, match=needle):
            parse_box(bad)
    with pytest.raises(PromptError) as err:
        parse_box("x" * 100_000)
    assert len(str(err.value)) < 200


def test_clip_box() -> None:
    inside = clip_box((10, 10, 50, 50), 320, 240)
    assert inside.box == (10.0, 10.0, 50.0, 50.0) and not inside.clipped
    cut = clip_box((-5, 200, 400, 300), 320, 240)
    assert cut.box == (0.0, 200.0, 320.0, 240.0) and cut.clipped
    with pytest.raises(PromptError, match="wholly outside the 320x240 frame"):
        clip_box((320, 0, 400, 10), 320, 240)
    with pytest.raises(PromptError, match="finite"):
        clip_box((0, 0, float("nan"), 1), 320, 240)


def test_box_parsing_is_imported_from_stream_boxes_only() -> None:
    import clients.cli

    assert not hasattr(clients.cli, "parse_box")
    users = [
        p
        for top in ("stream", "engine", "clients")
        for p in (REPO / top).rglob("*.py")
        if "parse_box" in p.read_text(encoding="utf-8") and p.name != "boxes.py"
    ]
    assert users, "parse_box has users"
    for p in users:
        assert "from stream.boxes import" in p.read_text(encoding="utf-8"), p


def test_one_camera_view_of_a_mapping_names_the_camera_asked_for(tmp_path: Path) -> None:
    """``record``/``capture`` on a config of several cameras: without ``--camera`` the error
    asks for one; with a name the mapping lacks it names that camera."""
    from stream.config import ConfigError, load_config

    site = tmp_path / "site.yaml"
    site.write_text("cameras:\n  a: {source: demo}\n  b: {source: demo}\n")
    with pytest.raises(ConfigError, match="choose one with --camera"):
        load_config(site).for_camera()
    with pytest.raises(ConfigError, match="no camera 'zzz'"):
        load_config(site, {"camera": "zzz"}).for_camera()
    assert load_config(site, {"camera": "b"}).for_camera().camera == "b"


def test_a_bad_secret_is_not_echoed_in_its_error() -> None:
    from stream.config import ConfigError, load_config

    with pytest.raises(ConfigError, match=r"web\.token") as e:
        load_config(None, {"web.token": "shhh7"})  # too short
    assert "shhh7" not in str(e.value)
    with pytest.raises(ConfigError, match=r"mqtt\.port") as e:
        load_config(None, {"mqtt.port": "99999"})  # other values are still shown
    assert "99999" in str(e.value)
