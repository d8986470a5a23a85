"""Colour cues as a lifecycle profile compares them (``engine.lifecycle.colour_space``).

``bgr``: the raw mean colour (b, g, r in [0, 1]): tuned on the demo scene, but a brightness
ramp, a shadow or auto-exposure move it as far as a change of object does. ``chromaticity``:
each channel over the sum of the three (plus a small floor so that near-black stays defined):
scaling the light scales the three alike and leaves it unchanged. ``grey-world``: the same
chromaticity of a colour the camera tracker measured relative to its frame's mean colour
(``engine.cues.white_point``): a white balance that scales the channels unequally over the whole
frame leaves it unchanged too."""

from __future__ import annotations

from engine.lifecycle.config import ColourSpace

Colour = tuple[float, float, float]
CHROMA_FLOOR = 0.02  # added to each channel: a near-black mask's chromaticity tends to grey


def chromaticity(colour: Colour) -> Colour:
    """``colour``'s chromaticity: (b, g, r) over their sum, each in [0, 1], summing to 1."""
    b, g, r = (max(0.0, float(c)) + CHROMA_FLOOR for c in colour)
    total = b + g + r
    return (b / total, g / total, r / total)


def colour_cue(colour: Colour | None, space: ColourSpace) -> Colour | None:
    """``colour`` in ``space`` (None stays None)."""
    if colour is None or space == "bgr":
        return colour
    return chromaticity(colour)
