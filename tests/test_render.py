"""Renderer: stable colour per ID, input untouched, pixels change where masks are."""

from __future__ import annotations

import numpy as np
import pytest
import supervision as sv

from engine.render import Renderer, contrast_ratio, readable_text_color
from stream.wire import decode_jpeg


def _scene(h: int = 120, w: int = 160) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 40, size=(h, w, 3), dtype=np.uint8)


def _mask(h: int, w: int, x1: int, y1: int, x2: int, y2: int) -> np.ndarray:
    m = np.zeros((h, w), bool)
    m[y1:y2, x1:x2] = True
    return m


def test_input_not_modified_and_output_differs_where_masks_are() -> None:
    img = _scene()
    before = img.copy()
    r = Renderer(draw_boxes=False, draw_labels=False)
    m = _mask(120, 160, 40, 30, 90, 80)
    out = r.draw(img, [3], ["ball"], [0.87], np.array([[40, 30, 90, 80]], float), m[None])
    assert np.array_equal(img, before)
    assert out is not img and out.shape == img.shape and out.dtype == np.uint8
    diff = np.any(out != img, axis=2)
    assert diff[m].mean() > 0.95
    assert not diff[~m].any()


def test_colour_is_stable_per_id_whatever_the_order() -> None:
    h, w = 120, 160
    img = np.zeros((h, w, 3), np.uint8)
    r = Renderer(mask_opacity=1.0, draw_boxes=False, draw_labels=False)
    ma, mb = _mask(h, w, 10, 10, 50, 50), _mask(h, w, 100, 60, 150, 110)
    boxes = np.array([[10, 10, 50, 50], [100, 60, 150, 110]], float)
    out1 = r.draw(img, [7, 2], ["a", "b"], [0.9, 0.8], boxes, np.stack([ma, mb]))
    out2 = r.draw(img, [2, 7], ["b", "a"], [0.8, 0.9], boxes[::-1], np.stack([mb, ma]))
    assert np.array_equal(out1, out2)
    c7 = tuple(int(v) for v in out1[30, 30])
    c2 = tuple(int(v) for v in out1[80, 120])
    assert c7 == r.color_of(7)
    assert c2 == r.color_of(2)
    assert c7 != c2
    # the same id in another frame, at another place, keeps its colour
    out3 = r.draw(img, [7], ["a"], [0.5], boxes[1:], mb[None])
    assert tuple(int(v) for v in out3[80, 120]) == r.color_of(7)


def test_boxes_labels_and_jpeg() -> None:
    img = _scene()
    r = Renderer()
    boxes = np.array([[20, 30, 100, 90]], float)
    out = r.draw(img, [1], ["person"], [0.5], boxes, None)
    assert np.any(out != img)
    assert Renderer.label_text(3, "ball", 0.874) == "#3 ball 0.87"
    jpg = r.render_jpeg(img, [1], ["person"], [0.5], boxes)
    assert jpg[:2] == b"\xff\xd8"
    assert decode_jpeg(jpg).shape == img.shape


def test_no_objects_returns_a_copy() -> None:
    img = _scene()
    out = Renderer().draw(img, [], [], [], np.zeros((0, 4)), None)
    assert out is not img and np.array_equal(out, img)


def test_shape_errors_are_clear() -> None:
    img = _scene()
    r = Renderer()
    with pytest.raises(ValueError, match="masks must be"):
        r.draw(img, [1], ["a"], [0.5], np.array([[0, 0, 10, 10]]), np.zeros((1, 10, 10), bool))
    with pytest.raises(ValueError, match="one entry per object"):
        r.draw(img, [1, 2], ["a"], [0.5], np.array([[0, 0, 10, 10]]), None)
    with pytest.raises(ValueError, match="HxWx3"):
        r.draw(img[:, :, 0], [], [], [], np.zeros((0, 4)), None)


EDGE_BOXES = {
    "top": (50, 0, 110, 40),
    "bottom": (50, 80, 110, 120),
    "left": (0, 40, 40, 80),
    "right": (120, 40, 160, 80),
    "top-left": (0, 0, 30, 30),
    "top-right": (130, 0, 160, 30),
    "bottom-left": (0, 90, 30, 120),
    "bottom-right": (130, 90, 160, 120),
    "whole frame": (0, 0, 160, 120),
}


@pytest.mark.parametrize("where", list(EDGE_BOXES))
@pytest.mark.parametrize("track_id", [0, 2, 6, 15])  # dark and light palette colours
def test_label_stays_readable_at_every_frame_edge(where: str, track_id: int) -> None:
    """Only the label is drawn: its box lies whole inside the frame (the expected size, not
    clipped), touches its object's box, and its text has at least 4.5:1 contrast."""
    h, w = 120, 160
    bg = (90, 60, 30)
    img = np.full((h, w, 3), bg, np.uint8)
    r = Renderer(draw_masks=False, draw_boxes=False)
    x1, y1, x2, y2 = EDGE_BOXES[where]
    out = r.draw(img, [track_id], ["forklift"], [0.87], np.array([[x1, y1, x2, y2]], float))
    changed = np.any(out != img, axis=2)
    ys, xs = np.nonzero(changed)
    assert len(ys), f"no label drawn for a box at the {where} edge"
    lx1, ly1, lx2, ly2 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
    lw, lh = r.label_size(Renderer.label_text(track_id, "forklift", 0.87))
    assert (lx2 - lx1, ly2 - ly1) == (lw, lh), f"label clipped at the {where} edge"
    assert changed[ly1:ly2, lx1:lx2].all(), "the label box is filled"
    assert lx1 < x2 and lx2 > x1 and ly1 <= y2 and ly2 >= y1, "the label touches its box"
    label = out[ly1:ly2, lx1:lx2].reshape(-1, 3).astype(int)
    fill = np.array(r.color_of(track_id))
    text = np.array(r.text_color_of(track_id))
    to_text, to_fill = np.abs(label - text).sum(1), np.abs(label - fill).sum(1)
    assert (to_fill == 0).mean() > 0.5, "the label has its track's colour"
    # anti-aliased strokes: many pixels nearer the text colour, a core of them at it
    assert (to_text < to_fill).sum() >= 150 and (to_text < 60).sum() >= 40, "no text drawn"

    def color(bgr: np.ndarray) -> sv.Color:
        return sv.Color(r=int(bgr[2]), g=int(bgr[1]), b=int(bgr[0]))

    assert contrast_ratio(color(fill), color(text)) >= 4.5


def test_every_palette_colour_gets_readable_text() -> None:
    r = Renderer()
    for c in r.palette.colors:
        assert contrast_ratio(c, readable_text_color(c)) >= 4.5, c.as_hex()
    assert readable_text_color(sv.Color.WHITE) == sv.Color.BLACK
    assert readable_text_color(sv.Color.BLACK) == sv.Color.WHITE


def label_fill(image: np.ndarray, text: str, bgr: tuple[int, int, int], tol: int = 60) -> float:
    """The share of the object's colour in the best label-sized window of ``image``: near 1
    (less its text) where the label box of ``text`` is drawn whole and uncovered."""
    match = (np.abs(image.astype(int) - np.array(bgr)).sum(axis=2) < tol).astype(np.float64)
    w, h = Renderer().label_size(text)
    sums = np.pad(match.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    win = sums[h:, w:] - sums[:-h, w:] - sums[h:, :-w] + sums[:-h, :-w]
    return float(win.max()) / (w * h) if win.size else 0.0


def test_overlapping_objects_keep_every_label_readable() -> None:
    """Three objects on one box (masks over the whole frame, as random weights give): no label
    covers another."""
    h, w = 240, 320
    r = Renderer()
    img = np.full((h, w, 3), 60, np.uint8)
    ids, labels = [1, 2, 7], ["thing", "other", "cup"]
    boxes = np.array([[0, 0, 316, 240]] * 3, float)
    out = r.draw(img, ids, labels, [0.27] * 3, boxes, np.ones((3, h, w), bool))
    placed = r.label_boxes(
        [Renderer.label_text(i, b, 0.27) for i, b in zip(ids, labels, strict=True)], boxes, w, h
    )
    for i, a in enumerate(placed):
        assert all(
            not (a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3])
            for b in placed[i + 1 :]
        )
    for i, lab in zip(ids, labels, strict=True):
        assert label_fill(out, Renderer.label_text(i, lab, 0.27), r.color_of(i), tol=1) > 0.6, i
