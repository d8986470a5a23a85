"""Text prompts as every detector family reads them, without loading one.

:func:`normalize_prompt` is the one rule (``engine/detectors`` parse with it, then apply their
text encoder's token budget); the command line applies it before anything starts, so a prompt
with no phrase (``'....'``) is one line and exit status 2 rather than an engine that fails to
start. Imports nothing heavy (no torch): a check costs microseconds.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from stream.errors import PromptError

_WORD = re.compile(r"[a-z0-9]")
_EDGE_PUNCT = re.compile(r"^[\W_]+|[\W_]+$")  # punctuation and spaces around a phrase


def normalize_prompt(text: str) -> list[str]:
    """The prompt's phrases: lower case, split on '.', whitespace collapsed, deduplicated.

    Raises :class:`PromptError` when no phrase with a letter or digit is left."""
    phrases: list[str] = []
    for part in text.lower().split("."):
        phrase = " ".join(_EDGE_PUNCT.sub("", part).split())
        if phrase and _WORD.search(phrase) and phrase not in phrases:
            phrases.append(phrase)
    if not phrases:
        raise PromptError(
            f"prompt {text!r} has no phrase to look for (expected e.g. 'person. car.')"
        )
    return phrases


def prompt_text(phrases: Sequence[str]) -> str:
    """The canonical prompt text: each phrase ended by '.' (``"person. red ball."``)."""
    return " ".join(f"{p}." for p in phrases)
