"""The Hugging Face Hub out of reach, for real: no network at all (a fresh network namespace)
or an endpoint on a closed loopback port. Loading a real preset must fail at once, in one
line naming the offline options, without huggingface_hub's retries (before: 22 lines of retry
warnings over 26 s)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.presets import PRESETS, hub_files
from stream.config import ModelsConfig
from stream.demo import DemoScene
from stream.media import Mp4Writer
from tests import netns
from tests.conftest import free_port

REPO = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "clients.cli"]


def test_preset_files_are_sam2s_own() -> None:
    from sam2.build_sam import HF_MODEL_ID_TO_FILENAMES

    for preset in PRESETS.values():
        if preset.sam2_hub_id is not None:
            assert HF_MODEL_ID_TO_FILENAMES[preset.sam2_hub_id] == (
                preset.sam2_config,
                preset.sam2_file,
            )


def test_hub_files_name_only_what_is_loaded() -> None:
    tiny = ModelsConfig(preset="sam2.1-hiera-tiny")
    assert hub_files(tiny, with_detector=True) == [
        ("facebook/sam2.1-hiera-tiny", "sam2.1_hiera_tiny.pt"),
        ("IDEA-Research/grounding-dino-tiny", "config.json"),
    ]
    assert hub_files(tiny, with_detector=False) == [
        ("facebook/sam2.1-hiera-tiny", "sam2.1_hiera_tiny.pt")
    ]
    assert hub_files(ModelsConfig(preset="tiny-random"), with_detector=True) == []
    hub_detector = ModelsConfig(preset="tiny-random", detector="org/detector")
    assert hub_files(hub_detector, with_detector=True) == [("org/detector", "config.json")]


# A camera that is not the demo scene: on the demo source the launcher falls back to the shipped
# `demo` preset instead (tests/test_demo_models.py, tests/test_demo_browser.py).
CAMERA = ["--source", "rtsp://127.0.0.1:9/cam"]
CASES = {
    "run, no network": ("netns", ["run", "--port", "0", *CAMERA], "is not cached and the Hugging Face Hub is unreachable"),
    "run, closed port": ("port", ["run", "--port", "0", *CAMERA], "is not cached and the Hugging Face Hub is unreachable"),
    "track sam2, no network": ("netns", ["track", "VIDEO", "--tracks", "t.jsonl"], "cannot download facebook/sam2.1-hiera-tiny"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(CASES))
def test_unreachable_hub_fails_fast_in_one_line(case: str, tmp_path: Path) -> None:
    how, args, needle = CASES[case]
    video = tmp_path / "clip.mp4"
    with Mp4Writer(video, 10) as w:
        w.write(DemoScene(96, 64, 1, seed=0, fps=10).render(0)[0])
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env["HF_HOME"] = str(tmp_path / "hf")  # an empty cache
    argv = [*CLI, *(str(video) if a == "VIDEO" else a for a in args)]
    if how == "netns":
        reason = netns.unavailable_reason()
        if reason:
            pytest.skip(reason)
        argv = netns.command(argv)
    else:
        env["HF_ENDPOINT"] = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    started = time.monotonic()
    r = subprocess.run(
        argv,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=90,
        env={**env, "PYTHONPATH": str(REPO)},
    )
    took = time.monotonic() - started
    assert r.returncode == 2, r.stderr[-2000:]
    errors = [ln for ln in r.stderr.splitlines() if "error" in ln.lower() or "retry" in ln.lower()]
    assert len(errors) == 1, r.stderr[-3000:]  # one line, no retry warnings
    assert needle in errors[0] and "--models tiny-random" in errors[0], errors[0]
    print(f"{case}: failed in {took:.1f}s")


DETECTOR = """
import time
from engine.grounder import load_grounder
from stream.config import EngineConfig, ModelsConfig
from stream.errors import ModelLoadError
t = time.monotonic()
try:
    load_grounder(ModelsConfig(detector="promptcam-test/no-such-dino", device="cpu"), EngineConfig())
except ModelLoadError as e:
    print(f"{time.monotonic() - t:.2f} {e}")
"""


def test_unreachable_hub_detector_fails_fast(tmp_path: Path) -> None:
    """The detector's path (``engine/detectors/loading.py``): the Hub's endpoint on a closed loopback
    port, the cache empty."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(HF_HOME=str(tmp_path / "hf"), HF_ENDPOINT=f"http://127.0.0.1:{free_port()}")
    r = subprocess.run(
        [sys.executable, "-c", DETECTOR], cwd=REPO, capture_output=True, text=True, timeout=90,
        env={**env, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    took, message = r.stdout.strip().split(" ", 1)
    assert "cannot download detector 'promptcam-test/no-such-dino'" in message
    assert "Connection refused" in message and "--models tiny-random" in message
    assert "Retry" not in r.stderr, r.stderr[-2000:]
    print(f"detector, closed port: load failed {took}s after it began")
