"""``promptcam models``: every model preset and detector preset, what each needs, and whether it
is available offline: tiny-random presets are built from files under ``configs/``; Hub presets
are ``cached`` when the local Hugging Face cache holds their files. Looks only at the local cache
(``huggingface_hub.scan_cache_dir``), never at the network."""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

from engine.presets import DETECTOR_PRESETS, PRESETS, Preset
from stream.config import Config

log = logging.getLogger(__name__)

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")


@dataclass(frozen=True)
class ModelEntry:
    kind: str  # "models" (--models: tracker + default detector) or "detector" (--detector)
    name: str
    family: str
    needs: str
    status: str  # "local" (built from configs/), "cached", "not cached", "missing"
    note: str = ""


def cached_files() -> dict[str, set[str]]:
    """Hub model repo id -> file names in the local cache (empty without a cache)."""
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound, CorruptedCacheException

    try:
        info = scan_cache_dir()
    except (CacheNotFound, CorruptedCacheException, OSError) as e:
        log.debug("no usable Hugging Face cache: %s", e)
        return {}
    files: dict[str, set[str]] = {}
    for repo in info.repos:
        if repo.repo_type != "model":
            continue
        names = files.setdefault(repo.repo_id, set())
        for revision in repo.revisions:
            names.update(f.file_name for f in revision.files)
    return files


def _local(path: Path) -> str:
    return "local" if path.exists() else "missing"


def _tracker_entry(preset: Preset, cache: dict[str, set[str]]) -> ModelEntry:
    if preset.sam2_hub_id is None:
        path = Path(preset.sam2_config)
        return ModelEntry(
            "models",
            preset.name,
            "sam2",
            f"{path.name} under configs/ (random weights); detector {preset.detector}",
            _local(path),
        )
    from sam2.build_sam import HF_MODEL_ID_TO_FILENAMES

    _, filename = HF_MODEL_ID_TO_FILENAMES[preset.sam2_hub_id]
    cached = filename in cache.get(preset.sam2_hub_id, set())
    return ModelEntry(
        "models",
        preset.name,
        "sam2",
        f"hub {preset.sam2_hub_id}/{filename}; detector {preset.detector}",
        "cached" if cached else "not cached",
    )


def entries(cache: dict[str, set[str]]) -> Iterable[ModelEntry]:
    for preset in PRESETS.values():
        yield _tracker_entry(preset, cache)
    for d in DETECTOR_PRESETS.values():
        if d.hub_id is None:
            assert d.config_dir is not None
            yield ModelEntry(
                "detector",
                d.name,
                d.family,
                f"configs/{d.config_dir.name}/ (random weights, seed {d.seed})",
                _local(d.config_dir / "config.json"),
                d.note,
            )
            continue
        files = cache.get(d.hub_id, set())
        cached = "config.json" in files and any(w in files for w in WEIGHT_FILES)
        yield ModelEntry(
            "detector",
            d.name,
            d.family,
            f"hub {d.hub_id}",
            "cached" if cached else "not cached",
            d.note,
        )


def format_entries(rows: list[ModelEntry]) -> str:
    cols = ["kind", "name", "family", "status", "needs", "note"]
    cells = [[str(getattr(r, c)) for c in cols] for r in rows]
    widths = [max(len(c), *(len(x[i]) for x in cells)) for i, c in enumerate(cols)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.ljust(w) for v, w in zip(x, widths, strict=True)).rstrip() for x in cells]
    return "\n".join(lines)


def main(cfg: Config, args: argparse.Namespace) -> int:
    rows = list(entries(cached_files()))
    if args.json:
        print(json.dumps([asdict(r) for r in rows], indent=2))
    else:
        print(format_entries(rows))
        print(
            "\n--models NAME picks a tracker preset (and its default detector); --detector NAME, "
            "a Hub id or a directory picks the detector."
        )
    return 0
