"""Manual box prompts as users type them: ``X1,Y1,X2,Y2[@FRAME]`` in frame pixels.

``parse_box`` reads one (the CLI's ``--box``, the web page's offline form); ``clip_box`` fits a
box to a frame: a box that extends beyond the frame is cut to it (the caller warns), one that
lies wholly outside is refused. Both raise ``PromptError`` with one readable line.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from stream.errors import PromptError

Box = tuple[float, float, float, float]
_SHOWN = 60  # characters of a bad box shown in an error


def _shown(text: str) -> str:
    return text if len(text) <= _SHOWN else f"{text[:_SHOWN]}..."


def parse_box(text: str) -> tuple[Box, int]:
    """``X1,Y1,X2,Y2[@FRAME]`` -> ((x1, y1, x2, y2), frame); the frame defaults to 0."""
    coords, _, frame = text.partition("@")
    try:
        vals = [float(v) for v in coords.split(",")]
        idx = int(frame) if frame else 0
    except ValueError:
        raise PromptError(
            f"--box expects X1,Y1,X2,Y2[@FRAME] with numbers, got '{_shown(text)}'"
        ) from None
    if len(vals) != 4:
        raise PromptError(f"--box expects 4 coordinates, got {len(vals)} in '{_shown(text)}'")
    if not all(math.isfinite(v) for v in vals):
        raise PromptError(f"--box coordinates must be finite numbers, got '{_shown(text)}'")
    if idx < 0:
        raise PromptError(f"--box frame must be >= 0, got {idx}")
    x1, y1, x2, y2 = vals
    if not (x2 > x1 and y2 > y1):
        raise PromptError(f"--box {_shown(text)} has zero or negative area (need X2>X1 and Y2>Y1)")
    return (x1, y1, x2, y2), idx


@dataclass(frozen=True)
class ClippedBox:
    """A box fitted to a ``width`` x ``height`` frame; ``clipped`` says whether it was cut."""

    box: Box
    clipped: bool


def clip_box(box: Sequence[float], width: int, height: int) -> ClippedBox:
    """Cut ``box`` to the frame; ``PromptError`` if it is not 4 finite numbers with positive
    area, or if nothing of it lies inside the frame."""
    if len(box) != 4 or not all(math.isfinite(float(v)) for v in box):
        raise PromptError(f"box must be 4 finite numbers, got {list(box)}")
    x1, y1, x2, y2 = (float(v) for v in box)
    if not (x2 > x1 and y2 > y1):
        raise PromptError(f"box {[x1, y1, x2, y2]} has zero or negative area")
    if x2 <= 0 or y2 <= 0 or x1 >= width or y1 >= height:
        raise PromptError(f"box {[x1, y1, x2, y2]} lies wholly outside the {width}x{height} frame")
    cut = (max(0.0, x1), max(0.0, y1), min(float(width), x2), min(float(height), y2))
    return ClippedBox(cut, cut != (x1, y1, x2, y2))
