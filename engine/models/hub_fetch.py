"""A preset's files fetched from the Hugging Face Hub into its local cache, for a machine without
network (``promptcam models --fetch NAME``), and whether the cache holds them all.

What is fetched is what the preset's loaders read, no more:

* a ``sam2.1-hiera-*`` preset (and a ``PROMPTCAM_PRESETS`` one): the Meta-format checkpoint file
  of its Hub repo (``engine/models/sam2.py`` reads only that file; its YAML is the ``sam2``
  package's own, or a local file);
* a transformers tracker or detector (``engine/models/video.py``, ``engine/detectors``): the files of
  the repo's top level that ``from_pretrained`` and ``AutoProcessor`` may read (configs,
  tokenizer and processor files, the weights), without the same weights in other formats
  (``pytorch_model.bin`` beside ``model.safetensors``, TensorFlow, Flax, ONNX) and pictures.

Downloads go through huggingface_hub (``hf_hub_download``, ``snapshot_download``) into its own
cache layout (``HF_HUB_CACHE``, by default ``$HF_HOME/hub``), so the same loaders find the files
there afterwards with ``HF_HUB_OFFLINE=1``; copying that directory to another machine's
``HF_HOME/hub`` makes it ready offline. A file being downloaded is a ``*.incomplete`` blob until
it is whole (a later fetch resumes it); a repo is counted as cached only when every file the
fetch chose is in its snapshot (huggingface_hub's tree listing, ``trees/<commit>.json``, says
which those are), so a fetch that failed half-way never shows as ``cached``.
"""

from __future__ import annotations

import contextlib
import glob
import json
import logging
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from engine.models import hub
from engine.models.presets import DETECTOR_PRESETS, TRACKER_PRESETS, all_presets
from stream.errors import ModelLoadError

log = logging.getLogger(__name__)

# Not read by any loader: the same weights in another framework's format, exports, pictures.
SKIPPED_SUFFIXES = (
    ".h5",
    ".msgpack",
    ".onnx",
    ".onnx_data",
    ".ot",
    ".tflite",
    ".mlmodel",
    ".gguf",
    ".png",
    ".jpg",
    ".jpeg",
    ".gif",
    ".webp",
    ".mp4",
)
# PyTorch pickles, skipped where the repo has safetensors (transformers loads those first).
PICKLED_WEIGHTS = (".bin", ".pt", ".pth", ".ckpt")
DOC_SUFFIXES = (".md", ".gitattributes")
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")


@dataclass(frozen=True)
class Download:
    """One thing a preset loads from the Hub: a file of a repo, or (``filename`` None) the
    loadable files of a transformers model repo."""

    repo_id: str
    filename: str | None
    what: str  # "SAM 2 checkpoint", "tracker NAME:", "detector", for messages

    def __str__(self) -> str:
        return f"{self.repo_id}/{self.filename}" if self.filename else self.repo_id


@dataclass(frozen=True)
class Fetched:
    download: Download
    files: tuple[str, ...]
    size_bytes: int


class IncompleteRepo(Exception):
    """The Hub's answers do not make a whole copy of a repo."""


def loadable_files(paths: list[str]) -> list[str]:
    """The files of a transformers model repo listing (``paths``) that its loaders may read."""
    top = [p for p in paths if "/" not in p and not p.lower().endswith(SKIPPED_SUFFIXES)]
    if any(p.endswith(".safetensors") for p in top):
        top = [p for p in top if not p.lower().endswith(PICKLED_WEIGHTS)]
    return sorted(top)


def downloads(name: str) -> list[Download]:
    """What loading the model, tracker or detector preset ``name`` reads from the Hub (empty
    for tiny-random presets and shipped weights); ModelLoadError for an unknown name."""
    presets = all_presets()
    found: list[Download] = []
    if name in presets:
        p = presets[name]
        if p.sam2_checkpoint is None and p.sam2_hub_id and p.sam2_file:
            found.append(Download(p.sam2_hub_id, p.sam2_file, "SAM 2 checkpoint"))
        if p.tracker is not None:
            found += _tracker(p.tracker)
        found += _detector(p.detector)
    elif name in TRACKER_PRESETS:
        found = _tracker(name)
    elif name in DETECTOR_PRESETS:
        found = _detector(name)
    else:
        raise ModelLoadError(
            f"unknown preset '{name}': not a model, tracker or detector preset (see: promptcam "
            "models)"
        )
    unique: dict[tuple[str, str | None], Download] = {}
    for d in found:
        unique.setdefault((d.repo_id, d.filename), d)
    return list(unique.values())


def _tracker(name: str) -> list[Download]:
    hub_id = TRACKER_PRESETS[name].hub_id
    return [Download(hub_id, None, f"tracker {name}:")] if hub_id else []


def _detector(source: str) -> list[Download]:
    if source in DETECTOR_PRESETS:
        hub_id = DETECTOR_PRESETS[source].hub_id
        return [Download(hub_id, None, f"detector {source}:")] if hub_id else []
    if Path(source).expanduser().is_dir() or "/" not in source:
        return []
    return [Download(source, None, "detector")] if hub.looks_like_hub_id(source) else []


class ProgressBar(tqdm):  # type: ignore[misc]  # tqdm has no type hints
    """huggingface_hub's progress bars, on stderr also when it is not a terminal (a log, a
    pipe); ``HF_HUB_DISABLE_PROGRESS_BARS=1`` turns them off."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        from huggingface_hub.utils.tqdm import are_progress_bars_disabled

        kwargs.pop("name", None)
        kwargs.setdefault("file", sys.stderr)
        kwargs.setdefault("mininterval", 0.5)
        kwargs["disable"] = kwargs.get("disable") or are_progress_bars_disabled()
        super().__init__(*args, **kwargs)


def fetch(name: str) -> list[Fetched]:
    """Download what preset ``name`` loads (:func:`downloads`) into the Hugging Face cache, with
    progress bars on stderr. ModelLoadError (one line naming the repo or file) on the first
    failure; what was whole before stays, nothing partial counts as cached."""
    from huggingface_hub import constants

    items = downloads(name)
    if items and constants.is_offline_mode():
        raise ModelLoadError(
            f"cannot fetch {name} with HF_HUB_OFFLINE=1 set: unset it on a machine with network"
        )
    done = []
    with _quiet_hub_logs():
        for d in items:
            why = hub.unreachable(d.repo_id, d.filename or "config.json")
            if why is not None:
                raise ModelLoadError(
                    f"cannot fetch {name}: the Hugging Face Hub ({constants.ENDPOINT}) is "
                    f"unreachable for {d.what} {d}: {why}"
                )
            try:
                done.append(_fetch_file(d) if d.filename else _fetch_repo(d))
            except Exception as e:  # the Hub client's errors share no base beyond Exception
                log.debug("fetching %s failed", d, exc_info=True)
                raise ModelLoadError(f"cannot fetch {name}: {d.what} {d}: {_why(e)}") from None
    return done


@contextlib.contextmanager
def _quiet_hub_logs() -> Iterator[None]:
    """huggingface_hub logs a warning per retry of a broken download, its HTTP client a line per
    request: the progress bars show the progress, the one error line what failed."""
    import huggingface_hub.file_download  # noqa: F401  # configures its loggers on import

    loggers = [logging.getLogger(n) for n in ("huggingface_hub", "httpx", "httpx2", "httpcore")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def _fetch_file(d: Download) -> Fetched:
    from huggingface_hub import hf_hub_download

    assert d.filename is not None
    path = Path(hf_hub_download(d.repo_id, d.filename, tqdm_class=ProgressBar))
    return Fetched(d, (d.filename,), path.stat().st_size)


def _fetch_repo(d: Download) -> Fetched:
    from huggingface_hub import HfApi, snapshot_download

    info = HfApi().model_info(d.repo_id)
    files = loadable_files([s.rfilename for s in info.siblings or []])
    if not files:
        raise IncompleteRepo("the repo has no model files on the Hub")
    folder = Path(
        snapshot_download(
            d.repo_id,
            allow_patterns=[glob.escape(f) for f in files],
            tqdm_class=ProgressBar,
        )
    )
    missing = [f for f in files if not (folder / f).is_file()]
    if missing:  # listed by the Hub but not served: not a whole copy
        raise IncompleteRepo(f"{len(missing)} listed files were not served, e.g. {missing[0]}")
    return Fetched(d, tuple(files), sum((folder / f).stat().st_size for f in files))


def _why(e: BaseException) -> str:
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        RemoteEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    if isinstance(e, IncompleteRepo):
        return str(e)
    status = getattr(getattr(e, "response", None), "status_code", None)
    if isinstance(e, GatedRepoError):
        return f"gated on the Hub (HTTP {status}): accept its licence and log in"
    if isinstance(e, RepositoryNotFoundError):
        return f"no such repo on the Hub, or it is private (HTTP {status})"
    if isinstance(e, RevisionNotFoundError):
        return f"no such revision on the Hub (HTTP {status})"
    if isinstance(e, RemoteEntryNotFoundError):
        return f"no such file on the Hub (HTTP {status})"
    if isinstance(e, HfHubHTTPError):
        return f"the Hub answered HTTP {status}: {hub.first_line(e)}"
    return f"{type(e).__name__}: {hub.first_line(e)}"


@dataclass(frozen=True)
class CachedRepo:
    """A model repo in the local cache: its snapshot's files (path -> bytes) at ``main`` (or
    every revision's), and the files a fetch chose from the Hub's listing, where known."""

    files: dict[str, int]
    expected: list[str] | None


def scan_cache() -> dict[str, CachedRepo]:
    """Hub model repo id -> what the local cache holds of it (empty without a cache). Reads
    only the local cache, never the network."""
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound, CorruptedCacheException

    try:
        info = scan_cache_dir()
    except (CacheNotFound, CorruptedCacheException, OSError, ValueError) as e:
        log.debug("no usable Hugging Face cache: %s", e)
        return {}
    found: dict[str, CachedRepo] = {}
    for repo in info.repos:
        if repo.repo_type != "model":
            continue
        revisions = [r for r in repo.revisions if "main" in r.refs] or list(repo.revisions)
        files: dict[str, int] = {}
        for revision in revisions:
            for f in revision.files:
                files[f.file_path.relative_to(revision.snapshot_path).as_posix()] = f.size_on_disk
        expected = None
        if len(revisions) == 1:
            expected = _listed_files(repo.repo_path, revisions[0].commit_hash)
        found[repo.repo_id] = CachedRepo(files, expected)
    return found


def _listed_files(repo_path: Path, commit: str) -> list[str] | None:
    """The files a fetch of this commit chose, from huggingface_hub's tree listing cache."""
    try:
        tree = json.loads((repo_path / "trees" / f"{commit}.json").read_text())
        listed = tree["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return loadable_files(list(listed)) if isinstance(listed, dict) else None


def cached_size(d: Download, cache: dict[str, CachedRepo]) -> int | None:
    """Bytes the cache holds of ``d`` when it holds all of it, else None."""
    repo = cache.get(d.repo_id)
    if repo is None:
        return None
    if d.filename is not None:
        return repo.files.get(d.filename)
    if repo.expected is not None:  # docs need not be there: a loader does not read them
        needed = [f for f in repo.expected if not f.endswith(DOC_SUFFIXES)]
    else:  # cached by a loader, not a fetch: a config and weights
        needed = ["config.json", *[w for w in WEIGHT_FILES if w in repo.files][:1]]
        if len(needed) < 2:
            return None
    if not needed or any(f not in repo.files for f in needed):
        return None
    return sum(repo.files[f] for f in needed)
