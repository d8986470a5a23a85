"""The demo detector's word list, laid out as BERT's vocabulary is where Grounding DINO needs it.

transformers' Grounding DINO finds phrase boundaries by token id: ``[CLS]`` 101, ``[SEP]`` 102,
``.`` 1012 and ``?`` 1029 (``SPECIAL_TOKENS`` in its modelling code; they split the text
self-attention into phrases and build the loss's label maps). A small vocabulary therefore keeps
BERT-base's ids for those and for ``[PAD]`` 0 / ``[UNK]`` 100 / ``[MASK]`` 103, puts its words
from 104 on and fills the remaining ids with ``[unused…]`` entries. Words outside the list
become ``[UNK]``; training shows such phrases with no object, so they find nothing.
"""

from __future__ import annotations

from pathlib import Path

from stream.demo import COLOURS, LABELS

PLURALS = {"ball": "balls", "box": "boxes"}
# Words that never name a demo object (negative phrases in training).
OTHER_COLOURS = ("orange", "white", "black", "pink", "brown", "grey")
OTHER_THINGS = (
    "person", "people", "man", "woman", "child", "car", "truck", "bus", "bicycle", "dog",
    "cat", "bird", "tree", "cup", "bottle", "chair", "table", "phone", "book", "robot",
    "hand", "face", "sign", "light", "forklift", "door", "window", "plant",
)  # fmt: skip
FUNCTION_WORDS = ("a", "an", "the", "of", "and", "small", "large", "big")
SPECIAL_IDS = {"[PAD]": 0, "[UNK]": 100, "[CLS]": 101, "[SEP]": 102, "[MASK]": 103}
PUNCTUATION_IDS = {".": 1012, "?": 1029}


def words() -> list[str]:
    """The vocabulary's words (colours, shapes and their plurals, other things, function words)."""
    out = [*COLOURS, *LABELS, *PLURALS.values(), *OTHER_COLOURS, *OTHER_THINGS, *FUNCTION_WORDS]
    return list(dict.fromkeys(out))


def vocabulary() -> list[str]:
    """All entries in id order (1030 of them)."""
    size = max(PUNCTUATION_IDS.values()) + 1
    entries: list[str | None] = [None] * size
    for token, i in {**SPECIAL_IDS, **PUNCTUATION_IDS}.items():
        entries[i] = token
    free = (i for i in range(104, size) if entries[i] is None)
    for word in words():
        entries[next(free)] = word
    unused = 0
    for i, e in enumerate(entries):
        if e is None:
            entries[i] = f"[unused{unused}]"
            unused += 1
    return [e for e in entries if e is not None]


def write_vocabulary(path: Path) -> Path:
    """Write ``vocab.txt`` (one entry per line, in id order) and return its path."""
    path.write_text("\n".join(vocabulary()) + "\n")
    return path
