"""Grounder: the real Grounding DINO code path (transformers) on the tiny-random model, a model
saved to and loaded from a local directory, the offline hub failure, prompt normalisation and
the external detections adapter. Every other family: tests/test_detectors.py."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.detectors.grounding_dino import GroundingDinoDetector, build_tiny_random
from engine.grounder import (
    Grounder,
    detections_from_message,
    load_grounder,
)
from engine.models.presets import DETECTOR_PRESETS, OFFLINE_OPTIONS
from stream.config import EngineConfig, ModelsConfig
from stream.errors import ModelLoadError, PromptError
from stream.prompts import normalize_prompt, prompt_text
from stream.wire import Detection, DetectionsMessage

TINY = ModelsConfig(preset="tiny-random", device="cpu")
TINY_DIR = DETECTOR_PRESETS["grounding-dino-tiny-random"].config_dir
assert TINY_DIR is not None
# Random weights score every box highly: thresholds just under 1 keep a handful of boxes.
ENGINE = EngineConfig(
    prompt="Person. red ball. zebra.", detector_size=256, box_threshold=0.3, text_threshold=0.25
)


@pytest.fixture(scope="module")
def grounder() -> Grounder:
    return load_grounder(TINY, ENGINE)


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)
    img[100:300, 200:400] = (40, 200, 40)
    return img


def test_tiny_random_detects_end_to_end(grounder: Grounder, image: np.ndarray) -> None:
    assert grounder.phrases == ["person", "red ball", "zebra"]
    assert grounder.prompt == "person. red ball. zebra."
    d = grounder.detect(image)
    assert len(d) > 0
    assert d.xyxy.dtype == np.float32 and d.xyxy.shape == (len(d), 4)
    assert d.confidence is not None and d.confidence.shape == (len(d),)
    assert (d.confidence > ENGINE.box_threshold).all()
    assert (d.xyxy[:, 0] >= 0).all() and (d.xyxy[:, 2] <= 640).all()
    assert (d.xyxy[:, 1] >= 0).all() and (d.xyxy[:, 3] <= 480).all()
    assert (d.xyxy[:, 2] > d.xyxy[:, 0]).all() and (d.xyxy[:, 3] > d.xyxy[:, 1]).all()
    labels = list(d.data["label"])
    assert set(labels) <= set(grounder.phrases)  # whole phrases, never sub-token strings
    assert d.class_id is not None
    assert [grounder.phrases[i] for i in d.class_id] == labels


def test_tiny_random_is_deterministic(grounder: Grounder, image: np.ndarray) -> None:
    other = load_grounder(TINY, ENGINE)
    a, b = grounder_model(grounder).state_dict(), grounder_model(other).state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    d1, d2 = grounder.detect(image), other.detect(image)
    np.testing.assert_array_equal(d1.xyxy, d2.xyxy)
    np.testing.assert_array_equal(d1.data["label"], d2.data["label"])
    # Building it does not disturb the caller's random state.
    torch.manual_seed(123)
    x = torch.rand(1)
    torch.manual_seed(123)
    assert TINY_DIR is not None
    build_tiny_random(0, TINY_DIR)
    assert torch.equal(torch.rand(1), x)


def with_engine(grounder: Grounder, **update: object) -> Grounder:
    """The same model and processor under other engine settings."""
    d = grounder.detector
    assert isinstance(d, GroundingDinoDetector)
    engine = ENGINE.model_copy(update=update)
    return Grounder(
        GroundingDinoDetector(d.model, d.processor, engine, torch.device("cpu")), ENGINE.prompt
    )


def grounder_model(grounder: Grounder) -> torch.nn.Module:
    d = grounder.detector
    assert isinstance(d, GroundingDinoDetector)
    model: torch.nn.Module = d.model
    return model


def test_thresholds_and_size(grounder: Grounder, image: np.ndarray) -> None:
    strict = with_engine(grounder, box_threshold=1.0)
    d = strict.detect(image)
    labels = d.data["label"]
    assert len(d) == 0 and d.xyxy.shape == (0, 4)
    assert isinstance(labels, np.ndarray) and labels.shape == (0,)
    # The input size is a speed knob: boxes stay in the original image's pixels.
    small = with_engine(grounder, detector_size=128)
    d = small.detect(image)
    assert len(d) > 0 and (d.xyxy[:, 2] <= 640).all() and (d.xyxy[:, 3] <= 480).all()
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        grounder.detect(image[:, :, 0])


def test_saved_directory_loads_through_the_pretrained_path(
    grounder: Grounder, image: np.ndarray, tmp_path: Path
) -> None:
    d = grounder.detector
    assert isinstance(d, GroundingDinoDetector)
    d.save_pretrained(tmp_path)
    loaded = load_grounder(
        ModelsConfig(preset="tiny-random", detector=str(tmp_path), device="cpu"), ENGINE
    )
    d1, d2 = grounder.detect(image), loaded.detect(image)
    assert len(d1) > 0
    np.testing.assert_allclose(d1.xyxy, d2.xyxy, atol=1e-4)
    np.testing.assert_array_equal(d1.data["label"], d2.data["label"])


def test_bad_local_directories(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_grounder(ModelsConfig(detector=str(tmp_path / "missing"), device="cpu"), ENGINE)
    with pytest.raises(ModelLoadError, match="cannot load a detector from directory"):
        load_grounder(ModelsConfig(detector=str(tmp_path), device="cpu"), ENGINE)


def test_hub_id_offline_fails_fast_and_names_offline_options(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import huggingface_hub.constants

    # HF_HUB_OFFLINE is read when huggingface_hub is imported: set the variable and the constant.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    hub_id = "promptcam-test/no-such-grounding-dino"  # never in any cache
    t = time.monotonic()
    with pytest.raises(ModelLoadError) as err:
        load_grounder(ModelsConfig(detector=hub_id, device="cpu"), ENGINE)
    assert time.monotonic() - t < 10
    message = str(err.value)
    assert hub_id in message and "cannot download" in message and OFFLINE_OPTIONS in message


@pytest.mark.parametrize(
    ("text", "phrases"),
    [
        ("person", ["person"]),
        ("Person. CAR.  person . Red   Ball..", ["person", "car", "red ball"]),
        ("a dog, a cat. ", ["a dog, a cat"]),
        (". ... !? person ...", ["person"]),
    ],
)
def test_normalize_prompt(text: str, phrases: list[str]) -> None:
    assert normalize_prompt(text) == phrases
    assert prompt_text(phrases) == " ".join(p + "." for p in phrases)


@pytest.mark.parametrize("text", ["", "   ", "...", ". ! ? , ;", "\n\t."])
def test_empty_or_punctuation_prompt_is_a_prompt_error(text: str, grounder: Grounder) -> None:
    with pytest.raises(PromptError, match="no phrase"):
        normalize_prompt(text)
    before = grounder.phrases
    with pytest.raises(PromptError):
        grounder.set_prompt(text)
    assert grounder.phrases == before  # a bad prompt leaves the current one in place


def test_long_prompt_is_truncated_with_a_warning(
    caplog: pytest.LogCaptureFixture, image: np.ndarray
) -> None:
    g = load_grounder(TINY, ENGINE)
    words = [f"thing{i}" for i in range(200)]
    with caplog.at_level(logging.WARNING, logger="engine.detectors.grounding_dino"):
        kept = g.set_prompt(". ".join(words))
    assert 0 < len(kept) < len(words) and kept == words[: len(kept)]
    assert "dropped" in caplog.text and "trailing" in caplog.text
    d = g.detector
    assert isinstance(d, GroundingDinoDetector)
    assert len(d.tokenizer(g.prompt)["input_ids"]) <= d.max_text_len
    found = g.detect(image)
    assert set(found.data["label"]) <= set(kept)
    with pytest.raises(PromptError, match="longer than the text encoder accepts"):
        g.set_prompt(" ".join(words))  # one phrase too long to fit at all


def test_detections_from_message() -> None:
    msg = DetectionsMessage.build(
        "cam0",
        7,
        [
            Detection(label="Person", score=0.9, box=[1.0, 2.0, 30.0, 40.0]),
            Detection(label="red ball.", score=0.6, box=[5.0, 5.0, 9.0, 9.0]),
            Detection(label="dog", score=0.8, box=[0.0, 0.0, 10.0, 10.0]),
        ],
    )
    d = detections_from_message(msg, ["person", "red ball"])
    assert list(d.data["label"]) == ["person", "red ball"]
    assert d.class_id is not None and list(d.class_id) == [0, 1]
    np.testing.assert_allclose(d.xyxy, [[1, 2, 30, 40], [5, 5, 9, 9]])
    empty = detections_from_message(DetectionsMessage.build("cam0", 8, []), ["person"])
    assert len(empty) == 0 and empty.xyxy.shape == (0, 4)


def test_load_is_quick() -> None:
    t = time.monotonic()
    load_grounder(TINY, ENGINE)
    assert time.monotonic() - t < 30
