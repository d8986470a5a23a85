"""The Hugging Face Hub out of reach, for real: no network at all (a fresh network namespace)
or an endpoint on a closed loopback port. Loading a real preset must fail at once, in one
line naming the offline options, without huggingface_hub's retries (before: 22 lines of retry
warnings over 26 s).

And the Hub within reach: ``promptcam models --fetch PRESET`` against a stand-in Hub on loopback
(``tests/hub_server.py``, ``HF_ENDPOINT``) puts a preset's files into the Hugging Face cache, with
a progress bar; ``promptcam models`` says cached; the real loaders then load it with
``HF_HUB_OFFLINE=1`` and the server gone. A missing file or repo, or a server that dies in the
middle of a download: one error line, exit 2, the preset not cached."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from engine.models.hub_fetch import loadable_files
from engine.models.presets import PRESETS, hub_files
from stream.config import CONFIGS_DIR, ModelsConfig
from stream.demo import DemoScene
from stream.media import Mp4Writer
from tests import netns
from tests.conftest import free_port
from tests.hub_server import HubRepo, HubServer, hub_server, repo_from_dir

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
    """The detector's path (``engine/models/detectors.py``): the Hub's endpoint on a closed loopback
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


def _models_json(env: dict[str, str]) -> dict[tuple[str, str], dict[str, object]]:
    r = subprocess.run(
        [*CLI, "models", "--json"], capture_output=True, text=True, timeout=60, env=env
    )
    assert r.returncode == 0, r.stderr[-2000:]
    return {(e["kind"], e["name"]): e for e in json.loads(r.stdout)}


def test_models_lists_demo_as_trained_and_tiny_random_as_random(tmp_path: Path) -> None:
    """``demo`` is trained on the demo scenes and shipped (before: listed as "random weights")."""
    env = _clean_env(tmp_path)
    rows = _models_json(env)
    demo = rows[("models", "demo")]
    assert demo["status"] == "local"
    assert "random" not in str(demo["needs"]), demo
    assert "trained on the demo scenes" in str(demo["needs"]), demo
    assert "configs/demo/" in str(demo["needs"]), demo
    assert "random weights" in str(rows[("models", "tiny-random")]["needs"])


def test_loadable_files_skip_other_formats_and_subfolders() -> None:
    listing = [
        ".gitattributes", "README.md", "config.json", "model.safetensors", "pytorch_model.bin",
        "tf_model.h5", "flax_model.msgpack", "onnx/model.onnx", "vocab.txt", "sam2.1_hiera_t.pt",
        "preprocessor_config.json", "demo.png",
    ]  # fmt: skip
    assert loadable_files(listing) == [
        ".gitattributes", "README.md", "config.json", "model.safetensors",
        "preprocessor_config.json", "vocab.txt",
    ]  # fmt: skip
    # without safetensors the PyTorch weights are what loaders read
    assert loadable_files(["config.json", "pytorch_model.bin", "tf_model.h5"]) == [
        "config.json",
        "pytorch_model.bin",
    ]


SAM2_REPO = "promptcam-test/sam2-tiny"
SAM2_FILE = "sam2_tiny.pt"
DINO_REPO = "promptcam-test/grounding-dino-tiny"
PRESET = "hub-test"
NOT_FETCHED = ("pytorch_model.bin", "flax_model.msgpack", "onnx/model.onnx")


@dataclass(frozen=True)
class HubFixture:
    repos: dict[str, HubRepo]
    presets_file: Path
    sam2_sum: float  # sum of the served weights, to recognise them once loaded
    dino_sum: float


def _weight_sum(state: dict[str, object]) -> float:
    import torch

    return float(
        sum(float(v.double().sum()) for v in state.values() if isinstance(v, torch.Tensor))
    )


@pytest.fixture(scope="module")
def hub_files_served(tmp_path_factory: pytest.TempPathFactory) -> HubFixture:
    """A tiny SAM 2 checkpoint (saved the way ``train-demo`` saves one) and a tiny Grounding DINO
    (``save_pretrained``), their weights moved off the tiny-random ones so that loading them
    cannot be mistaken for building random weights; and a PROMPTCAM_PRESETS file naming them."""
    import torch

    from engine.models.detectors import load_detector_backend
    from engine.models.sam2 import load_sam2, save_checkpoint
    from stream.config import EngineConfig

    root = tmp_path_factory.mktemp("hub")
    sam2 = load_sam2(ModelsConfig(preset="tiny-random", device="cpu")).model
    dino = load_detector_backend(ModelsConfig(preset="tiny-random", device="cpu"), EngineConfig())
    with torch.no_grad():
        for i, p in enumerate([*sam2.parameters(), *dino.model.parameters()]):
            p.add_(0.01 * (i % 7 + 1))
    save_checkpoint(sam2, root / SAM2_FILE)
    dino_dir = root / "dino"
    dino.save_pretrained(dino_dir)
    dino_repo = repo_from_dir(dino_dir)
    dino_repo.files.update(
        {name: b"not read by any loader" for name in NOT_FETCHED} | {"README.md": b"# dino"}
    )
    repos = {
        SAM2_REPO: HubRepo({SAM2_FILE: (root / SAM2_FILE).read_bytes(), "README.md": b"# sam2"}),
        DINO_REPO: dino_repo,
    }
    presets = root / "presets.yaml"
    presets.write_text(
        f"""presets:
  - name: {PRESET}
    sam2_hub_id: {SAM2_REPO}
    sam2_file: {SAM2_FILE}
    sam2_config: {CONFIGS_DIR / "sam2_tiny_random.yaml"}
    detector: {DINO_REPO}
"""
    )
    return HubFixture(
        repos, presets, _weight_sum(sam2.state_dict()), _weight_sum(dino.model.state_dict())
    )


def _clean_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "PROMPTCAM_PRESETS"))}
    env.update(HF_HOME=str(tmp_path / "hf"), PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1", **extra)
    return env


def _fetch(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, "models", "--fetch", PRESET], capture_output=True, text=True, timeout=90, env=env
    )


def _snapshot(tmp_path: Path, repo_id: str) -> Path | None:
    repo = tmp_path / "hf" / "hub" / f"models--{repo_id.replace('/', '--')}"
    ref = repo / "refs" / "main"
    return repo / "snapshots" / ref.read_text().strip() if ref.is_file() else None


@pytest.fixture
def served(hub_files_served: HubFixture, request: pytest.FixtureRequest) -> Iterator[HubServer]:
    faults = getattr(request, "param", {})
    with hub_server(hub_files_served.repos, **faults) as server:
        yield server


OFFLINE_LOAD = """
import json
import torch
from engine.models.detectors import load_detector_backend
from engine.models.sam2 import load_sam2
from stream.config import EngineConfig, ModelsConfig

def weight_sum(state):
    return float(sum(float(v.double().sum()) for v in state.values() if isinstance(v, torch.Tensor)))

models = ModelsConfig(preset="hub-test", device="cpu")
sam2 = load_sam2(models)
dino = load_detector_backend(models, EngineConfig())
print(json.dumps({"sam2": weight_sum(sam2.model.state_dict()), "dino": weight_sum(dino.model.state_dict())}))
"""


def test_fetch_preset_for_offline_use(
    hub_files_served: HubFixture, served: HubServer, tmp_path: Path
) -> None:
    env = _clean_env(
        tmp_path, HF_ENDPOINT=served.endpoint, PROMPTCAM_PRESETS=str(hub_files_served.presets_file)
    )
    r = _fetch(env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "100%" in r.stderr and "Fetching" in r.stderr, r.stderr[-2000:]  # the progress bars
    assert "fetched hub-test" in r.stdout and SAM2_REPO in r.stdout and DINO_REPO in r.stdout

    # in huggingface_hub's cache layout under HF_HOME, the files the loaders read and no others
    sam2_snapshot, dino_snapshot = _snapshot(tmp_path, SAM2_REPO), _snapshot(tmp_path, DINO_REPO)
    assert sam2_snapshot is not None and dino_snapshot is not None
    assert sorted(p.name for p in sam2_snapshot.iterdir()) == [SAM2_FILE]
    served_files = hub_files_served.repos[DINO_REPO].files
    fetched = sorted(
        p.relative_to(dino_snapshot).as_posix() for p in dino_snapshot.rglob("*") if p.is_file()
    )
    assert fetched == sorted(set(served_files) - set(NOT_FETCHED)), fetched
    assert (dino_snapshot / "model.safetensors").read_bytes() == served_files["model.safetensors"]
    assert not list((tmp_path / "hf" / "hub").rglob("*.incomplete"))

    rows = _models_json(env)
    after = rows[("models", PRESET)]
    assert after["status"] == "cached", after
    size = len(hub_files_served.repos[SAM2_REPO].files[SAM2_FILE]) + sum(
        len(served_files[f]) for f in fetched if not f.endswith(".md")
    )
    assert after["size_bytes"] == size, (after, size)
    assert rows[("models", "sam2.1-hiera-tiny")]["status"] == "not cached"

    # the real loaders, offline, the Hub gone: the served weights, not random ones
    served.stop()
    offline = {**env, "HF_HUB_OFFLINE": "1", "HF_ENDPOINT": f"http://127.0.0.1:{free_port()}"}
    load = subprocess.run(
        [sys.executable, "-c", OFFLINE_LOAD], capture_output=True, text=True, timeout=120,
        env=offline, cwd=tmp_path,
    )  # fmt: skip
    assert load.returncode == 0, load.stderr[-3000:]
    sums = json.loads(load.stdout.strip().splitlines()[-1])
    assert sums["sam2"] == pytest.approx(hub_files_served.sam2_sum, rel=1e-9)
    assert sums["dino"] == pytest.approx(hub_files_served.dino_sum, rel=1e-9)


FAILURES: dict[str, tuple[set[str], dict[str, object], str]] = {
    "checkpoint 404": (set(), {"missing": {(SAM2_REPO, SAM2_FILE)}}, f"SAM 2 checkpoint {SAM2_REPO}/{SAM2_FILE}: no such file on the Hub (HTTP 404)"),
    "no such repo": ({DINO_REPO}, {}, f"detector {DINO_REPO}: no such repo on the Hub, or it is private (HTTP 401)"),
    "dies mid-download": (set(), {"die_during": (DINO_REPO, "model.safetensors")}, f"detector {DINO_REPO}: "),
}  # fmt: skip


@pytest.mark.parametrize("case", list(FAILURES))
def test_failed_fetch_is_one_line_and_not_cached(
    case: str, hub_files_served: HubFixture, tmp_path: Path
) -> None:
    absent, faults, needle = FAILURES[case]
    repos = {k: v for k, v in hub_files_served.repos.items() if k not in absent}
    with hub_server(repos, **faults) as server:
        env = _clean_env(
            tmp_path,
            HF_ENDPOINT=server.endpoint,
            PROMPTCAM_PRESETS=str(hub_files_served.presets_file),
        )
        started = time.monotonic()
        r = _fetch(env)
        took = time.monotonic() - started
        if case == "dies mid-download":
            assert server.died.is_set()
    assert r.returncode == 2, r.stderr[-3000:]
    assert "Traceback" not in r.stderr
    lines = [ln for ln in r.stderr.replace("\r", "\n").splitlines() if ln.strip()]
    errors = [
        ln
        for ln in lines
        if "error" in ln.lower() or "retry" in ln.lower() or "resum" in ln.lower()
    ]
    assert len(errors) == 1, r.stderr[-3000:]
    assert errors[0].startswith("promptcam models: error: cannot fetch hub-test: "), errors[0]
    assert needle in errors[0], errors[0]
    assert _models_json(env)[("models", PRESET)]["status"] == "not cached"
    dino = _snapshot(tmp_path, DINO_REPO)
    assert dino is None or not (dino / "model.safetensors").exists()
    print(f"{case}: failed in {took:.1f}s: {errors[0]}")


BAD_PRESETS = {
    "missing file": (None, "PROMPTCAM_PRESETS file"),
    "not YAML": ("presets: [", "is not readable YAML"),
    "unknown field": ("presets:\n  - {name: x, sam2_hub_id: a/b, sam2_file: c.pt, sam2_config: d.yaml, detector: e/f, tracker: t}\n", "presets.0.tracker: Extra inputs are not permitted"),
    "bad repo id": ("presets:\n  - {name: x, sam2_hub_id: ../b, sam2_file: c.pt, sam2_config: d.yaml, detector: e/f}\n", "presets.0.sam2_hub_id: String should match pattern"),
    "built-in name": ("presets:\n  - {name: demo, sam2_hub_id: a/b, sam2_file: c.pt, sam2_config: d.yaml, detector: e/f}\n", "preset 'demo' is defined twice (or built in)"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(BAD_PRESETS))
def test_bad_presets_file_is_one_line(
    case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from engine.models.presets import get_preset
    from stream.errors import ModelLoadError

    text, needle = BAD_PRESETS[case]
    path = tmp_path / "presets.yaml"
    if text is not None:
        path.write_text(text)
    monkeypatch.setenv("PROMPTCAM_PRESETS", str(path))
    assert get_preset("demo").name == "demo"  # built-in presets do not read the file
    with pytest.raises(ModelLoadError) as e:
        get_preset("x")
    assert needle in str(e.value) and "\n" not in str(e.value), str(e.value)


def test_presets_file_paths_are_relative_to_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from engine.models.hub_fetch import downloads
    from engine.models.presets import get_preset

    (tmp_path / "sam2.yaml").write_text("model: {}\n")
    (tmp_path / "presets.yaml").write_text(
        "presets:\n  - {name: site, sam2_hub_id: org/sam2, sam2_file: s.pt, sam2_config: "
        "sam2.yaml, detector: grounding-dino-base}\n"
    )
    monkeypatch.setenv("PROMPTCAM_PRESETS", str(tmp_path / "presets.yaml"))
    preset = get_preset("site")
    assert preset.sam2_config == str(tmp_path / "sam2.yaml")
    assert [str(d) for d in downloads("site")] == [
        "org/sam2/s.pt",
        "IDEA-Research/grounding-dino-base",
    ]
