"""Every detector family on its tiny-random model: saved with ``save_pretrained`` and loaded back
through the same ``from_pretrained`` path as real weights, detecting through the Detector API,
``detect_batch`` against ``detect``, ``promptcam track --detector DIR`` end to end, and bad
sources (missing weights, unsupported families, weights that do not match their config)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import supervision as sv
import torch

from engine.core.protocols import DetectorPrompt
from engine.detectors.base import DetectorBase
from engine.detectors.omdet_turbo import class_nms
from engine.grounder import Grounder
from engine.models.detectors import load_detector_backend
from engine.models.presets import DETECTOR_PRESETS, OFFLINE_OPTIONS
from engine.models.registry import ModelKind, families
from stream.config import EngineConfig, ModelsConfig
from stream.demo import DemoScene
from stream.errors import ModelLoadError, PromptError
from stream.media import Mp4Writer

TINY = [p.name for p in DETECTOR_PRESETS.values() if p.hub_id is None]
# Random weights score boxes anywhere in [0, 1]: thresholds 0 keep every box a family returns.
ENGINE = EngineConfig(prompt="ball. box.", detector_size=240, box_threshold=0.0, text_threshold=0.0)
PROMPT = "Red ball. BOX. person"
CLI = [sys.executable, "-m", "clients.cli"]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}


def load(detector: str) -> DetectorBase:
    return load_detector_backend(ModelsConfig(detector=detector, device="cpu"), ENGINE)


@pytest.fixture(scope="module")
def tiny() -> dict[str, DetectorBase]:
    return {name: load(name) for name in TINY}


@pytest.fixture(scope="module")
def saved(
    tiny: dict[str, DetectorBase], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    out = {}
    for name, detector in tiny.items():
        directory = tmp_path_factory.mktemp(name)
        detector.save_pretrained(directory)
        out[name] = directory
    return out


@pytest.fixture(scope="module")
def images() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    imgs = [rng.integers(0, 255, (240, 320, 3), dtype=np.uint8) for _ in range(3)]
    imgs.append(rng.integers(0, 255, (200, 300, 3), dtype=np.uint8))  # another size
    return imgs


def check_detections(d: sv.Detections, phrases: tuple[str, ...], h: int, w: int) -> None:
    assert d.xyxy.dtype == np.float32 and d.xyxy.shape == (len(d), 4)
    assert d.confidence is not None and d.confidence.shape == (len(d),)
    assert (d.xyxy[:, [0, 2]] >= 0).all() and (d.xyxy[:, [0, 2]] <= w).all()
    assert (d.xyxy[:, [1, 3]] >= 0).all() and (d.xyxy[:, [1, 3]] <= h).all()
    assert (d.xyxy[:, 2] > d.xyxy[:, 0]).all() and (d.xyxy[:, 3] > d.xyxy[:, 1]).all()
    labels = list(d.data["label"])
    assert set(labels) <= set(phrases)  # whole prompt phrases, never sub-tokens
    assert d.class_id is not None and [phrases[i] for i in d.class_id] == labels


def assert_same(a: sv.Detections, b: sv.Detections) -> None:
    assert len(a) == len(b)
    np.testing.assert_allclose(a.xyxy, b.xyxy, atol=1e-2)
    assert a.confidence is not None and b.confidence is not None
    np.testing.assert_allclose(a.confidence, b.confidence, atol=1e-4)
    np.testing.assert_array_equal(a.data["label"], b.data["label"])
    if a.mask is None:
        assert b.mask is None
    else:
        assert b.mask is not None and a.mask.shape == b.mask.shape
        assert np.mean(a.mask != b.mask) < 1e-3  # a pixel at the 0.5 edge may flip


@pytest.mark.parametrize("name", TINY)
def test_saved_model_loads_through_from_pretrained_and_detects(
    name: str, tiny: dict[str, DetectorBase], saved: dict[str, Path], images: list[np.ndarray]
) -> None:
    built = tiny[name]
    loaded = load(str(saved[name]))
    assert type(loaded) is type(built) and loaded.family == built.family
    a, b = built.model.state_dict(), loaded.model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    prompt = loaded.parse_prompt(PROMPT)
    assert prompt.phrases == ("red ball", "box", "person")
    assert prompt.text == "red ball. box. person." and prompt.family == loaded.family
    image = images[0]
    d = loaded.detect(image, prompt)
    assert len(d) > 0
    check_detections(d, prompt.phrases, 240, 320)
    if loaded.family == "sam3":
        assert d.mask is not None and d.mask.shape == (len(d), 240, 320) and d.mask.dtype == bool
    else:
        assert d.mask is None
    assert_same(d, built.detect(image, built.parse_prompt(PROMPT)))


@pytest.mark.parametrize("name", TINY)
def test_detect_batch_equals_detect(
    name: str, tiny: dict[str, DetectorBase], images: list[np.ndarray]
) -> None:
    detector = tiny[name]
    prompts = [detector.parse_prompt(t) for t in (PROMPT, "dog. cat.", PROMPT, "box")]
    batch = detector.detect_batch(images, prompts)
    assert len(batch) == len(images)
    for image, prompt, got in zip(images, prompts, batch, strict=True):
        single = detector.detect(image, prompt)
        check_detections(got, prompt.phrases, *image.shape[:2])
        assert_same(single, got)
    assert detector.detect_batch([], []) == []
    with pytest.raises(ValueError, match="one prompt per image"):
        detector.detect_batch(images, prompts[:1])
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        detector.detect(images[0][:, :, 0], prompts[0])


def test_sam3_video_checkpoint_loads_its_detector(
    tiny: dict[str, DetectorBase], saved: dict[str, Path], images: list[np.ndarray], tmp_path: Path
) -> None:
    """facebook/sam3 is a ``sam3_video`` checkpoint (detector and tracker weights, the detector's
    under ``detector_model.``): the detector loads from it, the tracker weights are ignored."""
    from safetensors.torch import save_file

    built = tiny["sam3-tiny-random"]
    detector_config = json.loads((saved["sam3-tiny-random"] / "config.json").read_text())
    for f in ("tokenizer.json", "tokenizer_config.json", "preprocessor_config.json"):
        (tmp_path / f).write_bytes((saved["sam3-tiny-random"] / f).read_bytes())
    (tmp_path / "config.json").write_text(
        json.dumps({"model_type": "sam3_video", "detector_config": detector_config})
    )
    weights = {f"detector_model.{k}": v.contiguous() for k, v in built.model.state_dict().items()}
    weights["tracker_model.memory_encoder.weight"] = torch.zeros(3)
    save_file(weights, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    loaded = load(str(tmp_path))
    assert loaded.family == "sam3"
    prompt = loaded.parse_prompt("ball")
    assert_same(loaded.detect(images[0], prompt), built.detect(images[0], prompt))


def test_thresholds_filter(tiny: dict[str, DetectorBase], images: list[np.ndarray]) -> None:
    for name, detector in tiny.items():
        if name.startswith("florence2"):
            continue  # Florence-2 gives no scores: thresholds do not apply
        detector.box_threshold = 1.0
        try:
            d = detector.detect(images[0], detector.parse_prompt(PROMPT))
        finally:
            detector.box_threshold = ENGINE.box_threshold
        assert len(d) == 0 and d.xyxy.shape == (0, 4), name


def test_prompts_are_checked_per_family(tiny: dict[str, DetectorBase]) -> None:
    long_phrase = " ".join(["forklift"] * 40)
    for name in ("owlv2-tiny-random", "owlvit-tiny-random", "sam3-tiny-random"):
        with pytest.raises(PromptError, match="longer than the text encoder accepts"):
            tiny[name].parse_prompt(f"ball. {long_phrase}")
    for detector in tiny.values():
        with pytest.raises(PromptError, match="no phrase"):
            detector.parse_prompt(" . ,, ")
    # A prompt another family parsed, or one built by hand, is parsed again from its text.
    image = np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    for name in ("grounding-dino-tiny-random", "omdet-turbo-tiny-random", "sam3-tiny-random"):
        own = tiny[name].detect(image, tiny[name].parse_prompt("ball. box."))
        for foreign in (
            tiny["owlv2-tiny-random"].parse_prompt("ball. box."),
            DetectorPrompt(("ball", "box"), "ball. box."),
        ):
            assert_same(tiny[name].detect(image, foreign), own)


def test_grounder_wraps_any_family(tiny: dict[str, DetectorBase], images: list[np.ndarray]) -> None:
    g = Grounder(tiny["sam3-tiny-random"], "Ball. box.")
    assert g.phrases == ["ball", "box"] and g.prompt == "ball. box."
    d = g.detect(images[0])
    assert len(d) > 0 and set(d.data["label"]) <= {"ball", "box"} and d.mask is not None
    assert g.set_prompt("person") == ["person"]
    with pytest.raises(PromptError):
        g.set_prompt("...")
    assert g.phrases == ["person"]  # a bad prompt leaves the current one in place
    with pytest.raises(PromptError, match="no prompt set"):
        Grounder(tiny["owlv2-tiny-random"]).detect(images[0])


def test_florence2_answers_become_boxes(tiny: dict[str, DetectorBase]) -> None:
    """Florence-2's answer format, read by its processor's parser: four location tokens per box
    on a 1000-bin grid (bin centres), polygons as their bounding boxes, stray tokens ignored."""
    from engine.detectors.florence2 import Florence2Detector

    f = tiny["florence2-tiny-random"]
    assert isinstance(f, Florence2Detector)
    size = (640, 480)
    answer = "</s><s>ball<loc_100><loc_200><loc_300><loc_400><loc_0><loc_0><loc_999><loc_999></s>"
    assert f._boxes(answer, size) == [[64.0, 96.0, 192.0, 192.0], [0.0, 0.0, 639.0, 479.0]]
    polygon = "</s><s>ball<poly><loc_100><loc_200><loc_300><loc_400><loc_500><loc_100></poly></s>"
    assert f._boxes(polygon, size) == [[64.0, 48.0, 320.0, 192.0]]
    assert f._boxes("</s><s>ball<poly></poly></s>", size) == []
    assert f._boxes("</s><loc_1><loc_2>", size) == []


def test_class_nms_suppresses_within_a_label_only() -> None:
    boxes = torch.tensor(
        [[0, 0, 10, 10], [1, 1, 10, 10], [0, 0, 10, 10], [50, 50, 60, 60]], dtype=torch.float32
    )
    scores = torch.tensor([0.5, 0.9, 0.8, 0.1])
    labels = torch.tensor([0, 0, 1, 0])
    assert sorted(class_nms(boxes, scores, labels, 0.5).tolist()) == [1, 2, 3]
    assert class_nms(boxes[:0], scores[:0], labels[:0], 0.5).tolist() == []


# ---------------------------------------------------------------------- bad sources


def test_unknown_missing_and_unsupported_sources(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"unknown detector .no-such-detector.*owlv2-base"):
        load("no-such-detector")
    with pytest.raises(ModelLoadError, match="does not exist"):
        load(str(tmp_path / "missing"))
    with pytest.raises(ModelLoadError, match=r"has no config\.json"):
        load(str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ModelLoadError) as err:
        load(str(tmp_path))
    message = str(err.value)
    assert "'bert' model, not a supported detector" in message and "\n" not in message
    assert all(t in message for f in families(ModelKind.DETECTOR) for t in f.model_types)


def test_directory_whose_weights_do_not_match_its_config(
    saved: dict[str, Path], tmp_path: Path
) -> None:
    import shutil

    for name in ("grounding-dino-tiny-random", "owlv2-tiny-random"):
        broken = tmp_path / name
        shutil.copytree(saved[name], broken)
        config = json.loads((broken / "config.json").read_text())
        if "decoder_layers" in config:
            config["decoder_layers"] += 1  # a layer the weights do not have
        else:
            config["text_config"]["num_hidden_layers"] += 1
        (broken / "config.json").write_text(json.dumps(config))
        with pytest.raises(ModelLoadError, match=r"do not match its config: .*missing keys"):
            load(str(broken))
        config["d_model" if "d_model" in config else "projection_dim"] *= 2  # other shapes
        (broken / "config.json").write_text(json.dumps(config))
        with pytest.raises(ModelLoadError, match="do not match its config"):
            load(str(broken))
    no_weights = tmp_path / "no-weights"
    shutil.copytree(saved["sam3-tiny-random"], no_weights)
    (no_weights / "model.safetensors").unlink()
    with pytest.raises(ModelLoadError, match="cannot load sam3 from directory"):
        load(str(no_weights))


def test_hub_sources_offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ModelLoadError) as err:
        load("owlv2-base")  # a preset whose weights are not here
    message = str(err.value)
    assert "google/owlv2-base-patch16-ensemble" in message and OFFLINE_OPTIONS in message
    # A cached Hub repo whose config is not a detector: refused from its config alone.
    cache = tmp_path / "hub"
    snapshot = cache / "models--promptcam-test--a-bert" / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text(json.dumps({"model_type": "bert"}))
    (cache / "models--promptcam-test--a-bert" / "refs").mkdir()
    (cache / "models--promptcam-test--a-bert" / "refs" / "main").write_text("0" * 40)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    with pytest.raises(ModelLoadError, match="'bert' model, not a supported detector"):
        load("promptcam-test/a-bert")


# ---------------------------------------------------------------------- through the CLI


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("video") / "demo.mp4"
    scene = DemoScene(320, 240, 3, seed=2, fps=15)
    with Mp4Writer(path, 15) as w:
        for i in range(4):
            w.write(scene.render(i)[0])
    return path


def cli_main(*args: str) -> int:
    """``promptcam ARGS`` in this process (the CLI's own entry point): its exit status."""
    from clients.cli import main

    with pytest.raises(SystemExit) as done:
        main(list(args))
    code = done.value.code
    return code if isinstance(code, int) else 1


@pytest.mark.parametrize("name", TINY)
def test_track_cli_detects_with_each_family(
    name: str, saved: dict[str, Path], video: Path, tmp_path: Path
) -> None:
    tracks = tmp_path / "t.jsonl"
    code = cli_main(
        "track",
        str(video),
        "--models",
        "tiny-random",
        "--device",
        "cpu",
        "--detector",
        str(saved[name]),
        "--prompt",
        "Ball. BOX. ball.",
        "--tracks",
        str(tracks),
        "--set",
        "engine.box_threshold=0.0",
        "--set",
        "engine.text_threshold=0.0",
        "--set",
        "engine.reground_every_frames=2",
        "--set",
        "engine.max_objects=2",
        "--no-progress",
    )
    assert code == 0
    msgs = [json.loads(line) for line in tracks.read_text().splitlines()]
    assert [m["seq"] for m in msgs] == [0, 1, 2, 3] and msgs[0]["prompt"] == "ball. box."
    labels = {o["label"] for m in msgs for o in m["objects"]}
    assert labels and labels <= {"ball", "box"}


def test_cli_bad_detectors_are_one_line_errors(
    saved: dict[str, Path], video: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bert = tmp_path / "bert"
    bert.mkdir()
    (bert / "config.json").write_text(json.dumps({"model_type": "bert"}))
    for detector, needle in ((str(bert), "not a supported detector"), ("nope", "unknown detector")):
        code = cli_main(
            "track", str(video), "--models", "tiny-random", "--detector", detector,
            "--prompt", "ball", "--tracks", str(tmp_path / "x.jsonl"),
        )  # fmt: skip
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and needle in err[0], err


def test_cli_preset_without_weights_names_offline_options(video: Path, tmp_path: Path) -> None:
    r = subprocess.run(
        [*CLI, "track", str(video), "--models", "tiny-random", "--detector", "florence2-base",
         "--prompt", "ball", "--tracks", str(tmp_path / "x.jsonl")],
        capture_output=True, text=True, timeout=240, env=ENV,
    )  # fmt: skip
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert "florence-community/Florence-2-base" in last and OFFLINE_OPTIONS in last


def test_models_command_lists_presets_and_the_cache(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cache = tmp_path / "hub"
    repo = cache / "models--google--owlv2-base-patch16-ensemble"
    snapshot = repo / "snapshots" / ("1" * 40)
    snapshot.mkdir(parents=True)
    for f in ("config.json", "model.safetensors"):
        (snapshot / f).write_text("{}")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("1" * 40)
    r = subprocess.run(
        [*CLI, "models", "--json"],
        capture_output=True, text=True, timeout=120, env={**ENV, "HF_HUB_CACHE": str(cache)},
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    rows = {(e["kind"], e["name"]): e for e in json.loads(r.stdout)}
    assert rows[("detector", "owlv2-base")]["status"] == "cached"
    assert rows[("detector", "owlvit-base")]["status"] == "not cached"
    assert rows[("models", "sam2.1-hiera-tiny")]["status"] == "not cached"
    assert "facebook/sam2.1-hiera-tiny" in rows[("models", "sam2.1-hiera-tiny")]["needs"]
    assert rows[("models", "tiny-random")]["status"] == "local"
    assert rows[("tracker", "sam3-tracker-tiny-random")]["status"] == "local"
    assert rows[("tracker", "edgetam")]["status"] == "not cached"
    for name in TINY:
        assert rows[("detector", name)]["status"] == "local"
    assert {e["name"] for e in rows.values() if e["kind"] == "detector"} == set(DETECTOR_PRESETS)
    assert cli_main("models") == 0
    table = capsys.readouterr().out
    assert "llmdet-tiny" in table and "sam3-tiny-random" in table and "local" in table
