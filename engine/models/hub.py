"""The Hugging Face Hub, asked once: is it reachable, is a file cached, fetch a file.

Without network, huggingface_hub retries a failed request with backoff (about 25 s and a
warning per try for one checkpoint) and transformers does so for each of a dozen files. Here one
request with a short timeout (``PROBE_TIMEOUT_S``, no retry) decides: if the Hub does not
answer, files come from the local cache only, and what is not cached fails at once with one
line naming the offline options. ``HF_HUB_OFFLINE=1`` skips the request.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from engine.models.presets import OFFLINE_OPTIONS
from stream.errors import ModelLoadError

log = logging.getLogger(__name__)

PROBE_TIMEOUT_S = 3.0


def looks_like_hub_id(source: str) -> bool:
    """``org/name`` (or ``name``), not a path: what ``from_pretrained`` would fetch."""
    return not (source.startswith((".", "/", "~")) or Path(source).suffix or source.count("/") > 1)


def unreachable(repo_id: str, filename: str) -> str | None:
    """Why the Hub cannot serve ``repo_id/filename`` now (None: it answered), from one request.

    An HTTP error answer (404, 401) counts as reachable: the download then reports it."""
    from huggingface_hub import constants, get_hf_file_metadata, hf_hub_url
    from huggingface_hub.errors import HfHubHTTPError

    if constants.is_offline_mode():
        return "HF_HUB_OFFLINE=1"
    try:
        get_hf_file_metadata(hf_hub_url(repo_id, filename), timeout=PROBE_TIMEOUT_S)
    except HfHubHTTPError:
        return None
    except Exception as e:  # transport errors are the HTTP library's own (vendored) types
        log.debug("hub probe %s/%s failed", repo_id, filename, exc_info=True)
        return first_line(e)
    return None


def first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def cached(repo_id: str, filename: str) -> Path | None:
    """The cached copy of ``repo_id/filename``, if there is one."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, filename)
    return Path(found) if isinstance(found, str) else None


def fetch(repo_id: str, filename: str) -> Path:
    """``repo_id/filename`` from the cache or the Hub; ``ModelLoadError`` (one line) if neither
    has it, at once when the Hub is unreachable."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError

    local = cached(repo_id, filename)
    if local is not None:
        return local
    why = unreachable(repo_id, filename)
    if why is not None:
        raise ModelLoadError(
            f"cannot download {repo_id}/{filename}: the Hugging Face Hub is unreachable ({why}) "
            f"and the file is not cached; {OFFLINE_OPTIONS}"
        )
    try:
        return Path(hf_hub_download(repo_id=repo_id, filename=filename))
    except (OSError, HfHubHTTPError, ValueError) as e:
        raise ModelLoadError(
            f"download of {repo_id}/{filename} from the Hugging Face Hub failed "
            f"({type(e).__name__}: {first_line(e)}); {OFFLINE_OPTIONS}"
        ) from None


def ensure_available(files: Sequence[tuple[str, str]]) -> None:
    """``ModelLoadError`` naming the first (repo_id, filename) that is neither cached nor
    reachable now; the launcher's check before it starts any child."""
    for repo_id, filename in files:
        if cached(repo_id, filename) is not None:
            continue
        why = unreachable(repo_id, filename)
        if why is not None:
            raise ModelLoadError(
                f"model {repo_id} is not cached and the Hugging Face Hub is unreachable "
                f"({why}); {OFFLINE_OPTIONS}"
            )
