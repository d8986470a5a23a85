"""``promptcam models``: every model, tracker and detector preset, what each needs, and whether
it is available offline: tiny-random presets are built from files under ``configs/``; Hub presets
are ``cached`` when the local Hugging Face cache holds their files. Looks only at the local cache
(``huggingface_hub.scan_cache_dir``), never at the network."""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

from engine.presets import DETECTOR_PRESETS, PRESETS, TRACKER_PRESETS, Preset
from stream.config import Config

log = logging.getLogger(__name__)

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")


@dataclass(frozen=True)
class ModelEntry:
    kind: str  # "models" (--models: tracker + default detector), "tracker" or "detector"
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


def _hub_status(repo_id: str, cache: dict[str, set[str]]) -> str:
    files = cache.get(repo_id, set())
    cached = "config.json" in files and any(w in files for w in WEIGHT_FILES)
    return "cached" if cached else "not cached"


def _tracker_preset_entry(name: str, cache: dict[str, set[str]]) -> ModelEntry:
    t = TRACKER_PRESETS[name]
    if t.hub_id is None:
        assert t.config_dir is not None
        needs = f"configs/{t.config_dir.name}/ (random weights, seed {t.seed})"
        return ModelEntry("tracker", t.name, t.family, needs, _local(t.config_dir), t.note)
    return ModelEntry(
        "tracker", t.name, t.family, f"hub {t.hub_id}", _hub_status(t.hub_id, cache), t.note
    )


def _model_entry(preset: Preset, cache: dict[str, set[str]]) -> ModelEntry:
    if preset.tracker is not None:
        tracker = _tracker_preset_entry(preset.tracker, cache)
        needs = f"tracker {preset.tracker}; detector {preset.detector}"
        return ModelEntry("models", preset.name, tracker.family, needs, tracker.status)
    if preset.sam2_hub_id is None:
        path = Path(preset.sam2_config)
        return ModelEntry(
            "models",
            preset.name,
            "sam2",
            f"{path.name} under configs/ (random weights); detector {preset.detector}",
            _local(path),
        )
    filename = preset.sam2_file or ""
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
        yield _model_entry(preset, cache)
    for name in TRACKER_PRESETS:
        yield _tracker_preset_entry(name, cache)
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
        yield ModelEntry(
            "detector", d.name, d.family, f"hub {d.hub_id}", _hub_status(d.hub_id, cache), d.note
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
            "\n--models NAME picks a preset (a tracker and its default detector); --tracker and "
            "--detector take a preset NAME, a Hub id or a directory."
        )
    return 0
