"""SAM 2 model loading: tiny-random, local checkpoint + YAML, Hub presets offline, bad inputs."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from engine.models.sam2 import load_sam2, official_video_predictor, save_checkpoint
from stream.config import CONFIGS_DIR, ModelsConfig
from stream.errors import ModelLoadError


def models_cfg(**fields: Any) -> ModelsConfig:
    return ModelsConfig.model_validate(fields)


TINY_YAML = CONFIGS_DIR / "sam2_tiny_random.yaml"
REPO = Path(__file__).resolve().parent.parent


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_tiny_random_is_deterministic_and_small() -> None:
    a = load_sam2(models_cfg(preset="tiny-random", device="cpu"))
    b = load_sam2(models_cfg(preset="tiny-random", device="cpu"))
    assert _same_weights(a.model, b.model)
    assert not a.model.training
    assert a.device == torch.device("cpu") and a.autocast_dtype is None
    assert a.image_size == 256
    assert 0.3e6 < a.num_params < 1.5e6
    # the predictor settings of build_sam2_video_predictor
    assert a.model.binarize_mask_from_pts_for_mem_enc
    assert a.model.sam_mask_decoder.dynamic_multimask_via_stability


def test_image_size_override() -> None:
    loaded = load_sam2(models_cfg(preset="tiny-random", image_size=128))
    assert loaded.image_size == 128
    assert loaded.model.sam_prompt_encoder.image_embedding_size == (8, 8)
    attn = loaded.model.memory_attention.layers[0].self_attn
    assert attn.freqs_cis.shape[0] == 8 * 8


def test_checkpoint_and_config_from_disk(tmp_path: Path) -> None:
    ref = load_sam2(models_cfg(preset="tiny-random"))
    ckpt = tmp_path / "weights.pt"
    config = tmp_path / "elsewhere" / "my_sam2.yaml"
    config.parent.mkdir()
    config.write_text(TINY_YAML.read_text())
    save_checkpoint(ref.model, ckpt)
    loaded = load_sam2(models_cfg(sam2_checkpoint=ckpt, sam2_config=config))
    assert _same_weights(ref.model, loaded.model)
    assert loaded.source == str(ckpt)
    official = official_video_predictor(loaded)
    assert _same_weights(loaded.model, official)
    assert official.fill_hole_area == 0


def test_config_that_is_not_sam2(tmp_path: Path) -> None:
    ckpt = tmp_path / "w.pt"
    save_checkpoint(load_sam2(models_cfg(preset="tiny-random")).model, ckpt)
    cases = {
        "plain.yaml": "foo: 1\nbar: [1, 2]\n",
        "other_target.yaml": "model:\n  _target_: torch.nn.Linear\n  in_features: 2\n  out_features: 2\n",
        "no_target.yaml": "model:\n  image_size: 256\n",
        "broken.yaml": "model: [unclosed\n",
    }
    for name, text in cases.items():
        path = tmp_path / name
        path.write_text(text)
        with pytest.raises(ModelLoadError, match=r"not a SAM 2 config|not readable YAML") as err:
            load_sam2(models_cfg(sam2_checkpoint=ckpt, sam2_config=path))
        assert "\n" not in str(err.value)
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_sam2(models_cfg(sam2_checkpoint=ckpt, sam2_config=tmp_path / "missing.yaml"))
    with pytest.raises(ModelLoadError, match="together"):
        load_sam2(models_cfg(sam2_checkpoint=ckpt))


def test_checkpoint_that_does_not_match_its_config(tmp_path: Path) -> None:
    model = load_sam2(models_cfg(preset="tiny-random")).model
    ckpt = tmp_path / "w.pt"
    save_checkpoint(model, ckpt)
    # a config with another memory size: shape mismatch
    tree = yaml.safe_load(TINY_YAML.read_text())
    tree["model"]["num_maskmem"] = 5
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump(tree))
    with pytest.raises(
        ModelLoadError, match=r"does not match config .*shape mismatch.*maskmem_tpos_enc"
    ):
        load_sam2(models_cfg(sam2_checkpoint=ckpt, sam2_config=other))
    # missing and unexpected keys
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("obj_ptr_proj")}
    state["extra.weight"] = torch.zeros(1)
    partial = tmp_path / "partial.pt"
    torch.save({"model": state}, partial)
    with pytest.raises(
        ModelLoadError,
        match=r"missing keys \(e\.g\. obj_ptr_proj.*unexpected keys \(e\.g\. extra\.weight",
    ):
        load_sam2(models_cfg(sam2_checkpoint=partial, sam2_config=TINY_YAML))
    # not in Meta format, not a checkpoint at all, not there
    plain = tmp_path / "plain.pt"
    torch.save(model.state_dict(), plain)
    with pytest.raises(ModelLoadError, match="Meta format"):
        load_sam2(models_cfg(sam2_checkpoint=plain, sam2_config=TINY_YAML))
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelLoadError, match="not readable"):
        load_sam2(models_cfg(sam2_checkpoint=junk, sam2_config=TINY_YAML))
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_sam2(models_cfg(sam2_checkpoint=tmp_path / "nope.pt", sam2_config=TINY_YAML))


def test_unknown_preset_and_missing_cuda() -> None:
    with pytest.raises(ModelLoadError, match="unknown model preset"):
        load_sam2(models_cfg(preset="sam3-huge"))
    if not torch.cuda.is_available():
        with pytest.raises(ModelLoadError, match="no CUDA device"):
            load_sam2(models_cfg(preset="tiny-random", device="cuda"))


def test_hub_preset_offline_fails_fast_and_names_offline_options(tmp_path: Path) -> None:
    code = (
        "from stream.config import ModelsConfig\n"
        "from engine.models.sam2 import load_sam2\n"
        "from stream.errors import ModelLoadError\n"
        "import time\n"
        "t = time.monotonic()\n"
        "try:\n"
        "    load_sam2(ModelsConfig(preset='sam2.1-hiera-tiny', device='cpu'))\n"
        "except ModelLoadError as e:\n"
        "    print('ERR', e)\n"
        "print('TOOK', time.monotonic() - t)\n"
    )
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"), PYTHONPATH=str(REPO))
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    lines = dict(line.split(" ", 1) for line in proc.stdout.strip().splitlines())
    assert "cannot download facebook/sam2.1-hiera-tiny" in lines["ERR"]
    assert "HF_HUB_OFFLINE=1" in lines["ERR"]
    assert "--models tiny-random" in lines["ERR"] and "--sam2-checkpoint" in lines["ERR"]
    assert float(lines["TOOK"]) < 15.0  # no retries: ~2 s idle, mostly imports
    assert time.monotonic() - started < 60
