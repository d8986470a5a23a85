"""The model registry (engine/models/registry.py): every preset names a row of the right kind,
every row's implementation is what its kind loads, and ``promptcam models --families`` lists
the rows with the presets each serves."""

from __future__ import annotations

import argparse
import json

import pytest

from clients.models import main as models_main
from engine.detectors.base import DetectorBase
from engine.models.loading import segmenter_loader
from engine.models.presets import DETECTOR_PRESETS, TRACKER_PRESETS, all_presets
from engine.models.registry import (
    DEFAULT_SEGMENTER,
    FAMILIES,
    ModelKind,
    family_for_model_type,
    get_family,
    presets_of,
)
from engine.models.video import VideoFamily
from stream.config import Config, ModelsConfig
from stream.errors import ModelLoadError


def test_every_preset_names_a_family_of_its_kind() -> None:
    for t in TRACKER_PRESETS.values():
        assert get_family(t.family).kind == ModelKind.TRACKER, t
    for d in DETECTOR_PRESETS.values():
        assert get_family(d.family).kind == ModelKind.DETECTOR, d
    assert get_family(DEFAULT_SEGMENTER).kind == ModelKind.SEGMENTER
    served = {name for f in FAMILIES.values() for name in presets_of(f)}
    assert set(all_presets()) | set(TRACKER_PRESETS) | set(DETECTOR_PRESETS) <= served


def test_every_family_implementation_is_what_its_kind_loads() -> None:
    for family in FAMILIES.values():
        impl = family.implementation()
        if family.kind == ModelKind.DETECTOR:
            assert isinstance(impl, type) and issubclass(impl, DetectorBase), family
        elif family.kind == ModelKind.TRACKER:
            assert isinstance(impl, VideoFamily) and impl.model_type == family.name, family
        else:
            assert callable(segmenter_loader(family.name)), family
        for model_type in family.model_types:
            assert family_for_model_type(family.kind, model_type) is not None


def test_unknown_or_misused_family_is_one_line() -> None:
    with pytest.raises(ModelLoadError, match=r"^unknown model family 'nope' \(known: sam2, "):
        get_family("nope")
    with pytest.raises(ModelLoadError, match=r"^model family 'owlv2' is not a segmenter$"):
        segmenter_loader("owlv2")
    assert family_for_model_type(ModelKind.DETECTOR, "bert") is None
    # a SAM 3 checkpoint is a detector to the detector path and a tracker to the tracker path
    assert family_for_model_type(ModelKind.DETECTOR, "sam3_video") == FAMILIES["sam3"]
    tracker = family_for_model_type(ModelKind.TRACKER, "sam3_video")
    assert tracker == FAMILIES["sam3_tracker_video"]


def test_models_families_lists_every_row(capsys: pytest.CaptureFixture[str]) -> None:
    args = argparse.Namespace(families=True, json=True, fetch=None)
    assert models_main(Config(), args) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert list(rows) == list(FAMILIES)
    assert rows["owlv2"]["kind"] == "detector"
    assert "owlv2-tiny-random" in rows["owlv2"]["presets"]
    assert "sam2.1-hiera-tiny" in rows["sam2"]["presets"]
    assert rows["sam3_tracker_video"]["model_types"] == "sam3_tracker_video, sam3_video"
    args = argparse.Namespace(families=True, json=False, fetch=None)
    assert models_main(Config(), args) == 0
    table = capsys.readouterr().out
    assert table.splitlines()[0].split() == [
        "name",
        "kind",
        "model_types",
        "presets",
        "description",
    ]
    assert "Florence-2" in table


def _fake_segmenter(models: ModelsConfig) -> object:
    """A segmenter family's loader as a new family's file would define it."""
    return ("fake kernel", models.preset)


def test_a_new_segmenter_is_one_row_and_a_config_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """A segmenter family added as one registry row (its loader in its own module: here this
    test module) is what ``models.segmenter`` selects, with no other edit; the default row is
    ``sam2``; an unknown name is a one-line error."""
    from engine.models import registry
    from engine.models.loading import load_kernel

    row = registry.ModelFamily(
        "fake-seg",
        ModelKind.SEGMENTER,
        (),
        f"{__name__}:_fake_segmenter",
        "a segmenter added by a test",
    )
    monkeypatch.setitem(registry.FAMILIES, row.name, row)
    models = ModelsConfig(preset="tiny-random", device="cpu", segmenter="fake-seg")
    kernel: object = load_kernel(models)
    assert kernel == ("fake kernel", "tiny-random")
    assert ModelsConfig().segmenter == DEFAULT_SEGMENTER == "sam2"
    with pytest.raises(ModelLoadError, match=r"^unknown model family 'nope' \(known: sam2, "):
        load_kernel(ModelsConfig(preset="tiny-random", device="cpu", segmenter="nope"))
