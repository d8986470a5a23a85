"""The package as a user installs it: built from the source and installed (not editable) into a
fresh venv, then run from a directory that is not the repository, so nothing of the source
tree can stand in for what the wheel lacks (``configs/`` as package data, the entry point)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from stream.demo import DemoScene
from stream.media import Mp4Writer

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ("pyproject.toml", "README.md", "stream", "engine", "clients", "configs")
PIP_OFFLINE = (
    "-q",
    "--no-deps",
    "--no-build-isolation",
    "--no-index",
    "--disable-pip-version-check",
)
OUTPUTS = ("--box", "10,10,60,60", "--tracks", "t.jsonl", "--out", "o.mp4")


def test_listed_packages_are_the_source_tree() -> None:
    tomllib = pytest.importorskip("tomllib")
    listed = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    on_disk = {
        ".".join(p.parent.relative_to(ROOT).parts)
        for top in ("stream", "engine", "clients")
        for p in (ROOT / top).rglob("__init__.py")
    }
    assert set(listed["packages"]) == on_disk | {"stream._configs"}
    assert listed["package-dir"] == {"stream._configs": "configs"}


@pytest.mark.install
def test_installed_wheel_finds_its_configs_and_tracks(tmp_path: Path) -> None:
    src = tmp_path / "src"
    for name in SHIPPED:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            src.mkdir(exist_ok=True)
            shutil.copy2(path, src / name)
    venv = tmp_path / "venv"
    # the system site-packages provide torch, sam2, transformers and pip itself
    subprocess.run(
        [sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)],
        check=True,
        timeout=120,
    )
    python, promptcam = venv / "bin" / "python", venv / "bin" / "promptcam"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env.update(HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    pip = subprocess.run(
        [python, "-m", "pip", "install", *PIP_OFFLINE, str(src)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert pip.returncode == 0, pip.stderr[-3000:]
    work = tmp_path / "elsewhere"
    work.mkdir()
    where = subprocess.run(
        [python, "-c", "import stream.config as c; print(c.__file__); print(c.CONFIGS_DIR)"],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    module, configs = (Path(p) for p in where.stdout.split())
    site = venv / "lib"
    assert module.is_relative_to(site), module  # the installed copy, not the source
    assert configs.is_relative_to(site), configs
    shipped = {
        p.relative_to(ROOT / "configs") for p in (ROOT / "configs").rglob("*") if p.is_file()
    }
    assert {p.relative_to(configs) for p in configs.rglob("*") if p.is_file()} == shipped

    video = work / "clip.mp4"
    scene = DemoScene(160, 120, 2, seed=4, fps=10)
    with Mp4Writer(video, 10) as w:
        for i in range(3):
            w.write(scene.render(i)[0])
    version = subprocess.run(
        [promptcam, "--version"], cwd=work, capture_output=True, text=True, timeout=60, env=env
    )
    assert version.stdout.strip() == "promptcam 0.1.0", version
    track = subprocess.run(
        [promptcam, "track", "clip.mp4", "--models", "tiny-random", *OUTPUTS],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert track.returncode == 0, track.stderr[-3000:]
    assert json.loads(track.stdout.splitlines()[-1])["frames"] == 3
    assert len((work / "t.jsonl").read_text().splitlines()) == 3
    assert (work / "o.mp4").stat().st_size > 0
