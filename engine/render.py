"""Annotated frames: masks, boxes, IDs and labels drawn with supervision's annotators.

``Renderer`` is configured once and then draws one frame per call. Each object gets the colour
of its track ID (``ColorLookup.TRACK``), so an object keeps its colour for as long as it is
tracked, whatever its position in the list. The input image is never modified. It is pure CPU
work; the engine calls it from its renderer thread, off the GPU loop, and the offline job and
the recorder use the same class so every output looks the same.

Labels stay readable: a label that would leave the frame (above a box at the top edge, past a
box at the right edge) is moved inside it, overlapping labels are spread apart (supervision's
``smart_position``), and the text is black or white, whichever contrasts more with the label's
colour (WCAG contrast ratio; at least 4.5:1 for every colour of the palette).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import cv2
import numpy as np
import supervision as sv

from stream.wire import encode_jpeg

log = logging.getLogger(__name__)


def relative_luminance(color: sv.Color) -> float:
    """WCAG 2 relative luminance of an sRGB colour, 0 (black) to 1 (white)."""

    def channel(v: int) -> float:
        c = v / 255.0
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4

    return 0.2126 * channel(color.r) + 0.7152 * channel(color.g) + 0.0722 * channel(color.b)


def contrast_ratio(a: sv.Color, b: sv.Color) -> float:
    """WCAG 2 contrast ratio of two colours, 1 (none) to 21 (black on white)."""
    la, lb = sorted((relative_luminance(a), relative_luminance(b)), reverse=True)
    return (la + 0.05) / (lb + 0.05)


def readable_text_color(background: sv.Color) -> sv.Color:
    """Black or white, whichever contrasts more with ``background``."""
    black, white = sv.Color.BLACK, sv.Color.WHITE
    return (
        black if contrast_ratio(background, black) >= contrast_ratio(background, white) else white
    )


class Renderer:
    """Draw tracked objects onto BGR frames.

    ``draw`` takes parallel sequences (one entry per object) and returns a new image; a label
    reads ``#3 ball 0.87``. ``render_jpeg`` does the same and encodes the result.
    """

    def __init__(
        self,
        *,
        mask_opacity: float = 0.45,
        box_thickness: int = 2,
        text_scale: float = 0.5,
        text_padding: int = 4,
        draw_masks: bool = True,
        draw_boxes: bool = True,
        draw_labels: bool = True,
        jpeg_quality: int = 80,
        palette: sv.ColorPalette | None = None,
    ) -> None:
        if not 0.0 <= mask_opacity <= 1.0:
            raise ValueError(f"mask_opacity must be in [0, 1], got {mask_opacity}")
        self.palette = palette or sv.ColorPalette.DEFAULT
        self.text_scale = text_scale
        self.text_padding = text_padding
        self.jpeg_quality = jpeg_quality
        lookup = sv.ColorLookup.TRACK
        self._mask = (
            sv.MaskAnnotator(color=self.palette, opacity=mask_opacity, color_lookup=lookup)
            if draw_masks
            else None
        )
        self._box = (
            sv.BoxAnnotator(color=self.palette, thickness=box_thickness, color_lookup=lookup)
            if draw_boxes
            else None
        )
        self._label = (
            sv.LabelAnnotator(
                color=self.palette,
                text_color=sv.ColorPalette([readable_text_color(c) for c in self.palette.colors]),
                text_scale=text_scale,
                text_padding=text_padding,
                color_lookup=lookup,
                smart_position=True,  # inside the frame, overlapping labels spread apart
            )
            if draw_labels
            else None
        )

    def color_of(self, track_id: int) -> tuple[int, int, int]:
        """The BGR colour used for ``track_id``."""
        return self.palette.by_idx(int(track_id)).as_bgr()

    def text_color_of(self, track_id: int) -> tuple[int, int, int]:
        """The BGR colour of the label text of ``track_id``."""
        return readable_text_color(self.palette.by_idx(int(track_id))).as_bgr()

    def label_size(self, text: str) -> tuple[int, int]:
        """Width and height in pixels of the label box of ``text`` (text plus padding)."""
        (w, h), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, self.text_scale, 1)
        return w + 2 * self.text_padding, h + 2 * self.text_padding

    @staticmethod
    def label_text(track_id: int, label: str, score: float) -> str:
        return f"#{track_id} {label} {score:.2f}"

    def draw(
        self,
        image_bgr: np.ndarray,
        ids: Sequence[int],
        labels: Sequence[str],
        scores: Sequence[float],
        boxes: np.ndarray,
        masks: np.ndarray | None = None,
    ) -> np.ndarray:
        """A copy of ``image_bgr`` (HxWx3 uint8) with the objects drawn.

        ``boxes`` is (N, 4) xyxy in pixels; ``masks`` is (N, H, W) bool or None.
        """
        if image_bgr.ndim != 3 or image_bgr.shape[2] != 3 or image_bgr.dtype != np.uint8:
            raise ValueError(
                f"expected an HxWx3 uint8 BGR image, got {image_bgr.shape} {image_bgr.dtype}"
            )
        n = len(ids)
        if not (len(labels) == len(scores) == n):
            raise ValueError(
                f"ids, labels and scores must have one entry per object, got {n}, {len(labels)}, {len(scores)}"
            )
        xyxy = (
            np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
            if n
            else np.zeros((0, 4), np.float32)
        )
        if xyxy.shape[0] != n:
            raise ValueError(f"boxes must be ({n}, 4), got {np.asarray(boxes).shape}")
        h, w = image_bgr.shape[:2]
        mask_arr: np.ndarray | None = None
        if masks is not None and n:
            mask_arr = np.asarray(masks)
            if mask_arr.shape != (n, h, w):
                raise ValueError(f"masks must be ({n}, {h}, {w}), got {mask_arr.shape}")
            mask_arr = mask_arr.astype(bool, copy=False)
        scene = np.ascontiguousarray(image_bgr).copy()
        if n == 0:
            return scene
        ids_arr = np.asarray(ids, dtype=int)
        det = sv.Detections(
            xyxy=xyxy,
            mask=mask_arr,
            confidence=np.asarray(scores, dtype=np.float32),
            class_id=np.zeros(n, dtype=int),
            tracker_id=ids_arr,
        )
        if self._mask is not None and mask_arr is not None:
            scene = self._mask.annotate(scene, det)
        if self._box is not None:
            scene = self._box.annotate(scene, det)
        if self._label is not None:
            texts = [
                self.label_text(int(i), str(lab), float(s))
                for i, lab, s in zip(ids_arr, labels, scores, strict=True)
            ]
            scene = self._label.annotate(scene, det, labels=texts)
        return scene

    def render_jpeg(
        self,
        image_bgr: np.ndarray,
        ids: Sequence[int],
        labels: Sequence[str],
        scores: Sequence[float],
        boxes: np.ndarray,
        masks: np.ndarray | None = None,
        quality: int | None = None,
    ) -> bytes:
        """``draw`` then JPEG-encode (``quality`` defaults to the constructor's ``jpeg_quality``)."""
        out = self.draw(image_bgr, ids, labels, scores, boxes, masks)
        return encode_jpeg(out, self.jpeg_quality if quality is None else quality)
