"""``promptcam models``: every model, tracker and detector preset, what each needs, and whether
it is available offline: tiny-random presets are built from files under ``configs/``, ``demo`` is
trained and shipped in ``configs/demo/``; Hub presets are ``cached`` (with their size) when the
local Hugging Face cache holds every file they load (``engine.models.hub_fetch``). Listing looks only at
the local cache (``huggingface_hub.scan_cache_dir``), never at the network.

``promptcam models --fetch NAME`` downloads what preset NAME loads into that cache, with progress
bars on stderr, for copying to a machine without network (``engine/models/hub_fetch.py``)."""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

from engine.models.hub_fetch import CachedRepo, Download, cached_size, downloads, fetch, scan_cache
from engine.models.presets import DETECTOR_PRESETS, TRACKER_PRESETS, Preset, all_presets
from engine.models.registry import DEFAULT_SEGMENTER, FAMILIES, ModelKind, get_family, presets_of
from stream.config import Config

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelEntry:
    kind: str  # "models" (--models: tracker + default detector), "tracker" or "detector"
    name: str
    family: str
    needs: str
    status: str  # "local" (built from or shipped in configs/), "cached", "not cached", "missing"
    note: str = ""
    size_bytes: int | None = None  # what the cache holds of it, when "cached"


def _local(path: Path) -> str:
    return "local" if path.exists() else "missing"


def _hub_status(items: list[Download], cache: dict[str, CachedRepo]) -> tuple[str, int | None]:
    """("cached", bytes) when the cache holds every file of ``items``, else ("not cached", None)."""
    sizes = [cached_size(d, cache) for d in items]
    if any(s is None for s in sizes):
        return "not cached", None
    return "cached", sum(s for s in sizes if s is not None)


def _tracker_preset_entry(name: str, cache: dict[str, CachedRepo]) -> ModelEntry:
    t = TRACKER_PRESETS[name]
    family = get_family(t.family).name
    if t.hub_id is None:
        assert t.config_dir is not None
        needs = f"configs/{t.config_dir.name}/ (random weights, seed {t.seed})"
        return ModelEntry(ModelKind.TRACKER, t.name, family, needs, _local(t.config_dir), t.note)
    status, size = _hub_status(downloads(name), cache)
    return ModelEntry(ModelKind.TRACKER, t.name, family, f"hub {t.hub_id}", status, t.note, size)


def _model_entry(preset: Preset, cache: dict[str, CachedRepo]) -> ModelEntry:
    items = downloads(preset.name)
    if preset.tracker is not None:
        family = get_family(TRACKER_PRESETS[preset.tracker].family).name
        needs = f"tracker {preset.tracker}; detector {preset.detector}"
    elif preset.sam2_checkpoint is not None:  # shipped weights (demo)
        family = DEFAULT_SEGMENTER
        here = Path(preset.sam2_checkpoint)
        needs = (
            f"{here.name} + {Path(preset.sam2_config).name} under configs/{here.parent.name}/ "
            f"(trained on the demo scenes); detector configs/{here.parent.name}/"
            f"{Path(preset.detector).name}/"
        )
    elif preset.sam2_hub_id is None:
        family = DEFAULT_SEGMENTER
        needs = (
            f"{Path(preset.sam2_config).name} under configs/ (random weights, seed "
            f"{preset.seed}); detector {preset.detector}"
        )
    else:
        family = DEFAULT_SEGMENTER
        needs = f"hub {preset.sam2_hub_id}/{preset.sam2_file}; detector {preset.detector}"
    if not items:
        local = [Path(preset.sam2_config)]
        if preset.sam2_checkpoint is not None:
            local.append(Path(preset.sam2_checkpoint))
        if Path(preset.detector).is_absolute():
            local.append(Path(preset.detector))
        status = "local" if all(p.exists() for p in local) else "missing"
        if preset.tracker is not None:
            status = _tracker_preset_entry(preset.tracker, cache).status
        return ModelEntry("models", preset.name, family, needs, status)
    status, size = _hub_status(items, cache)
    return ModelEntry("models", preset.name, family, needs, status, size_bytes=size)


def entries(cache: dict[str, CachedRepo]) -> Iterable[ModelEntry]:
    for preset in all_presets().values():
        yield _model_entry(preset, cache)
    for name in TRACKER_PRESETS:
        yield _tracker_preset_entry(name, cache)
    for d in DETECTOR_PRESETS.values():
        family = get_family(d.family).name
        if d.hub_id is None:
            assert d.config_dir is not None
            yield ModelEntry(
                ModelKind.DETECTOR,
                d.name,
                family,
                f"configs/{d.config_dir.name}/ (random weights, seed {d.seed})",
                _local(d.config_dir / "config.json"),
                d.note,
            )
            continue
        status, size = _hub_status(downloads(d.name), cache)
        yield ModelEntry(
            ModelKind.DETECTOR, d.name, family, f"hub {d.hub_id}", status, d.note, size
        )


@dataclass(frozen=True)
class FamilyEntry:
    """A registry row as ``promptcam models --families`` lists it."""

    name: str
    kind: str
    model_types: str
    presets: str
    description: str


def family_entries() -> list[FamilyEntry]:
    return [
        FamilyEntry(
            f.name,
            f.kind,
            ", ".join(f.model_types) or "-",
            ", ".join(presets_of(f)) or "-",
            f.description,
        )
        for f in FAMILIES.values()
    ]


def human_size(n: int | None) -> str:
    if n is None:
        return ""
    size = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{n} B"


def format_entries(rows: list[ModelEntry]) -> str:
    cols = ["kind", "name", "family", "status", "size", "needs", "note"]
    cells = [
        [human_size(r.size_bytes) if c == "size" else str(getattr(r, c)) for c in cols]
        for r in rows
    ]
    return _table(cols, cells)


def format_families(rows: list[FamilyEntry]) -> str:
    cols = ["name", "kind", "model_types", "presets", "description"]
    return _table(cols, [[str(getattr(r, c)) for c in cols] for r in rows])


def _table(cols: list[str], cells: list[list[str]]) -> str:
    widths = [max(len(c), *(len(x[i]) for x in cells)) for i, c in enumerate(cols)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.ljust(w) for v, w in zip(x, widths, strict=True)).rstrip() for x in cells]
    return "\n".join(lines)


def fetch_main(name: str) -> int:
    """``promptcam models --fetch NAME``: download, then say what is where."""
    from huggingface_hub import constants

    fetched = fetch(name)
    if not fetched:
        print(f"{name} loads nothing from the Hugging Face Hub (its files are under configs/)")
        return 0
    parts = [
        f"{f.download} ({len(f.files)} files, {human_size(f.size_bytes)})"
        if f.download.filename is None
        else f"{f.download} ({human_size(f.size_bytes)})"
        for f in fetched
    ]
    print(f"fetched {name}: {', '.join(parts)}")
    print(
        f"into the Hugging Face cache {constants.HF_HUB_CACHE}: copy it to HF_HOME/hub (or "
        "HF_HUB_CACHE) on the machine without network; HF_HUB_OFFLINE=1 there loads it at once"
    )
    return 0


def main(cfg: Config, args: argparse.Namespace) -> int:
    if getattr(args, "fetch", None):
        return fetch_main(args.fetch)
    if getattr(args, "families", False):
        families = family_entries()
        print(
            json.dumps([asdict(f) for f in families], indent=2)
            if args.json
            else format_families(families)
        )
        return 0
    rows = list(entries(scan_cache()))
    if args.json:
        print(json.dumps([asdict(r) for r in rows], indent=2))
    else:
        print(format_entries(rows))
        print(
            "\n--models NAME picks a preset (a tracker and its default detector); --tracker and "
            "--detector take a preset NAME, a Hub id or a directory. promptcam models --fetch "
            "NAME downloads a preset's files into the Hugging Face cache (for a machine without "
            "network); PROMPTCAM_PRESETS=FILE.yaml adds presets (engine/models/presets.py)."
        )
    return 0
